//! Channel equalization before quantization, after the cross-layer
//! equalization of Nagel et al.'s data-free quantization.
//!
//! A layer has one power-of-two weight scale and one activation scale, both
//! set by its largest channel, so a channel whose weights and outputs are
//! small keeps few levels of either. Multiplying a hidden channel's weights
//! and bias by `e > 1` and dividing the weights that read it by `e` leaves
//! the network's function unchanged (ReLU, Abs and pooling commute with a
//! positive factor), and lets that channel use more of both ranges. `e` is
//! as large as it can be without the channel's row becoming the layer's
//! largest weight (which would coarsen every other row) or its output
//! outgrowing the layer's calibrated range (which would clip it).

use kflow_ai8x::network::WeightBits;

use crate::error::QuantError;
use crate::fuse::{Fused, HwOp, HwSource};
use crate::quantize::{QuantOptions, factors, output_magnitudes, percentile, scales_of};

/// `fused` with the output channels of every layer that can take it
/// rescaled (see the module docs), calibrated on `n` samples `x` as
/// quantization will be.
pub(crate) fn equalize(fused: &Fused, x: &[f32], n: usize, options: &QuantOptions) -> Result<Fused, QuantError> {
    let layers: Vec<(usize, Vec<usize>)> = (0..fused.layers.len())
        .filter_map(|i| Some((i, consumers(fused, i, options)?)))
        .collect();
    if layers.is_empty() {
        return Ok(fused.clone());
    }
    // One pass over the calibration samples serves both the layers' scales
    // and their channels' ranges.
    let magnitudes = output_magnitudes(fused, x, n)?;
    let channels_of = |i: usize| -> Vec<Vec<f32>> {
        let count = fused.layers[i].out_channels().max(1);
        let size = (fused.layers[i].output_shape.iter().product::<usize>() / count).max(1);
        let mut channels = vec![Vec::new(); count];
        for (k, chunk) in magnitudes[i].chunks(size).enumerate() {
            channels[k % count].extend_from_slice(chunk);
        }
        channels
    };
    let per_channel: Vec<Vec<Vec<f32>>> = layers.iter().map(|(i, _)| channels_of(*i)).collect();
    let scales = scales_of(fused, magnitudes, options);
    let mut out = fused.clone();
    // In layer order: a layer's rows are measured after the previous
    // layer's factors have divided them.
    for ((i, readers), mut channels) in layers.into_iter().zip(per_channel) {
        let mut all: Vec<f32> = channels.iter().flatten().copied().collect();
        let range = percentile(&mut all, options.calibration_percentile);
        let rows = row_magnitudes(&out, &scales, i);
        let widest = rows.iter().copied().fold(0.0, f64::max);
        if !(range > 0.0 && widest > 0.0) {
            continue;
        }
        let e: Vec<f64> = channels
            .iter_mut()
            .zip(&rows)
            .map(|(values, &row)| {
                let a = percentile(values, options.calibration_percentile);
                if a > 0.0 && row > 0.0 {
                    (range / a).min(widest / row).max(1.0)
                } else {
                    1.0
                }
            })
            .collect();
        rescale(&mut out, i, &e, &readers);
    }
    Ok(out)
}

/// The layers that read layer `i`, when `i`'s channels can be rescaled:
/// `i` is a hidden convolution or linear layer, and every reader is one
/// too, reading `i` alone, its weights laid out as a block per channel of
/// `i`. Binary weights are left alone (a factor does not change a sign).
fn consumers(fused: &Fused, i: usize, options: &QuantOptions) -> Option<Vec<usize>> {
    let plain = |op: HwOp| matches!(op, HwOp::Conv1d { .. } | HwOp::Conv2d { .. } | HwOp::Linear);
    let binary = |j: usize| options.bits_of(&fused.layers[j]).0 == WeightBits::Binary;
    let layer = &fused.layers[i];
    if !plain(layer.op) || layer.weight.is_none() || binary(i) || i + 1 == fused.layers.len() {
        return None;
    }
    let channels = layer.out_channels();
    let readers: Vec<usize> = (0..fused.layers.len())
        .filter(|&j| fused.layers[j].sources.contains(&HwSource::Layer(i)))
        .collect();
    let fits = |j: usize| {
        let r = &fused.layers[j];
        let columns = r.weight.as_ref().map_or(0, |w| w.data.len() / r.out_channels().max(1));
        plain(r.op)
            && !r.eltwise_add
            && r.sources.len() == 1
            && !binary(j)
            && channels > 0
            && columns.is_multiple_of(channels)
    };
    (!readers.is_empty() && readers.iter().all(|&j| fits(j))).then_some(readers)
}

