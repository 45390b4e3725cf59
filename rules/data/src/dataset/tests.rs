use std::collections::BTreeSet;
use std::time::Instant;

use super::*;
use crate::testutil::{MemoryRows, generated_csv};
use crate::{CsvBytes, GeneratorParams, LabelRule, generate, zscore_baseline};

/// Recovers the row index of every time step of every window from channel 0 (which `MemoryRows::indexed` sets to the
/// row index).
fn window_rows(split: &Split, meta: &DatasetMeta) -> Vec<Vec<u64>> {
    let n = meta.normalization();
    (0..split.len())
        .map(|i| {
            split.window(i)[..split.length()]
                .iter()
                .map(|&x| {
                    (f64::from(x) * f64::from(n.scale) * f64::from(n.std[0]) + f64::from(n.mean[0])).round() as u64
                })
                .collect()
        })
        .collect()
}

/// The default parameters without the int8 grid, so that the tests can read row indices and statistics back from the
/// values exactly.
fn exact() -> WindowParams {
    WindowParams {
        int8_grid: false,
        ..WindowParams::default()
    }
}

fn one_split(length: usize, stride: usize, label: LabelRule) -> WindowParams {
    WindowParams {
        length,
        stride,
        label,
        fractions: [1.0, 0.0, 0.0],
        block: 1000,
        ..exact()
    }
}

#[test]
fn window_geometry_is_pinned() {
    let p = one_split(4, 2, LabelRule::Any);
    assert_eq!(p.window_rows(0), 0..4);
    assert_eq!(p.window_rows(3), 6..10);
    assert_eq!(p.label_row(3), 9);
    assert_eq!(p.window_count(3), 0);
    assert_eq!(p.window_count(4), 1);
    assert_eq!(p.window_count(5), 1);
    assert_eq!(p.window_count(12), 5);
    assert_eq!(p.completed_at(3), Some(0));
    assert_eq!(p.completed_at(4), None);
    assert_eq!(p.completed_at(5), Some(1));
    assert_eq!(p.windows_containing(0), 0..1);
    assert_eq!(p.windows_containing(5), 1..3);
    assert_eq!(p.border_gap(), 2);
    let next = one_split(4, 2, LabelRule::Next);
    assert_eq!(next.label_row(3), 10);
    assert_eq!(next.window_count(12), 4);
    assert_eq!(next.completed_at(4), Some(0));
    assert_eq!(next.border_gap(), 3);
}

#[test]
fn windows_hold_exactly_their_rows_channels_first() {
    let mut rows = MemoryRows::indexed(12, &[5]);
    let d = build_dataset(&mut rows, &one_split(4, 2, LabelRule::Any)).unwrap();
    assert_eq!(d.train.shape, [5, 17, 4]);
    let expected: Vec<Vec<u64>> = (0..5).map(|i| (2 * i..2 * i + 4).collect()).collect();
    assert_eq!(window_rows(&d.train, &d.meta), expected);
    // Channel 1 follows channel 0 in memory: x[n][c][t].
    let n = d.meta.normalization();
    let raw = |x: f32, c: usize| f64::from(x) * 3.0 * f64::from(n.std[c]) + f64::from(n.mean[c]);
    let w = d.train.window(1);
    // Channel 1 of row r is (4·r mod 97) + 1.
    assert_eq!(raw(w[4], 1).round(), 9.0);
    assert_eq!(raw(w[5], 1).round(), 13.0);
}

