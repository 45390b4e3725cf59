//! An allocated network as the C code generator's program.

use std::collections::BTreeMap;

use kflow_ai8x_codegen as cg;

use crate::alloc::Allocation;
use crate::layer::{Operator, Shape};
use crate::network::{Activation, DataFormat, OutputWidth, PoolKind, WeightBits};
use crate::weights::Int8Layer;

/// A layer the code generator cannot emit, and why.
#[derive(Debug, thiserror::Error)]
#[error("layer {layer}: {why}")]
pub struct ProgramError {
    pub layer: usize,
    pub why: String,
}

fn dims(s: Shape) -> cg::Dims {
    cg::Dims {
        channels: s.channels,
        height: s.height,
        width: s.width,
    }
}

/// The weights as the hardware runs them: a dilated conv1d's kernels with
/// `d − 1` zeros between taps (spec §2.3: a kernel zero-stuffed to
/// `(k − 1)·d + 1 ≤ 9` taps runs natively).
fn stuffed(weight: &[i8], l: &crate::layer::HwLayer) -> Vec<i8> {
    let (k, d) = (l.kernel[0] as usize, l.dilation as usize);
    if l.operator != Operator::Conv1d || d <= 1 || k == 0 {
        return weight.to_vec();
    }
    let taps = l.kernel_taps() as usize;
    weight
        .chunks(k)
        .flat_map(|kernel| {
            let mut out = vec![0i8; taps];
            for (t, w) in kernel.iter().enumerate() {
                out[t * d] = *w;
            }
            out
        })
        .collect()
}

/// The generator's program for `allocation`, with the weights of `values`.
pub fn program(allocation: &Allocation, values: &BTreeMap<usize, Int8Layer>) -> Result<cg::Program, ProgramError> {
    let mut layers = Vec::with_capacity(allocation.layers.len());
    for (i, a) in allocation.layers.iter().enumerate() {
        let l = &a.layer;
        // On the MAX78002 the izer puts a hidden "avg-pool reset" layer
        // between an element-wise layer and an average-pooling one (spec
        // §2.7); the program has no place for it yet.
        let avg_after_eltwise = i > 0
            && allocation.layers[i - 1].layer.eltwise.is_some()
            && l.pool.is_some_and(|p| p.kind == PoolKind::Avg);
        if allocation.device == crate::device::Device::Max78002 && avg_after_eltwise {
            return Err(ProgramError {
                layer: l.index,
                why: "the C generator does not emit the hidden avg-pool reset layer after an element-wise layer yet"
                    .into(),
            });
        }
        let operator = match l.operator {
            Operator::Conv1d => cg::Operator::Conv1d,
            Operator::Conv2d => cg::Operator::Conv2d,
            Operator::Linear => cg::Operator::Linear,
            Operator::None => cg::Operator::Passthrough,
            Operator::ConvTranspose2d => cg::Operator::ConvTranspose2d,
        };
        let weight_bits = match l.weight_bits {
            WeightBits::One | WeightBits::Binary => 1,
            WeightBits::Two => 2,
            WeightBits::Four => 4,
            WeightBits::Eight => 8,
        };
        let stored = values.get(&l.index);
        let bias = match (&a.bias, stored.and_then(|v| v.bias.as_ref())) {
            (Some(p), Some(values)) => Some(cg::Bias {
                quadrant: u32::from(p.quadrant),
                offset: p.offset,
                values: values.clone(),
                broadcast: p.broadcast,
            }),
            _ => None,
        };
        layers.push(cg::Layer {
            name: l.name.clone().unwrap_or_else(|| format!("layer{}", l.index)),
            operator,
            input: dims(l.input),
            pool: l.pool.map(|p| cg::Pool {
                kind: match p.kind {
                    PoolKind::Max => cg::PoolKind::Max,
                    PoolKind::Avg => cg::PoolKind::Avg,
                },
                size: p.size,
                stride: p.stride[0],
            }),
            kernel: if l.operator == Operator::Conv1d {
                [l.kernel_taps(), 1]
            } else {
                l.kernel
            },
            pad: l.pad,
            flatten: l.flatten,
            out_channels: l.out_channels,
            activation: match l.activation {
                Activation::None => cg::Activation::None,
                Activation::ReLU => cg::Activation::Relu,
                Activation::Abs => cg::Activation::Abs,
            },
            output_shift: l.output_shift,
            weight_bits,
            output_width: match l.output_width {
                OutputWidth::Eight => cg::OutputWidth::Bits8,
                OutputWidth::ThirtyTwo => cg::OutputWidth::Bits32,
            },
            processors: a.maps.processors,
            output_processors: a.maps.output_processors,
            in_offset: a.maps.in_offset,
            out_offset: a.maps.out_offset,
            kernel_offset: a.kernel.map_or(0, |k| k.offset),
            weights: stored.map(|v| stuffed(&v.weight, l)).unwrap_or_default(),
            bias,
            depthwise: l.is_depthwise(),
            binary: l.weight_bits == WeightBits::Binary,
            eltwise: l.eltwise.map(|op| cg::Eltwise {
                op,
                operands: l.operands,
                pool_first: l.pool_first,
            }),
            write_gap: l.write_gap,
        });
    }
    let first_format = allocation.layers.first().map(|a| a.layer.data_format);
    Ok(cg::Program {
        device: allocation.device.into(),
        input_format: match first_format {
            Some(DataFormat::CHW) => cg::DataFormat::Chw,
            _ => cg::DataFormat::Hwc,
        },
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::layer::{Findings, resolve};
    use crate::weights::{LayerWeights, Weights};
    use crate::yaml::parse_network;

    #[test]
    fn a_dilated_conv1d_runs_with_zero_stuffed_kernels() {
        let text = "arch: a\ndataset: d\nlayers:\n  - {processors: 3, op: conv1d, kernel_size: 3, dilation: 2, pad: 0, output_shift: 0, quantization: 8}\n";
        let weight: Vec<i8> = (1..=6).collect();
        let mut weights = Weights::default();
        weights.insert(0, LayerWeights::values(&[1, 2, 3], &weight, None));
        let mut findings = Findings::default();
        let layers = resolve(
            &parse_network(text).unwrap(),
            &weights,
            Shape::one_d(2, 10),
            &mut findings,
        )
        .unwrap();
        let allocation = crate::alloc::allocate(Device::Max78002, &layers).unwrap();
        let values = BTreeMap::from([(
            0,
            Int8Layer {
                shape: vec![1, 2, 3],
                weight,
                bias: None,
            },
        )]);
        let program = program(&allocation, &values).unwrap();
        let layer = &program.layers[0];
        // §2.3: (k − 1)·d + 1 = 5 taps, the weights d apart.
        assert_eq!(layer.kernel, [5, 1]);
        assert_eq!(layer.weights, [1, 0, 2, 0, 3, 4, 0, 5, 0, 6]);
    }
}
