//! Anomaly thresholds chosen on validation scores, and the F1 a detector is ranked by.
//!
//! A label-free detector (a forecaster, an autoencoder, the z-score detector) learns from nominal windows only, so
//! the training split's anomalous windows are as unseen to it as the validation split's. With few anomalous
//! segments in a split, the validation split alone may hold a handful of runs, all of kinds the detector happens to
//! miss (or catch); its F1 there says little about new data. Such a detector is therefore judged on the validation
//! split together with those held-out anomalous windows. Each anomalous window is weighted so that anomalies keep
//! the validation split's share: precision, and so the F1-best threshold, are those of the split's own prevalence,
//! while recall is measured over many more segments. Without held-out windows everything reduces to plain F1 on the
//! validation split, which is what a classifier (trained on the training split's anomalies) gets.

/// Scores of a validation split and of anomalous windows from outside it that the detector never learned from.
#[derive(Clone, Copy, Debug)]
pub struct Validation<'a> {
    pub labels: &'a [bool],
    pub scores: &'a [f32],
    /// Scores of held-out anomalous windows; empty for a detector trained on labels.
    pub held_out: &'a [f32],
}

impl<'a> Validation<'a> {
    /// The validation split alone.
    pub fn split(labels: &'a [bool], scores: &'a [f32]) -> Self {
        Self {
            labels,
            scores,
            held_out: &[],
        }
    }

    /// How F1 counts these windows (computed once per sweep, not per threshold).
    fn weighting(&self) -> Weighting {
        let own = self.labels.iter().filter(|&&l| l).count() as u128;
        let positives = own + self.held_out.len() as u128;
        // 1 when the split has no anomalous window, so that held-out ones still count.
        let (a, b) = if own == 0 {
            (positives, positives)
        } else {
            (own, positives)
        };
        Weighting { a, b, positives }
    }

    /// F1 (weighted as above) of predicting anomalous where `score >= threshold`; 0 without any positive.
    pub fn f1_at(&self, threshold: f32) -> f64 {
        let mut tp = self.held_out.iter().filter(|&&s| s >= threshold).count() as u128;
        let mut fp = 0u128;
        for (&s, &l) in self.scores.iter().zip(self.labels) {
            if s >= threshold {
                if l {
                    tp += 1;
                } else {
                    fp += 1;
                }
            }
        }
        let (num, den) = self.weighting().fraction(tp, fp);
        if den == 0 { 0.0 } else { num as f64 / den as f64 }
    }

    /// The threshold that maximizes F1, sweeping every distinct score from the highest down; F1s are compared as
    /// exact fractions so ties are real ties, and a tie goes to the smaller threshold, which catches more.
    ///
    /// When the best threshold lies above every nominal score, each threshold down to just above the highest
    /// nominal score makes the same decisions on these windows, and the lowest of them is returned. With only a few
    /// anomalous segments, the best one sits just under the weakest window of the segments caught cleanly, often far
    /// above every nominal score; there it would miss every subtler anomaly of new data for no precision on these
    /// windows.
    pub fn best_threshold(&self) -> f32 {
        let mut pairs: Vec<(f32, bool)> = self.scores.iter().copied().zip(self.labels.iter().copied()).collect();
        pairs.extend(self.held_out.iter().map(|&s| (s, true)));
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let weighting = self.weighting();
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
            let (num, den) = weighting.fraction(tp, fp);
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
}

/// An anomalous window counts `a / b`: the split's anomalous windows over all `positives` of them.
struct Weighting {
    a: u128,
    b: u128,
    positives: u128,
}

impl Weighting {
    /// Weighted F1 as an exact fraction: `2·tp·a / (2·tp·a + fp·b + (positives − tp)·a)`.
    fn fraction(&self, tp: u128, fp: u128) -> (u128, u128) {
        let num = 2 * tp * self.a;
        (num, num + fp * self.b + (self.positives - tp) * self.a)
    }
}

/// The F1-best threshold on a validation split alone (see [`Validation::best_threshold`]).
pub fn best_f1_threshold(labels: &[bool], scores: &[f32]) -> f32 {
    Validation::split(labels, scores).best_threshold()
}

#[cfg(test)]
mod tests;