#[test]
fn labels_any_last_and_next_are_pinned() {
    // Row 5 is anomalous; windows are rows [0,4) [2,6) [4,8) [6,10) [8,12).
    let mut rows = MemoryRows::indexed(12, &[5]);
    let any = build_dataset(&mut rows, &one_split(4, 2, LabelRule::Any)).unwrap();
    assert_eq!(any.train.y, [0, 1, 1, 0, 0]);
    let last = build_dataset(&mut rows, &one_split(4, 2, LabelRule::Last)).unwrap();
    assert_eq!(last.train.y, [0, 1, 0, 0, 0]);
    // Next (Kenning's): the row after the window, rows 4, 6, 8, 10; the window [8,12) has no row after it.
    let mut rows = MemoryRows::indexed(12, &[4]);
    let next = build_dataset(&mut rows, &one_split(4, 2, LabelRule::Next)).unwrap();
    assert_eq!(next.train.y, [1, 0, 0, 0]);
    assert_eq!(window_rows(&next.train, &next.meta)[0], [0, 1, 2, 3]);
    // Stride 1, the anomaly at the first and last row of a window.
    let mut rows = MemoryRows::indexed(8, &[3]);
    let any = build_dataset(&mut rows, &one_split(3, 1, LabelRule::Any)).unwrap();
    assert_eq!(any.train.y, [0, 1, 1, 1, 0, 0]);
    let last = build_dataset(&mut rows, &one_split(3, 1, LabelRule::Last)).unwrap();
    assert_eq!(last.train.y, [0, 1, 0, 0, 0, 0]);
}

#[test]
fn skip_and_max_rows_select_a_slice() {
    let mut rows = MemoryRows::indexed(100, &[]);
    let p = WindowParams {
        skip_rows: 10,
        max_rows: Some(20),
        ..one_split(4, 4, LabelRule::Any)
    };
    let d = build_dataset(&mut rows, &p).unwrap();
    assert_eq!(d.meta.rows, 20);
    let got = window_rows(&d.train, &d.meta);
    assert_eq!(got.first().map(|w| w[0]), Some(10));
    assert_eq!(got.last().map(|w| w[3]), Some(29));
}

/// 20 000 indexed rows with a 60-row anomaly every 700 rows.
fn segmented_rows() -> MemoryRows {
    let anomalous: Vec<u64> = (0..20_000u64).filter(|r| r % 700 >= 300 && r % 700 < 360).collect();
    MemoryRows::indexed(20_000, &anomalous)
}

#[test]
fn splits_are_stratified_and_share_no_row() {
    let mut rows = segmented_rows();
    let params = exact();
    let d = build_dataset(&mut rows, &params).unwrap();
    let total: usize = [&d.train, &d.val, &d.test].iter().map(|s| s.len()).sum();
    assert_eq!(total as u64, d.meta.windows - d.meta.dropped_windows);
    for (split, share) in [(&d.train, 0.7), (&d.val, 0.15), (&d.test, 0.15)] {
        let c = split.counts();
        assert!(c.positive > 0 && c.negative > 0, "{c:?}");
        let got = split.len() as f64 / total as f64;
        assert!((got - share).abs() < 0.05, "share {got} vs {share}");
    }
    let sets: Vec<BTreeSet<u64>> = [&d.train, &d.val, &d.test]
        .iter()
        .map(|s| window_rows(s, &d.meta).into_iter().flatten().collect())
        .collect();
    assert!(sets[0].is_disjoint(&sets[1]) && sets[0].is_disjoint(&sets[2]) && sets[1].is_disjoint(&sets[2]));
    // Drops: 4 windows at the end of every block but the last.
    let blocks = d.meta.windows.div_ceil(64);
    assert_eq!(d.meta.dropped_windows, 4 * (blocks - 1));
    assert_eq!(d.meta.counts.test, d.test.counts());
}

#[test]
fn split_counts_keep_every_split_when_blocks_allow() {
    use crate::split::counts;
    let f = [0.7, 0.15, 0.15];
    assert_eq!(counts(0, f), [0, 0, 0]);
    assert_eq!(counts(1, f), [1, 0, 0]);
    assert_eq!(counts(2, f), [1, 0, 1]);
    assert_eq!(counts(3, f), [1, 1, 1]);
    assert_eq!(counts(10, f), [6, 2, 2]);
    assert_eq!(counts(100, f), [70, 15, 15]);
    assert_eq!(counts(5, [1.0, 0.0, 0.0]), [5, 0, 0]);
}

#[test]
fn the_seed_changes_the_assignment_not_the_counts_much() {
    let labels: Vec<bool> = (0..6400).map(|i| i % 500 < 20).collect();
    let a = crate::assign(&labels, &WindowParams::default());
    let b = crate::assign(
        &labels,
        &WindowParams {
            seed: 1,
            ..WindowParams::default()
        },
    );
    assert_ne!(a, b);
    assert_eq!(a, crate::assign(&labels, &WindowParams::default()));
}

