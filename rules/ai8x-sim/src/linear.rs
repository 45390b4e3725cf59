//! Linear layers: one dot product per output over the (flattened) input,
//! which is already in `torch.flatten` order in CHW (spec §2.5).

use rayon::prelude::*;

const PARALLEL_MACS: usize = 1 << 17;

/// `128·bias[o] + Σ_i weight[o·n + i]·x[i]` for every output `o`.
pub(crate) fn linear(x: &[i8], weight: &[i8], bias: Option<&[i8]>, outputs: usize) -> Vec<i32> {
    let n = x.len();
    let one = |(o, row): (usize, &[i8])| -> i32 {
        let start = bias.map_or(0, |b| 128 * i32::from(b[o]));
        start
            + row
                .iter()
                .zip(x)
                .map(|(&w, &v)| i32::from(w) * i32::from(v))
                .sum::<i32>()
    };
    if outputs * n >= PARALLEL_MACS {
        weight.par_chunks_exact(n).enumerate().map(one).collect()
    } else {
        weight.chunks_exact(n).enumerate().map(one).collect()
    }
}
