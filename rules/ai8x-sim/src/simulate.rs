//! One hardware layer after another, in the order of spec §2.1.

use std::borrow::Cow;

use crate::conv::{Filter, Input, Placement, convolve};
use crate::eltwise::combine;
use crate::error::SimError;
use crate::linear::linear;
use crate::network::{Layer, LayerWeights, Network, Op, OutputWidth, SimOptions, Source};
use crate::plan::{LayerPlan, check_weights, plan, total_shift};
use crate::pool::pool;
use crate::scale::Scale;
use crate::tensor::{Output, Tensor};

pub(crate) fn run(
    net: &Network,
    weights: &[LayerWeights],
    input: &Tensor<i8>,
    options: SimOptions,
) -> Result<Vec<Output>, SimError> {
    let plans = plan(net)?;
    check_weights(net, &plans, weights)?;
    if input.shape != net.input || input.data.len() != net.input.len() {
        return Err(SimError::InputShape {
            shape: net.input,
            expected: net.input.len(),
            actual: input.data.len(),
        });
    }
    let mut outputs: Vec<Output> = Vec::with_capacity(net.layers.len());
    for ((layer, plan), w) in net.layers.iter().zip(&plans).zip(weights) {
        let sources: Vec<&[i8]> = plan
            .sources
            .iter()
            .map(|s| match *s {
                Source::Input => input.data.as_slice(),
                // The plan rejects reading a 32-bit output, so this arm never yields the empty slice.
                Source::Layer(j) => outputs[j].as_int8().map_or(&[][..], |t| t.data.as_slice()),
            })
            .collect();
        let x = operator_input(layer, plan, &sources, options);
        let out = operate(layer, plan, w, x);
        outputs.push(out);
    }
    Ok(outputs)
}

/// Steps 1–4 of spec §2.1: concatenation or operands, element-wise and
/// pooling. `in_dim` needs no work: CHW data is the same bytes either way.
fn operator_input<'a>(layer: &Layer, plan: &LayerPlan, sources: &[&'a [i8]], options: SimOptions) -> Cow<'a, [i8]> {
    let pool_all = |x: Cow<'a, [i8]>| match &layer.pool {
        Some(p) => Cow::Owned(pool(&x, plan.operand, p, plan.pooled, options.avg_pool_rounding)),
        None => x,
    };
    match layer.eltwise {
        Some(op) if !layer.pool_first => pool_all(Cow::Owned(combine(op, sources))),
        Some(op) => {
            let pooled: Vec<Cow<[i8]>> = sources.iter().map(|&s| pool_all(Cow::Borrowed(s))).collect();
            let views: Vec<&[i8]> = pooled.iter().map(AsRef::as_ref).collect();
            Cow::Owned(combine(op, &views))
        }
        None => pool_all(match sources {
            [one] => Cow::Borrowed(*one),
            many => Cow::Owned(many.concat()),
        }),
    }
}

/// Steps 5–8: the operator, bias, scaling and activation.
fn operate(layer: &Layer, plan: &LayerPlan, w: &LayerWeights, x: Cow<[i8]>) -> Output {
    let x_shape = plan.pooled;
    let out = plan.output;
    let bias = w.bias.as_deref();
    let conv = |input: Input, filter: Filter, dims: (usize, usize)| match layer.output_width {
        OutputWidth::ThirtyTwo => {
            let mut data = vec![0i32; out.len()];
            convolve(&input, &filter, bias, &mut data, dims, |acc, o| o.copy_from_slice(acc));
            Output::Int32(Tensor { shape: out, data })
        }
        OutputWidth::Eight => {
            let scale = Scale::new(total_shift(layer), layer.activation);
            let mut data = vec![0i8; out.len()];
            convolve(&input, &filter, bias, &mut data, dims, |acc, o| scale.apply_all(acc, o));
            Output::Int8(Tensor { shape: out, data })
        }
    };
    let widen = |w: &[i8]| w.iter().map(|&v| i16::from(v)).collect::<Vec<i16>>();
    match layer.op {
        Op::None => Output::Int8(Tensor {
            shape: out,
            data: x.into_owned(),
        }),
        Op::Conv1d { kernel, pad } => {
            // A 1-D signal is one row, so the inner loop runs along its length.
            let at = Placement {
                top: 0,
                left: pad,
                bottom: 0,
                right: pad,
                stuff: false,
            };
            let input = Input {
                x: &x,
                channels: x_shape.channels,
                height: 1,
                width: x_shape.height,
                at,
            };
            let filter = Filter {
                kh: 1,
                kw: kernel,
                depthwise: false,
                weights: widen(&w.weight),
            };
            conv(input, filter, (1, out.height))
        }
        Op::Conv2d { kernel, pad, depthwise } => {
            let at = Placement {
                top: pad,
                left: pad,
                bottom: pad,
                right: pad,
                stuff: false,
            };
            let input = Input {
                x: &x,
                channels: x_shape.channels,
                height: x_shape.height,
                width: x_shape.width,
                at,
            };
            let filter = Filter {
                kh: kernel,
                kw: kernel,
                depthwise,
                weights: widen(&w.weight),
            };
            conv(input, filter, (out.height, out.width))
        }
        Op::ConvTranspose2d { pad } => {
            // spec §2.4: zero-stuff, pad 2−pad before and 3−pad after, then a
            // 3×3 convolution with the kernel flipped and its axes swapped.
            let at = Placement {
                top: 2 - pad,
                left: 2 - pad,
                bottom: 3 - pad,
                right: 3 - pad,
                stuff: true,
            };
            let input = Input {
                x: &x,
                channels: x_shape.channels,
                height: x_shape.height,
                width: x_shape.width,
                at,
            };
            let filter = Filter {
                kh: 3,
                kw: 3,
                depthwise: false,
                weights: transpose_kernel(layer, &w.weight),
            };
            conv(input, filter, (out.height, out.width))
        }
        Op::Linear { .. } => {
            let acc = linear(&x, &w.weight, bias, out.channels);
            match layer.output_width {
                OutputWidth::ThirtyTwo => Output::Int32(Tensor { shape: out, data: acc }),
                OutputWidth::Eight => {
                    let scale = Scale::new(total_shift(layer), layer.activation);
                    Output::Int8(Tensor {
                        shape: out,
                        data: {
                            let mut y = vec![0i8; acc.len()];
                            scale.apply_all(&acc, &mut y);
                            y
                        },
                    })
                }
            }
        }
    }
}

/// PyTorch's `[in, out, 3, 3]` to `[out, in, 3, 3]`, flipped in both
/// spatial axes (spec §2.4).
fn transpose_kernel(layer: &Layer, w: &[i8]) -> Vec<i16> {
    let (inp, out) = (layer.in_channels, layer.out_channels);
    let mut t = vec![0i16; w.len()];
    for o in 0..out {
        for c in 0..inp {
            for k in 0..9 {
                t[(o * inp + c) * 9 + k] = i16::from(w[(c * out + o) * 9 + (8 - k)]);
            }
        }
    }
    t
}