#[test]
fn normalization_is_fitted_on_train_rows_only() {
    let params = exact();
    let mut rows = segmented_rows();
    let a = build_dataset(&mut rows, &params).unwrap();
    // A row used only by test windows: change it wildly.
    let test_row = window_rows(&a.test, &a.meta)[0][5] as usize;
    rows.rows[test_row].0[3] += 1.0e4;
    let b = build_dataset(&mut rows, &params).unwrap();
    assert_eq!(a.meta.mean, b.meta.mean);
    assert_eq!(a.meta.std, b.meta.std);
    assert_eq!(a.train, b.train);
    assert_eq!(a.val, b.val);
    assert_ne!(a.test, b.test);
    // A training row moves the statistics.
    let train_row = window_rows(&a.train, &a.meta)[0][5] as usize;
    rows.rows[train_row].0[3] += 1.0e4;
    let c = build_dataset(&mut rows, &params).unwrap();
    assert_ne!(a.meta.mean[3], c.meta.mean[3]);
}

#[test]
fn normalized_training_data_has_zero_mean_and_unit_scaled_std() {
    let mut rows = segmented_rows();
    for (v, _) in &mut rows.rows {
        v[5] = 42.0;
    }
    let p = WindowParams { stride: 16, ..exact() };
    let d = build_dataset(&mut rows, &p).unwrap();
    assert_eq!(d.meta.std[5], 1.0);
    assert_eq!(d.meta.mean[5], 42.0);
    // With stride = length every training row is in exactly one training window.
    for c in [1usize, 5, 9] {
        let values: Vec<f64> = (0..d.train.len())
            .flat_map(|i| d.train.window(i)[c * 16..(c + 1) * 16].to_vec())
            .map(f64::from)
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 1e-4, "channel {c}: mean {mean}");
        let want = if c == 5 { 0.0 } else { 1.0 / 9.0 };
        assert!((var - want).abs() < 1e-4, "channel {c}: var {var}");
    }
}

#[test]
fn the_int8_grid_holds_exactly_what_a_device_receives() {
    let mut rows = segmented_rows();
    let grid = build_dataset(&mut rows, &WindowParams::default()).unwrap();
    let plain = build_dataset(&mut rows, &exact()).unwrap();
    assert_eq!(grid.meta.mean, plain.meta.mean);
    let mut moved = 0;
    for (g, p) in grid.train.window(0).iter().zip(plain.train.window(0)) {
        let q = (p * 128.0).round().clamp(-128.0, 127.0);
        assert_eq!(*g, q / 128.0, "{p} rounds to {q}/128");
        assert!((-1.0..=127.0 / 128.0).contains(g));
        moved += usize::from(g != p);
    }
    assert!(moved > 0, "the grid changed no value");
}

