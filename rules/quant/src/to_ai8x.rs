//! Quantized layers as the ai8x toolchain's resolved hardware layers and
//! weights: what the checker, the allocator and the YAML writer take.

use kflow_ai8x::network::{Activation as AiActivation, DataFormat, EltwiseOp, OutputWidth, PoolKind as AiPoolKind};
use kflow_ai8x::{HwLayer, LayerWeights, Operator, Shape, Source, Weights};

use crate::fuse::{Activation, Fused, HwOp, HwSource, PoolKind};
use crate::quantize::{QuantLayer, Quantized};

fn shape(dims: &[usize]) -> Shape {
    let d = |i: usize| dims.get(i).copied().unwrap_or(1) as u32;
    match dims.len() {
        // 1-D data is `L × 1` on the device (spec §0).
        2 => Shape::new(d(0), d(1), 1),
        _ => Shape::new(d(0), d(1), d(2)),
    }
}

/// A float model's layers as if quantized at 8 bits with shift 0: enough
/// for the checker to judge shapes, channels and memories before any
/// training or calibration.
pub fn unquantized(fused: &Fused) -> Quantized {
    Quantized {
        input: fused.input.clone(),
        layers: fused
            .layers
            .iter()
            .map(|l| QuantLayer {
                layer: l.clone(),
                weight_bits: crate::quantize::Bits::EIGHT,
                output_shift: 0,
                output_width: 8,
                scale: 1.0,
                weight_shape: l.weight.as_ref().map(|w| w.shape.clone()).unwrap_or_default(),
                bias_len: l.bias.as_ref().map(|b| b.data.len()),
                weight: Vec::new(),
                bias: None,
            })
            .collect(),
    }
}

/// The hardware layers and weights of `q`, and the network input's shape.
/// Layers without integer weights (see [`unquantized`]) give weight
/// shapes only.
pub fn to_ai8x(q: &Quantized) -> (Vec<HwLayer>, Weights, Shape) {
    // Producers of an element-wise layer's operands interleave their
    // outputs (spec §2.7).
    let mut write_gap = vec![0u32; q.layers.len()];
    for l in q.layers.iter().filter(|l| l.layer.eltwise_add) {
        for s in &l.layer.sources {
            if let HwSource::Layer(j) = *s {
                write_gap[j] = l.layer.sources.len() as u32 - 1;
            }
        }
    }
    let mut layers = Vec::with_capacity(q.layers.len());
    let mut weights = Weights::default();
    for (index, ql) in q.layers.iter().enumerate() {
        let l = &ql.layer;
        let (operator, kernel, pad, stride) = match l.op {
            HwOp::Passthrough => (Operator::None, [1, 1], 0, 1),
            HwOp::Conv1d { kernel, padding } => (Operator::Conv1d, [kernel as u32, 1], padding as u32, 1),
            HwOp::Conv2d { kernel, padding } => (Operator::Conv2d, [kernel as u32; 2], padding as u32, 1),
            HwOp::ConvTranspose2d {
                kernel,
                padding,
                stride,
                ..
            } => (
                Operator::ConvTranspose2d,
                [kernel as u32; 2],
                padding as u32,
                stride as u32,
            ),
            HwOp::Linear => (Operator::Linear, [1, 1], 0, 1),
        };
        let one_d = l.input_shape.len() == 2;
        let pool = l.pool.map(|p| kflow_ai8x::layer::Pool {
            kind: match p.kind {
                PoolKind::Max => AiPoolKind::Max,
                PoolKind::Avg => AiPoolKind::Avg,
            },
            size: if one_d {
                [p.kernel as u32, 1]
            } else {
                [p.kernel as u32; 2]
            },
            stride: if one_d {
                [p.stride as u32, 1]
            } else {
                [p.stride as u32; 2]
            },
        });
        let weight_bits = ql.weight_bits.0;
        // The operator's input before flatten: what pooling leaves.
        let pooled = if l.flatten {
            shape(&l.input_shape)
        } else {
            shape(&l.operator_input_shape)
        };
        let bias_values = ql.bias.as_deref();
        // An all-zero bias is dropped, as the reference tools do (§2.10).
        let has_bias = match bias_values {
            Some(b) => b.iter().any(|v| *v != 0),
            None => ql.bias_len.is_some(),
        };
        layers.push(HwLayer {
            index,
            name: Some(l.name.clone()),
            operator,
            eltwise: l.eltwise_add.then_some(EltwiseOp::Add),
            operands: if l.eltwise_add { l.sources.len() as u32 } else { 1 },
            pool_first: true,
            sources: l
                .sources
                .iter()
                .map(|s| match *s {
                    HwSource::Input => Source::Input,
                    HwSource::Layer(j) => Source::Layer(j),
                })
                .collect(),
            data_format: DataFormat::HWC,
            input: shape(&l.input_shape),
            pool,
            pooled,
            out_channels: l.out_channels() as u32,
            kernel,
            pad,
            stride,
            dilation: 1,
            groups: 1,
            flatten: l.flatten,
            activation: match l.activation {
                Activation::None => AiActivation::None,
                Activation::Relu => AiActivation::ReLU,
                Activation::Abs => AiActivation::Abs,
            },
            output_shift: ql.output_shift,
            weight_bits,
            output_width: if ql.output_width == 32 {
                OutputWidth::ThirtyTwo
            } else {
                OutputWidth::Eight
            },
            bias: has_bias,
            write_gap: write_gap[index],
            output: shape(&l.output_shape),
        });
        if !ql.weight_shape.is_empty() {
            let lw = if ql.weight.is_empty() {
                LayerWeights::shape(&ql.weight_shape, ql.bias_len)
            } else {
                LayerWeights::values(&ql.weight_shape, &ql.weight, bias_values)
            };
            weights.layers.insert(index, lw);
        }
    }
    (layers, weights, shape(&q.input))
}
