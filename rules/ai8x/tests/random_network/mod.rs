//! Seeded random ai8x networks as a user's YAML would state them: every
//! layer kind and weight width the YAML reader accepts, on both devices,
//! placed by kflow's allocator and then nudged (output maps moved inside a
//! memory instance or off processor 0, output offsets moved) so that the
//! checker also sees maps the allocator would not choose. A drawn layer
//! whose shapes do not resolve is drawn again; the checker decides the
//! rest.

use std::collections::BTreeMap;

use kflow_ai8x::network::{
    Activation, DataFormat, Dims, EltwiseOp, Layer, Network, Op, OutputWidth, PoolKind, SequenceRef, WeightBits,
};
use kflow_ai8x::{Device, Findings, HwLayer, Int8Layer, LayerWeights, Shape, Source, Weights};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A network with its weights, written to YAML and read back.
pub struct Case {
    pub device: Device,
    pub input: Shape,
    pub yaml: String,
    pub network: Network,
    pub weights: Weights,
    pub values: BTreeMap<usize, Int8Layer>,
}

/// The network of `seed`, or `None` when kflow's allocator cannot place
/// the drawn layers (the checker never sees those).
pub fn case(seed: u64) -> Option<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let device = if rng.random_bool(0.5) {
        Device::Max78002
    } else {
        Device::Max78000
    };
    let channels = channel_count(&mut rng);
    let input = if rng.random_bool(0.35) {
        Shape::one_d(channels, rng.random_range(1..=24))
    } else {
        Shape::new(channels, rng.random_range(1..=10), rng.random_range(1..=10))
    };
    // Spec §3.8: 1-bit and binary layers cannot share a network.
    let low_bits = if device == Device::Max78002 && rng.random_bool(0.5) {
        WeightBits::Binary
    } else {
        WeightBits::One
    };
    let mut docs: Vec<Layer> = Vec::new();
    let mut weights = Weights::default();
    let mut values = BTreeMap::new();
    let mut hw: Vec<HwLayer> = Vec::new();
    let depth = rng.random_range(1..=5);
    for index in 0..depth {
        let last = index + 1 == depth;
        let drawn = (0..20).find_map(|_| {
            let (doc, cout) = draw_layer(&mut rng, index, input, &hw, low_bits, last);
            add_layer(&mut rng, device, input, &docs, &weights, doc, cout)
        });
        let Some((doc, layer_weights, layer_values, layers)) = drawn else {
            break;
        };
        docs.push(doc);
        if let (Some(w), Some(v)) = (layer_weights, layer_values) {
            weights.insert(index, w);
            values.insert(index, v);
        }
        hw = layers;
    }
    if hw.is_empty() {
        return None;
    }
    let allocation = kflow_ai8x::allocate(device, &hw).ok()?;
    let mut network = allocation.to_network("random", "random");
    nudge_maps(&mut rng, &hw, &mut network);
    let yaml = kflow_ai8x::to_yaml(&network);
    let network = kflow_ai8x::parse_network(&yaml).ok()?;
    Some(Case {
        device,
        input,
        yaml,
        network,
        weights,
        values,
    })
}

/// Mostly a few channels; sometimes more than one pass of 64.
fn channel_count(rng: &mut impl Rng) -> u32 {
    match rng.random_range(0..10) {
        0..=6 => rng.random_range(1..=16),
        7 | 8 => rng.random_range(17..=64),
        _ => rng.random_range(65..=140),
    }
}

/// The output shape of the last resolved layer, or the network input.
fn current_shape(input: Shape, hw: &[HwLayer]) -> Shape {
    hw.last().map_or(input, |l| l.output)
}

