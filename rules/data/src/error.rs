//! The one error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading, generating or shaping a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A malformed CSV file. `line` is the 1-based line of the file, `column` the 1-based field number, so that an
    /// editor can jump to it.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Csv {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing generated CSV failed.
    #[error("writing CSV: {0}")]
    Write(#[source] std::io::Error),
    /// Parameters that cannot describe a dataset (a zero window, fractions that do not add up, ...).
    #[error("invalid parameters: {0}")]
    Params(String),
    /// The rows were read but do not make a usable dataset (too few rows for one window, no training windows, ...).
    #[error("dataset: {0}")]
    Dataset(String),
    /// A safetensors blob that is not a split written by [`crate::Split::to_safetensors`].
    #[error("safetensors: {0}")]
    Tensors(String),
    /// JSON (de)serialization of metadata.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}
