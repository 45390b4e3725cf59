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
            let q = bias.quadrant as usize;
            // §5.6 step 5: channel c is at bias_offs + (ffs mod 4)·out_expand + c.
            let first = (bias.offset + geometry.start_col * geometry.out_passes.count) as usize;
            let end = first + bias.values.len();
            if image.quadrants[q].len() < end {
                image.quadrants[q].resize(end, 0);
                owners[q].resize(end, None);
            }
            for (c, value) in bias.values.iter().enumerate() {
                let byte = first + c;
                if let Some(other) = owners[q][byte].replace(index) {
                    return Err(CodegenError::BiasOverlap {
                        layer: index,
                        other,
                        quadrant: bias.quadrant,
                        byte: byte as u32,
                    });
                }
                image.quadrants[q][byte] = *value as u8;
            }
        }
        Ok(image)
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
