use super::*;

const T: bool = true;
const F: bool = false;

#[test]
fn threshold_maximizes_f1_with_ties_to_the_smaller() {
    // Thresholds 3: F1 2/3; 2: 1/2; 1: 4/5 → 1.
    assert_eq!(best_f1_threshold(&[T, F, T], &[3.0, 2.0, 1.0]), 1.0);
    // 4: 2/3, 3: 2/4, 2: 2/5, 1: 4/6 = 2/3 → a tie with 4, resolved to the smaller.
    assert_eq!(best_f1_threshold(&[T, F, F, T], &[4.0, 3.0, 2.0, 1.0]), 1.0);
    // Equal scores are one threshold.
    assert_eq!(best_f1_threshold(&[T, F, F], &[2.0, 2.0, 1.0]), 2.0);
    assert_eq!(best_f1_threshold(&[], &[]), f32::INFINITY);
}

#[test]
fn threshold_goes_down_to_just_above_the_highest_nominal_score() {
    // One anomalous segment far above 2000 nominal windows: every threshold in (1999, 5000] makes the same
    // decisions, and the lowest is taken.
    let nominal: Vec<f32> = (0..2000).map(|i| i as f32).collect();
    let (scores, labels) = with(&nominal, &[5000.0, 6000.0]);
    assert_eq!(best_f1_threshold(&labels, &scores), 1999.0f32.next_up());

    // The best threshold among the nominal scores stays where it is.
    let (scores, labels) = with(&nominal, &[1000.5; 10]);
    assert_eq!(best_f1_threshold(&labels, &scores), 1000.5);

    // No nominal window: nothing to go down to.
    assert_eq!(best_f1_threshold(&[T, T], &[1.0, 2.0]), 1.0);
}

/// Nominal windows' scores followed by anomalous ones', with their labels.
fn with(nominal: &[f32], anomalous: &[f32]) -> (Vec<f32>, Vec<bool>) {
    let scores = nominal.iter().chain(anomalous).copied().collect();
    let labels = nominal.iter().map(|_| F).chain(anomalous.iter().map(|_| T)).collect();
    (scores, labels)
}

#[test]
fn held_out_anomalies_count_at_the_splits_share() {
    // Validation: one anomalous window (score 10) among nominal ones at 0..=4. Held out: three anomalous windows
    // the detector scores 3.5, 3.5 and 10. Alone, the split is best cut at 10 (F1 1). With the held-out windows,
    // weighted 1/4 each: at 10, tp 2 → F1 = 2·2·1 / (2·2·1 + 0 + 2·1) = 2/3; at 3.5, tp 4, fp 1 →
    // 2·4 / (2·4 + 4 + 0) = 2/3, a tie, so the smaller threshold; at 3, tp 4, fp 2 → 8/16.
    let (scores, labels) = with(&[0.0, 1.0, 2.0, 3.0, 4.0], &[10.0]);
    let alone = Validation::split(&labels, &scores);
    assert_eq!(alone.best_threshold(), 4.0f32.next_up());
    assert_eq!(alone.f1_at(alone.best_threshold()), 1.0);
    let pooled = Validation {
        labels: &labels,
        scores: &scores,
        held_out: &[3.5, 3.5, 10.0],
    };
    assert_eq!(pooled.best_threshold(), 3.5);
    assert!((pooled.f1_at(3.5) - 2.0 / 3.0).abs() < 1e-12);
    assert!((pooled.f1_at(10.0) - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(pooled.f1_at(3.0), 0.5);
}

#[test]
fn held_out_anomalies_weigh_fully_when_the_split_has_none() {
    let (scores, labels) = with(&[0.0, 1.0], &[]);
    let pooled = Validation {
        labels: &labels,
        scores: &scores,
        held_out: &[5.0, 0.5],
    };
    // At 0.5: tp 2, fp 1 → 4/5; at 5: tp 1 → 2/3.
    assert_eq!(pooled.best_threshold(), 0.5);
    assert_eq!(pooled.f1_at(0.5), 0.8);
    assert_eq!(Validation::split(&labels, &scores).f1_at(0.5), 0.0);
}
