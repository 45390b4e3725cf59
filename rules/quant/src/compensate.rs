//! Rounding that compensates its own errors, after Optimal Brain
//! Quantization (Frantar & Alistarh, 2022) as GPTQ applies it.
//!
//! The accelerator has one power-of-two scale per layer, so a layer whose
//! weights span a wide range keeps only a few levels for most of them
//! (spec §3.10), and rounding each to the nearest level perturbs the
//! layer's output by errors that add up over its inputs. Inputs are far
//! from independent (neighbouring taps of a time series move together), so
//! the error of one rounded weight can be cancelled by nudging the weights
//! not yet rounded: each row is rounded one weight at a time, and the rest
//! of the row absorbs the error in proportion to how its inputs correlate
//! with that weight's on the calibration samples. The scale and shift are
//! the ones nearest rounding gives; only the choice of level changes.

use nalgebra::DMatrix;

use crate::error::QuantError;
use crate::forward::layer_values;
use crate::fuse::{Fused, FusedLayer, HwOp};
use crate::quantize::input_scale;

/// At most this many input patches per layer enter its second moments:
/// enough to estimate a few hundred correlated inputs, cheap to gather.
const MAX_PATCHES: usize = 16_384;

/// Layers whose outputs each read more inputs than this round to nearest:
/// the moments grow with the square and their factorization with the cube
/// of it. The accelerator's largest linear layer reads 1024 inputs.
const MAX_PATCH: usize = 1024;

/// Diagonal loading, as a share of the mean input energy: keeps the
/// moments invertible where inputs are constant or collinear.
const DAMPING: f64 = 0.01;

/// The second moments `Σ z·zᵀ` of each layer's operator input patches `z`
/// on the calibration samples, in the layer's scaled units (`scales`, see
/// `quantize`), with a constant 1 appended where the layer has a bias
/// (the bias is rounded on the weights' grid and is compensated like one
/// of them). `None` for layers without weights, whose weights are not laid
/// out as rows of patches (transposed convolutions), or whose patches are
/// longer than `MAX_PATCH`: those round to nearest.
pub(crate) fn moments(
    fused: &Fused,
    scales: &[f64],
    x: &[f32],
    n: usize,
) -> Result<Vec<Option<DMatrix<f64>>>, QuantError> {
    let per: usize = fused.input.iter().product();
    let mut moments: Vec<Option<DMatrix<f64>>> = fused
        .layers
        .iter()
        .map(|l| {
            let width = patch_len(l).filter(|&d| d <= MAX_PATCH)? + usize::from(l.bias.is_some());
            Some(DMatrix::zeros(width, width))
        })
        .collect();
    let per_sample = (MAX_PATCHES / n.max(1)).max(1);
    for sample in x.chunks_exact(per.max(1)).take(n) {
        for (i, values) in layer_values(fused, sample)?.into_iter().enumerate() {
            let Some(h) = moments[i].as_mut() else {
                continue;
            };
            let layer = &fused.layers[i];
            let z = patches(layer, &values.input, per_sample, input_scale(layer, scales), h.ncols());
            h.gemm_tr(1.0, &z, &z, 1.0);
        }
    }
    Ok(moments)
}

/// The length of one input patch of `layer`: the weights of one output.
fn patch_len(layer: &FusedLayer) -> Option<usize> {
    let shape = &layer.operator_input_shape;
    match layer.op {
        HwOp::Conv1d { kernel, .. } => Some(shape.first()? * kernel),
        HwOp::Conv2d { kernel, .. } => Some(shape.first()? * kernel * kernel),
        HwOp::Linear => Some(shape.iter().product()),
        HwOp::ConvTranspose2d { .. } | HwOp::Passthrough => None,
    }
}

/// Up to `limit` of the input patches of one sample, evenly spaced over the
/// output positions, as the rows of a matrix of `width` columns (the last
/// one the bias's constant input when `width` exceeds the patch length).
fn patches(layer: &FusedLayer, x: &[f32], limit: usize, scale: f64, width: usize) -> DMatrix<f64> {
    let shape = &layer.operator_input_shape;
    let (channels, kernel, padding, [h, w]) = match (layer.op, shape.as_slice()) {
        (HwOp::Conv1d { kernel, padding }, &[c, l]) => (c, [1, kernel], [0, padding], [1, l]),
        (HwOp::Conv2d { kernel, padding }, &[c, h, w]) => (c, [kernel, kernel], [padding, padding], [h, w]),
        // A linear layer: one patch, the whole input.
        _ => (x.len(), [1, 1], [0, 0], [1, 1]),
    };
    let (oh, ow) = (
        (h + 2 * padding[0] + 1).saturating_sub(kernel[0]),
        (w + 2 * padding[1] + 1).saturating_sub(kernel[1]),
    );
    let positions = oh * ow;
    let rows = positions.min(limit);
    let mut z = DMatrix::zeros(rows, width);
    for r in 0..rows {
        let p = r * positions / rows;
        let (oy, ox) = (p / ow, p % ow);
        for c in 0..channels {
            for ky in 0..kernel[0] {
                for kx in 0..kernel[1] {
                    let y = (oy + ky).checked_sub(padding[0]).filter(|&y| y < h);
                    let xx = (ox + kx).checked_sub(padding[1]).filter(|&xx| xx < w);
                    if let (Some(y), Some(xx)) = (y, xx) {
                        z[(r, (c * kernel[0] + ky) * kernel[1] + kx)] = f64::from(x[(c * h + y) * w + xx]) * scale;
                    }
                }
            }
        }
        if width > channels * kernel[0] * kernel[1] {
            z[(r, width - 1)] = 1.0;
        }
    }
    z
}

