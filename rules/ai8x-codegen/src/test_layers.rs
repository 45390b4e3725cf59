//! Layers for unit tests: the given shape with zero weights of the right
//! count and maps covering the channels from processor 0.

use crate::program::{Activation, Bias, Dims, Layer, Operator, OutputWidth};

/// A layer with zero weights of the right count, for register tests.
pub fn layer(operator: Operator, input: [u32; 3], out_channels: u32, kernel: [u32; 2]) -> Layer {
    let taps = kernel[0] * kernel[1];
    let features = input[0]
        * if operator == Operator::Linear && input[1] * input[2] > 1 {
            input[1] * input[2]
        } else {
            1
        };
    Layer {
        name: "test".into(),
        operator,
        input: Dims {
            channels: input[0],
            height: input[1],
            width: input[2],
        },
        pool: None,
        kernel,
        pad: 0,
        flatten: operator == Operator::Linear && input[1] * input[2] > 1,
        out_channels,
        activation: Activation::Relu,
        output_shift: 0,
        weight_bits: 8,
        output_width: OutputWidth::Bits8,
        processors: low_bits(input[0]),
        output_processors: low_bits(out_channels),
        in_offset: 0,
        out_offset: 0,
        kernel_offset: 0,
        weights: vec![0; (out_channels * features * taps) as usize],
        bias: None,
        depthwise: false,
        binary: false,
        eltwise: None,
        write_gap: 0,
    }
}

fn low_bits(n: u32) -> u64 {
    if n >= 64 { u64::MAX } else { (1 << n) - 1 }
}

pub fn bias(quadrant: u32, offset: u32, n: u32) -> Option<Bias> {
    Some(Bias {
        quadrant,
        offset,
        values: vec![1; n as usize],
        broadcast: None,
    })
}

/// A pooling-only layer (§2.6) on `input`, maps from processor 0.
pub fn passthrough(input: [u32; 3], kind: crate::program::PoolKind, size: [u32; 2], stride: u32) -> Layer {
    let mut layer = layer(Operator::Passthrough, input, input[0], [1, 1]);
    layer.weights.clear();
    layer.activation = Activation::None;
    layer.pool = Some(crate::program::Pool { kind, size, stride });
    layer
}
