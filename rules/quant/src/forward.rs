//! The float forward pass of fused layers, one sample at a time: what
//! calibration measures and what tests compare with the IR's own forward
//! pass. Straightforward loops; the models are small and calibration sees
//! a few hundred samples.

use crate::error::QuantError;
use crate::fuse::{Activation, Fused, FusedLayer, HwOp, HwSource, Pool, PoolKind};

/// Every layer's output for one sample (`x` has the model's input shape).
pub fn layer_outputs(fused: &Fused, x: &[f32]) -> Result<Vec<Vec<f32>>, QuantError> {
    Ok(layer_values(fused, x)?.into_iter().map(|v| v.output).collect())
}

/// One layer's values for one sample.
pub struct LayerValues {
    /// The operator's input: the operands pooled and added, what the
    /// weights multiply.
    pub input: Vec<f32>,
    pub output: Vec<f32>,
}

/// Every layer's operator input and output, for one sample.
pub fn layer_values(fused: &Fused, x: &[f32]) -> Result<Vec<LayerValues>, QuantError> {
    let mut values: Vec<LayerValues> = Vec::with_capacity(fused.layers.len());
    for (i, layer) in fused.layers.iter().enumerate() {
        let operands: Vec<&[f32]> = layer
            .sources
            .iter()
            .map(|s| match *s {
                HwSource::Input => x,
                HwSource::Layer(j) => values[j].output.as_slice(),
            })
            .collect();
        let err = |why| QuantError::Forward { layer: i, why };
        let input = operator_input(layer, &operands).map_err(err)?;
        let output = run_operator(layer, input.clone()).map_err(err)?;
        values.push(LayerValues { input, output });
    }
    Ok(values)
}

fn operator_input(layer: &FusedLayer, operands: &[&[f32]]) -> Result<Vec<f32>, String> {
    let pooled: Vec<Vec<f32>> = operands
        .iter()
        .map(|x| match layer.pool {
            Some(pool) => pool_values(x, &layer.input_shape, pool),
            None => x.to_vec(),
        })
        .collect();
    let mut x = pooled.first().cloned().ok_or("no input")?;
    if layer.eltwise_add {
        for other in &pooled[1..] {
            for (a, b) in x.iter_mut().zip(other) {
                *a += b;
            }
        }
    }
    Ok(x)
}

fn run_operator(layer: &FusedLayer, x: Vec<f32>) -> Result<Vec<f32>, String> {
    let mut y = match layer.op {
        HwOp::Passthrough => x,
        op => {
            let w = layer.weight.as_ref().ok_or("no weight")?;
            let bias = layer.bias.as_ref().map(|b| b.data.as_slice());
            let shape = &layer.operator_input_shape;
            match op {
                HwOp::Conv1d { kernel, padding } => conv(
                    &x,
                    &[1, shape[1]],
                    &w.data,
                    bias,
                    layer.out_channels(),
                    [1, kernel],
                    [0, padding],
                    shape[0],
                ),
                HwOp::Conv2d { kernel, padding } => conv(
                    &x,
                    &[shape[1], shape[2]],
                    &w.data,
                    bias,
                    layer.out_channels(),
                    [kernel, kernel],
                    [padding, padding],
                    shape[0],
                ),
                HwOp::ConvTranspose2d { .. } => conv_transpose(layer, &x, &w.data, bias),
                _ => linear(&x, &w.data, bias, layer.out_channels()),
            }
        }
    };
    match layer.activation {
        Activation::None => {}
        Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Abs => y.iter_mut().for_each(|v| *v = v.abs()),
    }
    Ok(y)
}

/// Spatial dimensions of a `[C, L]` or `[C, H, W]` shape as `[H, W]`.
fn spatial(shape: &[usize]) -> [usize; 2] {
    match *shape {
        [_, l] => [1, l],
        [_, h, w] => [h, w],
        _ => [1, 1],
    }
}

