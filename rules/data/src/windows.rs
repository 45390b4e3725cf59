//! Windows over the row stream and their labels.
//!
//! Window `i` holds rows `[i·S, i·S + W)` (W = `length`, S = `stride`), so consecutive windows share `W − S` rows
//! when S < W. A window is labelled by a [`LabelRule`]; the choice is recorded in the dataset's metadata (and so in
//! its hash).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// Which rows decide a window's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelRule {
    /// Anomalous if any of the window's rows `[i·S, i·S + W)` is: the model is asked "is there an anomaly in what you
    /// see?".
    #[default]
    Any,
    /// The label of the window's last row, `i·S + W − 1`.
    Last,
    /// Kenning's rule, for comparisons only: the label of the row AFTER the window, `i·S + W`, which the window does
    /// not contain. A window is only formed when that row exists.
    Next,
}

impl LabelRule {
    /// Rows needed past the window's own rows to label it.
    pub(crate) fn lookahead(self) -> u64 {
        match self {
            LabelRule::Next => 1,
            LabelRule::Any | LabelRule::Last => 0,
        }
    }
}

/// How rows become windows, and windows become splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowParams {
    /// W: rows per window (the model's time axis).
    pub length: usize,
    /// S: rows between the starts of consecutive windows.
    pub stride: usize,
    pub label: LabelRule,
    /// Normalized values are `(x − mean) / (scale · std)`; 3 is Kenning's choice, so int8 input quantization
    /// saturates at ±3σ.
    pub scale: f32,
    /// Round normalized values to the accelerators' int8 input grid (`x·128`
    /// rounded, clamped to −128..=127, divided by 128): models are trained
    /// and judged on exactly the values a device receives, so clipping and
    /// rounding at the device's input cost no accuracy there.
    pub int8_grid: bool,
    /// Shares of blocks (per class) for train, validation and test; they must add up to 1.
    pub fractions: [f64; 3],
    /// Consecutive windows per split block; windows at a block's end that share rows with the next block are
    /// dropped, so keep it well above ⌈W/S⌉.
    pub block: usize,
    /// Seeds the assignment of blocks to splits.
    pub seed: u64,
    /// Data rows skipped at the start of the source.
    pub skip_rows: u64,
    /// Data rows used after the skipped ones (all when absent); bounds memory and time on the 5 M-row CATS file.
    pub max_rows: Option<u64>,
}

impl Default for WindowParams {
    fn default() -> Self {
        Self {
            length: 16,
            stride: 4,
            label: LabelRule::Any,
            scale: 3.0,
            int8_grid: true,
            fractions: [0.7, 0.15, 0.15],
            block: 64,
            seed: 0,
            skip_rows: 0,
            max_rows: None,
        }
    }
}

impl WindowParams {
    pub(crate) fn validate(&self) -> Result<(), DataError> {
        let fail = |m: String| Err(DataError::Params(m));
        if self.length == 0 {
            return fail("window length must be at least 1".into());
        }
        if self.stride == 0 {
            return fail("window stride must be at least 1".into());
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return fail(format!("scale {} must be a positive number", self.scale));
        }
        if self.fractions.iter().any(|f| !(f.is_finite() && *f >= 0.0)) {
            return fail(format!(
                "split fractions {:?} must be non-negative numbers",
                self.fractions
            ));
        }
        let sum: f64 = self.fractions.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return fail(format!("split fractions {:?} add up to {sum}, not 1", self.fractions));
        }
        if self.fractions[0] <= 0.0 {
            return fail("the training fraction must be positive: normalization is fitted on it".into());
        }
        if self.block as u64 <= self.border_gap() {
            return fail(format!(
                "block of {} windows is too small: {} windows at each block border are dropped (window {}, stride {})",
                self.block,
                self.border_gap(),
                self.length,
                self.stride
            ));
        }
        Ok(())
    }

    /// Rows of window `i`: `[i·S, i·S + W)`.
    pub fn window_rows(&self, i: u64) -> Range<u64> {
        let start = i * self.stride as u64;
        start..start + self.length as u64
    }

    /// The row whose label is the window's label, for [`LabelRule::Last`] and [`LabelRule::Next`]; for
    /// [`LabelRule::Any`] every row of [`WindowParams::window_rows`] counts.
    pub fn label_row(&self, i: u64) -> u64 {
        let rows = self.window_rows(i);
        match self.label {
            LabelRule::Any | LabelRule::Last => rows.end - 1,
            LabelRule::Next => rows.end,
        }
    }

    /// Windows formed from `rows` rows: the number of `i` with `i·S + W + lookahead ≤ rows`.
    pub fn window_count(&self, rows: u64) -> u64 {
        let need = self.length as u64 + self.label.lookahead();
        if rows < need {
            0
        } else {
            (rows - need) / self.stride as u64 + 1
        }
    }

    /// Rows a window depends on (its own plus the label lookahead).
    pub(crate) fn extent(&self) -> u64 {
        self.length as u64 + self.label.lookahead()
    }

    /// The window completed by row `r` (the last row it depends on), if any.
    pub(crate) fn completed_at(&self, r: u64) -> Option<u64> {
        let need = self.extent();
        let k = (r + 1).checked_sub(need)?;
        (k % self.stride as u64 == 0).then_some(k / self.stride as u64)
    }

    /// Windows dropped at the end of each block (except the last block): g = ⌈(W + lookahead)/S⌉. The last kept
    /// window `i` of a block and the first window `j = i + g + 1` of the next then satisfy
    /// `j·S ≥ i·S + W + lookahead + S`: they share no row (the label row included), and at least S rows lie between
    /// them.
    pub fn border_gap(&self) -> u64 {
        self.extent().div_ceil(self.stride as u64)
    }

    /// Window indices whose rows include row `r` (possibly past the last window; callers bound it).
    pub(crate) fn windows_containing(&self, r: u64) -> Range<u64> {
        let s = self.stride as u64;
        let w = self.length as u64;
        let first = (r + 1).saturating_sub(w).div_ceil(s);
        first..r / s + 1
    }
}

/// Pass 1: labels every window as rows stream by, holding one bool per window.
pub(crate) struct Labeler<'p> {
    params: &'p WindowParams,
    last_anomalous: Option<u64>,
    pub(crate) labels: Vec<bool>,
}

impl<'p> Labeler<'p> {
    pub(crate) fn new(params: &'p WindowParams) -> Self {
        Self {
            params,
            last_anomalous: None,
            labels: Vec::new(),
        }
    }

    /// Row `r` (0-based after the skipped rows) with its label.
    pub(crate) fn push(&mut self, r: u64, anomalous: bool) {
        if anomalous {
            self.last_anomalous = Some(r);
        }
        let Some(i) = self.params.completed_at(r) else { return };
        let label = match self.params.label {
            // Row r is the window's last row, so "an anomalous row at or after its first row" is "one inside it".
            LabelRule::Any => self
                .last_anomalous
                .is_some_and(|a| a >= self.params.window_rows(i).start),
            // Row r is the last row (Last) or the row after the window (Next): its own label.
            LabelRule::Last | LabelRule::Next => anomalous,
        };
        self.labels.push(label);
    }
}
