//! Resolved hardware layers as the bit-exact simulator's network.

use std::collections::BTreeMap;

use kflow_ai8x_sim as sim;

use crate::device::Device;
use crate::layer::{HwLayer, Operator, Shape, Source};
use crate::network::{Activation, EltwiseOp, OutputWidth, PoolKind, WeightBits};
use crate::weights::Int8Layer;

fn sim_shape(s: Shape) -> sim::Shape {
    sim::Shape::new(s.channels as usize, s.height as usize, s.width as usize)
}

/// Conv1d kernels of `k` taps (the last dimension of `weight`) with
/// `dilation − 1` zeros between taps.
fn stuffed(weight: &[i8], k: usize, dilation: usize) -> Vec<i8> {
    let taps = (k.max(1) - 1) * dilation + 1;
    let mut out = Vec::with_capacity(weight.len() / k.max(1) * taps);
    for kernel in weight.chunks(k.max(1)) {
        let start = out.len();
        out.resize(start + taps, 0);
        for (t, w) in kernel.iter().enumerate() {
            out[start + t * dilation] = *w;
        }
    }
    out
}

/// The simulator's network for `layers` (as `resolve` or the allocator
/// give them) on `device`, and its weights from `values` (passthrough
/// layers have none).
pub fn to_sim(
    device: Device,
    layers: &[HwLayer],
    input: Shape,
    values: &BTreeMap<usize, Int8Layer>,
) -> (sim::Network, Vec<sim::LayerWeights>) {
    let mut sim_layers = Vec::with_capacity(layers.len());
    let mut weights = Vec::with_capacity(layers.len());
    for l in layers {
        let [kernel, _] = l.kernel.map(|k| k as usize);
        // A dilated conv1d runs as an ordinary one over its zero-stuffed
        // kernel of `(k − 1)·d + 1` taps, as the generated code loads it
        // (spec §2.3, `HwLayer::kernel_taps`).
        let dilation = if l.operator == Operator::Conv1d {
            (l.dilation as usize).max(1)
        } else {
            1
        };
        let kernel = (kernel.max(1) - 1) * dilation + 1;
        let pad = l.pad as usize;
        let op = match l.operator {
            Operator::None => sim::Op::None,
            Operator::Conv1d => sim::Op::Conv1d { kernel, pad },
            Operator::Conv2d => sim::Op::Conv2d {
                kernel,
                pad,
                depthwise: l.is_depthwise(),
            },
            Operator::ConvTranspose2d => sim::Op::ConvTranspose2d { pad },
            Operator::Linear => sim::Op::Linear { flatten: l.flatten },
        };
        // The stored input's shape differs from the producer's output only
        // when `in_dim` reshapes it.
        let produced = match l.sources.first() {
            Some(Source::Layer(j)) => layers.get(*j).map(|p| p.output),
            _ => Some(input),
        };
        let in_dim = (produced != Some(l.input)).then_some([l.input.height as usize, l.input.width as usize]);
        sim_layers.push(sim::Layer {
            op,
            inputs: l
                .sources
                .iter()
                .map(|s| match *s {
                    Source::Input => sim::Source::Input,
                    Source::Layer(j) => sim::Source::Layer(j),
                })
                .collect(),
            in_dim,
            in_channels: l.in_channels() as usize,
            out_channels: l.out_channels as usize,
            pool: l.pool.map(|p| sim::Pool {
                kind: match p.kind {
                    PoolKind::Max => sim::PoolKind::Max,
                    PoolKind::Avg => sim::PoolKind::Avg,
                },
                size: p.size.map(|s| s as usize),
                stride: p.stride[0] as usize,
            }),
            eltwise: l.eltwise.map(|e| match e {
                EltwiseOp::Add => sim::EltwiseOp::Add,
                EltwiseOp::Sub => sim::EltwiseOp::Sub,
                EltwiseOp::Xor => sim::EltwiseOp::Xor,
                EltwiseOp::Or => sim::EltwiseOp::Or,
            }),
            pool_first: l.pool_first,
            activation: match l.activation {
                Activation::None => sim::Activation::None,
                Activation::ReLU => sim::Activation::Relu,
                Activation::Abs => sim::Activation::Abs,
            },
            output_shift: l.output_shift,
            weight_bits: match l.weight_bits {
                WeightBits::One => sim::WeightBits::One,
                WeightBits::Two => sim::WeightBits::Two,
                WeightBits::Four => sim::WeightBits::Four,
                WeightBits::Eight => sim::WeightBits::Eight,
                WeightBits::Binary => sim::WeightBits::Binary,
            },
            output_width: match l.output_width {
                OutputWidth::Eight => sim::OutputWidth::Eight,
                OutputWidth::ThirtyTwo => sim::OutputWidth::ThirtyTwo,
            },
        });
        weights.push(match values.get(&l.index) {
            Some(v) if l.operator != Operator::None => sim::LayerWeights {
                weight: if dilation > 1 {
                    stuffed(&v.weight, l.kernel[0] as usize, dilation)
                } else {
                    v.weight.clone()
                },
                // A dropped (all-zero) bias adds nothing either way.
                bias: v.bias.clone().filter(|_| l.bias),
            },
            _ => sim::LayerWeights::default(),
        });
    }
    let device = match device {
        Device::Max78000 => sim::Device::Max78000,
        Device::Max78002 => sim::Device::Max78002,
    };
    (
        sim::Network {
            device,
            input: sim_shape(input),
            layers: sim_layers,
        },
        weights,
    )
}
