//! Processor and pass assignment, data-memory offsets, kernel and bias
//! placement (spec/max78002.md §5), as one serializable `Allocation` that
//! the code generator turns into register writes and the weight stream.

use serde::{Deserialize, Serialize};

use crate::bias_memory::{BiasDemand, BiasOverflow, BiasPlacement, place_biases};
use crate::data_memory::{
    DataMemory, Passes, input_bytes, instances, network_input_footprint, output_bytes, output_footprint,
};
use crate::device::{Device, PROCESSORS_PER_QUADRANT, QUADRANTS};
use crate::kernel_memory::{
    KernelMemory, KernelOverflow, KernelPlacement, kernel_columns, kernel_count, kernel_extent,
};
use crate::layer::{HwLayer, Operator, Source};
use crate::network::{DataFormat, Dims, Layer, Network, Op, OutputWidth};

/// Processor maps and data-memory offsets of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMaps {
    pub processors: u64,
    pub output_processors: u64,
    pub in_offset: u32,
    pub out_offset: u32,
}

/// Everything allocated for one layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerAllocation {
    pub layer: HwLayer,
    pub maps: LayerMaps,
    pub in_passes: Passes,
    pub out_passes: Passes,
    /// Bytes used from `in_offset` in each input instance.
    pub in_bytes: u64,
    /// Bytes used from `out_offset` in each output instance.
    pub out_bytes: u64,
    /// `None` for passthrough and element-wise-only layers.
    pub kernel: Option<KernelPlacement>,
    /// `None` without a (non-zero) bias.
    pub bias: Option<BiasPlacement>,
}

/// A network placed on a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub device: Device,
    pub layers: Vec<LayerAllocation>,
    /// Quadrants with an enabled input processor in any layer (§5.1).
    pub used_quadrants: Vec<u8>,
    pub bias_bytes_per_quadrant: [u32; QUADRANTS],
    /// Kernel-memory columns in use on each of the 64 processors.
    pub kernel_columns_per_processor: Vec<u32>,
}

/// Why a network cannot be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error(
        "layer {layer}: kernel memory of processor {processor} needs {needed} columns with {used} used, limit {limit}"
    )]
    KernelMemory {
        layer: usize,
        processor: usize,
        used: u32,
        needed: u32,
        limit: u32,
    },
    #[error(
        "layer {layer}: bias memory needs {bytes} bytes in one of quadrants {candidates:?}, {used} already used, limit {limit}"
    )]
    BiasMemory {
        layer: usize,
        bytes: u32,
        used: u32,
        limit: u32,
        candidates: Vec<usize>,
    },
    #[error("layer {layer}: {what} of {bytes} bytes fits no free offset of a {limit}-byte data-memory instance")]
    DataMemory {
        layer: usize,
        what: &'static str,
        bytes: u64,
        limit: u32,
    },
    #[error("layer {layer}: {what}")]
    Unsupported { layer: usize, what: String },
}

fn used_quadrants(maps: &[LayerMaps]) -> Vec<u8> {
    (0..QUADRANTS)
        .filter(|q| {
            maps.iter()
                .any(|m| m.processors >> (q * PROCESSORS_PER_QUADRANT) & 0xffff != 0)
        })
        .map(|q| q as u8)
        .collect()
}

