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
                let (skip, lead) = empty_slots(layer, geometry);
                let mut fill = vec![0; lead];
                fill.extend(fill_sequence(layer, geometry, k as u32));
                // The izer pads the written columns with zeros up to
                // start_col + kern_len (§5.5): for b < 8 with kc mod 8/b ≠ 0
                // that is more than the packed bytes.
                let columns = (skip + fill.len().div_ceil(COLUMN_BYTES) as u32)
                    .max(geometry.start_col + kern_len(layer, geometry));
                fill.resize((columns - skip) as usize * COLUMN_BYTES, 0);
                let end = layer.kernel_offset + columns;
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
                    let column = layer.kernel_offset + skip + i as u32;
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

/// The empty kernel slots before the first output (§5.5 start_col) take
/// `start_col·ksize·in_expand` bytes: the izer skips the whole columns
/// among them and writes `1/qf` of the remaining bytes as zeros
/// (ai8x-synthesis izer/kernels.py). Returns (columns skipped, zero bytes).
fn empty_slots(layer: &Layer, g: &LayerGeometry) -> (u32, usize) {
    let bytes = g.start_col * g.taps * g.in_passes.count;
    let qf = 8 / layer.weight_bits;
    (
        bytes / COLUMN_BYTES as u32,
        ((bytes % COLUMN_BYTES as u32) / qf) as usize,
    )
}

/// §5.5: `kern_len = ⌈(kc·ksize·b + (kc mod qf)·ksize·(qf − 1)) / 72⌉`
/// columns, the izer's length of a layer's kernels; its kc leaves out the
/// empty slots that the kernel count register includes.
fn kern_len(layer: &Layer, g: &LayerGeometry) -> u32 {
    let (b, ksize) = (layer.weight_bits, g.taps);
    let kc = g.kernel_count - g.start_col * g.out_passes.count * g.in_passes.count;
    let qf = 8 / b;
    (kc * ksize * b + (kc % qf) * ksize * (qf - 1)).div_ceil(72)
}

/// The bytes of the `k`-th enabled input processor, in fill order (§5.5).
fn fill_sequence(layer: &Layer, g: &LayerGeometry, k: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(g.kernel_count as usize * g.taps as usize);
    let b = layer.weight_bits;
    let mask = ((1u16 << b.min(8)) - 1) as u8;
    fill_layout(layer, g, k, |sources, raw| {
        let byte = sources.iter().enumerate().fold(0u8, |byte, (n, source)| {
            let Some(index) = source else { return byte };
            let w = layer.weights[*index];
            if raw {
                w as u8
            } else if layer.binary {
                // §2.10: a binary weight is its sign bit (1 for −1, 0 for +1).
                byte | u8::from(w < 0) << (n as u32 * b)
            } else {
                byte | (w as u8 & mask) << (n as u32 * b)
            }
        });
        bytes.push(byte);
    });
    bytes
}