#[test]
fn bad_params_and_too_few_rows() {
    let mut rows = MemoryRows::indexed(10, &[]);
    for p in [
        WindowParams {
            length: 0,
            ..WindowParams::default()
        },
        WindowParams {
            stride: 0,
            ..WindowParams::default()
        },
        WindowParams {
            fractions: [0.5, 0.2, 0.2],
            ..WindowParams::default()
        },
        WindowParams {
            fractions: [0.0, 0.5, 0.5],
            ..WindowParams::default()
        },
        WindowParams {
            fractions: [1.2, -0.1, -0.1],
            ..WindowParams::default()
        },
        WindowParams {
            block: 4,
            ..WindowParams::default()
        },
        WindowParams {
            scale: 0.0,
            ..WindowParams::default()
        },
    ] {
        assert!(
            matches!(build_dataset(&mut rows, &p), Err(DataError::Params(_))),
            "{p:?}"
        );
    }
    let err = build_dataset(&mut rows, &WindowParams::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "dataset: 10 rows (after skipping 0) are too few for one window of 16 rows"
    );
    assert!(serde_json::from_str::<WindowParams>(r#"{"lenght": 3}"#).is_err());
    let p: WindowParams = serde_json::from_str(r#"{"length": 8, "label": "last"}"#).unwrap();
    assert_eq!((p.length, p.stride, p.label), (8, 4, LabelRule::Last));
}

#[test]
fn deterministic_tensors_and_meta_that_round_trip() {
    let (csv, _) = generated_csv(6_000, 5);
    let build = || {
        let mut source = CsvBytes {
            name: "gen.csv".into(),
            bytes: &csv,
        };
        build_dataset(&mut source, &WindowParams::default()).unwrap()
    };
    let (a, b) = (build(), build());
    for part in crate::Part::ALL {
        let bytes = a.split(part).to_safetensors().unwrap();
        assert_eq!(bytes, b.split(part).to_safetensors().unwrap());
        assert_eq!(&Split::from_safetensors(&bytes).unwrap(), a.split(part));
    }
    let json = a.meta.to_json().unwrap();
    assert_eq!(json, b.meta.to_json().unwrap());
    assert!(json.ends_with("}\n"));
    assert_eq!(DatasetMeta::from_json(&json).unwrap(), a.meta);
    assert_eq!(a.meta.source, "csv:gen.csv");
    assert_eq!(a.meta.channels[16], "cso1");
}

#[test]
fn safetensors_errors() {
    assert!(matches!(
        Split::from_safetensors(b"not safetensors"),
        Err(DataError::Tensors(_))
    ));
    let bad = Split {
        x: vec![0.0; 5],
        shape: [1, 17, 2],
        y: vec![0],
    };
    assert!(matches!(bad.to_safetensors(), Err(DataError::Tensors(_))));
    // y stored as F32: rejected.
    let x = vec![0u8; 17 * 2 * 4];
    let y = vec![0u8; 4];
    let views = [
        (
            "x",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 17, 2], &x).unwrap(),
        ),
        (
            "y",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &y).unwrap(),
        ),
    ];
    let bytes = safetensors::serialize(views, None).unwrap();
    assert!(matches!(Split::from_safetensors(&bytes), Err(DataError::Tensors(_))));
    let empty = Split {
        x: vec![],
        shape: [0, 17, 16],
        y: vec![],
    };
    assert_eq!(
        Split::from_safetensors(&empty.to_safetensors().unwrap()).unwrap(),
        empty
    );
}

/// The property the generator exists for: a per-channel z-score threshold finds few of its anomalies. Also the full
/// default size (200 000 rows) end to end, which must stay fast.
#[test]
fn zscore_baseline_is_weak_on_generated_data_at_full_size() {
    let started = Instant::now();
    let mut csv = Vec::new();
    let generated = generate(&GeneratorParams::default(), &mut csv).unwrap();
    let mut source = CsvBytes {
        name: "cats_synth.csv".into(),
        bytes: &csv,
    };
    let mut d = build_dataset(&mut source, &WindowParams::default()).unwrap();
    d.meta.anomaly_segments = Some(generated.segments);
    let b = zscore_baseline(&d.val, &d.train.of_class(true), &d.test, d.meta.scale).unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "200k rows ({} bytes of CSV): anomalous {:.4}; windows train/val/test {}/{}/{} (positive {}/{}/{}); \
         z-score threshold {:.3}: val F1 {:.3}, test F1 {:.3}, precision {:.3}, recall {:.3}, AUC {:?}; {elapsed:?}",
        csv.len(),
        generated.anomalous_rows as f64 / generated.rows as f64,
        d.train.len(),
        d.val.len(),
        d.test.len(),
        d.meta.counts.train.positive,
        d.meta.counts.val.positive,
        d.meta.counts.test.positive,
        b.threshold,
        b.validation.f1,
        b.test.f1,
        b.test.precision,
        b.test.recall,
        b.test.roc_auc,
    );
    assert!(
        b.test.f1 < 0.5,
        "z-score baseline F1 {} is too high: the anomalies are too easy",
        b.test.f1
    );
    assert!(elapsed.as_secs_f64() < 5.0, "{elapsed:?}");
}