fn pool_values(x: &[f32], shape: &[usize], pool: Pool) -> Vec<f32> {
    let c = shape[0];
    let [h, w] = spatial(shape);
    let (kh, sh) = if shape.len() == 2 {
        (1, 1)
    } else {
        (pool.kernel, pool.stride)
    };
    let (kw, sw) = (pool.kernel, pool.stride);
    let (oh, ow) = ((h - kh) / sh + 1, (w - kw) / sw + 1);
    let mut out = Vec::with_capacity(c * oh * ow);
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                let window = (0..kh).flat_map(|dy| (0..kw).map(move |dx| (oy * sh + dy, ox * sw + dx)));
                let values = window.map(|(y, xx)| x[(ch * h + y) * w + xx]);
                out.push(match pool.kind {
                    PoolKind::Max => values.fold(f32::NEG_INFINITY, f32::max),
                    PoolKind::Avg => values.sum::<f32>() / (kh * kw) as f32,
                });
            }
        }
    }
    out
}

/// A stride-1 convolution over `[C, H, W]` (1-D as `H = 1`).
#[allow(clippy::too_many_arguments)]
fn conv(
    x: &[f32],
    [h, w]: &[usize; 2],
    weight: &[f32],
    bias: Option<&[f32]>,
    out_channels: usize,
    [kh, kw]: [usize; 2],
    [ph, pw]: [usize; 2],
    in_channels: usize,
) -> Vec<f32> {
    let (h, w) = (*h, *w);
    let (oh, ow) = (h + 2 * ph - kh + 1, w + 2 * pw - kw + 1);
    let mut out = vec![0.0f32; out_channels * oh * ow];
    for o in 0..out_channels {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias.map_or(0.0, |b| f64::from(b[o]));
                for c in 0..in_channels {
                    for ky in 0..kh {
                        let Some(y) = (oy + ky).checked_sub(ph).filter(|&y| y < h) else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(xx) = (ox + kx).checked_sub(pw).filter(|&xx| xx < w) else {
                                continue;
                            };
                            let wv = weight[((o * in_channels + c) * kh + ky) * kw + kx];
                            acc += f64::from(x[(c * h + y) * w + xx]) * f64::from(wv);
                        }
                    }
                }
                out[(o * oh + oy) * ow + ox] = acc as f32;
            }
        }
    }
    out
}

fn conv_transpose(layer: &FusedLayer, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let HwOp::ConvTranspose2d {
        kernel,
        padding,
        stride,
        ..
    } = layer.op
    else {
        return Vec::new();
    };
    let shape = &layer.operator_input_shape;
    let (c_in, h, w) = (shape[0], shape[1], shape[2]);
    let (c_out, oh, ow) = (layer.output_shape[0], layer.output_shape[1], layer.output_shape[2]);
    let mut acc = vec![0.0f64; c_out * oh * ow];
    for (o, chunk) in acc.chunks_mut(oh * ow).enumerate() {
        chunk.fill(bias.map_or(0.0, |b| f64::from(b[o])));
    }
    for c in 0..c_in {
        for y in 0..h {
            for xx in 0..w {
                let v = f64::from(x[(c * h + y) * w + xx]);
                for o in 0..c_out {
                    for ky in 0..kernel {
                        let Some(oy) = (y * stride + ky).checked_sub(padding).filter(|&oy| oy < oh) else {
                            continue;
                        };
                        for kx in 0..kernel {
                            let Some(ox) = (xx * stride + kx).checked_sub(padding).filter(|&ox| ox < ow) else {
                                continue;
                            };
                            let wv = weight[((c * c_out + o) * kernel + ky) * kernel + kx];
                            acc[(o * oh + oy) * ow + ox] += v * f64::from(wv);
                        }
                    }
                }
            }
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

fn linear(x: &[f32], weight: &[f32], bias: Option<&[f32]>, out_features: usize) -> Vec<f32> {
    let n = x.len();
    (0..out_features)
        .map(|o| {
            let dot: f64 = weight[o * n..(o + 1) * n]
                .iter()
                .zip(x)
                .map(|(w, v)| f64::from(*w) * f64::from(*v))
                .sum();
            (dot + bias.map_or(0.0, |b| f64::from(b[o]))) as f32
        })
        .collect()
}
