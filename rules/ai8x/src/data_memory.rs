//! Data memory: per-instance footprints of layer inputs and outputs, and the
//! izer's live-data tracking, word by word (spec/max78002.md §5.2, §5.4).

pub use kflow_ai8x_codegen::Passes;

use crate::device::{DATA_INSTANCES, Device, PROCESSORS_PER_INSTANCE};
use crate::layer::{HwLayer, Source};
use crate::network::{DataFormat, OutputWidth};

/// The words a layer reads or writes in each of its instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub instances: Vec<usize>,
    /// Byte offset inside every instance.
    pub offset: u32,
    /// Word indices relative to `offset`.
    pub words: Vec<u32>,
    /// Bytes from `offset` to the end of the last word.
    pub bytes: u32,
}

/// Data-memory instances of the processors in `mask`.
pub fn instances(mask: u64) -> Vec<usize> {
    (0..DATA_INSTANCES)
        .filter(|i| mask >> (i * PROCESSORS_PER_INSTANCE) & 0xf != 0)
        .collect()
}

/// Per-instance bytes of a layer's input (§5.4).
pub fn input_bytes(layer: &HwLayer, in_passes: Passes) -> u64 {
    let pixels = layer.input.pixels();
    if layer.index == 0 && layer.data_format == DataFormat::CHW {
        return pixels.div_ceil(4) * 4;
    }
    pixels * u64::from(in_passes.count) * u64::from(layer.operands) * 4
}

/// Per-instance bytes of a layer's output (§5.4).
pub fn output_bytes(layer: &HwLayer, out_passes: Passes) -> u64 {
    let words = layer.output.pixels() * u64::from(out_passes.count) * u64::from(layer.write_gap + 1);
    match layer.output_width {
        OutputWidth::Eight => words * 4,
        OutputWidth::ThirtyTwo => words * 16,
    }
}

/// The words the network input occupies (layer 0's input).
pub fn network_input_footprint(layer: &HwLayer, processors: u64, in_passes: Passes, offset: u32) -> Footprint {
    let pixels = u32::try_from(layer.input.pixels()).unwrap_or(u32::MAX);
    let words: Vec<u32> = if layer.data_format == DataFormat::CHW {
        (0..pixels.div_ceil(4)).collect()
    } else {
        (0..pixels.saturating_mul(in_passes.count)).collect()
    };
    Footprint {
        instances: instances(processors),
        offset,
        bytes: u32::try_from(input_bytes(layer, in_passes)).unwrap_or(u32::MAX),
        words,
    }
}

/// The words a layer writes (§5.2).
pub fn output_footprint(layer: &HwLayer, output_processors: u64, out_passes: Passes, offset: u32) -> Footprint {
    let gap = layer.write_gap + 1;
    let groups = u32::try_from(layer.output.pixels())
        .unwrap_or(u32::MAX)
        .saturating_mul(out_passes.count);
    let words = match layer.output_width {
        OutputWidth::Eight => (0..groups).map(|g| g * gap).collect(),
        OutputWidth::ThirtyTwo => (0..groups)
            .flat_map(|g| (0..4).map(move |lane| g * gap * 4 + lane))
            .collect(),
    };
    Footprint {
        instances: instances(output_processors),
        offset,
        bytes: u32::try_from(output_bytes(layer, out_passes)).unwrap_or(u32::MAX),
        words,
    }
}

/// Data still needed when a layer overwrites it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overwrite {
    pub instance: usize,
    /// Byte offset of the first overwritten word.
    pub offset: u32,
    pub producer: Source,
}

#[derive(Clone, Copy, Debug)]
struct Owner {
    producer: Source,
    /// Index of the last layer that reads the data.
    last_use: usize,
}

/// Which layer's data every word holds, and until when it is needed.
pub struct DataMemory {
    words: Vec<Vec<Option<Owner>>>,
}

impl DataMemory {
    pub fn new(device: Device) -> DataMemory {
        let per_instance = (device.data_instance_bytes() / 4) as usize;
        DataMemory {
            words: vec![vec![None; per_instance]; DATA_INSTANCES],
        }
    }

    fn slots<'a>(footprint: &'a Footprint) -> impl Iterator<Item = (usize, usize)> + 'a {
        footprint.instances.iter().flat_map(move |i| {
            footprint
                .words
                .iter()
                .map(move |w| (*i, (footprint.offset / 4 + w) as usize))
        })
    }

    /// The first word of `footprint` that holds data a layer at or after
    /// `writer` still reads (izer: "output … is overwriting input").
    pub fn overwrite(&self, writer: usize, footprint: &Footprint) -> Option<Overwrite> {
        Self::slots(footprint).find_map(|(i, w)| {
            let owner = self.words[i].get(w).copied().flatten()?;
            (owner.last_use >= writer && owner.producer != Source::Layer(writer)).then_some(Overwrite {
                instance: i,
                offset: (w * 4) as u32,
                producer: owner.producer,
            })
        })
    }

    /// Whether any word of `[offset, offset+bytes)` in `instances` holds data
    /// a layer at or after `writer` still reads.
    pub fn region_live(&self, writer: usize, instances: &[usize], offset: u32, bytes: u32) -> bool {
        let (first, last) = ((offset / 4) as usize, (offset + bytes).div_ceil(4) as usize);
        instances.iter().any(|i| {
            self.words[*i]
                .iter()
                .take(last)
                .skip(first)
                .flatten()
                .any(|o| o.last_use >= writer)
        })
    }

    /// Byte offsets just past each run of words that a layer at or after
    /// `writer` still reads: where a new buffer can start.
    pub fn live_ends(&self, writer: usize, instances: &[usize]) -> Vec<u32> {
        let mut ends = Vec::new();
        for i in instances {
            let live: Vec<bool> = self.words[*i]
                .iter()
                .map(|o| o.is_some_and(|o| o.last_use >= writer))
                .collect();
            for (w, pair) in live.windows(2).enumerate() {
                if pair[0] && !pair[1] {
                    ends.push(((w + 1) * 4) as u32);
                }
            }
        }
        ends.sort_unstable();
        ends.dedup();
        ends
    }

    /// Records that `producer`'s data occupies `footprint` until `last_use`.
    pub fn store(&mut self, producer: Source, last_use: usize, footprint: &Footprint) {
        for (i, w) in Self::slots(footprint) {
            if let Some(slot) = self.words[i].get_mut(w) {
                *slot = Some(Owner { producer, last_use });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_match_the_spec_examples() {
        let got: Vec<(u32, u32)> = [100, 256, 96, 768, 17, 64, 65]
            .into_iter()
            .map(|c| {
                let p = Passes::for_channels(c);
                (p.count, p.per_pass)
            })
            .collect();
        assert_eq!(got, [(2, 52), (4, 64), (2, 48), (12, 64), (1, 17), (1, 64), (2, 36)]);
    }

    #[test]
    fn instances_of_a_mask_are_groups_of_four_processors() {
        assert_eq!(instances(0x1_ffff), vec![0, 1, 2, 3, 4]);
        assert_eq!(instances(0x8000_0000_0000_0001), vec![0, 15]);
    }
}
