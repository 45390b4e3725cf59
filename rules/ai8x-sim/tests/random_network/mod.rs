//! Random valid networks: small shapes, every operator, pooling kind,
//! element-wise op, weight width and output width, skip connections,
//! concatenation and `in_dim` reshapes. A candidate layer is drawn loosely
//! and kept only if the simulator's validation accepts it; a passthrough
//! layer is the fallback, so every network has the requested depth.

use kflow_ai8x_sim::{
    Activation, Device, EltwiseOp, Layer, LayerWeights, Network, Op, OutputWidth, Pool, PoolKind, Shape, Source,
    Tensor, WeightBits, output_shapes,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct Case {
    pub net: Network,
    pub weights: Vec<LayerWeights>,
    pub input: Tensor<i8>,
    pub avg_rounding: bool,
}

/// `large` networks have enough channels and pixels per layer to take the
/// simulator's multi-threaded paths.
pub fn case(seed: u64, large: bool) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let device = if rng.random_bool(0.7) {
        Device::Max78002
    } else {
        Device::Max78000
    };
    let one_d = rng.random_bool(0.3);
    let channels = if large || rng.random_bool(0.15) {
        rng.random_range(60..=100)
    } else {
        rng.random_range(1..=8)
    };
    let side = if large { 12..=24 } else { 1..=9 };
    let input = if one_d {
        Shape::one_d(channels, rng.random_range(if large { 64..=256 } else { 1..=16 }))
    } else {
        Shape::new(channels, rng.random_range(side.clone()), rng.random_range(side))
    };
    // spec §3.8: 1-bit and binary layers cannot share a network.
    let low_bits = if device == Device::Max78002 && rng.random_bool(0.5) {
        WeightBits::Binary
    } else {
        WeightBits::One
    };
    let mut net = Network {
        device,
        input,
        layers: Vec::new(),
    };
    let mut weights = Vec::new();
    let depth = rng.random_range(1..=5);
    for i in 0..depth {
        let last = i + 1 == depth;
        let shapes = output_shapes(&net).unwrap_or_default();
        let (layer, w) = (0..30)
            .find_map(|_| {
                let (layer, w) = candidate(&mut rng, &net, &shapes, low_bits, last, large);
                net.layers.push(layer);
                let ok = output_shapes(&net).is_ok();
                let layer = net.layers.pop()?;
                ok.then_some((layer, w))
            })
            .unwrap_or_else(|| {
                let c = shapes.last().map_or(input.channels, |s| s.channels);
                (Layer::new(Op::None, c, c), LayerWeights::default())
            });
        net.layers.push(layer);
        weights.push(w);
    }
    let data = (0..input.len()).map(|_| extreme_i8(&mut rng)).collect();
    Case {
        net,
        weights,
        input: Tensor { shape: input, data },
        avg_rounding: rng.random_bool(0.5),
    }
}

/// Uniform int8, with the extremes (where saturation and −128·−128 live)
/// drawn more often.
fn extreme_i8(rng: &mut ChaCha8Rng) -> i8 {
    match rng.random_range(0..10) {
        0 => -128,
        1 => 127,
        _ => rng.random(),
    }
}