/// Places kernels and biases for layers whose maps and offsets are known
/// (from a network file, or from `allocate`).
pub fn place(device: Device, layers: &[HwLayer], maps: &[LayerMaps]) -> Result<Allocation, AllocError> {
    let used_quadrants = used_quadrants(maps);
    // §5.6: a bias may go to any quadrant the izer configures, which
    // includes those only the last layer writes to (ai8x-synthesis
    // izer/backend/max7800x.py:997-1001).
    let last_output = maps.last().map_or(0, |m| m.output_processors);
    let bias_quadrants: Vec<usize> = (0..QUADRANTS)
        .filter(|q| used_quadrants.contains(&(*q as u8)) || last_output >> (q * PROCESSORS_PER_QUADRANT) & 0xffff != 0)
        .collect();
    let mut kernels = KernelMemory::new(device);
    // The izer places the kernels of layers that use all 64 processors
    // first, then the others in layer order (ai8x-synthesis
    // izer/kernels.py:139-144); the same order gives the same columns.
    let mut order: Vec<usize> = (0..layers.len()).collect();
    order.sort_by_key(|&i| maps[i].processors != u64::MAX);
    let mut placements: Vec<Option<KernelPlacement>> = vec![None; layers.len()];
    for i in order {
        let (layer, m) = (&layers[i], &maps[i]);
        if layer.operator == Operator::None {
            continue;
        }
        let in_passes = Passes::for_channels(layer.in_channels());
        let out_passes = Passes::for_channels(layer.out_channels);
        let count = kernel_count(layer, m.output_processors, in_passes.count, out_passes.count);
        let columns = kernel_columns(layer, count, in_passes.count, out_passes.count, out_passes.per_pass);
        let extent = kernel_extent(
            layer,
            m.output_processors,
            in_passes.count,
            out_passes.count,
            out_passes.per_pass,
        );
        let offset = kernels.place(m.processors, extent, layer.is_depthwise()).map_err(
            |KernelOverflow {
                 processor,
                 used,
                 needed,
                 limit,
             }| AllocError::KernelMemory {
                layer: layer.index,
                processor,
                used,
                needed,
                limit,
            },
        )?;
        placements[i] = Some(KernelPlacement { offset, columns, count });
    }
    let mut out = Vec::with_capacity(layers.len());
    let mut demands = Vec::new();
    for ((layer, m), kernel) in layers.iter().zip(maps).zip(placements) {
        let in_passes = Passes::for_channels(layer.in_channels());
        let out_passes = Passes::for_channels(layer.out_channels);
        if layer.bias {
            demands.push(BiasDemand {
                layer: layer.index,
                bytes: layer.out_channels + (m.output_processors.trailing_zeros() % 4) * out_passes.count,
                candidates: bias_quadrants.clone(),
                flatten: layer.flatten,
                broadcast: layer.is_depthwise().then_some(m.processors),
            });
        }
        out.push(LayerAllocation {
            layer: layer.clone(),
            maps: *m,
            in_passes,
            out_passes,
            in_bytes: input_bytes(layer, in_passes),
            out_bytes: output_bytes(layer, out_passes),
            kernel,
            bias: None,
        });
    }
    let (placements, bias_bytes_per_quadrant) = place_biases(device, &demands).map_err(
        |BiasOverflow {
             layer,
             bytes,
             used,
             limit,
             candidates,
         }| AllocError::BiasMemory {
            layer,
            bytes,
            used,
            limit,
            candidates,
        },
    )?;
    for (demand, placement) in demands.iter().zip(placements) {
        out[demand.layer].bias = Some(placement);
    }
    Ok(Allocation {
        device,
        layers: out,
        used_quadrants,
        bias_bytes_per_quadrant,
        kernel_columns_per_processor: kernels.columns_used(),
    })
}

/// Contiguous processors from 0 (§4.4), or one per instance for CHW input.
fn input_map(layer: &HwLayer) -> u64 {
    let per_pass = Passes::for_channels(layer.in_channels()).per_pass;
    if layer.index == 0 && layer.data_format == DataFormat::CHW {
        return (0..per_pass.min(16)).fold(0, |m, c| m | 1 << (4 * c));
    }
    low_bits(per_pass, 0)
}

fn low_bits(count: u32, from: u32) -> u64 {
    let ones = if count >= 64 { u64::MAX } else { (1u64 << count) - 1 };
    ones << from
}

/// Which layers read each layer's output, and the last of them.
fn consumers(layers: &[HwLayer]) -> (Vec<Vec<usize>>, usize) {
    let mut readers = vec![Vec::new(); layers.len()];
    let mut input_last = 0;
    for l in layers {
        for s in &l.sources {
            match s {
                Source::Layer(j) => readers[*j].push(l.index),
                Source::Input => input_last = input_last.max(l.index),
            }
        }
    }
    (readers, input_last)
}