/// The fill order of the `k`-th enabled input processor (§5.5, contiguous
/// output map), one call of `byte` per kernel-memory byte: the index into
/// `layer.weights` of the weight in each of its `8/b` slots (slot `n` in
/// bits `n·b ..`; `None`: zero), and whether the byte holds one whole 8-bit
/// weight. Packing and unpacking both walk it, so they cannot disagree.
///
/// With `b`-bit weights a byte holds the same tap of `8/b` kernels, the
/// first in the low bits; in several input passes the izer fills those
/// slots pass first (§5.5: slot n of input pass ie holds
/// `idx = n + ie·qf`, pass `idx mod in_expand`, output
/// `o + ⌊idx/in_expand⌋`).
fn fill_layout(layer: &Layer, g: &LayerGeometry, k: u32, mut byte: impl FnMut(&[Option<usize>], bool)) {
    let cin = layer.input.channels;
    let cout = layer.out_channels;
    let taps = g.taps as usize;
    if layer.flatten {
        // §5.5: for each output o, W[o, c·HW .. c·HW + HW − 1] in natural
        // order; in several input passes the passes' channels
        // c = k + ie·thresh_in alternate pixel by pixel (reference cases
        // 005, 053, 080, 093 -flatten-mp). 8-bit weights; every pass full,
        // so c < Cin.
        let pixels = (g.pooled[0] * g.pooled[1]) as usize;
        let features = cin as usize * pixels;
        for o in 0..cout as usize {
            for px in 0..pixels {
                for ie in 0..g.in_passes.count {
                    let c = (k + ie * g.in_passes.per_pass) as usize;
                    byte(&[Some(o * features + c * pixels + px)], true);
                }
            }
        }
        return;
    }
    if layer.depthwise {
        // kc = in_expand (§5.5): per input pass, the taps of W[c, 0] in
        // reverse order, c = k + ie·thresh_in (izer/kernels.py).
        for ie in 0..g.in_passes.count {
            let c = k + ie * g.in_passes.per_pass;
            for t in (0..taps).rev() {
                byte(&[(c < cin).then_some(c as usize * taps + t)], true);
            }
        }
        return;
    }
    let b = layer.weight_bits;
    let qf = 8 / b;
    let (in_count, in_per_pass) = (g.in_passes.count, g.in_passes.per_pass);
    // W[o, c, t] if it exists. A transposed convolution's kernel is W[c, o]
    // turned by 180° (as the izer stores it; reference cases -convt).
    let transposed = layer.operator == Operator::ConvTranspose2d;
    let index = |o: u32, c: u32, t: usize| -> Option<usize> {
        (o < cout && c < cin).then(|| {
            if transposed {
                (c as usize * cout as usize + o as usize) * taps + taps - 1 - t
            } else {
                (o as usize * cin as usize + c as usize) * taps + t
            }
        })
    };
    let mut sources = vec![None; qf as usize];
    // The outputs run on across output passes in groups of `qf`: a pass
    // whose output count is not a multiple of `qf` ends with a group that
    // reaches into the next pass's first outputs, and the next pass goes on
    // after that group (the hardware reads kernel `i` at bit `9·i` of the
    // stream, spec §5.5; ai8x-synthesis izer/kernels.py:473-558, where `m`
    // is not reset per pass).
    let groups = g.out_passes.per_pass.div_ceil(qf);
    for e in 0..g.out_passes.count {
        for j in (0..g.out_passes.per_pass).step_by(qf as usize) {
            let o = e * groups * qf + j;
            for ie in 0..in_count {
                if o >= cout || k + ie * in_per_pass >= cin {
                    for _ in 0..taps / qf as usize {
                        byte(&[], false);
                    }
                    continue;
                }
                // The taps in reverse order (last tap first).
                for t in (0..taps).rev() {
                    for (n, source) in sources.iter_mut().enumerate() {
                        let idx = n as u32 + ie * qf;
                        let (pass, output) = (idx % in_count, o + idx / in_count);
                        *source = index(output, k + pass * in_per_pass, t);
                    }
                    byte(&sources, false);
                }
            }
        }
    }
}

/// The weights of every layer of `checked` read back from kernel memory
/// (`column(processor, column)`: the column's 9 bytes in byte-index order,
/// `None` for a column never written, read as zeros), by the fill order
/// that packing uses. Layer `i`'s vector has the length of
/// `program.layers[i].weights` (empty for a passthrough layer); a weight
/// that several processors or slots hold is taken from the last one read.
pub fn unpack(checked: &Checked<'_>, column: impl Fn(u32, u32) -> Option<[u8; COLUMN_BYTES]>) -> Vec<Vec<i8>> {
    let mut all = Vec::with_capacity(checked.program.layers.len());
    for (layer, geometry) in checked.program.layers.iter().zip(&checked.layers) {
        let mut weights = vec![0i8; layer.weights.len()];
        if layer.operator != Operator::Passthrough {
            let b = layer.weight_bits;
            let mask = ((1u16 << b.min(8)) - 1) as u8;
            let enabled = (0..PROCESSORS).filter(|p| layer.processors >> p & 1 == 1);
            for (k, processor) in enabled.enumerate() {
                let (skip, lead) = empty_slots(layer, geometry);
                let mut f = lead;
                fill_layout(layer, geometry, k as u32, |sources, raw| {
                    let at = layer.kernel_offset + skip + (f / COLUMN_BYTES) as u32;
                    let byte = column(processor, at).map_or(0, |c| c[COLUMN_BYTES - 1 - f % COLUMN_BYTES]);
                    f += 1;
                    for (n, source) in sources.iter().enumerate() {
                        let Some(index) = source else { continue };
                        let Some(w) = weights.get_mut(*index) else { continue };
                        *w = if raw {
                            byte as i8
                        } else {
                            let bits = byte >> (n as u32 * b) & mask;
                            if layer.binary {
                                if bits & 1 == 1 { -1 } else { 1 }
                            } else {
                                // Sign-extend the b-bit field.
                                ((bits << (8 - b)) as i8) >> (8 - b)
                            }
                        };
                    }
                });
            }
        }
        all.push(weights);
    }
    all
}

#[cfg(test)]
mod tests;
