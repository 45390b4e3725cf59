//! Bias memory contents: each layer's bias bytes at its quadrant offset
//! (spec/max78002.md §5.6 "byte layout"), and their chunks in the stream
//! (§6.5).

use crate::blob::Chunk;
use crate::device::{Device, QUADRANTS};
use crate::error::CodegenError;
use crate::geometry::Checked;

/// Bytes `0..used` of every quadrant's bias memory, two's complement,
/// unused bytes 0 (§6.4 `BIAS_q`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BiasImage {
    pub quadrants: [Vec<u8>; QUADRANTS as usize],
}

impl BiasImage {
    pub fn pack(checked: &Checked<'_>) -> Result<BiasImage, CodegenError> {
        let mut image = BiasImage::default();
        let mut owners: [Vec<Option<usize>>; QUADRANTS as usize] = Default::default();
        for (index, (layer, geometry)) in checked.program.layers.iter().zip(&checked.layers).enumerate() {
            let Some(bias) = &layer.bias else { continue };
            if let Some(offsets) = bias.broadcast {
                let layout = broadcast_bias_layout(layer.processors, bias.values.len() as u32);
                for (q, bytes) in layout.iter().enumerate() {
                    let Some(offset) = offsets[q] else { continue };
                    let values = bytes.iter().map(|c| c.map_or(0, |c| bias.values[c as usize] as u8));
                    image.put(&mut owners, index, q, offset as usize, values)?;
                }
                continue;
            }
            // §5.6 step 5: channel c is at bias_offs + (ffs mod 4)·out_expand + c.
            let first = (bias.offset + geometry.start_col * geometry.out_passes.count) as usize;
            let values = bias.values.iter().map(|v| *v as u8);
            image.put(&mut owners, index, bias.quadrant as usize, first, values)?;
        }
        Ok(image)
    }

    /// Writes `values` from byte `first` of quadrant `q` for `layer`; a byte
    /// another layer wrote is an overlap.
    fn put(
        &mut self,
        owners: &mut [Vec<Option<usize>>; QUADRANTS as usize],
        layer: usize,
        q: usize,
        first: usize,
        values: impl ExactSizeIterator<Item = u8>,
    ) -> Result<(), CodegenError> {
        let end = first + values.len();
        if self.quadrants[q].len() < end {
            self.quadrants[q].resize(end, 0);
            owners[q].resize(end, None);
        }
        for (byte, value) in (first..end).zip(values) {
            if let Some(other) = owners[q][byte].replace(layer) {
                return Err(CodegenError::BiasOverlap {
                    layer,
                    other,
                    quadrant: q as u32,
                    byte: byte as u32,
                });
            }
            self.quadrants[q][byte] = value;
        }
        Ok(())
    }

    /// One chunk per quadrant holding biases: each byte zero-extended into
    /// its own word at the quadrant's bias base (§6.4, §6.5).
    pub fn chunks(&self, device: Device) -> Vec<Chunk> {
        (0..QUADRANTS)
            .zip(&self.quadrants)
            .filter(|(_, bytes)| !bytes.is_empty())
            .map(|(q, bytes)| Chunk {
                address: device.bias_address(q, 0),
                words: bytes.iter().map(|b| u32::from(*b)).collect(),
            })
            .collect()
    }
}

/// Every biased layer's values read back from bias memory (`memory[q]`:
/// quadrant `q`'s bytes from 0; bytes past the end read as 0), by the
/// placement that packing uses. `None` for a layer without bias.
pub fn unpack(checked: &Checked<'_>, memory: &[Vec<u8>; QUADRANTS as usize]) -> Vec<Option<Vec<i8>>> {
    let byte = |q: usize, at: usize| memory[q].get(at).copied().unwrap_or(0) as i8;
    checked
        .program
        .layers
        .iter()
        .zip(&checked.layers)
        .map(|(layer, geometry)| {
            let bias = layer.bias.as_ref()?;
            let mut values = vec![0i8; bias.values.len()];
            if let Some(offsets) = bias.broadcast {
                let layout = broadcast_bias_layout(layer.processors, bias.values.len() as u32);
                for (q, channels) in layout.iter().enumerate() {
                    let Some(offset) = offsets[q] else { continue };
                    for (i, channel) in channels.iter().enumerate() {
                        if let Some(c) = channel {
                            values[*c as usize] = byte(q, offset as usize + i);
                        }
                    }
                }
            } else {
                let first = (bias.offset + geometry.start_col * geometry.out_passes.count) as usize;
                for (c, value) in values.iter_mut().enumerate() {
                    *value = byte(bias.quadrant as usize, first + c);
                }
            }
            Some(values)
        })
        .collect()
}

/// The broadcast bias layout of a depthwise layer of `channels` channels
/// on `processors` (ai8x-synthesis izer/kbias.py): processors from the
/// first quadrant's start to the last quadrant's end, processor p holding
/// the bias of channel `(p mod 4)·4 + (p mod 16)/4` of its quadrant's 16,
/// counted from the first quadrant; the bytes after the last channel are
/// dropped. Returns per quadrant the channel of each byte (`None`: 0).
pub fn broadcast_bias_layout(processors: u64, channels: u32) -> [Vec<Option<u32>>; QUADRANTS as usize] {
    let mut layout: [Vec<Option<u32>>; QUADRANTS as usize] = Default::default();
    if processors == 0 {
        return layout;
    }
    let start = processors.trailing_zeros() & !15;
    let last = ((63 - processors.leading_zeros()) + 16) & !15;
    for p in start..last {
        let source = (p & !15) + (p % 4) * 4 + (p % 16) / 4 - start;
        layout[(p / 16) as usize].push((source < channels).then_some(source));
    }
    if let Some(bytes) = layout.iter_mut().rev().find(|b| !b.is_empty()) {
        while bytes.last() == Some(&None) {
            bytes.pop();
        }
    }
    layout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_layout_interleaves_by_instance_and_drops_the_tail() {
        // Reference case 038-depthwise: 8 channels on processors 0..7 take
        // 14 bytes of quadrant 0.
        let layout = broadcast_bias_layout(0xff, 8);
        let x = None;
        let c = Some;
        assert_eq!(
            layout[0],
            [c(0), c(4), x, x, c(1), c(5), x, x, c(2), c(6), x, x, c(3), c(7)]
        );
        assert!(layout[1..].iter().all(Vec::is_empty));
    }
}
