//! Kernel memory contents: the weights of every layer packed into 72-bit
//! columns (spec/max78002.md §5.5 "packing order"), and the chunk stream
//! that loads them (§6.4).
//!
//! The allocator (`kflow-ai8x`) decides where a layer's kernels start; the
//! bytes that go there are computed here, because they are a property of the
//! hardware format rather than of the placement.

use std::collections::BTreeMap;

use crate::blob::Chunk;
use crate::device::{COLUMN_BYTES, Device, PROCESSORS};
use crate::error::CodegenError;
use crate::geometry::{Checked, LayerGeometry};
use crate::program::{Layer, Operator};

/// The used columns of every processor: `(processor, column)` → the
/// column's 9 bytes in byte-index order (index 0 is loaded first) and the
/// layer that owns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelImage {
    pub columns: BTreeMap<(u32, u32), ([u8; COLUMN_BYTES], usize)>,
}

impl KernelImage {
    pub fn pack(checked: &Checked<'_>) -> Result<KernelImage, CodegenError> {
        let device = checked.program.device;
        let mut image = KernelImage::default();
        for (index, (layer, geometry)) in checked.program.layers.iter().zip(&checked.layers).enumerate() {
            // A pooling-only layer has no kernels (§2.6).
            if layer.operator == Operator::Passthrough {
                continue;
            }
            let enabled = (0..PROCESSORS).filter(|p| layer.processors >> p & 1 == 1);
            for (k, processor) in enabled.enumerate() {
                let fill = fill_sequence(layer, geometry, k as u32);
                let ncols = fill.len().div_ceil(COLUMN_BYTES) as u32;
                let end = layer.kernel_offset + ncols;
                let limit = device.kernel_columns(processor);
                if end > limit {
                    return Err(CodegenError::KernelMemory {
                        layer: index,
                        processor,
                        end,
                        limit,
                    });
                }
                for (i, group) in fill.chunks(COLUMN_BYTES).enumerate() {
                    // §5.5: fill byte f goes to byte index 8 − (f mod 9);
                    // the unfilled low indices of a last column stay 0.
                    let mut bytes = [0u8; COLUMN_BYTES];
                    for (f, byte) in group.iter().enumerate() {
                        bytes[COLUMN_BYTES - 1 - f] = *byte;
                    }
                    let column = layer.kernel_offset + i as u32;
                    if let Some((_, other)) = image.columns.insert((processor, column), (bytes, index)) {
                        return Err(CodegenError::KernelOverlap {
                            layer: index,
                            other,
                            processor,
                            column,
                        });
                    }
                }
            }
        }
        Ok(image)
    }

    /// One chunk per processor per maximal run of used columns, processors
    /// ascending (§6.4): each column's 9 bytes in byte-index order, zero
    /// padded to a multiple of 4 and packed big-endian into words.
    pub fn chunks(&self, device: Device) -> Vec<Chunk> {
        let mut runs: Vec<(u32, u32, Vec<u8>)> = Vec::new();
        let mut next = None;
        for (&(processor, column), (bytes, _)) in &self.columns {
            match runs.last_mut() {
                Some((_, _, data)) if next == Some((processor, column)) => data.extend_from_slice(bytes),
                _ => runs.push((processor, column, bytes.to_vec())),
            }
            next = Some((processor, column + 1));
        }
        runs.into_iter()
            .map(|(processor, first, data)| Chunk {
                address: device.kernel_load_address(processor, first),
                words: data
                    .chunks(4)
                    .map(|b| {
                        let mut word = [0u8; 4];
                        word[..b.len()].copy_from_slice(b);
                        u32::from_be_bytes(word)
                    })
                    .collect(),
            })
            .collect()
    }
}

/// The bytes of the `k`-th enabled input processor, in fill order (§5.5,
/// 8-bit weights, contiguous output map).
fn fill_sequence(layer: &Layer, g: &LayerGeometry, k: u32) -> Vec<u8> {
    let cin = layer.input.channels;
    let cout = layer.out_channels;
    let taps = g.taps as usize;
    let mut bytes = Vec::with_capacity(g.kernel_count as usize * taps);
    if layer.flatten {
        // §5.5: for each output o, W[o, c·HW .. c·HW + HW − 1] in natural
        // order (single input pass, so c = k).
        let pixels = (g.pooled[0] * g.pooled[1]) as usize;
        let features = cin as usize * pixels;
        for o in 0..cout as usize {
            let start = o * features + k as usize * pixels;
            bytes.extend(layer.weights[start..start + pixels].iter().map(|w| *w as u8));
        }
        return bytes;
    }
    for e in 0..g.out_passes.count {
        for j in 0..g.out_passes.per_pass {
            let o = e * g.out_passes.per_pass + j;
            for ie in 0..g.in_passes.count {
                let c = k + ie * g.in_passes.per_pass;
                if o < cout && c < cin {
                    // The taps of W[o, c] in reverse order (last tap first).
                    let start = (o as usize * cin as usize + c as usize) * taps;
                    bytes.extend(layer.weights[start..start + taps].iter().rev().map(|w| *w as u8));
                } else {
                    bytes.extend(std::iter::repeat_n(0, taps));
                }
            }
        }
    }
    bytes
}

#[cfg(test)]
mod tests;
