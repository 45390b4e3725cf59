//! The CATS CSV format, read as a stream and written deterministically.
//!
//! A header row, then one row per time step: column 1 `timestamp` (any text; kept only as a position), columns
//! 2..=18 the 17 channels in [`CHANNELS`] order, column 19 the label `y` (a number, > 0 meaning anomalous, or
//! `true`/`false` in any case). Kenning's reader takes the last column as the label and everything between the first
//! and the last as features, so a file accepted here means the same thing to Kenning. Kenning reads no names; here
//! the channels' names are checked (ignoring case), because a reordered file would silently feed the wrong channels,
//! but the first and last columns may have any name (`time`, `label`, ...), since their positions alone give their
//! meaning.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// Number of signal channels in a CATS row.
pub const NUM_CHANNELS: usize = 17;

/// Columns per row: timestamp, 17 channels, label.
pub const NUM_COLUMNS: usize = NUM_CHANNELS + 2;

/// The CATS channel names, in file order (4 commands, 3 environmental stimuli, 10 telemetry readings; see the
/// generator for the roles kflow gives them).
pub const CHANNELS: [&str; NUM_CHANNELS] = [
    "aimp", "amud", "arnd", "asin1", "asin2", "adbr", "adfl", "bed1", "bed2", "bfo1", "bfo2", "bso1", "bso2", "bso3",
    "ced1", "cfo1", "cso1",
];

/// Name of the first column.
pub const TIMESTAMP_COLUMN: &str = "timestamp";

/// Name of the last column.
pub const LABEL_COLUMN: &str = "y";

/// One data row, borrowed from the reader's reused buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row<'a> {
    /// 0-based index among the data rows (the header is not counted).
    pub index: u64,
    pub values: &'a [f32; NUM_CHANNELS],
    pub label: bool,
}

/// What a complete read saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadSummary {
    pub rows: u64,
    pub anomalous: u64,
}

