use super::*;

const T: bool = true;
const F: bool = false;

#[test]
fn confusion_and_ratios_by_hand() {
    let c = confusion(&[T, T, F, F, T], &[T, F, F, T, T]);
    assert_eq!(
        c,
        Confusion {
            tp: 2,
            fp: 1,
            tn: 1,
            fn_: 1
        }
    );
    assert_eq!(c.accuracy(), 3.0 / 5.0);
    assert_eq!(c.precision(), 2.0 / 3.0);
    assert_eq!(c.recall(), 2.0 / 3.0);
    assert_eq!(c.f1(), 4.0 / 6.0);
    assert_eq!(c.matrix(), [[1, 1], [1, 2]]);
    let c = confusion(&[T, T, T, F], &[T, F, F, F]);
    // precision 1, recall 1/3: F1 = 2·1·(1/3) / (4/3) = 1/2.
    assert_eq!(c.f1(), 0.5);
}

#[test]
fn undefined_ratios_are_zero() {
    let c = confusion(&[F, F], &[F, F]);
    assert_eq!((c.accuracy(), c.precision(), c.recall(), c.f1()), (1.0, 0.0, 0.0, 0.0));
    let c = confusion(&[], &[]);
    assert_eq!((c.accuracy(), c.precision(), c.recall(), c.f1()), (0.0, 0.0, 0.0, 0.0));
    let c = confusion(&[T, T], &[F, F]);
    assert_eq!((c.accuracy(), c.precision(), c.recall(), c.f1()), (0.0, 0.0, 0.0, 0.0));
}

#[test]
fn roc_auc_by_hand() {
    // The usual example: 3 of 4 positive/negative pairs ordered correctly.
    assert_eq!(roc_auc(&[F, F, T, T], &[0.1, 0.4, 0.35, 0.8]), Some(0.75));
    assert_eq!(roc_auc(&[F, T], &[0.0, 1.0]), Some(1.0));
    assert_eq!(roc_auc(&[F, T], &[1.0, 0.0]), Some(0.0));
}

#[test]
fn roc_auc_ties_count_half() {
    // Pairs (positive, negative): (0.5, 0.5) ½, (0.5, 0.2) 1, (0.9, 0.5) 1, (0.9, 0.2) 1 → 3.5 / 4.
    assert_eq!(roc_auc(&[F, T, F, T], &[0.5, 0.5, 0.2, 0.9]), Some(0.875));
    assert_eq!(roc_auc(&[F, T, F, T, T], &[1.0; 5]), Some(0.5));
    // -0 and +0 are one tie.
    assert_eq!(roc_auc(&[F, T], &[-0.0, 0.0]), Some(0.5));
}

#[test]
fn roc_auc_needs_both_classes() {
    assert_eq!(roc_auc(&[T, T], &[0.1, 0.2]), None);
    assert_eq!(roc_auc(&[F], &[0.1]), None);
    assert_eq!(roc_auc(&[], &[]), None);
}

#[test]
fn roc_auc_is_on_scores_not_predictions() {
    // Hard predictions would all be 1 at threshold 0.1; the scores still rank every positive first.
    let q = Quality::at_threshold(&[F, F, T, T], &[0.2, 0.3, 0.6, 0.9], 0.1);
    assert_eq!(q.roc_auc, Some(1.0));
    assert_eq!(q.confusion, [[0, 2], [0, 2]]);
    assert_eq!(q.precision, 0.5);
    let q = Quality::from_predictions(&[F, T], &[F, T], None);
    assert_eq!(q.roc_auc, None);
    assert_eq!(q.f1, 1.0);
}

#[test]
fn quality_json_layout() {
    let q = Quality::at_threshold(&[F, T, T], &[0.0, 1.0, 0.0], 0.5);
    let json = serde_json::to_string(&q).unwrap();
    assert_eq!(
        json,
        r#"{"accuracy":0.6666666666666666,"precision":1.0,"recall":0.5,"f1":0.6666666666666666,"roc_auc":0.75,"confusion":[[1,0],[1,1]],"roc":[[0.0,0.0],[0.0,0.5],[1.0,1.0]]}"#
    );
    assert_eq!(serde_json::from_str::<Quality>(&json).unwrap(), q);
}

#[test]
fn roc_curve_by_hand_and_its_area_is_the_auc() {
    // Scores 0.8 (T), 0.4 (F), 0.35 (T), 0.1 (F).
    let labels = [F, F, T, T];
    let scores = [0.1, 0.4, 0.35, 0.8];
    let curve = roc_curve(&labels, &scores);
    assert_eq!(curve, [[0.0, 0.0], [0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [1.0, 1.0]]);
    let area: f64 = curve
        .windows(2)
        .map(|w| (w[1][0] - w[0][0]) * (w[1][1] + w[0][1]) / 2.0)
        .sum();
    assert_eq!(Some(area), roc_auc(&labels, &scores));
    assert!(roc_curve(&[T, T], &[0.1, 0.2]).is_empty());
    // Many scores: thinned, still from (0, 0) to (1, 1), never backwards.
    let labels: Vec<bool> = (0..10_000).map(|i| i % 7 == 0).collect();
    let scores: Vec<f32> = (0..10_000).map(|i| ((i * 7919) % 10_007) as f32).collect();
    let curve = roc_curve(&labels, &scores);
    assert!(curve.len() < 500, "{} points", curve.len());
    assert_eq!((curve[0], curve[curve.len() - 1]), ([0.0, 0.0], [1.0, 1.0]));
    assert!(curve.windows(2).all(|w| w[1][0] >= w[0][0] && w[1][1] >= w[0][1]));
}