/// The index past which a buffer is dead: its last reader, or the end for
/// outputs nobody reads (the network's results).
fn last_use(readers: &[usize], layer_count: usize) -> usize {
    readers.iter().copied().max().unwrap_or(layer_count)
}

/// Assigns processors, passes and data-memory offsets, then places kernels
/// and biases. Layers read the previous layer, or name their sources for
/// element-wise operations and concatenation (§2.7, §2.8).
pub fn allocate(device: Device, layers: &[HwLayer]) -> Result<Allocation, AllocError> {
    let (readers, input_last) = consumers(layers);
    let inputs: Vec<u64> = layers.iter().map(input_map).collect();
    let mut maps = Vec::with_capacity(layers.len());
    for layer in layers {
        let out_passes = Passes::for_channels(layer.out_channels);
        let mut wanted: Option<u64> = None;
        for &reader in &readers[layer.index] {
            let map = output_map_for(layers, layer, &layers[reader], inputs[reader])?;
            if wanted.is_some_and(|w| w != map) {
                return Err(AllocError::Unsupported {
                    layer: layer.index,
                    what: "readers need the output on different processors".to_owned(),
                });
            }
            wanted = Some(map);
        }
        maps.push(LayerMaps {
            processors: inputs[layer.index],
            output_processors: wanted.unwrap_or(low_bits(out_passes.per_pass, 0)),
            in_offset: 0,
            out_offset: 0,
        });
    }
    assign_offsets(device, layers, &mut maps, &readers, input_last)?;
    place(device, layers, &maps)
}

/// The output map `reader` needs from `layer`.
fn output_map_for(layers: &[HwLayer], layer: &HwLayer, reader: &HwLayer, reader_map: u64) -> Result<u64, AllocError> {
    if reader.eltwise.is_some() || reader.sources.len() == 1 {
        return Ok(reader_map);
    }
    // Concatenation: each source takes the next processors, in list order,
    // and every source but the last fills whole 4-channel words (§2.8).
    if Passes::for_channels(reader.in_channels()).count > 1 {
        return Err(AllocError::Unsupported {
            layer: reader.index,
            what: "concatenation of more than 64 channels".to_owned(),
        });
    }
    let position = reader
        .sources
        .iter()
        .position(|s| *s == Source::Layer(layer.index))
        .unwrap_or(0);
    let mut start = 0;
    for s in &reader.sources[..position] {
        if let Source::Layer(j) = s {
            start += layers[*j].out_channels;
        }
    }
    if start % 4 != 0 || reader.sources.contains(&Source::Input) {
        return Err(AllocError::Unsupported {
            layer: reader.index,
            what: "concatenation needs layer outputs of whole 4-channel words".to_owned(),
        });
    }
    Ok(low_bits(layer.out_channels, start))
}

