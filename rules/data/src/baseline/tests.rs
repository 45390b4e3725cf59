use super::*;

fn split(windows: &[[f32; 2]], labels: &[u8]) -> Split {
    // Two time steps, one non-zero channel per window.
    let mut x = Vec::new();
    for w in windows {
        let mut values = [0f32; 34];
        values[..2].copy_from_slice(w);
        x.extend(values);
    }
    Split {
        x,
        shape: [windows.len(), 17, 2],
        y: labels.to_vec(),
    }
}

#[test]
fn scores_are_max_abs_times_scale() {
    let s = split(&[[0.1, -0.5], [0.2, 0.3]], &[1, 0]);
    assert_eq!(zscore_scores(&s, 3.0), [1.5, 0.90000004]);
}

#[test]
fn threshold_from_validation_applied_to_test() {
    let val = split(&[[1.0, 0.0], [0.1, 0.0], [0.9, 0.0], [0.2, 0.0]], &[1, 0, 1, 0]);
    let test = split(&[[0.95, 0.0], [0.3, 0.0], [0.5, 0.0]], &[1, 0, 1]);
    let b = zscore_baseline(&val, &Split::default(), &test, 2.0).unwrap();
    // Every threshold in (0.4, 1.8] separates the validation windows; the lowest is taken.
    assert_eq!(b.threshold, 0.4f32.next_up());
    assert_eq!(b.validation.f1, 1.0);
    assert_eq!(b.test.confusion, [[0, 1], [0, 2]]);
    assert_eq!(b.test.roc_auc, Some(1.0));
    let empty = Split {
        x: vec![],
        shape: [0, 17, 2],
        y: vec![],
    };
    assert!(matches!(
        zscore_baseline(&empty, &Split::default(), &test, 2.0),
        Err(DataError::Dataset(_))
    ));
}

/// Solves `a · x = b` (n×n, row-major) by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .unwrap();
        for k in 0..n {
            a.swap(col * n + k, pivot * n + k);
        }
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row * n + col] / a[col * n + col];
            for k in col..n {
                a[row * n + k] -= f * a[col * n + k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row * n + k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row * n + row];
    }
    x
}

/// Per-window features a model could learn: each channel's roughness (log mean squared first difference: noise
/// bursts raise it, a stuck sensor drops it) and each telemetry channel's last value minus a linear prediction from
/// all other channels' last values (shifts, drifts and decoupling break the relation between channels).
struct MultiChannel {
    rough_mean: Vec<f64>,
    rough_std: Vec<f64>,
    coef: Vec<Vec<f64>>,
    resid_std: Vec<f64>,
}

fn roughness(w: &[f32], len: usize, c: usize) -> f64 {
    let s = &w[c * len..(c + 1) * len];
    let d: f64 = s.windows(2).map(|p| f64::from(p[1] - p[0]).powi(2)).sum::<f64>() / (len - 1) as f64;
    (d + 1e-9).ln()
}

fn regressors(w: &[f32], len: usize, k: usize) -> Vec<f64> {
    let mut r: Vec<f64> = (0..17)
        .filter(|&c| c != k)
        .map(|c| f64::from(w[c * len + len - 1]))
        .collect();
    r.push(1.0);
    r
}

impl MultiChannel {
    fn fit(train: &Split) -> Self {
        let len = train.length();
        let nominal: Vec<&[f32]> = (0..train.len())
            .filter(|&i| train.y[i] == 0)
            .map(|i| train.window(i))
            .collect();
        let n = nominal.len() as f64;
        let mut rough_mean = vec![0.0; 17];
        let mut rough_std = vec![0.0; 17];
        for c in 0..17 {
            let v: Vec<f64> = nominal.iter().map(|w| roughness(w, len, c)).collect();
            rough_mean[c] = v.iter().sum::<f64>() / n;
            rough_std[c] = (v.iter().map(|x| (x - rough_mean[c]).powi(2)).sum::<f64>() / n)
                .sqrt()
                .max(1e-9);
        }
        let mut coef = Vec::new();
        let mut resid_std = Vec::new();
        for k in 7..17 {
            let mut ata = vec![0.0; 17 * 17];
            let mut atb = vec![0.0; 17];
            for w in &nominal {
                let r = regressors(w, len, k);
                let y = f64::from(w[k * len + len - 1]);
                for i in 0..17 {
                    atb[i] += r[i] * y;
                    for j in 0..17 {
                        ata[i * 17 + j] += r[i] * r[j];
                    }
                }
            }
            for i in 0..17 {
                ata[i * 17 + i] += 1e-6;
            }
            let beta = solve(ata, atb);
            let resid: Vec<f64> = nominal
                .iter()
                .map(|w| {
                    let r = regressors(w, len, k);
                    f64::from(w[k * len + len - 1]) - r.iter().zip(&beta).map(|(a, b)| a * b).sum::<f64>()
                })
                .collect();
            resid_std.push((resid.iter().map(|x| x * x).sum::<f64>() / n).sqrt().max(1e-9));
            coef.push(beta);
        }
        Self {
            rough_mean,
            rough_std,
            coef,
            resid_std,
        }
    }

    fn scores(&self, split: &Split) -> Vec<f32> {
        let len = split.length();
        (0..split.len())
            .map(|i| {
                let w = split.window(i);
                let rough = (0..17).map(|c| ((roughness(w, len, c) - self.rough_mean[c]) / self.rough_std[c]).abs());
                let resid = (7..17).map(|k| {
                    let r = regressors(w, len, k);
                    let pred: f64 = r.iter().zip(&self.coef[k - 7]).map(|(a, b)| a * b).sum();
                    ((f64::from(w[k * len + len - 1]) - pred) / self.resid_std[k - 7]).abs()
                });
                rough.chain(resid).fold(0f64, f64::max) as f32
            })
            .collect()
    }
}

/// The generator's other half: what a per-channel threshold misses, a detector that relates channels over time
/// finds. This one is a hand-made stand-in for a trained model (roughness per channel, cross-channel regression).
#[test]
fn a_multichannel_detector_beats_the_zscore_baseline() {
    use crate::{CsvBytes, GeneratorParams, WindowParams, build_dataset, generate};
    let mut csv = Vec::new();
    generate(
        &GeneratorParams {
            rows: 100_000,
            seed: 3,
            ..GeneratorParams::default()
        },
        &mut csv,
    )
    .unwrap();
    let d = build_dataset(
        &mut CsvBytes {
            name: "gen".into(),
            bytes: &csv,
        },
        &WindowParams::default(),
    )
    .unwrap();
    // Both learn from nominal windows only, so both are judged with the training split's anomalous windows too.
    let held_out = d.train.of_class(true);
    let z = zscore_baseline(&d.val, &held_out, &d.test, d.meta.scale).unwrap();
    let model = MultiChannel::fit(&d.train);
    let val_scores = model.scores(&d.val);
    let threshold = crate::Validation {
        labels: &d.val.labels(),
        scores: &val_scores,
        held_out: &model.scores(&held_out),
    }
    .best_threshold();
    let test = Quality::at_threshold(&d.test.labels(), &model.scores(&d.test), threshold);
    eprintln!(
        "100k rows, seed 3: z-score test F1 {:.3} (AUC {:?}); multi-channel test F1 {:.3} (precision {:.3}, recall \
         {:.3}, AUC {:?})",
        z.test.f1, z.test.roc_auc, test.f1, test.precision, test.recall, test.roc_auc
    );
    assert!(z.test.f1 < 0.5);
    assert!(
        test.f1 > z.test.f1 + 0.2,
        "multi-channel F1 {} vs z-score {}",
        test.f1,
        z.test.f1
    );
}