fn candidate(
    rng: &mut ChaCha8Rng,
    net: &Network,
    shapes: &[Shape],
    low_bits: WeightBits,
    last: bool,
    large: bool,
) -> (Layer, LayerWeights) {
    let mut sources: Vec<(Source, Shape)> = vec![(Source::Input, net.input)];
    sources.extend(shapes.iter().enumerate().map(|(j, s)| (Source::Layer(j), *s)));
    let previous = sources[sources.len() - 1];
    let op_kind = rng.random_range(0..10);
    let eltwise_allowed = op_kind <= 1 || op_kind == 5 || op_kind == 6;
    let mut layer = Layer::new(Op::None, 0, 0);
    let operand = if eltwise_allowed && rng.random_bool(0.4) {
        let base = sources[rng.random_range(0..sources.len())];
        let same: Vec<Source> = sources
            .iter()
            .filter(|(_, s)| *s == base.1)
            .map(|(src, _)| *src)
            .collect();
        let n = if rng.random_bool(0.7) {
            2
        } else {
            rng.random_range(3..=5)
        };
        layer.inputs = (0..n).map(|_| same[rng.random_range(0..same.len())]).collect();
        layer.eltwise = Some([EltwiseOp::Add, EltwiseOp::Sub, EltwiseOp::Xor, EltwiseOp::Or][rng.random_range(0..4)]);
        layer.pool_first = n > 2 || rng.random_bool(0.5);
        base.1
    } else if rng.random_bool(0.2) {
        let a = sources[rng.random_range(0..sources.len())];
        let b = sources[rng.random_range(0..sources.len())];
        layer.inputs = vec![a.0, b.0];
        Shape {
            channels: a.1.channels + b.1.channels,
            ..a.1
        }
    } else if rng.random_bool(0.2) {
        let a = sources[rng.random_range(0..sources.len())];
        layer.inputs = vec![a.0];
        a.1
    } else {
        previous.1
    };
    let mut x = operand;
    let wants_1d = matches!(op_kind, 2..=4);
    if rng.random_bool(0.2) || (wants_1d && x.width != 1 && rng.random_bool(0.7)) {
        let pixels = x.pixels();
        let divisors: Vec<usize> = (1..=pixels).filter(|r| pixels % r == 0).collect();
        let rows = if wants_1d {
            pixels
        } else {
            divisors[rng.random_range(0..divisors.len())]
        };
        layer.in_dim = Some([rows, pixels / rows]);
        x.height = rows;
        x.width = pixels / rows;
    }
    layer.in_channels = x.channels;
    if rng.random_bool(0.35) {
        let kind = if rng.random_bool(0.5) {
            PoolKind::Max
        } else {
            PoolKind::Avg
        };
        let ph = rng.random_range(1..=3);
        let pw = if x.width == 1 { 1 } else { rng.random_range(1..=3) };
        layer.pool = Some(Pool {
            kind,
            size: [ph, pw],
            stride: rng.random_range(1..=3),
        });
        if let Some(p) = &layer.pool
            && ph <= x.height
            && pw <= x.width
        {
            x.height = (x.height - ph) / p.stride + 1;
            x.width = (x.width - pw) / p.stride + 1;
        }
    }
    let out_channels = if large || rng.random_bool(0.1) {
        rng.random_range(60..=72)
    } else {
        rng.random_range(1..=10)
    };
    layer.out_channels = out_channels;
    let reduction;
    layer.op = match op_kind {
        0 | 1 => {
            layer.out_channels = x.channels;
            reduction = 0;
            Op::None
        }
        2..=4 => {
            let kernel = rng.random_range(1..=9.min(x.height + 4));
            let pad = rng.random_range(0..=2.min(kernel - 1));
            reduction = x.channels * kernel;
            Op::Conv1d { kernel, pad }
        }
        5 | 6 => {
            let kernel = if rng.random_bool(0.7) { 3 } else { 1 };
            let pad = rng.random_range(0..=2.min(kernel - 1));
            let depthwise = net.device == Device::Max78002 && rng.random_bool(0.2);
            if depthwise {
                layer.out_channels = x.channels;
            }
            reduction = if depthwise { 1 } else { x.channels } * kernel * kernel;
            Op::Conv2d { kernel, pad, depthwise }
        }
        7 => {
            reduction = x.channels * 9 / 4;
            Op::ConvTranspose2d {
                pad: rng.random_range(0..=2),
            }
        }
        _ => {
            let flatten = x.pixels() > 1 || rng.random_bool(0.5);
            if flatten {
                layer.pool = None;
                x = operand_after_in_dim(&layer, operand);
            }
            reduction = x.len();
            Op::Linear { flatten }
        }
    };
    if layer.op == Op::None {
        return (layer, LayerWeights::default());
    }
    layer.weight_bits = match rng.random_range(0..5) {
        0 => low_bits,
        1 => WeightBits::Two,
        2 => WeightBits::Four,
        _ => WeightBits::Eight,
    };
    layer.activation = [Activation::None, Activation::Relu, Activation::Abs][rng.random_range(0..3)];
    if last && rng.random_bool(0.3) {
        layer.output_width = OutputWidth::ThirtyTwo;
        layer.activation = Activation::None;
    }
    // Pick S so that outputs land mostly inside int8, to exercise rounding
    // rather than saturation: |acc| grows like √reduction · 2^7 · 2^(b−1).
    let b = layer.weight_bits.bits();
    let magnitude = 0.5 * (reduction.max(1) as f64).log2() + 7.0 + f64::from(b - 1);
    let s = (7.0 + 6.0 - magnitude).round() as i32 + rng.random_range(-2..=2);
    layer.output_shift = s.clamp(-15, 15) - 8 + b;
    let n_weights = match layer.op {
        Op::Conv1d { kernel, .. } => layer.out_channels * layer.in_channels * kernel,
        Op::Conv2d { kernel, depthwise, .. } => {
            layer.out_channels * (if depthwise { 1 } else { layer.in_channels }) * kernel * kernel
        }
        Op::ConvTranspose2d { .. } => layer.in_channels * layer.out_channels * 9,
        _ => layer.out_channels * x.len(),
    };
    let weight = (0..n_weights).map(|_| random_weight(rng, layer.weight_bits)).collect();
    let biased = rng.random_bool(0.6) && !(net.device == Device::Max78002 && layer.eltwise.is_some());
    let bias = biased.then(|| (0..layer.out_channels).map(|_| extreme_i8(rng)).collect());
    (layer, LayerWeights { weight, bias })
}

fn operand_after_in_dim(layer: &Layer, operand: Shape) -> Shape {
    match layer.in_dim {
        Some([rows, columns]) => Shape {
            height: rows,
            width: columns,
            ..operand
        },
        None => operand,
    }
}

fn random_weight(rng: &mut ChaCha8Rng, bits: WeightBits) -> i8 {
    match bits {
        WeightBits::Binary => {
            if rng.random_bool(0.5) {
                1
            } else {
                -1
            }
        }
        WeightBits::Eight => extreme_i8(rng),
        other => {
            let half = 1i8 << (other.bits() - 1);
            rng.random_range(-half..half)
        }
    }
}
