//! kflow's datasets: the CATS CSV format (streamed, so the real 5 M-row file fits in bounded memory), a deterministic
//! CATS-like generator that writes the same format, windows with documented labels, leak-free stratified splits,
//! normalization fitted on the training split, metrics, and a per-channel z-score baseline to compare models with.
//!
//! graphs/datasets/README.md describes the data and the choices; the module docs say why each piece is as it is.

mod baseline;
mod csv;
mod dataset;
mod error;
mod generator;
mod metrics;
mod normalize;
mod random;
mod source;
mod split;
mod tensors;
mod threshold;
mod windows;

pub use baseline::{ZScoreBaseline, zscore_baseline, zscore_scores};
pub use csv::{
    CHANNELS, LABEL_COLUMN, NUM_CHANNELS, NUM_COLUMNS, OwnedRow, ReadSummary, Row, RowWriter, TIMESTAMP_COLUMN,
    header_line, header_names, read_rows, read_rows_from, write_rows,
};
pub use dataset::build_dataset;
pub use error::DataError;
pub use generator::{ALL_KINDS, AnomalyKind, GeneratedMeta, GeneratorParams, Segment, generate};
pub use metrics::{Confusion, Quality, confusion, roc_auc, roc_curve};
pub use normalize::Normalization;
pub use source::{CsvBytes, CsvFile, RowSource};
pub use split::{Part, assign};
pub use tensors::{ClassCounts, Dataset, DatasetMeta, Split, SplitCounts};
pub use threshold::{Validation, best_f1_threshold};
pub use windows::{LabelRule, WindowParams};

#[cfg(test)]
mod testutil;
