//! A deliberately simple reference: every step of spec §2.1/§3.2 as nested
//! loops over i64, indexing the PyTorch layouts directly. ConvTranspose2d
//! uses PyTorch's scatter definition (not the zero-stuffing of spec §2.4
//! that the fast simulator uses), so the two derivations check each other.

use kflow_ai8x_sim::{
    Activation, EltwiseOp, Layer, LayerWeights, Network, Op, OutputWidth, Pool, PoolKind, Shape, Source,
};

/// A layer's output: its shape and values (int8 or 32-bit, held as i64).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Values {
    pub shape: Shape,
    pub data: Vec<i64>,
}

impl Values {
    fn at(&self, c: usize, y: usize, x: usize) -> i64 {
        self.data[(c * self.shape.height + y) * self.shape.width + x]
    }
}

pub fn run(net: &Network, weights: &[LayerWeights], input: &[i8], avg_rounding: bool) -> Vec<Values> {
    let input = Values {
        shape: net.input,
        data: input.iter().map(|&v| i64::from(v)).collect(),
    };
    let mut outputs: Vec<Values> = Vec::new();
    for (i, (layer, w)) in net.layers.iter().zip(weights).enumerate() {
        let sources: Vec<&Values> = if layer.inputs.is_empty() {
            vec![if i == 0 { &input } else { &outputs[i - 1] }]
        } else {
            layer
                .inputs
                .iter()
                .map(|s| match *s {
                    Source::Input => &input,
                    Source::Layer(j) => &outputs[j],
                })
                .collect()
        };
        let out = run_layer(layer, w, &sources, avg_rounding);
        outputs.push(out);
    }
    outputs
}