/// The largest scaled magnitude of each output row of layer `i` (its
/// weights and its bias, in the units its shift is chosen in).
fn row_magnitudes(fused: &Fused, scales: &[f64], i: usize) -> Vec<f64> {
    let layer = &fused.layers[i];
    let (Some(w), Some((weight_factor, bias_factor))) = (&layer.weight, factors(fused, scales, i)) else {
        return Vec::new();
    };
    let rows = layer.out_channels();
    let per = w.data.len() / rows.max(1);
    (0..rows)
        .map(|o| {
            let weights = w.data[o * per..(o + 1) * per]
                .iter()
                .map(|v| f64::from(v.abs()) * weight_factor);
            let bias = layer.bias.as_ref().map(|b| f64::from(b.data[o].abs()) * bias_factor);
            weights.chain(bias).fold(0.0, f64::max)
        })
        .collect()
}

/// Multiplies layer `i`'s output channel `c` by `e[c]` and divides what its
/// `readers` read of it by the same.
fn rescale(fused: &mut Fused, i: usize, e: &[f64], readers: &[usize]) {
    let layer = &mut fused.layers[i];
    let rows = e.len();
    if let Some(w) = layer.weight.as_mut() {
        let per = w.data.len() / rows.max(1);
        for (row, &f) in w.data.chunks_mut(per.max(1)).zip(e) {
            row.iter_mut().for_each(|v| *v = (f64::from(*v) * f) as f32);
        }
    }
    if let Some(b) = layer.bias.as_mut() {
        for (v, &f) in b.data.iter_mut().zip(e) {
            *v = (f64::from(*v) * f) as f32;
        }
    }
    for &j in readers {
        let reader = &mut fused.layers[j];
        let outputs = reader.out_channels().max(1);
        if let Some(w) = reader.weight.as_mut() {
            let block = w.data.len() / outputs / rows.max(1);
            for (k, v) in w.data.iter_mut().enumerate() {
                let c = (k % (block * rows)) / block.max(1);
                *v = (f64::from(*v) / e[c]) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::layer_outputs;
    use kflow_model::{Model, Weights};

    fn model() -> Model {
        serde_json::from_value(serde_json::json!({
            "format": "kflow-model/1", "name": "m", "task": {"kind": "classifier", "classes": 2}, "input": [3, 12],
            "layers": [
                {"name": "c0", "op": "conv1d", "out_channels": 6, "kernel": 3, "padding": 1, "bias": false},
                {"name": "a0", "op": "relu"},
                {"name": "p0", "op": "max_pool", "kernel": 2, "stride": 2},
                {"name": "c1", "op": "conv1d", "out_channels": 4, "kernel": 3, "padding": 0},
                {"name": "a1", "op": "abs"},
                {"name": "flatten", "op": "flatten"},
                {"name": "fc", "op": "linear", "out_features": 2}
            ]
        }))
        .unwrap()
    }

    /// Rescaled channels leave every output of the network as it was, and
    /// a channel with small weights and outputs grows until it meets one of
    /// the two limits, never past the layer's widest row.
    #[test]
    fn equalized_networks_compute_the_same_function() {
        let m = model();
        let mut w = Weights::init(&m, 7).unwrap();
        // Channel 2 of c0 is ten times smaller than the others.
        for (k, v) in w.tensors.get_mut("c0.weight").unwrap().data.iter_mut().enumerate() {
            if k / 9 == 2 {
                *v *= 0.1;
            }
        }
        let fused = crate::fuse(&m, &w).unwrap();
        let x: Vec<f32> = (0..16 * 36).map(|i| ((i * 29 % 17) as f32 - 8.0) / 8.0).collect();
        let options = QuantOptions::default();
        let eq = equalize(&fused, &x, 16, &options).unwrap();
        for sample in x.chunks_exact(36) {
            let (a, b) = (
                layer_outputs(&fused, sample).unwrap(),
                layer_outputs(&eq, sample).unwrap(),
            );
            for (p, q) in a.last().unwrap().iter().zip(b.last().unwrap()) {
                assert!((p - q).abs() < 1e-4 * p.abs().max(1.0), "{p} vs {q}");
            }
        }
        let row_max = |f: &Fused, c: usize| {
            f.layers[0].weight.as_ref().unwrap().data[c * 9..(c + 1) * 9]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()))
        };
        let widest = (0..6).map(|c| row_max(&fused, c)).fold(0f32, f32::max);
        assert!(row_max(&eq, 2) > 2.0 * row_max(&fused, 2), "the small channel grew");
        assert!((0..6).all(|c| row_max(&eq, c) <= widest * 1.0001));
        // The last layer is the network's output: never rescaled.
        assert!(consumers(&fused, fused.layers.len() - 1, &options).is_none());
    }
}