/// Ping-pong offsets (§5.4): each layer writes to the half its input does
/// not use; when that half is too small or still holds live data (skip
/// connections), the first free offset that fits. Element-wise operands
/// are interleaved (`write_gap = operands − 1`) and concatenated sources
/// share an offset, so their producers' offsets are tied together.
fn assign_offsets(
    device: Device,
    layers: &[HwLayer],
    maps: &mut [LayerMaps],
    readers: &[Vec<usize>],
    input_last: usize,
) -> Result<(), AllocError> {
    let size = device.data_instance_bytes();
    let half = device.half_data_offset();
    let mut memory = DataMemory::new(device);
    let Some(first) = layers.first() else {
        return Ok(());
    };
    let in_passes = Passes::for_channels(first.in_channels());
    let footprint = network_input_footprint(first, maps[0].processors, in_passes, 0);
    if u64::from(footprint.bytes) > u64::from(size) {
        return Err(AllocError::DataMemory {
            layer: 0,
            what: "network input",
            bytes: u64::from(footprint.bytes),
            limit: size,
        });
    }
    memory.store(Source::Input, input_last, &footprint);
    // Base offset of each reader whose sources must line up.
    let mut bases: Vec<Option<u32>> = vec![None; layers.len()];
    for layer in layers {
        let i = layer.index;
        let out_passes = Passes::for_channels(layer.out_channels);
        let in_offset = match layer.sources.first() {
            Some(Source::Layer(j)) => tied_offset(layers, *j, i, &bases).unwrap_or(maps[*j].out_offset),
            _ => 0,
        };
        maps[i].in_offset = in_offset;
        let probe = output_footprint(layer, maps[i].output_processors, out_passes, 0);
        let insts = instances(maps[i].output_processors);
        let until = last_use(&readers[i], layers.len());
        // A reader that already fixed where its sources go decides ours.
        let forced = readers[i].iter().find_map(|r| tied_offset(layers, i, *r, &bases));
        let preferred = if in_offset < half { half } else { 0 };
        let candidates: Vec<u32> = match forced {
            Some(offset) => vec![offset],
            None => {
                let mut c = vec![preferred, 0, half];
                c.extend(memory.live_ends(i, &insts));
                c
            }
        };
        // An element-wise reader's base lies `4 · position` bytes below
        // this operand's slot, so the slot cannot start lower than that.
        let lowest = readers[i]
            .iter()
            .filter(|r| bases[**r].is_none())
            .map(|r| 4 * operand_position(&layers[*r], i))
            .max()
            .unwrap_or(0);
        let chosen = candidates.into_iter().find(|&offset| {
            offset >= lowest && u64::from(offset) + u64::from(probe.bytes) <= u64::from(size) && {
                let footprint = output_footprint(layer, maps[i].output_processors, out_passes, offset);
                if forced.is_some() {
                    memory.overwrite(i, &footprint).is_none()
                } else {
                    !memory.region_live(i, &insts, offset, probe.bytes)
                }
            }
        });
        let Some(offset) = chosen else {
            return Err(AllocError::DataMemory {
                layer: i,
                what: "output",
                bytes: u64::from(probe.bytes),
                limit: size,
            });
        };
        maps[i].out_offset = offset;
        for &r in &readers[i] {
            if bases[r].is_none() {
                let position = operand_position(&layers[r], i);
                bases[r] = Some(offset - 4 * position);
            }
        }
        memory.store(
            Source::Layer(i),
            until,
            &output_footprint(layer, maps[i].output_processors, out_passes, offset),
        );
    }
    Ok(())
}

/// Word position of `producer` among `reader`'s interleaved operands.
fn operand_position(reader: &HwLayer, producer: usize) -> u32 {
    if reader.eltwise.is_none() {
        return 0;
    }
    reader
        .sources
        .iter()
        .position(|s| *s == Source::Layer(producer))
        .unwrap_or(0) as u32
}

/// The offset `producer` must write at for `reader`, once another of the
/// reader's sources fixed the base.
fn tied_offset(layers: &[HwLayer], producer: usize, reader: usize, bases: &[Option<u32>]) -> Option<u32> {
    let r = &layers[reader];
    if r.sources.len() < 2 {
        return None;
    }
    bases[reader].map(|base| base + 4 * operand_position(r, producer))
}

