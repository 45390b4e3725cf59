//! Where rows come from: anything that can stream CATS rows, once per pass.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::DataError;
use crate::csv::{ReadSummary, Row, read_rows_from};

/// A repeatable stream of rows. [`crate::build_dataset`] reads it twice (labels first, then values), so every call
/// must produce the same rows.
pub trait RowSource {
    /// A short description recorded in the dataset's metadata (a file name, "generated", ...).
    fn describe(&self) -> String;

    /// Calls `each` for the first `limit` rows (all rows when `None`), in order.
    fn for_each_row(
        &mut self,
        limit: Option<u64>,
        each: &mut dyn FnMut(Row<'_>) -> Result<(), DataError>,
    ) -> Result<ReadSummary, DataError>;
}

/// A CATS CSV file on disk, re-read on every pass.
#[derive(Debug, Clone)]
pub struct CsvFile {
    pub path: PathBuf,
    /// What errors call the file (`path` unless set with [`CsvFile::named`]).
    pub name: PathBuf,
}

impl CsvFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            name: path.clone(),
            path,
        }
    }

    /// Reads `path` but names `name` in errors: for a copy of a user's file.
    pub fn named(path: impl Into<PathBuf>, name: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            name: name.into(),
        }
    }
}

impl RowSource for CsvFile {
    fn describe(&self) -> String {
        format!("csv:{}", self.name.display())
    }

    fn for_each_row(
        &mut self,
        limit: Option<u64>,
        each: &mut dyn FnMut(Row<'_>) -> Result<(), DataError>,
    ) -> Result<ReadSummary, DataError> {
        let file = File::open(&self.path).map_err(|source| DataError::Io {
            path: self.name.clone(),
            source,
        })?;
        read_rows_from(file, &self.name, limit, each)
    }
}

/// CATS CSV held in memory (for instance the generator's output for a small dataset).
#[derive(Debug, Clone)]
pub struct CsvBytes<'a> {
    /// Names the data in errors and in the metadata.
    pub name: String,
    pub bytes: &'a [u8],
}

impl RowSource for CsvBytes<'_> {
    fn describe(&self) -> String {
        format!("csv:{}", self.name)
    }

    fn for_each_row(
        &mut self,
        limit: Option<u64>,
        each: &mut dyn FnMut(Row<'_>) -> Result<(), DataError>,
    ) -> Result<ReadSummary, DataError> {
        read_rows_from(self.bytes, Path::new(&self.name), limit, each)
    }
}