/// Streams the data rows of the CSV file at `path` into `each`, in file order.
///
/// Memory does not depend on the file's size: one record buffer is reused for every row. The first error, from the
/// file or from `each`, stops the read and is returned.
pub fn read_rows(path: &Path, each: impl FnMut(Row<'_>) -> Result<(), DataError>) -> Result<ReadSummary, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_rows_from(file, path, None, each)
}

/// [`read_rows`] over any reader; `path` only names the source in errors. With `limit`, stops after that many data
/// rows without reading the rest (so a slice of a large file costs only the slice).
pub fn read_rows_from<R: Read>(
    reader: R,
    path: &Path,
    limit: Option<u64>,
    mut each: impl FnMut(Row<'_>) -> Result<(), DataError>,
) -> Result<ReadSummary, DataError> {
    // Headers are read as an ordinary record so that their errors carry a position like any other; `flexible`
    // because a wrong field count is reported by us, with the column, rather than by the csv crate. `\n` alone
    // terminates records (a `\r` before it is trimmed with the field's spaces), and a `\n` is appended so that
    // every record, the last included, is terminated: both make line numbers exact (see `next_record`).
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_reader(reader.chain(&b"\n"[..]));
    let mut record = ::csv::ByteRecord::new();
    let fail = |line: u64, column: u64, message: String| DataError::Csv {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };

    let Some(header_line_number) = next_record(&mut reader, &mut record, path)? else {
        return Err(fail(
            1,
            1,
            format!("empty file: expected a header row `{}`", header_line()),
        ));
    };
    check_header(&record, header_line_number, path)?;
    // The label column may have any name (`y`, `label`, ...); errors use the file's.
    let label_name = match String::from_utf8_lossy(&record[NUM_COLUMNS - 1]).trim() {
        "" => LABEL_COLUMN.to_owned(),
        name => name.to_owned(),
    };

    let mut values = [0f32; NUM_CHANNELS];
    let mut summary = ReadSummary::default();
    let mut last_line = header_line_number;
    loop {
        if limit.is_some_and(|limit| summary.rows >= limit) {
            return Ok(summary);
        }
        let Some(line) = next_record(&mut reader, &mut record, path)? else {
            break;
        };
        last_line = line;
        check_field_count(&record, line, path)?;
        for (c, value) in values.iter_mut().enumerate() {
            *value = parse_value(&record[c + 1], CHANNELS[c], line, c as u64 + 2, path)?;
        }
        let label = parse_label(&record[NUM_COLUMNS - 1], &label_name, line, path)?;
        each(Row {
            index: summary.rows,
            values: &values,
            label,
        })?;
        summary.rows += 1;
        summary.anomalous += u64::from(label);
    }
    if summary.rows == 0 && limit != Some(0) {
        return Err(fail(last_line + 1, 1, "no data rows after the header".into()));
    }
    Ok(summary)
}

/// The header row, comma-separated, without a line ending.
pub fn header_line() -> String {
    header_names().join(",")
}

/// The 19 column names, in file order.
pub fn header_names() -> Vec<&'static str> {
    let mut names = vec![TIMESTAMP_COLUMN];
    names.extend(CHANNELS);
    names.push(LABEL_COLUMN);
    names
}

/// Reads the next non-blank record and returns the 1-based line it starts on.
///
/// The csv crate's own record position points at the blank lines it skipped before the record, and with `\r\n`
/// endings at the previous line. So the line is derived from the reader's line count after the record instead: the
/// input always ends in `\n` (see [`read_rows_from`]), `\n` is the only terminator, so the record ends on the line
/// before the count, and starts as many lines earlier as its quoted fields hold line breaks.
fn next_record<R: Read>(
    reader: &mut ::csv::Reader<R>,
    record: &mut ::csv::ByteRecord,
    path: &Path,
) -> Result<Option<u64>, DataError> {
    loop {
        let more = reader.read_byte_record(record).map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            let message = e.to_string();
            match e.into_kind() {
                ::csv::ErrorKind::Io(source) => DataError::Io {
                    path: path.to_path_buf(),
                    source,
                },
                _ => DataError::Csv {
                    path: path.to_path_buf(),
                    line,
                    column: 1,
                    message,
                },
            }
        })?;
        if !more {
            return Ok(None);
        }
        // Whitespace-only lines (a `\r` left by `\r\n`, stray spaces) carry no data.
        if record.len() == 1 && record[0].iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let embedded = record.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
        return Ok(Some(reader.position().line().saturating_sub(1 + embedded)));
    }
}

fn check_header(record: &::csv::ByteRecord, line: u64, path: &Path) -> Result<(), DataError> {
    if record.len() != NUM_COLUMNS {
        let column = if record.len() < NUM_COLUMNS {
            record.len() + 1
        } else {
            NUM_COLUMNS + 1
        };
        return Err(DataError::Csv {
            path: path.to_path_buf(),
            line,
            column: column as u64,
            message: format!(
                "header: expected {NUM_COLUMNS} columns `{}`, found {}",
                header_line(),
                record.len()
            ),
        });
    }
    for (channel, want) in CHANNELS.iter().enumerate() {
        let column = channel + 2;
        let text = String::from_utf8_lossy(&record[column - 1]);
        if !text.trim().eq_ignore_ascii_case(want) {
            return Err(DataError::Csv {
                path: path.to_path_buf(),
                line,
                column: column as u64,
                message: format!("header column {column} is `{}`, expected `{want}`", text.trim()),
            });
        }
    }
    Ok(())
}

fn check_field_count(record: &::csv::ByteRecord, line: u64, path: &Path) -> Result<(), DataError> {
    if record.len() == NUM_COLUMNS {
        return Ok(());
    }
    // Point at the first missing field, or at the first extra one.
    let column = if record.len() < NUM_COLUMNS {
        record.len() + 1
    } else {
        NUM_COLUMNS + 1
    };
    Err(DataError::Csv {
        path: path.to_path_buf(),
        line,
        column: column as u64,
        message: format!("expected {NUM_COLUMNS} columns, found {}", record.len()),
    })
}

fn field_text<'a>(field: &'a [u8], name: &str, line: u64, column: u64, path: &Path) -> Result<&'a str, DataError> {
    std::str::from_utf8(field).map(str::trim).map_err(|_| DataError::Csv {
        path: path.to_path_buf(),
        line,
        column,
        message: format!("column `{name}` is not valid UTF-8"),
    })
}

