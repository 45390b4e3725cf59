//! Window-level quality metrics.
//!
//! Ratios with a zero denominator (precision with no positive prediction, recall with no positive label, ...) are 0,
//! so that a detector that never fires scores 0 rather than NaN. ROC AUC is computed on scores, never on hard 0/1
//! predictions (on those it degenerates to a balanced accuracy).

use serde::{Deserialize, Serialize};

/// Counts of a binary confusion matrix; positive = anomalous.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl Confusion {
    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.total())
    }

    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// 2·tp / (2·tp + fp + fn), the harmonic mean of precision and recall; 0 when tp is 0.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    /// `[[tn, fp], [fn, tp]]`: rows are the true class (0 nominal, 1 anomalous), columns the predicted class, as
    /// scikit-learn prints it.
    pub fn matrix(&self) -> [[u64; 2]; 2] {
        [[self.tn, self.fp], [self.fn_, self.tp]]
    }
}

/// Counts over pairs of (label, prediction). The slices should have the same length; extra items of the longer one
/// are ignored.
pub fn confusion(labels: &[bool], predicted: &[bool]) -> Confusion {
    debug_assert_eq!(labels.len(), predicted.len());
    let mut c = Confusion::default();
    for (&label, &p) in labels.iter().zip(predicted) {
        match (label, p) {
            (true, true) => c.tp += 1,
            (false, true) => c.fp += 1,
            (false, false) => c.tn += 1,
            (true, false) => c.fn_ += 1,
        }
    }
    c
}

/// Area under the ROC curve of `scores` (higher = more anomalous) against `labels`: the probability that a random
/// anomalous window scores above a random nominal one, ties counting one half (the Mann–Whitney statistic with average
/// ranks). `None` when either class is absent. NaN scores rank above every number.
pub fn roc_auc(labels: &[bool], scores: &[f32]) -> Option<f64> {
    debug_assert_eq!(labels.len(), scores.len());
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    let positives = pairs.iter().filter(|p| p.1).count() as u64;
    let negatives = pairs.len() as u64 - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut positive_rank_sum = 0f64;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i + 1;
        // `==`, not `total_cmp`: −0 and +0 are the same score.
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their average.
        let rank = (i + 1 + j) as f64 / 2.0;
        let tied_positives = pairs[i..j].iter().filter(|p| p.1).count();
        positive_rank_sum += rank * tied_positives as f64;
        i = j;
    }
    let p = positives as f64;
    Some((positive_rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Largest step between two kept points of a ROC curve, in FPR or TPR: a
/// curve of at most a few hundred points draws as the full one does.
const ROC_STEP: f64 = 0.005;

/// The ROC curve of `scores` (higher: more anomalous) as `[fpr, tpr]`
/// points from `[0, 0]` to `[1, 1]`, one per distinct score, thinned to
/// steps of [`ROC_STEP`] and rounded to 4 decimals; empty when one class is
/// absent.
pub fn roc_curve(labels: &[bool], scores: &[f32]) -> Vec<[f64; 2]> {
    debug_assert_eq!(labels.len(), scores.len());
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    let positives = pairs.iter().filter(|p| p.1).count() as f64;
    let negatives = pairs.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return Vec::new();
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let round = |v: f64| (v * 1e4).round() / 1e4;
    let mut curve = vec![[0.0, 0.0]];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            if pairs[j].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        i = j;
        let point = [round(fp / negatives), round(tp / positives)];
        let last = curve[curve.len() - 1];
        if i == pairs.len() || (point[0] - last[0]).max(point[1] - last[1]) >= ROC_STEP {
            curve.push(point);
        }
    }
    curve
}

/// The quality of one detector on one split, as written to metrics files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quality {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// On scores; `None` (JSON null) when scores were not given or one class is absent.
    pub roc_auc: Option<f64>,
    /// `[[tn, fp], [fn, tp]]` (rows: true class 0/1; columns: predicted class 0/1).
    pub confusion: [[u64; 2]; 2],
    /// The ROC curve of the scores ([`roc_curve`]); empty without scores.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roc: Vec<[f64; 2]>,
}

impl Quality {
    pub fn from_predictions(labels: &[bool], predicted: &[bool], scores: Option<&[f32]>) -> Self {
        let c = confusion(labels, predicted);
        Self {
            accuracy: c.accuracy(),
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f1(),
            roc_auc: scores.and_then(|s| roc_auc(labels, s)),
            confusion: c.matrix(),
            roc: scores.map(|s| roc_curve(labels, s)).unwrap_or_default(),
        }
    }

    /// Predicts anomalous where `score >= threshold`.
    pub fn at_threshold(labels: &[bool], scores: &[f32], threshold: f32) -> Self {
        let predicted: Vec<bool> = scores.iter().map(|&s| s >= threshold).collect();
        Self::from_predictions(labels, &predicted, Some(scores))
    }
}

#[cfg(test)]
mod tests;
