//! Kernel (weight) memory: how many 72-bit columns a layer needs on each of
//! its input processors, and where they go (spec/max78002.md §5.5).

use serde::{Deserialize, Serialize};

use crate::device::{COLUMN_BITS, COLUMN_BYTES, Device, LARGE_PROCESSORS, PROCESSORS};
use crate::layer::HwLayer;

/// Where a layer's kernels live: the same columns on every enabled input
/// processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelPlacement {
    /// First column, a multiple of 4.
    pub offset: u32,
    /// Columns per processor.
    pub columns: u32,
    /// The "kernel count" register value (kc).
    pub count: u32,
}

/// A layer that does not fit the weight memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOverflow {
    /// The fullest of the layer's processors.
    pub processor: usize,
    /// Columns already used there.
    pub used: u32,
    /// Columns the layer needs.
    pub needed: u32,
    pub limit: u32,
}

fn ffs(mask: u64) -> u32 {
    mask.trailing_zeros()
}

fn fls(mask: u64) -> u32 {
    63 - mask.leading_zeros()
}

/// The kernel count kc of §5.5 for the given output map and passes.
pub fn kernel_count(layer: &HwLayer, output_processors: u64, in_expand: u32, out_expand: u32) -> u32 {
    if layer.is_depthwise() {
        return in_expand;
    }
    let first = ffs(output_processors);
    let span_start = if out_expand > 1 { first - first % 4 } else { first };
    let span = 1 + fls(output_processors) - span_start;
    let kc = span * out_expand * in_expand;
    if !layer.flatten {
        return kc;
    }
    let pixels = u32::try_from(layer.pooled.pixels()).unwrap_or(u32::MAX);
    let unused = (out_expand * output_processors.count_ones()).saturating_sub(layer.out_channels);
    kc.saturating_mul(pixels).saturating_sub(unused.saturating_mul(pixels))
}

/// §5.5 `kern_len` and the bytes a processor's kernels actually pack into
/// (from the first output, `8/b` outputs to a byte).
fn formula_and_packed(layer: &HwLayer, kc: u32, in_expand: u32, out_expand: u32, out_per_pass: u32) -> (u32, u64) {
    let b = layer.weight_bits.bits();
    let qf = 8 / b;
    let ksize = layer.kernel_taps();
    let bits =
        u64::from(kc) * u64::from(ksize) * u64::from(b) + u64::from(kc % qf) * u64::from(ksize) * u64::from(qf - 1);
    let formula = u32::try_from(bits.div_ceil(u64::from(COLUMN_BITS))).unwrap_or(u32::MAX);
    if layer.flatten || layer.is_depthwise() || qf == 1 {
        return (formula, u64::from(formula) * u64::from(COLUMN_BYTES));
    }
    let span = kc / (in_expand * out_expand).max(1);
    let mut bytes = 0u64;
    // Output groups run on across passes, as the codegen crate packs them
    // (kernels.rs `fill_sequence`).
    let groups = out_per_pass.div_ceil(qf);
    for e in 0..out_expand {
        for j in (0..span).step_by(qf as usize) {
            let real = e * groups * qf + j < layer.out_channels;
            let per_pass = if real { ksize } else { ksize / qf };
            bytes += u64::from(per_pass) * u64::from(in_expand);
        }
    }
    (formula, bytes)
}

/// Columns per input processor. The izer's formula can be one column short
/// for sub-8-bit layers with `kc mod qf ≠ 0` (§5.5, §10 item 19), so the
/// result is never below the bytes actually packed.
pub fn kernel_columns(layer: &HwLayer, kc: u32, in_expand: u32, out_expand: u32, out_per_pass: u32) -> u32 {
    let (formula, packed) = formula_and_packed(layer, kc, in_expand, out_expand, out_per_pass);
    formula.max(u32::try_from(packed.div_ceil(u64::from(COLUMN_BYTES))).unwrap_or(u32::MAX))
}

/// The columns a layer's kernels take relative to its start column, as the
/// izer fills them (ai8x-synthesis izer/kernels.py): it looks for `search`
/// free columns (`kern_len`) but writes, and so uses, `first..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelExtent {
    pub search: u32,
    pub first: u32,
    pub end: u32,
}

impl KernelExtent {
    /// `columns` columns from the start.
    pub fn dense(columns: u32) -> KernelExtent {
        KernelExtent {
            search: columns,
            first: 0,
            end: columns,
        }
    }
}