/// One layer as a user writes it, and its output channels (`None` for a
/// layer without an operator).
fn draw_layer(
    rng: &mut impl Rng,
    index: usize,
    input: Shape,
    hw: &[HwLayer],
    low_bits: WeightBits,
    last: bool,
) -> (Layer, Option<u32>) {
    let shape = current_shape(input, hw);
    let one_d = shape.width == 1;
    let mut doc = Layer {
        processors: 1,
        ..Layer::default()
    };
    if index == 0 && rng.random_bool(0.2) {
        doc.data_format = Some(DataFormat::CHW);
    }
    let mut cout = Some(channel_count(rng));
    let mut pooled = rng.random_bool(0.35);
    match rng.random_range(0..10) {
        0 | 1 if one_d => {
            doc.op = Some(Op::Conv1d);
            let k = rng.random_range(1..=9);
            doc.kernel_size = Some(Dims::One(k));
            doc.pad = Some(rng.random_range(0..=2.min(k - 1)));
            if rng.random_bool(0.1) {
                doc.dilation = Some(2);
            }
        }
        0 | 1 => {
            doc.op = Some(Op::Conv2d);
            let k = if rng.random_bool(0.7) { 3 } else { 1 };
            doc.kernel_size = Some(Dims::Two(k, k));
            doc.pad = Some(if k == 3 { rng.random_range(0..=2) } else { 0 });
        }
        2 => {
            // Depthwise: one group per channel.
            doc.op = Some(Op::Conv2d);
            doc.kernel_size = Some(Dims::Two(3, 3));
            doc.pad = Some(1);
            doc.groups = Some(shape.channels);
            cout = Some(shape.channels);
        }
        3 if !one_d => {
            doc.op = Some(Op::ConvTranspose2d);
            doc.kernel_size = Some(Dims::Two(3, 3));
            doc.pad = Some(1);
        }
        3 | 4 => {
            doc.op = Some(Op::Linear);
            if shape.pixels() > 1 || rng.random_bool(0.3) {
                doc.flatten = Some(true);
                pooled = false;
            }
        }
        5 | 6 => {
            doc.op = Some(Op::Passthrough);
            cout = None;
            pooled = rng.random_bool(0.8);
        }
        _ => {
            let op = [EltwiseOp::Add, EltwiseOp::Sub, EltwiseOp::Xor, EltwiseOp::Or][rng.random_range(0..4)];
            let operands = rng.random_range(2..=4);
            // Operands: earlier outputs of the same shape, else the
            // previous one again.
            let mut same: Vec<SequenceRef> = hw
                .iter()
                .filter(|l| l.output == shape)
                .map(|l| SequenceRef::Index(l.index))
                .collect();
            if input == shape {
                same.push(SequenceRef::Input);
            }
            let previous = index.checked_sub(1).map_or(SequenceRef::Input, SequenceRef::Index);
            let sources = (0..operands)
                .map(|_| {
                    if same.is_empty() || rng.random_bool(0.3) {
                        previous.clone()
                    } else {
                        same[rng.random_range(0..same.len())].clone()
                    }
                })
                .collect();
            doc.in_sequences = Some(sources);
            doc.operands = Some(operands);
            doc.eltwise = Some(op);
            if rng.random_bool(0.3) {
                // Fused with a convolution.
                doc.op = Some(Op::Conv2d);
                doc.kernel_size = Some(Dims::Two(3, 3));
                doc.pad = Some(1);
            } else {
                doc.op = Some(Op::Eltwise(op));
                doc.eltwise = None;
                cout = None;
            }
        }
    }
    if pooled {
        let kind = if rng.random_bool(0.5) {
            PoolKind::Max
        } else {
            PoolKind::Avg
        };
        let size = rng.random_range(1..=3);
        doc.pool = Some((kind, Dims::One(size)));
        doc.pool_stride = Some(Dims::One(rng.random_range(1..=3)));
    }
    if cout.is_some() {
        doc.quantization = Some(match rng.random_range(0..8) {
            0..=3 => WeightBits::Eight,
            4 => WeightBits::Four,
            5 => WeightBits::Two,
            _ => low_bits,
        });
        doc.output_shift = Some(rng.random_range(-3..=3));
        doc.activate = Some([Activation::None, Activation::ReLU, Activation::Abs][rng.random_range(0..3)]);
        if last && rng.random_bool(0.2) {
            doc.output_width = Some(OutputWidth::ThirtyTwo);
            doc.activate = Some(Activation::None);
        }
    }
    if rng.random_bool(if last { 0.05 } else { 0.1 }) {
        doc.write_gap = Some(1);
    }
    (doc, cout)
}

