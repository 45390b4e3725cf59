//! The per-channel z-score detector: the comparison point that a trained model has to beat.
//!
//! It flags a window when any channel at any time step is more than a threshold of standard deviations from the
//! channel's training mean. The generator's anomalies are built to stay inside each channel's normal range, so this
//! detector should do poorly on them; a model that relates channels over time should not.

use serde::{Deserialize, Serialize};

use crate::metrics::Quality;
use crate::threshold::Validation;
use crate::{DataError, Split};

/// The baseline's threshold (in standard deviations) and its quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZScoreBaseline {
    pub threshold: f32,
    pub validation: Quality,
    pub test: Quality,
}

/// Per window: the largest |z| over channels and time steps. Windows hold `(x − mean)/(scale · std)`, so
/// `|value| · scale` is the z-score magnitude.
pub fn zscore_scores(split: &Split, scale: f32) -> Vec<f32> {
    let size = split.shape[1] * split.shape[2];
    if size == 0 {
        return vec![0.0; split.len()];
    }
    split
        .x
        .chunks(size)
        .map(|w| w.iter().fold(0f32, |m, &v| m.max(v.abs())) * scale)
        .collect()
}

/// Chooses the threshold that maximizes F1 on `val` and `held_out`, anomalous windows the detector never learned
/// from (see [`Validation`]), and applies it to `test`. Predicting "anomalous" when the score is ≥ the threshold.
pub fn zscore_baseline(val: &Split, held_out: &Split, test: &Split, scale: f32) -> Result<ZScoreBaseline, DataError> {
    if val.is_empty() {
        return Err(DataError::Dataset(
            "the validation split is empty; the baseline's threshold is chosen on it".into(),
        ));
    }
    let val_scores = zscore_scores(val, scale);
    let val_labels = val.labels();
    let held_out = zscore_scores(held_out, scale);
    let threshold = Validation {
        labels: &val_labels,
        scores: &val_scores,
        held_out: &held_out,
    }
    .best_threshold();
    let test_scores = zscore_scores(test, scale);
    Ok(ZScoreBaseline {
        threshold,
        validation: Quality::at_threshold(&val_labels, &val_scores, threshold),
        test: Quality::at_threshold(&test.labels(), &test_scores, threshold),
    })
}

#[cfg(test)]
mod tests;
