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

/// Chooses the threshold on `val` by [`validation_threshold`], as a trained model's is, and applies it to `test`.
/// Predicting "anomalous" when the score is ≥ the threshold.
pub fn zscore_baseline(val: &Split, test: &Split, scale: f32) -> Result<ZScoreBaseline, DataError> {
    if val.is_empty() {
        return Err(DataError::Dataset(
            "the validation split is empty; the baseline's threshold is chosen on it".into(),
        ));
    }
    let val_scores = zscore_scores(val, scale);
    let val_labels = val.labels();
    let threshold = validation_threshold(&val_labels, &val_scores);
    let test_scores = zscore_scores(test, scale);
    Ok(ZScoreBaseline {
        threshold,
        validation: Quality::at_threshold(&val_labels, &val_scores, threshold),
        test: Quality::at_threshold(&test.labels(), &test_scores, threshold),
    })
}

/// The share of nominal validation windows a detection threshold may rise above at most: see
/// [`validation_threshold`].
pub const NOMINAL_CAP_QUANTILE: f64 = 0.999;

/// A detector's threshold, chosen on the validation split: the one that maximizes F1 there, but no higher than
/// just above the [`NOMINAL_CAP_QUANTILE`] of the nominal windows' scores (so that at most that share of them stay
/// below it and, on a split too small for a tail, the threshold sits just above its highest nominal score).
///
/// When the validation split holds only a few anomalous segments, the F1-best threshold settles just under the
/// weakest window of the segments the detector happens to catch well, often far above every nominal score; raising
/// a threshold past nearly all nominal windows gains almost no precision, and it misses every anomaly subtler than
/// those few. The cap leaves a threshold fitted on a well-populated split as it is.
pub fn validation_threshold(labels: &[bool], scores: &[f32]) -> f32 {
    let best = best_f1_threshold(labels, scores);
    nominal_quantile(labels, scores, NOMINAL_CAP_QUANTILE).map_or(best, |q| best.min(q.next_up()))
}

/// The `q`-quantile (nearest rank, `q` in 0..=1) of the scores of the windows labelled nominal; `None` when there
/// are none.
pub fn nominal_quantile(labels: &[bool], scores: &[f32], q: f64) -> Option<f32> {
    let mut nominal: Vec<f32> = scores
        .iter()
        .zip(labels)
        .filter(|(_, anomalous)| !**anomalous)
        .map(|(s, _)| *s)
        .collect();
    if nominal.is_empty() {
        return None;
    }
    nominal.sort_by(f32::total_cmp);
    let rank = (q * nominal.len() as f64).ceil() as usize;
    Some(nominal[rank.clamp(1, nominal.len()) - 1])
}

/// Sweeps every distinct score from the highest down; F1s are compared as exact fractions so ties are real ties.
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
    best.map_or(f32::INFINITY, |b| b.2)
}

#[cfg(test)]
mod tests;