fn run_layer(layer: &Layer, w: &LayerWeights, sources: &[&Values], avg_rounding: bool) -> Values {
    let mut operands: Vec<Values> = match layer.eltwise {
        Some(_) => sources.iter().map(|&s| s.clone()).collect(),
        None => {
            let first = sources[0].shape;
            let channels = sources.iter().map(|s| s.shape.channels).sum();
            let data = sources.iter().flat_map(|s| s.data.iter().copied()).collect();
            vec![Values {
                shape: Shape { channels, ..first },
                data,
            }]
        }
    };
    if let Some([rows, columns]) = layer.in_dim {
        for v in &mut operands {
            v.shape.height = rows;
            v.shape.width = columns;
        }
    }
    let x = match (layer.eltwise, &layer.pool) {
        (Some(op), Some(pool)) if !layer.pool_first => pool_values(&eltwise(op, &operands), pool, avg_rounding),
        (Some(op), pool) => {
            let pooled: Vec<Values> = match pool {
                Some(p) => operands.iter().map(|v| pool_values(v, p, avg_rounding)).collect(),
                None => operands,
            };
            eltwise(op, &pooled)
        }
        (None, Some(p)) => pool_values(&operands[0], p, avg_rounding),
        (None, None) => operands.remove(0),
    };
    let bias = |o: usize| w.bias.as_ref().map_or(0, |b| 128 * i64::from(b[o]));
    let wt = |i: usize| i64::from(w.weight[i]);
    let (cin, cout) = (layer.in_channels, layer.out_channels);
    let s = x.shape;
    let acc = match layer.op {
        Op::None => return x,
        Op::Conv1d { kernel, pad } => {
            let len = s.height + 2 * pad + 1 - kernel;
            let mut acc = Values {
                shape: Shape::one_d(cout, len),
                data: Vec::new(),
            };
            for o in 0..cout {
                for l in 0..len {
                    let mut sum = bias(o);
                    for c in 0..cin {
                        for k in 0..kernel {
                            let pos = l as i64 + k as i64 - pad as i64;
                            if (0..s.height as i64).contains(&pos) {
                                sum += x.at(c, pos as usize, 0) * wt((o * cin + c) * kernel + k);
                            }
                        }
                    }
                    acc.data.push(sum);
                }
            }
            acc
        }
        Op::Conv2d { kernel, pad, depthwise } => {
            let (h, wd) = (s.height + 2 * pad + 1 - kernel, s.width + 2 * pad + 1 - kernel);
            let mut acc = Values {
                shape: Shape::new(cout, h, wd),
                data: Vec::new(),
            };
            for o in 0..cout {
                for y in 0..h {
                    for xx in 0..wd {
                        let mut sum = bias(o);
                        let channels = if depthwise { o..o + 1 } else { 0..cin };
                        for c in channels {
                            let wc = if depthwise { 0 } else { c };
                            let per_out = if depthwise { 1 } else { cin };
                            for ky in 0..kernel {
                                for kx in 0..kernel {
                                    let iy = y as i64 + ky as i64 - pad as i64;
                                    let ix = xx as i64 + kx as i64 - pad as i64;
                                    if (0..s.height as i64).contains(&iy) && (0..s.width as i64).contains(&ix) {
                                        let wi = ((o * per_out + wc) * kernel + ky) * kernel + kx;
                                        sum += x.at(c, iy as usize, ix as usize) * wt(wi);
                                    }
                                }
                            }
                        }
                        acc.data.push(sum);
                    }
                }
            }
            acc
        }
        Op::ConvTranspose2d { pad } => {
            // PyTorch: stride 2, padding `pad`, output_padding 1.
            let (h, wd) = ((s.height - 1) * 2 + 4 - 2 * pad, (s.width - 1) * 2 + 4 - 2 * pad);
            let mut data: Vec<i64> = (0..cout).flat_map(|o| std::iter::repeat_n(bias(o), h * wd)).collect();
            for c in 0..cin {
                for o in 0..cout {
                    for iy in 0..s.height {
                        for ix in 0..s.width {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let oy = (2 * iy + ky) as i64 - pad as i64;
                                    let ox = (2 * ix + kx) as i64 - pad as i64;
                                    if (0..h as i64).contains(&oy) && (0..wd as i64).contains(&ox) {
                                        let wi = ((c * cout + o) * 3 + ky) * 3 + kx;
                                        data[(o * h + oy as usize) * wd + ox as usize] += x.at(c, iy, ix) * wt(wi);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Values {
                shape: Shape::new(cout, h, wd),
                data,
            }
        }
        Op::Linear { .. } => {
            // torch.flatten order of CHW is the data order itself.
            let n = x.data.len();
            let data = (0..cout)
                .map(|o| bias(o) + (0..n).map(|i| x.data[i] * wt(o * n + i)).sum::<i64>())
                .collect();
            Values {
                shape: Shape::new(cout, 1, 1),
                data,
            }
        }
    };
    match layer.output_width {
        OutputWidth::ThirtyTwo => acc,
        OutputWidth::Eight => {
            let shift = layer.output_shift + 8 - layer.weight_bits.bits();
            let data = acc
                .data
                .iter()
                .map(|&a| activate(layer.activation, round_shift(a, shift)))
                .collect();
            Values { shape: acc.shape, data }
        }
    }
}

/// spec §3.3: `y0 = ⌊acc·2^S/128 + 1/2⌋`, written as one exact rational floor.
fn round_shift(acc: i64, shift: i32) -> i64 {
    let y0 = if shift <= 7 {
        let d = 1i64 << (7 - shift);
        (2 * acc + d).div_euclid(2 * d)
    } else {
        acc * (1i64 << (shift - 7))
    };
    y0.clamp(-128, 127)
}

fn activate(a: Activation, y: i64) -> i64 {
    match a {
        Activation::None => y,
        Activation::Relu => y.clamp(0, 127),
        Activation::Abs => y.abs().min(127),
    }
}

fn eltwise(op: EltwiseOp, operands: &[Values]) -> Values {
    let mut out = operands[0].clone();
    for (i, v) in out.data.iter_mut().enumerate() {
        for other in &operands[1..] {
            let b = other.data[i];
            *v = match op {
                EltwiseOp::Add => *v + b,
                EltwiseOp::Sub => *v - b,
                EltwiseOp::Xor => *v ^ b,
                EltwiseOp::Or => *v | b,
            };
        }
        *v = (*v).clamp(-128, 127);
    }
    out
}

fn pool_values(v: &Values, pool: &Pool, avg_rounding: bool) -> Values {
    let s = v.shape;
    let [ph, pw] = pool.size;
    let (h, w) = ((s.height - ph) / pool.stride + 1, (s.width - pw) / pool.stride + 1);
    let mut data = Vec::new();
    for c in 0..s.channels {
        for y in 0..h {
            for x in 0..w {
                let mut window = Vec::new();
                for dy in 0..ph {
                    for dx in 0..pw {
                        window.push(v.at(c, y * pool.stride + dy, x * pool.stride + dx));
                    }
                }
                let n = window.len() as i64;
                let sum: i64 = window.iter().sum();
                let value = match pool.kind {
                    PoolKind::Max => *window.iter().max().unwrap(),
                    // spec §3.5: toward zero, or sign(s)·⌊|s|/N + 1/2⌋.
                    PoolKind::Avg if avg_rounding => sum.signum() * ((2 * sum.abs() + n) / (2 * n)),
                    PoolKind::Avg => sum / n,
                };
                data.push(value.clamp(-128, 127));
            }
        }
    }
    Values {
        shape: Shape {
            height: h,
            width: w,
            ..s
        },
        data,
    }
}