impl Allocation {
    /// The network file of this allocation, with every key the spec's §4.4
    /// wants explicit: maps, offsets, `op`, `pad`, `activate`,
    /// `quantization`, `output_shift`, `kernel_size` for convolutions,
    /// `pool_stride` with a pool, `data_format` on layer 0.
    pub fn to_network(&self, arch: &str, dataset: &str) -> Network {
        let layers = self
            .layers
            .iter()
            .map(|a| {
                let l = &a.layer;
                let op = match (l.operator, l.eltwise) {
                    (Operator::None, Some(e)) => Op::Eltwise(e),
                    (Operator::None, None) => Op::Passthrough,
                    (Operator::Conv1d, _) => Op::Conv1d,
                    (Operator::Conv2d, _) => Op::Conv2d,
                    (Operator::ConvTranspose2d, _) => Op::ConvTranspose2d,
                    (Operator::Linear, _) => Op::Linear,
                };
                let has_operator = l.operator != Operator::None;
                let kernel_size = match l.operator {
                    Operator::Conv1d => Some(Dims::One(l.kernel[0])),
                    Operator::Conv2d | Operator::ConvTranspose2d => Some(Dims::Two(l.kernel[0], l.kernel[1])),
                    Operator::Linear | Operator::None => None,
                };
                let in_sequences =
                    (l.sources.len() > 1 || l.sources.first() != Some(&default_source(l.index))).then(|| {
                        l.sources
                            .iter()
                            .map(|s| match s {
                                Source::Input => crate::network::SequenceRef::Input,
                                Source::Layer(j) => crate::network::SequenceRef::Index(*j),
                            })
                            .collect()
                    });
                let source_shape = match l.sources.first() {
                    Some(Source::Layer(j)) => self.layers.get(*j).map(|p| p.layer.output),
                    _ => None,
                };
                let reshaped = l.sources.len() == 1
                    && source_shape.is_some_and(|s| (s.height, s.width) != (l.input.height, l.input.width));
                Layer {
                    name: Some(l.name.clone().unwrap_or_else(|| format!("l{}", l.index))),
                    processors: a.maps.processors,
                    output_processors: Some(a.maps.output_processors),
                    in_offset: Some(a.maps.in_offset),
                    out_offset: Some(a.maps.out_offset),
                    op: Some(op),
                    kernel_size,
                    pad: Some(l.pad),
                    groups: (l.groups > 1).then_some(l.groups),
                    dilation: (l.dilation > 1).then_some(l.dilation),
                    activate: Some(l.activation),
                    pool: l.pool.map(|p| (p.kind, Dims::Two(p.size[0], p.size[1]))),
                    pool_stride: l.pool.map(|p| {
                        if p.stride[0] == p.stride[1] {
                            Dims::One(p.stride[0])
                        } else {
                            Dims::Two(p.stride[0], p.stride[1])
                        }
                    }),
                    pool_first: (!l.pool_first).then_some(false),
                    eltwise: if has_operator { l.eltwise } else { None },
                    operands: (l.operands > 1).then_some(l.operands),
                    in_sequences,
                    in_dim: reshaped.then_some(Dims::Two(l.input.height, l.input.width)),
                    write_gap: (l.write_gap > 0).then_some(l.write_gap),
                    data_format: (l.index == 0).then_some(l.data_format),
                    output_width: (l.output_width == OutputWidth::ThirtyTwo).then_some(l.output_width),
                    output_shift: has_operator.then_some(l.output_shift),
                    quantization: has_operator.then_some(l.weight_bits),
                    flatten: l.flatten.then_some(true),
                    ..Layer::default()
                }
            })
            .collect();
        Network {
            arch: arch.to_owned(),
            dataset: dataset.to_owned(),
            output_map: None,
            layers,
            unsupported: Vec::new(),
        }
    }
}