/// A layer's kernel extent. An output map that starts `start_col`
/// processors into a memory instance (single output pass) skips
/// `start_col·ksize·in_expand` bytes: whole columns are not written, the
/// rest becomes `/qf` zero bytes; the written columns are then padded to
/// `start_col + kern_len`.
pub fn kernel_extent(
    layer: &HwLayer,
    output_processors: u64,
    in_expand: u32,
    out_expand: u32,
    out_per_pass: u32,
) -> KernelExtent {
    let kc = kernel_count(layer, output_processors, in_expand, out_expand);
    let (formula, packed) = formula_and_packed(layer, kc, in_expand, out_expand, out_per_pass);
    let start_col = if out_expand == 1 && !layer.flatten && !layer.is_depthwise() {
        ffs(output_processors) % 4
    } else {
        0
    };
    let qf = 8 / layer.weight_bits.bits();
    let (skip, lead) = {
        let bytes = start_col * layer.kernel_taps() * in_expand;
        (bytes / COLUMN_BYTES, (bytes % COLUMN_BYTES) / qf)
    };
    let data = u32::try_from((u64::from(lead) + packed).div_ceil(u64::from(COLUMN_BYTES))).unwrap_or(u32::MAX);
    KernelExtent {
        search: formula,
        first: skip,
        end: (skip + data).max(start_col + formula),
    }
}

/// The weight memory of all processors, filled layer by layer with the
/// izer's greedy first fit.
pub struct KernelMemory {
    device: Device,
    used: Vec<Vec<bool>>,
}

impl KernelMemory {
    pub fn new(device: Device) -> KernelMemory {
        KernelMemory {
            device,
            used: (0..PROCESSORS)
                .map(|p| vec![false; device.weight_columns(p) as usize])
                .collect(),
        }
    }

    /// Columns in use per processor.
    pub fn columns_used(&self) -> Vec<u32> {
        self.used
            .iter()
            .map(|cols| cols.iter().filter(|u| **u).count() as u32)
            .collect()
    }

    fn enabled(processors: u64) -> Vec<usize> {
        (0..PROCESSORS).filter(|p| processors >> p & 1 == 1).collect()
    }

    fn first_used(&self, procs: &[usize], start: u32, len: u32) -> Option<u32> {
        (start..start + len).find(|c| {
            procs
                .iter()
                .any(|p| self.used[*p].get(*c as usize).copied().unwrap_or(true))
        })
    }

    /// Finds one 4-aligned start with `extent.search` free columns on every
    /// processor of `processors`, marks `extent.first..extent.end` from it
    /// as used and returns the start.
    pub fn place(&mut self, processors: u64, extent: KernelExtent, depthwise: bool) -> Result<u32, KernelOverflow> {
        let columns = extent.search;
        let procs = Self::enabled(processors);
        let (Some(&smallest), true) = (
            procs.iter().min_by_key(|p| self.device.weight_columns(**p)),
            columns > 0,
        ) else {
            return Ok(0);
        };
        let limit = self.device.weight_columns(smallest);
        let all_large = procs.iter().all(|p| LARGE_PROCESSORS.contains(p));
        let mut found = None;
        // §5.5 step 2: on the MAX78002, layers on large processors only are
        // placed from the top of their extra memory first.
        // The izer's own search first: where it finds a free start, the
        // layer goes there; where it gives up, the layer goes to the first
        // fit from column 0, as in the izer; where its start lies on used
        // columns, kflow takes the first free 4-aligned start from the top.
        let top = self.device == Device::Max78002 && all_large && columns <= limit;
        let izer = if top {
            self.izer_top_search(&procs, columns, limit)
        } else {
            None
        };
        if let Some(start) = izer
            && self.fits_ram(&procs, start, columns, depthwise)
            && self.first_used(&procs, start, columns).is_none()
        {
            found = Some(start);
        } else if izer.is_some() {
            let mut start = (limit - columns) & !3;
            loop {
                if self.fits_ram(&procs, start, columns, depthwise) && self.first_used(&procs, start, columns).is_none()
                {
                    found = Some(start);
                    break;
                }
                if start < 4 {
                    break;
                }
                start -= 4;
            }
        }
        let start = match found {
            Some(start) => start,
            None => {
                let mut offs = 0u32;
                loop {
                    if offs + columns > limit {
                        let count = |p: &usize| self.used[*p].iter().filter(|u| **u).count() as u32;
                        let fullest = procs
                            .iter()
                            .copied()
                            .max_by_key(|p| (count(p), std::cmp::Reverse(*p)))
                            .unwrap_or(smallest);
                        return Err(KernelOverflow {
                            processor: fullest,
                            used: count(&fullest),
                            needed: columns,
                            limit: self.device.weight_columns(fullest),
                        });
                    }
                    if let Some(boundary) = self.straddled_ram(smallest, offs, columns, depthwise) {
                        offs = boundary;
                        continue;
                    }
                    match self.first_used(&procs, offs, columns) {
                        None => break offs,
                        Some(i) => offs = (i + 1).div_ceil(4) * 4,
                    }
                }
            }
        };
        for p in &procs {
            let limit = self.device.weight_columns(*p);
            if start + extent.end > limit {
                return Err(KernelOverflow {
                    processor: *p,
                    used: self.used[*p].iter().filter(|u| **u).count() as u32,
                    needed: extent.end,
                    limit,
                });
            }
            for c in start + extent.first..start + extent.end {
                self.used[*p][c as usize] = true;
            }
        }
        Ok(start)
    }