/// Rounds `rows` (each a layer output's scaled weights, then its bias if
/// it has one) to integers at `factor` within `[lo, hi]`, compensating
/// each rounding error on the values after it through `moments`. `None`
/// when the moments are degenerate, in which case the caller rounds to
/// nearest.
pub(crate) fn round_rows(
    rows: &mut [Vec<f64>],
    moments: &DMatrix<f64>,
    factor: f64,
    (lo, hi): (f64, f64),
) -> Option<Vec<Vec<i8>>> {
    let d = moments.ncols();
    let mean = moments.diagonal().mean();
    if !(mean.is_finite() && mean > 0.0) {
        return None;
    }
    let damped = moments + DMatrix::identity(d, d) * (DAMPING * mean);
    let inverse = damped.cholesky()?.inverse();
    // Upper factor of the inverse: row i holds how the error of value i
    // spreads to the values after it.
    let u = inverse.cholesky()?.l().transpose();
    Some(
        rows.iter_mut()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        let q = (row[i] * factor + 0.5).floor().clamp(lo, hi);
                        let err = (row[i] - q / factor) / u[(i, i)];
                        for j in i + 1..row.len() {
                            row[j] -= err * u[(i, j)];
                        }
                        q as i8
                    })
                    .collect()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::layer_values;
    use kflow_model::{Model, Weights};

    /// A patch times a row of weights, plus the bias, is the layer's output
    /// at that position: the layout the compensation relies on.
    #[test]
    fn patches_line_up_with_the_weights() {
        let model: Model = serde_json::from_value(serde_json::json!({
            "format": "kflow-model/1", "name": "m", "task": {"kind": "classifier", "classes": 2}, "input": [3, 5, 6],
            "layers": [
                {"name": "c0", "op": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1},
                {"name": "flatten", "op": "flatten"},
                {"name": "fc", "op": "linear", "out_features": 2}
            ]
        }))
        .unwrap();
        let weights = Weights::init(&model, 3).unwrap();
        let fused = crate::fuse(&model, &weights).unwrap();
        let x: Vec<f32> = (0..90).map(|i| ((i * 37 % 23) as f32 - 11.0) / 11.0).collect();
        for (values, layer) in layer_values(&fused, &x).unwrap().into_iter().zip(&fused.layers) {
            let (input, output) = (values.input, values.output);
            let w = &layer.weight.as_ref().unwrap().data;
            let b = &layer.bias.as_ref().unwrap().data;
            let d = patch_len(layer).unwrap();
            let z = patches(layer, &input, usize::MAX, 1.0, d + 1);
            let positions = z.nrows();
            assert_eq!(output.len(), positions * b.len(), "{}", layer.name);
            for o in 0..b.len() {
                for p in 0..positions {
                    let sum: f64 =
                        (0..d).map(|k| f64::from(w[o * d + k]) * z[(p, k)]).sum::<f64>() + f64::from(b[o]) * z[(p, d)];
                    let want = f64::from(output[o * positions + p]);
                    assert!(
                        (sum - want).abs() < 1e-4,
                        "{} output {o} at {p}: {sum} vs {want}",
                        layer.name
                    );
                }
            }
        }
    }

    /// A layer reading more inputs than the accelerator's largest gets no
    /// moments (it rounds to nearest); its neighbours still do.
    #[test]
    fn only_layers_of_accelerator_size_are_compensated() {
        let model: Model = serde_json::from_value(serde_json::json!({
            "format": "kflow-model/1", "name": "m", "task": {"kind": "classifier", "classes": 2}, "input": [3, 400],
            "layers": [
                {"name": "c0", "op": "conv1d", "out_channels": 4, "kernel": 3, "padding": 1},
                {"name": "flatten", "op": "flatten"},
                {"name": "fc", "op": "linear", "out_features": 2}
            ]
        }))
        .unwrap();
        let fused = crate::fuse(&model, &Weights::init(&model, 5).unwrap()).unwrap();
        let x: Vec<f32> = (0..2 * 1200).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
        let scales = vec![1.0; fused.layers.len()];
        let m = moments(&fused, &scales, &x, 2).unwrap();
        assert_eq!(m[0].as_ref().map(DMatrix::ncols), Some(3 * 3 + 1));
        assert!(m[1].is_none(), "1600 inputs per output");
    }

    #[test]
    fn degenerate_moments_leave_the_rounding_to_the_caller() {
        let mut rows = vec![vec![0.3, -0.2]];
        assert!(round_rows(&mut rows, &DMatrix::zeros(2, 2), 128.0, (-128.0, 127.0)).is_none());
    }
}