fn default_source(index: usize) -> Source {
    match index {
        0 => Source::Input,
        i => Source::Layer(i - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check;
    use crate::layer::{Findings, Shape, resolve};
    use crate::test_networks::{CATS_BARE, cats_weights};
    use crate::weights::{LayerWeights, Weights};
    use crate::yaml::{parse_network, to_yaml};

    fn hw_layers(text: &str, weights: &Weights, input: Shape) -> Vec<HwLayer> {
        let mut findings = Findings::default();
        let layers = resolve(&parse_network(text).unwrap(), weights, input, &mut findings).unwrap();
        assert!(findings.violations.is_empty(), "{:?}", findings.violations);
        layers
    }

    #[test]
    fn a_chain_gets_the_spec_examples_maps_offsets_and_placements() {
        let layers = hw_layers(CATS_BARE, &cats_weights(), Shape::one_d(17, 8));
        let a = allocate(Device::Max78002, &layers).unwrap();
        let maps: Vec<(u64, u64, u32, u32)> = a
            .layers
            .iter()
            .map(|l| {
                (
                    l.maps.processors,
                    l.maps.output_processors,
                    l.maps.in_offset,
                    l.maps.out_offset,
                )
            })
            .collect();
        assert_eq!(
            maps,
            [
                (0x1ffff, 0xffff_ffff, 0, 0xa000),
                (0xffff_ffff, 0xffff, 0xa000, 0),
                (0xffff, 0xffff, 0, 0xa000),
                (0xffff, 0x3, 0xa000, 0),
            ]
        );
        let kernels: Vec<(u32, u32)> = a
            .layers
            .iter()
            .map(|l| l.kernel.map(|k| (k.offset, k.columns)).unwrap())
            .collect();
        assert_eq!(kernels, [(0, 11), (12, 6), (20, 8), (28, 1)]);
        assert_eq!(a.bias_bytes_per_quadrant, [34, 32, 0, 0]);
    }

    #[test]
    fn emitted_yaml_is_explicit_and_checks_to_the_same_allocation() {
        let layers = hw_layers(CATS_BARE, &cats_weights(), Shape::one_d(17, 8));
        let allocation = allocate(Device::Max78002, &layers).unwrap();
        let text = to_yaml(&allocation.to_network("a", "d"));
        let network = parse_network(&text).unwrap();
        for layer in &network.layers {
            assert!(
                layer.pad.is_some() && layer.output_shift.is_some() && layer.quantization.is_some(),
                "{text}"
            );
        }
        assert_eq!(network.layers[2].kernel_size, None, "no kernel_size on linear layers");
        let report = check(Device::Max78002, &network, &cats_weights(), Shape::one_d(17, 8));
        assert!(report.passed, "{:#?}\n{text}", report.violations);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let mut expected = allocation.clone();
        for l in &mut expected.layers {
            l.layer.name = Some(format!("l{}", l.layer.index));
        }
        assert_eq!(report.allocation.unwrap(), expected);
    }

    #[test]
    fn a_residual_add_interleaves_its_operands() {
        let text = "
arch: a
dataset: d
layers:
  - {processors: 1, op: conv2d, kernel_size: 3x3, pad: 1, output_shift: 0, quantization: 8}
  - {processors: 1, op: conv2d, kernel_size: 3x3, pad: 1, output_shift: 0, quantization: 8, write_gap: 1}
  - {processors: 1, op: conv2d, kernel_size: 3x3, pad: 1, output_shift: 0, quantization: 8, write_gap: 1}
  - {processors: 1, op: add, in_sequences: [1, 2]}
";
        let mut w = Weights::default();
        w.insert(0, LayerWeights::shape(&[8, 3, 3, 3], None));
        w.insert(1, LayerWeights::shape(&[8, 8, 3, 3], None));
        w.insert(2, LayerWeights::shape(&[8, 8, 3, 3], None));
        let layers = hw_layers(text, &w, Shape::new(3, 8, 8));
        let a = allocate(Device::Max78000, &layers).unwrap();
        let offsets: Vec<(u32, u32)> = a.layers.iter().map(|l| (l.maps.in_offset, l.maps.out_offset)).collect();
        // Layer 2 reads layer 1's gapped output, so layer 1 must write
        // elsewhere than layer 2's operand slot next to it.
        assert_eq!(offsets[3].0, offsets[1].1);
        assert_eq!(offsets[2].1, offsets[1].1 + 4);
        let network = a.to_network("a", "d");
        let report = check(Device::Max78000, &network, &w, Shape::new(3, 8, 8));
        // Layer 2 reads a gapped buffer, which needs read_gap.
        let rules: Vec<_> = report.violations.iter().map(|v| (v.layer, v.rule)).collect();
        assert_eq!(rules, [(Some(2), crate::violation::Rule::Unsupported)]);
    }
}