    /// The izer's search from the top of the large processors' memory
    /// (ai8x-synthesis izer/kernels.py:279-365, 397-426): it checks the
    /// `columns` columns below a column `s` (from the last one down), moves
    /// `s` below the first used column it meets, rounded down to a multiple
    /// of 4, and gives up (the caller then searches from column 0) as soon
    /// as that `s` leaves fewer than `columns` columns above it; the start
    /// is `(s − columns + 1) & ~3`. That start can lie on used columns; the
    /// caller does not take it then (README "the izer's program is wrong").
    fn izer_top_search(&self, procs: &[usize], columns: u32, limit: u32) -> Option<u32> {
        let used = |p: usize, c: i64| c >= 0 && self.used[p].get(c as usize).copied().unwrap_or(true);
        let (first, len) = (*procs.first()?, i64::from(columns));
        let mut s = i64::from(limit) - 1;
        while used(first, s) {
            s -= 4;
            if s < 0 {
                return None;
            }
        }
        'search: loop {
            for &p in procs {
                for i in (s - len + 1..=s).rev() {
                    if i < 0 {
                        return None;
                    }
                    if used(p, i) {
                        s = (i - 1) & !3;
                        if s < 0 || s + len > i64::from(self.device.weight_columns(p)) {
                            return None;
                        }
                        continue 'search;
                    }
                }
            }
            break;
        }
        u32::try_from((s - len + 1) & !3).ok()
    }

    fn fits_ram(&self, procs: &[usize], start: u32, columns: u32, depthwise: bool) -> bool {
        procs
            .iter()
            .all(|p| self.straddled_ram(*p, start, columns, depthwise).is_none())
    }

    /// For a depthwise layer (§5.5 step 4): the start of the next physical
    /// RAM when `[start, start+columns)` crosses into it.
    fn straddled_ram(&self, processor: usize, start: u32, columns: u32, depthwise: bool) -> Option<u32> {
        if !depthwise {
            return None;
        }
        self.device
            .weight_rams(processor)
            .into_iter()
            .find(|(lo, hi)| start >= *lo && start < *hi && start + columns > *hi)
            .map(|(_, hi)| hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_rounds_each_start_up_to_a_multiple_of_4() {
        // The autoencoder's golden offsets (§5.5), all on processor 0.
        let mut memory = KernelMemory::new(Device::Max78002);
        let offsets: Vec<u32> = [57, 43, 4, 1, 4, 11, 171]
            .into_iter()
            .map(|len| {
                memory
                    .place(0xffff_ffff_ffff_ffff, KernelExtent::dense(len), false)
                    .unwrap()
            })
            .collect();
        assert_eq!(offsets, [0, 60, 104, 108, 112, 116, 128]);
    }

    #[test]
    fn max78002_large_processors_fill_from_the_top_first() {
        // MNIST (§5.5): layer 0 on processor 0 only lands at column 5060.
        let mut memory = KernelMemory::new(Device::Max78002);
        assert_eq!(memory.place(0x1, KernelExtent::dense(60), false).unwrap(), 5060);
        assert_eq!(memory.place(0xffff_ffff, KernelExtent::dense(60), false).unwrap(), 0);
        assert_eq!(memory.place(0xffff_ffff, KernelExtent::dense(56), false).unwrap(), 60);
    }

    #[test]
    fn overflow_names_the_processor_and_its_depth() {
        let mut memory = KernelMemory::new(Device::Max78000);
        memory.place(0xf, KernelExtent::dense(700), false).unwrap();
        let err = memory.place(0x1, KernelExtent::dense(100), false).unwrap_err();
        assert_eq!(
            err,
            KernelOverflow {
                processor: 0,
                used: 700,
                needed: 100,
                limit: 768
            }
        );
    }

    #[test]
    fn depthwise_kernels_do_not_straddle_a_ram() {
        let mut memory = KernelMemory::new(Device::Max78002);
        memory.place(0x2, KernelExtent::dense(1000), false).unwrap();
        assert_eq!(memory.place(0x2, KernelExtent::dense(100), true).unwrap(), 1024);
    }
}
