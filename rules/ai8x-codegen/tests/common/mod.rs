//! Programs the integration tests generate code for.

use kflow_ai8x_codegen::{
    Activation, Bias, DataFormat, Device, Dims, Layer, Operator, OutputWidth, Pool, PoolKind, Program,
};

/// Deterministic int8 values (xorshift), different per seed.
pub fn values(seed: u32, n: usize) -> Vec<i8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8 as i8
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn layer(
    name: &str,
    operator: Operator,
    input: [u32; 3],
    out_channels: u32,
    kernel: [u32; 2],
    processors: u64,
    output_processors: u64,
    offsets: [u32; 3],
) -> Layer {
    let flatten = operator == Operator::Linear && input[1] * input[2] > 1;
    let features = if flatten {
        input[0] * input[1] * input[2]
    } else {
        input[0]
    };
    let n = (out_channels * features * kernel[0] * kernel[1]) as usize;
    Layer {
        name: name.into(),
        operator,
        input: Dims {
            channels: input[0],
            height: input[1],
            width: input[2],
        },
        pool: None,
        kernel,
        pad: 0,
        flatten,
        out_channels,
        activation: Activation::Relu,
        output_shift: 0,
        weight_bits: 8,
        output_width: OutputWidth::Bits8,
        processors,
        output_processors,
        in_offset: offsets[0],
        out_offset: offsets[1],
        kernel_offset: offsets[2],
        weights: values(offsets[2] + out_channels, n),
        bias: None,
        depthwise: false,
        binary: false,
        eltwise: None,
        write_gap: 0,
    }
}

fn bias(quadrant: u32, offset: u32, n: u32) -> Option<Bias> {
    Some(Bias {
        quadrant,
        offset,
        values: values(100 + offset + quadrant, n as usize),
        broadcast: None,
    })
}

/// The §4.5 network of spec/max78002.md with the allocation the izer
/// found for it (kernel offsets 0, 12, 20, 28; biases q0/0, q1/0, q1/16,
/// q0/32).
pub fn spec_4_5() -> Program {
    let mut conv0 = layer(
        "conv0",
        Operator::Conv1d,
        [17, 8, 1],
        32,
        [3, 1],
        0x1_ffff,
        0xffff_ffff,
        [0, 0xA000, 0],
    );
    conv0.pad = 1;
    conv0.output_shift = -1;
    conv0.bias = bias(0, 0, 32);
    let mut conv1 = layer(
        "conv1",
        Operator::Conv1d,
        [32, 8, 1],
        16,
        [3, 1],
        0xffff_ffff,
        0xffff,
        [0xA000, 0, 12],
    );
    conv1.pad = 1;
    conv1.output_shift = -2;
    conv1.pool = Some(Pool {
        kind: PoolKind::Max,
        size: [2, 1],
        stride: 2,
    });
    conv1.bias = bias(1, 0, 16);
    let mut fc0 = layer(
        "fc0",
        Operator::Linear,
        [16, 4, 1],
        16,
        [1, 1],
        0xffff,
        0xffff,
        [0, 0xA000, 20],
    );
    fc0.bias = bias(1, 16, 16);
    let mut fc1 = layer(
        "fc1",
        Operator::Linear,
        [16, 1, 1],
        2,
        [1, 1],
        0xffff,
        0x3,
        [0xA000, 0, 28],
    );
    fc1.activation = Activation::None;
    fc1.bias = bias(0, 32, 2);
    Program {
        device: Device::Max78002,
        input_format: DataFormat::Hwc,
        layers: vec![conv0, conv1, fc0, fc1],
    }
}

/// A MAX78000 network with a CHW image input, a pooled 3×3 conv2d without
/// bias, and a flattened linear layer with 32-bit outputs.
pub fn chw_image_max78000() -> Program {
    let mut conv = layer(
        "conv",
        Operator::Conv2d,
        [3, 8, 8],
        8,
        [3, 3],
        0x111,
        0xff,
        [0, 0x4000, 0],
    );
    conv.pad = 1;
    conv.pool = Some(Pool {
        kind: PoolKind::Avg,
        size: [2, 2],
        stride: 2,
    });
    let mut fc = layer(
        "fc",
        Operator::Linear,
        [8, 4, 4],
        10,
        [1, 1],
        0xff,
        0x3ff,
        [0x4000, 0, 8],
    );
    fc.activation = Activation::None;
    fc.output_width = OutputWidth::Bits32;
    fc.bias = bias(0, 0, 10);
    Program {
        device: Device::Max78000,
        input_format: DataFormat::Chw,
        layers: vec![conv, fc],
    }
}

/// kflow's baseline CNN shape on the MAX78002: conv1d 17 → 48 (k = 3,
/// pad 1) on a window of 8, a pooling-only layer (max pool 2/2, §2.6), and
/// a flattened linear layer 48×4 → 2. Kernels at columns 0 (conv, 16
/// columns) and 16 (fc); biases in quadrant 0 at 0 and 48.
pub fn baseline_with_passthrough() -> Program {
    let mut conv = layer(
        "conv",
        Operator::Conv1d,
        [17, 8, 1],
        48,
        [3, 1],
        0x1_ffff,
        0xffff_ffff_ffff,
        [0, 0xA000, 0],
    );
    conv.pad = 1;
    conv.output_shift = -1;
    conv.bias = bias(0, 0, 48);
    let mut pool = layer(
        "pool",
        Operator::Passthrough,
        [48, 8, 1],
        48,
        [1, 1],
        0xffff_ffff_ffff,
        0xffff_ffff_ffff,
        [0xA000, 0, 0],
    );
    pool.weights.clear();
    pool.activation = Activation::None;
    pool.pool = Some(Pool {
        kind: PoolKind::Max,
        size: [2, 1],
        stride: 2,
    });
    let mut fc = layer(
        "fc",
        Operator::Linear,
        [48, 4, 1],
        2,
        [1, 1],
        0xffff_ffff_ffff,
        0x3,
        [0, 0xA000, 16],
    );
    fc.activation = Activation::None;
    fc.bias = bias(0, 48, 2);
    Program {
        device: Device::Max78002,
        input_format: DataFormat::Hwc,
        layers: vec![conv, pool, fc],
    }
}
