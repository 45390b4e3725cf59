//! Seeded random ai8x networks as a user's YAML would state them: every
//! layer kind and weight width the YAML reader accepts, on both devices,
//! placed by kflow's allocator and then nudged (output maps moved inside a
//! memory instance or off processor 0, output offsets moved) so that the
//! checker also sees maps the allocator would not choose. A drawn layer
//! whose shapes do not resolve is drawn again; the checker decides the
//! rest.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use kflow_ai8x::network::{
    Activation, DataFormat, Dims, EltwiseOp, Layer, Network, Op, OutputWidth, PoolKind, SequenceRef, WeightBits,
};
use kflow_ai8x::{Allocation, Device, Findings, HwLayer, Int8Layer, LayerWeights, Operator, Shape, Source, Weights};
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
    while docs.len() < depth {
        let grouped = rng.random_bool(0.25);
        let drawn = (0..20).find_map(|_| {
            let mut group = Group {
                docs: docs.clone(),
                weights: weights.clone(),
                values: BTreeMap::new(),
                hw: Vec::new(),
            };
            let ok = if grouped {
                eltwise_group(&mut rng, device, input, &hw, low_bits, &mut group)
            } else {
                let last = docs.len() + 1 == depth;
                let (doc, cout) = draw_layer(&mut rng, docs.len(), input, &hw, low_bits, last);
                group.push(&mut rng, device, input, doc, cout)
            };
            ok.then_some(group)
        });
        let Some(group) = drawn else {
            break;
        };
        docs = group.docs;
        weights = group.weights;
        values.extend(group.values);
        hw = group.hw;
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
            if k <= 4 && rng.random_bool(0.3) {
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
            doc.op = Some(Op::Conv2d);
            doc.kernel_size = Some(Dims::Two(1, 1));
            doc.pad = Some(0);
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
        // The generator writes depthwise and flatten layers with 8-bit
        // weights only; mostly 8 there, so that they get through.
        let wide = doc.groups.is_some() || doc.flatten.is_some();
        doc.quantization = Some(match rng.random_range(0..if wide { 16 } else { 8 }) {
            4 => WeightBits::Four,
            5 => WeightBits::Two,
            6 | 7 => low_bits,
            _ => WeightBits::Eight,
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

/// Layers drawn so far, with their weights and resolved shapes.
struct Group {
    docs: Vec<Layer>,
    weights: Weights,
    values: BTreeMap<usize, Int8Layer>,
    hw: Vec<HwLayer>,
}

impl Group {
    /// Appends `doc` with weights of the shape its resolved input needs;
    /// false when the shapes do not resolve or kflow cannot place them.
    fn push(&mut self, rng: &mut impl Rng, device: Device, input: Shape, doc: Layer, cout: Option<u32>) -> bool {
        match self.resolved(rng, device, input, doc, cout) {
            Some((doc, w, v, hw)) => {
                let index = self.docs.len();
                self.docs.push(doc);
                if let (Some(w), Some(v)) = (w, v) {
                    self.weights.insert(index, w);
                    self.values.insert(index, v);
                }
                self.hw = hw;
                true
            }
            None => false,
        }
    }

    #[allow(clippy::type_complexity)]
    fn resolved(
        &self,
        rng: &mut impl Rng,
        device: Device,
        input: Shape,
        doc: Layer,
        cout: Option<u32>,
    ) -> Option<(Layer, Option<LayerWeights>, Option<Int8Layer>, Vec<HwLayer>)> {
        let (docs, weights) = (&self.docs, &self.weights);
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
}

/// An element-wise layer and its operands as a network states them
/// (spec §2.7): 2 to 4 branches that read the same source and write with
/// `write_gap = operands − 1`, then the element-wise layer reading them all,
/// alone or fused with a conv2d.
fn eltwise_group(
    rng: &mut impl Rng,
    device: Device,
    input: Shape,
    hw: &[HwLayer],
    low_bits: WeightBits,
    group: &mut Group,
) -> bool {
    let shape = current_shape(input, hw);
    let source = group
        .docs
        .len()
        .checked_sub(1)
        .map_or(SequenceRef::Input, SequenceRef::Index);
    let operands = rng.random_range(2..=4u32);
    let cout = if rng.random_bool(0.5) {
        shape.channels
    } else {
        channel_count(rng)
    };
    let mut branches = Vec::new();
    for _ in 0..operands {
        let mut doc = Layer {
            processors: 1,
            in_sequences: Some(vec![source.clone()]),
            write_gap: Some(operands - 1),
            ..Layer::default()
        };
        let copy = cout == shape.channels && rng.random_bool(0.3);
        if copy {
            doc.op = Some(Op::Passthrough);
        } else {
            if shape.width == 1 {
                doc.op = Some(Op::Conv1d);
                doc.kernel_size = Some(Dims::One(3));
            } else {
                doc.op = Some(Op::Conv2d);
                doc.kernel_size = Some(Dims::Two(3, 3));
            }
            doc.pad = Some(1);
            doc.quantization = Some(if rng.random_bool(0.7) {
                WeightBits::Eight
            } else {
                low_bits
            });
            doc.output_shift = Some(rng.random_range(-2..=2));
            doc.activate = Some(Activation::ReLU);
        }
        branches.push(SequenceRef::Index(group.docs.len()));
        if !group.push(rng, device, input, doc, (!copy).then_some(cout)) {
            return false;
        }
    }
    let op = [EltwiseOp::Add, EltwiseOp::Sub, EltwiseOp::Xor, EltwiseOp::Or][rng.random_range(0..4)];
    let mut doc = Layer {
        processors: 1,
        in_sequences: Some(branches),
        operands: Some(operands),
        ..Layer::default()
    };
    let mut out = None;
    if rng.random_bool(0.3) {
        doc.op = Some(Op::Conv2d);
        doc.eltwise = Some(op);
        doc.kernel_size = Some(Dims::Two(3, 3));
        doc.pad = Some(1);
        doc.quantization = Some(WeightBits::Eight);
        doc.output_shift = Some(0);
        out = Some(channel_count(rng));
    } else {
        doc.op = Some(Op::Eltwise(op));
    }
    if rng.random_bool(0.3) {
        let kind = if rng.random_bool(0.5) {
            PoolKind::Max
        } else {
            PoolKind::Avg
        };
        doc.pool = Some((kind, Dims::One(2)));
        doc.pool_stride = Some(Dims::One(2));
        doc.pool_first = Some(rng.random_bool(0.5) || operands > 2);
    }
    group.push(rng, device, input, doc, out)
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

/// The seeds a run draws: `VAR=start..end` from the environment, else `default`.
pub fn seeds(var: &str, default: Range<u64>) -> Range<u64> {
    match std::env::var(var) {
        Ok(text) => {
            let (a, b) = text.split_once("..").unwrap_or_else(|| panic!("{var}=start..end"));
            a.parse().unwrap()..b.parse().unwrap()
        }
        Err(_) => default,
    }
}

/// What an allocated network exercises, so that a generator that stops
/// covering a layer kind shows in a test's printed summary.
// Not every test that includes this module prints one.
#[allow(dead_code)]
pub fn features(allocation: &Allocation) -> BTreeSet<String> {
    let mut f = BTreeSet::from([format!("{}", allocation.device)]);
    let last = allocation.layers.len() - 1;
    for (i, a) in allocation.layers.iter().enumerate() {
        let l = &a.layer;
        let kind = match (l.operator, l.eltwise) {
            (Operator::None, Some(e)) => format!("{} ({} operands)", e.as_str(), l.operands),
            (Operator::None, None) => "passthrough".to_owned(),
            (Operator::Conv2d, _) if l.is_depthwise() => "conv2d depthwise".to_owned(),
            (Operator::Conv2d, Some(_)) => "conv2d + element-wise".to_owned(),
            (Operator::Conv2d, None) => format!("conv2d {}x{}", l.kernel[0], l.kernel[1]),
            (Operator::Conv1d, _) if l.dilation > 1 => "conv1d dilated".to_owned(),
            (Operator::Conv1d, _) => "conv1d".to_owned(),
            (Operator::ConvTranspose2d, _) => "convtranspose2d".to_owned(),
            (Operator::Linear, _) if l.flatten => "linear flatten".to_owned(),
            (Operator::Linear, _) => "linear".to_owned(),
        };
        f.insert(kind);
        if l.operator != Operator::None {
            f.insert(format!("weights {}", l.weight_bits));
        }
        if let Some(p) = l.pool {
            f.insert(format!("{:?} pool", p.kind));
        }
        if l.output_width == OutputWidth::ThirtyTwo {
            f.insert("32-bit output".to_owned());
        }
        if a.in_passes.count > 1 || a.out_passes.count > 1 {
            f.insert("multi-pass".to_owned());
        }
        if l.write_gap > 0 {
            f.insert(
                if i == last {
                    "write_gap on the output"
                } else {
                    "write_gap"
                }
                .to_owned(),
            );
        }
        if a.maps.out_offset != 0 {
            f.insert("out_offset".to_owned());
        }
        if a.maps.output_processors.trailing_zeros() % 4 != 0 {
            f.insert("output map inside an instance".to_owned());
        }
        if l.operator == Operator::None && l.eltwise.is_none() && a.maps.processors.trailing_zeros() % 16 != 0 {
            f.insert("passthrough off a quadrant's first processor".to_owned());
        }
    }
    f
}