fn parse_value(field: &[u8], name: &str, line: u64, column: u64, path: &Path) -> Result<f32, DataError> {
    let text = field_text(field, name, line, column, path)?;
    let fail = |message: String| DataError::Csv {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    let value: f32 = text
        .parse()
        .map_err(|_| fail(format!("column `{name}`: `{text}` is not a number")))?;
    // Rust parses "NaN" and "inf", and rounds 1e39 to infinity; none of them can be normalized or quantized.
    if !value.is_finite() {
        return Err(fail(format!("column `{name}`: `{text}` is not a finite number")));
    }
    Ok(value)
}

fn parse_label(field: &[u8], name: &str, line: u64, path: &Path) -> Result<bool, DataError> {
    let column = NUM_COLUMNS as u64;
    let text = field_text(field, name, line, column, path)?;
    let fail = |message: String| DataError::Csv {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    // pandas writes a boolean column as `True`/`False`, and reads those back as booleans, so Kenning takes them.
    for (word, label) in [("true", true), ("false", false)] {
        if text.eq_ignore_ascii_case(word) {
            return Ok(label);
        }
    }
    let value: f64 = text
        .parse()
        .map_err(|_| fail(format!("column `{name}`: `{text}` is neither a number nor true/false")))?;
    if value.is_nan() {
        return Err(fail(format!("column `{name}`: `{text}` is not a number")));
    }
    Ok(value > 0.0)
}

/// Writes CATS CSV: the header on creation, then one row per [`RowWriter::write`].
///
/// Floats are written with six decimals, so the bytes depend only on the values (not on the platform's float
/// printing), and lines end in `\n`. Output is buffered here, so an unbuffered `File` is fine.
pub struct RowWriter<'w, W: Write> {
    out: &'w mut W,
    buf: Vec<u8>,
    rows: u64,
}

const FLUSH_AT: usize = 1 << 16;

impl<'w, W: Write> RowWriter<'w, W> {
    pub fn new(out: &'w mut W) -> Result<Self, DataError> {
        let mut buf = Vec::with_capacity(FLUSH_AT + 512);
        buf.extend_from_slice(header_line().as_bytes());
        buf.push(b'\n');
        Ok(Self { out, buf, rows: 0 })
    }

    /// Appends one row. `timestamp` must not contain a comma, quote or line break (it is written as is).
    pub fn write(&mut self, timestamp: &str, values: &[f32; NUM_CHANNELS], label: bool) -> Result<(), DataError> {
        if timestamp.contains([',', '"', '\n', '\r']) {
            return Err(DataError::Params(format!(
                "timestamp `{timestamp}` contains a CSV delimiter"
            )));
        }
        self.buf.extend_from_slice(timestamp.as_bytes());
        for value in values {
            if !value.is_finite() {
                return Err(DataError::Params(format!(
                    "row {}: value {value} is not finite",
                    self.rows
                )));
            }
            // Writing into a Vec cannot fail.
            let _ = write!(self.buf, ",{value:.6}");
        }
        self.buf.extend_from_slice(if label { b",1\n" } else { b",0\n" });
        self.rows += 1;
        if self.buf.len() >= FLUSH_AT {
            self.out.write_all(&self.buf).map_err(DataError::Write)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes what is buffered and flushes `out`; returns the number of data rows written.
    pub fn finish(mut self) -> Result<u64, DataError> {
        self.out.write_all(&self.buf).map_err(DataError::Write)?;
        self.buf.clear();
        self.out.flush().map_err(DataError::Write)?;
        Ok(self.rows)
    }
}

/// One owned row for [`write_rows`].
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedRow {
    pub timestamp: String,
    pub values: [f32; NUM_CHANNELS],
    pub label: bool,
}

/// Writes a header and `rows` as CATS CSV; returns the number of rows written.
pub fn write_rows<W: Write>(out: &mut W, rows: impl IntoIterator<Item = OwnedRow>) -> Result<u64, DataError> {
    let mut writer = RowWriter::new(out)?;
    for row in rows {
        writer.write(&row.timestamp, &row.values, row.label)?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests;