/// Resolves the network with `doc` appended and gives `doc` weights of the
/// shape its resolved input needs; `None` when the shapes do not resolve.
#[allow(clippy::type_complexity)]
fn add_layer(
    rng: &mut impl Rng,
    device: Device,
    input: Shape,
    docs: &[Layer],
    weights: &Weights,
    doc: Layer,
    cout: Option<u32>,
) -> Option<(Layer, Option<LayerWeights>, Option<Int8Layer>, Vec<HwLayer>)> {
    let index = docs.len();
    let network = |doc: &Layer| Network {
        arch: "random".into(),
        dataset: "random".into(),
        layers: docs.iter().cloned().chain([doc.clone()]).collect(),
        ..Network::default()
    };
    let kernel = match doc.kernel_size {
        Some(Dims::One(k)) => vec![k as usize],
        Some(Dims::Two(h, w)) => vec![h as usize, w as usize],
        None => Vec::new(),
    };
    let shape_of = |features: usize, cout: usize| -> Vec<usize> {
        let mut s = match doc.op {
            Some(Op::ConvTranspose2d) => vec![features, cout],
            _ => vec![cout, features],
        };
        s.extend(&kernel);
        s
    };
    let (layer_weights, layer_values) = match cout {
        None => (None, None),
        Some(cout) => {
            // Resolved with a placeholder input count first: that gives
            // the pooled input the real weights must match.
            let mut probe = weights.clone();
            probe.insert(index, LayerWeights::shape(&shape_of(1, cout as usize), None));
            let mut findings = Findings::default();
            let layers = kflow_ai8x::resolve(&network(&doc), &probe, input, &mut findings)?;
            let pooled = layers[index].pooled;
            let groups = doc.groups.unwrap_or(1).max(1);
            let features = match doc.op {
                Some(Op::Linear) if doc.flatten == Some(true) => pooled.channels as u64 * pooled.pixels(),
                Some(Op::ConvTranspose2d) => u64::from(pooled.channels),
                _ => u64::from(pooled.channels / groups),
            } as usize;
            let per_kernel = match doc.op {
                Some(Op::ConvTranspose2d) => cout as usize / groups as usize,
                _ => cout as usize,
            };
            let shape = shape_of(features, per_kernel);
            let bits = doc.quantization.unwrap_or_default();
            let (lo, hi) = bits.range();
            let count: usize = shape.iter().product();
            let weight: Vec<i8> = (0..count)
                .map(|_| {
                    if bits == WeightBits::Binary {
                        if rng.random_bool(0.5) { 1 } else { -1 }
                    } else {
                        rng.random_range(lo..=hi) as i8
                    }
                })
                .collect();
            let bias: Option<Vec<i8>> = rng
                .random_bool(0.5)
                .then(|| (0..cout).map(|_| rng.random_range(-128..=127i32) as i8).collect());
            let w = LayerWeights::values(&shape, &weight, bias.as_deref());
            (Some(w), Some(Int8Layer { shape, weight, bias }))
        }
    };
    let mut all = weights.clone();
    if let Some(w) = &layer_weights {
        all.insert(index, w.clone());
    }
    let mut findings = Findings::default();
    let layers = kflow_ai8x::resolve(&network(&doc), &all, input, &mut findings)?;
    // A layer the checker rejects for its own shape alone teaches nothing.
    if !findings.violations.is_empty() || kflow_ai8x::allocate(device, &layers).is_err() {
        return None;
    }
    Some((doc, layer_weights, layer_values, layers))
}

/// Moves, now and then, one layer's output map and offset where its only
/// reader (the next layer) reads it: inside a memory instance, into
/// another quadrant, or to another offset.
fn nudge_maps(rng: &mut impl Rng, hw: &[HwLayer], network: &mut Network) {
    if hw.len() < 2 || !rng.random_bool(0.4) {
        return;
    }
    let j = rng.random_range(0..hw.len() - 1);
    let only_reader = hw.iter().all(|l| {
        let reads = l.sources.contains(&Source::Layer(j));
        reads == (l.index == j + 1) && (!reads || l.sources.len() == 1)
    });
    if !only_reader {
        return;
    }
    let map = network.layers[j].output_processors.unwrap_or(0);
    let shift = [1, 2, 3, 16, 32][rng.random_range(0..5)];
    if rng.random_bool(0.6) && map.leading_zeros() >= shift {
        network.layers[j].output_processors = Some(map << shift);
        network.layers[j + 1].processors = map << shift;
        // A passthrough reader writes where it reads.
        if hw[j + 1].operator == kflow_ai8x::Operator::None && hw[j + 1].eltwise.is_none() {
            network.layers[j + 1].output_processors = Some(map << shift);
            if let Some(next) = network.layers.get_mut(j + 2) {
                next.processors = map << shift;
            }
        }
    } else {
        let moved = network.layers[j].out_offset.unwrap_or(0) + 0x400 * rng.random_range(1..=4);
        network.layers[j].out_offset = Some(moved);
        network.layers[j + 1].in_offset = Some(moved);
    }
}
