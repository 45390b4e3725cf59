//! The per-channel z-score detector: the comparison point that a trained model has to beat.
//!
//! It flags a window when any channel at any time step is more than a threshold of standard deviations from the
//! channel's training mean. The generator's anomalies are built to stay inside each channel's normal range, so this
//! detector should do poorly on them; a model that relates channels over time should not.

use serde::{Deserialize, Serialize};

use crate::metrics::Quality;
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

/// Chooses the threshold that maximizes F1 on `val` (ties: the smaller threshold, which catches more; see
/// [`best_f1_threshold`]) and applies it to `test`. Predicting "anomalous" when the score is ≥ the threshold.
pub fn zscore_baseline(val: &Split, test: &Split, scale: f32) -> Result<ZScoreBaseline, DataError> {
    if val.is_empty() {
        return Err(DataError::Dataset(
            "the validation split is empty; the baseline's threshold is chosen on it".into(),
        ));
    }
    let val_scores = zscore_scores(val, scale);
    let val_labels = val.labels();
    let threshold = best_f1_threshold(&val_labels, &val_scores);
    let test_scores = zscore_scores(test, scale);
    Ok(ZScoreBaseline {
        threshold,
        validation: Quality::at_threshold(&val_labels, &val_scores, threshold),
        test: Quality::at_threshold(&test.labels(), &test_scores, threshold),
    })
}

/// Sweeps every distinct score from the highest down; F1s are compared as exact fractions so ties are real ties.
///
/// When the best threshold lies above every nominal score, each threshold down to just above the highest nominal
/// score makes the same decisions on these windows, and the lowest of them is returned. With only a few anomalous
/// segments in a validation split, the best one sits just under the weakest window of the segments caught cleanly,
/// often far above every nominal score; there it would miss every subtler anomaly of new data for no precision on
/// these windows.
pub fn best_f1_threshold(labels: &[bool], scores: &[f32]) -> f32 {
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = pairs.iter().filter(|p| p.1).count() as u128;
    let (mut tp, mut fp) = (0u128, 0u128);
    // (numerator, denominator, threshold) of the best F1 so far.
    let mut best: Option<(u128, u128, f32)> = None;
    let mut i = 0;
    while i < pairs.len() {
        let score = pairs[i].0;
        while i < pairs.len() && pairs[i].0.total_cmp(&score).is_eq() {
            if pairs[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let num = 2 * tp;
        let den = 2 * tp + fp + (positives - tp);
        // `>=`: thresholds only decrease, so an equal F1 moves the choice to the smaller threshold.
        let better = match best {
            None => true,
            Some((bn, bd, _)) => num * bd >= bn * den,
        };
        if better {
            best = Some((num, den, score));
        }
    }
    let best = best.map_or(f32::INFINITY, |b| b.2);
    // The pairs are sorted highest first, so the first nominal one holds the highest nominal score.
    let highest_nominal = pairs.iter().find(|&&(_, anomalous)| !anomalous).map(|&(s, _)| s);
    highest_nominal.map_or(best, |h| best.min(h.next_up()))
}

#[cfg(test)]
mod tests;
