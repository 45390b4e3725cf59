//! Bias memory: which quadrant holds each layer's biases, and where
//! (spec/max78002.md §5.6).

use serde::{Deserialize, Serialize};

use kflow_ai8x_codegen::broadcast_bias_layout;

use crate::device::{Device, QUADRANTS};

/// One layer's need for bias memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BiasDemand {
    pub layer: usize,
    /// `Cout + (ffs(output_processors) mod 4)·out_expand`.
    pub bytes: u32,
    /// `bias_group`, or every quadrant the network uses.
    pub candidates: Vec<usize>,
    pub flatten: bool,
    /// A depthwise layer's input processors: its biases go to every
    /// quadrant it uses, in the broadcast layout (§5.6 step 6).
    pub broadcast: Option<u64>,
}

/// Where one layer's biases live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BiasPlacement {
    pub quadrant: u8,
    /// Byte offset inside the quadrant's bias memory.
    pub offset: u32,
    pub bytes: u32,
    /// A depthwise layer's offset in each quadrant it uses (`quadrant` and
    /// `offset` name the first of them).
    #[serde(default)]
    pub broadcast: Option<[Option<u32>; QUADRANTS]>,
}

/// A layer whose biases fit no candidate quadrant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BiasOverflow {
    pub layer: usize,
    pub bytes: u32,
    /// Bytes already used in the emptiest candidate.
    pub used: u32,
    pub limit: u32,
    pub candidates: Vec<usize>,
}

/// Places every demand; returns placements in the order of `demands` and
/// the bytes used per quadrant.
pub fn place_biases(
    device: Device,
    demands: &[BiasDemand],
) -> Result<(Vec<BiasPlacement>, [u32; QUADRANTS]), BiasOverflow> {
    let limit = device.bias_bytes_per_quadrant();
    let mut used = [0u32; QUADRANTS];
    let mut placed = vec![None; demands.len()];
    // Depthwise layers first, in layer order, each at the next multiple
    // of 4 of every quadrant it uses (izer/kbias.py).
    for (i, d) in demands.iter().enumerate() {
        let Some(processors) = d.broadcast else { continue };
        let layout = broadcast_bias_layout(processors, d.bytes);
        let mut offsets = [None; QUADRANTS];
        for q in 0..QUADRANTS {
            if processors >> (16 * q) & 0xffff != 0 {
                used[q] = used[q].next_multiple_of(4);
                offsets[q] = Some(used[q]);
            }
        }
        for (q, bytes) in layout.iter().enumerate() {
            let len = bytes.len() as u32;
            if used[q] + len > limit {
                return Err(BiasOverflow {
                    layer: d.layer,
                    bytes: len,
                    used: used[q],
                    limit,
                    candidates: vec![q],
                });
            }
            used[q] += len;
        }
        let first = offsets.iter().position(Option::is_some).unwrap_or(0);
        placed[i] = Some(BiasPlacement {
            quadrant: first as u8,
            offset: offsets[first].unwrap_or(0),
            bytes: d.bytes,
            broadcast: Some(offsets),
        });
    }
    let mut order: Vec<usize> = (0..demands.len()).filter(|i| demands[*i].broadcast.is_none()).collect();
    // §5.6 step 3: flatten layers first (MAX78000 only), then layers with a
    // single candidate, then larger first, ties in layer order.
    // The izer's order (ai8x-synthesis izer/kbias.py, bias_sort): MAX78000
    // flatten layers, then layers with one candidate in layer order, then
    // the rest by descending size; a stable sort keeps layer order on ties.
    order.sort_by_key(|&i| {
        let d = &demands[i];
        if device == Device::Max78000 && d.flatten {
            -1
        } else if d.candidates.len() == 1 {
            0
        } else {
            i64::from(limit) - i64::from(d.bytes)
        }
    });
    for i in order {
        let d = &demands[i];
        let Some(&q) = d.candidates.iter().min_by_key(|q| (used[**q], **q)) else {
            return Err(BiasOverflow {
                layer: d.layer,
                bytes: d.bytes,
                used: 0,
                limit: 0,
                candidates: Vec::new(),
            });
        };
        if used[q] + d.bytes > limit {
            return Err(BiasOverflow {
                layer: d.layer,
                bytes: d.bytes,
                used: used[q],
                limit,
                candidates: d.candidates.clone(),
            });
        }
        placed[i] = Some(BiasPlacement {
            quadrant: q as u8,
            offset: used[q],
            bytes: d.bytes,
            broadcast: None,
        });
        used[q] += d.bytes;
    }
    Ok((placed.into_iter().flatten().collect(), used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(layer: usize, bytes: u32) -> BiasDemand {
        BiasDemand {
            layer,
            bytes,
            candidates: vec![0, 1],
            flatten: false,
            broadcast: None,
        }
    }

    #[test]
    fn spec_example_biases_go_to_the_emptiest_quadrant() {
        // §4.5 golden: q0/0, q1/0, q1/16, q0/32; use [34, 32, 0, 0].
        let demands = [demand(0, 32), demand(1, 16), demand(2, 16), demand(3, 2)];
        let (placed, used) = place_biases(Device::Max78002, &demands).unwrap();
        let got: Vec<(u8, u32)> = placed.iter().map(|p| (p.quadrant, p.offset)).collect();
        assert_eq!(got, [(0, 0), (1, 0), (1, 16), (0, 32)]);
        assert_eq!(used, [34, 32, 0, 0]);
    }

    #[test]
    fn layers_with_one_candidate_keep_layer_order() {
        // Reference case 067-avgpool2d: everything in quadrant 0, offsets
        // 0, 5, 13 as the izer places them, not by size.
        let demands: Vec<BiasDemand> = [5, 8, 5]
            .iter()
            .enumerate()
            .map(|(layer, bytes)| BiasDemand {
                candidates: vec![0],
                ..demand(layer, *bytes)
            })
            .collect();
        let (placed, _) = place_biases(Device::Max78002, &demands).unwrap();
        let offsets: Vec<u32> = placed.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [0, 5, 13]);
    }

    #[test]
    fn a_layer_larger_than_a_quadrant_overflows() {
        let err = place_biases(Device::Max78000, &[demand(0, 600)]).unwrap_err();
        assert_eq!((err.layer, err.bytes, err.limit), (0, 600, 512));
    }
}
