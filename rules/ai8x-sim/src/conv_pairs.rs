//! The convolution on x86 vector units, as dot products over channel pairs.
//!
//! The padded input is re-laid so that each 32-bit lane holds one pixel of
//! two neighbouring input channels, and each weight word the two matching
//! taps. One `vpmaddwd` (AVX2) or `vpdpwssd` (AVX-VNNI) then multiplies and
//! adds two channels for eight pixels; a kernel tap is a shifted load from
//! the padded row, so nothing is copied per tap (no im2col). A tile of `MR`
//! output channels by up to 24 pixels of one output row stays in registers for
//! the whole reduction. The products are the int8 ones of spec §3.6 and the
//! sums wrap in i32 exactly as the portable path's do, so both paths give
//! the same bits.

use std::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_dpwssd_avx_epi32, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_set1_epi32,
    _mm256_storeu_si256,
};

use rayon::prelude::*;

use crate::conv::{Filter, Input, PARALLEL_MACS};

/// Output channels per tile.
const MR: usize = 4;
/// The most 256-bit vectors (eight pixels each) a tile row holds: with
/// `MR` of them per vector, 12 accumulators of the 16 registers.
const MAX_V: usize = 3;
/// Pixels of the widest tile.
const MAX_NR: usize = 8 * MAX_V;

/// The widest channel-pair instruction this CPU has.
#[derive(Clone, Copy)]
pub(crate) enum Isa {
    Avx2,
    AvxVnni,
}

impl Isa {
    pub fn detect() -> Option<Isa> {
        if std::arch::is_x86_feature_detected!("avxvnni") && std::arch::is_x86_feature_detected!("avx2") {
            Some(Isa::AvxVnni)
        } else if std::arch::is_x86_feature_detected!("avx2") {
            Some(Isa::Avx2)
        } else {
            None
        }
    }
}

/// Two i16 values in one i32 lane, `lo` in the low half (little-endian
/// order, which is what the pair instructions multiply lane by lane).
fn pair(lo: i16, hi: i16) -> i32 {
    i32::from(lo as u16) | (i32::from(hi) << 16)
}

struct Job {
    /// `[pair][row][column]` of the padded planes, then `MAX_NR` zero lanes so
    /// that a tile hanging past the last row's end stays in bounds.
    data: Vec<i32>,
    pairs: usize,
    width: usize,
    plane: usize,
    kh: usize,
    kw: usize,
    /// `[block][pair][tap][MR]` weight pairs; missing channels are zero.
    weights: Vec<i32>,
    /// `128·bias` per output channel, zero-filled to whole blocks.
    bias: Vec<i32>,
    out_h: usize,
    out_w: usize,
}

impl Job {
    fn new(
        input: &Input,
        filter: &Filter,
        bias: Option<&[i8]>,
        outputs: usize,
        (out_h, out_w): (usize, usize),
    ) -> Self {
        let (channels, (height, width)) = (input.channels, input.padded());
        let (plane, source) = (height * width, input.height * input.width);
        let pairs = channels.div_ceil(2);
        let mut data = vec![0i32; pairs * plane + MAX_NR];
        let x = input.x;
        input.lay_out(&mut data[..pairs * plane], |p, i| {
            let hi = if 2 * p + 1 < channels {
                x[(2 * p + 1) * source + i]
            } else {
                0
            };
            pair(i16::from(x[2 * p * source + i]), i16::from(hi))
        });
        let taps = filter.kh * filter.kw;
        let blocks = outputs.div_ceil(MR);
        let mut weights = vec![0i32; blocks * pairs * taps * MR];
        for (o, per_output) in filter.weights.chunks_exact(channels * taps).enumerate() {
            for (c, w) in per_output.chunks_exact(taps).enumerate() {
                for (t, &w) in w.iter().enumerate() {
                    let at = (((o / MR) * pairs + c / 2) * taps + t) * MR + o % MR;
                    weights[at] |= if c % 2 == 0 { pair(w, 0) } else { pair(0, w) };
                }
            }
        }
        let mut start = vec![0i32; blocks * MR];
        if let Some(b) = bias {
            for (s, &b) in start.iter_mut().zip(b) {
                *s = 128 * i32::from(b);
            }
        }
        Job {
            data,
            pairs,
            width,
            plane,
            kh: filter.kh,
            kw: filter.kw,
            weights,
            bias: start,
            out_h,
            out_w,
        }
    }

    /// Accumulators of output channels `block·MR..` into `acc`
    /// (`MR` planes of `out_h × out_w`).
    fn block(&self, isa: Isa, block: usize, acc: &mut [i32]) {
        debug_assert!(acc.len() >= MR * self.out_h * self.out_w);
        // SAFETY: `Isa::detect` found these features on this CPU.
        unsafe {
            match isa {
                Isa::AvxVnni => dispatch!(block_vnni, self, block, acc),
                Isa::Avx2 => dispatch!(block_avx2, self, block, acc),
            }
        }
    }

    /// The tile width, in vectors, that computes the fewest lanes past the
    /// row's end; the widest among equals, as it loads each weight for more
    /// pixels.
    fn vectors(&self) -> usize {
        (1..=MAX_V)
            .rev()
            .min_by_key(|v| self.out_w.div_ceil(8 * v) * v)
            .unwrap_or(1)
    }
}

#[target_feature(enable = "avx2")]
fn dot_avx2(acc: __m256i, x: __m256i, w: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(x, w))
}

#[target_feature(enable = "avx2,avxvnni")]
fn dot_vnni(acc: __m256i, x: __m256i, w: __m256i) -> __m256i {
    _mm256_dpwssd_avx_epi32(acc, x, w)
}

/// One tile kernel per instruction set, from one body: the dot-product
/// instruction is the only difference.
macro_rules! block_kernel {
    ($name:ident, $features:literal, $dot:ident) => {
        #[target_feature(enable = $features)]
        fn $name<const V: usize, const KH: usize, const KW: usize>(job: &Job, block: usize, acc: &mut [i32]) {
            // A kernel size known at compile time unrolls the taps; 0 reads it from the job.
            let (kh, kw) = if KH > 0 { (KH, KW) } else { (job.kh, job.kw) };
            let (out_h, out_w, width) = (job.out_h, job.out_w, job.width);
            let taps = kh * kw;
            let weights = &job.weights[block * job.pairs * taps * MR..][..job.pairs * taps * MR];
            let bias = &job.bias[block * MR..][..MR];
            // What one tile reads of one pair's plane: `kh` rows, `kw − 1`
            // columns beyond the tile's 8·V lanes.
            let span = (kh - 1) * width + kw - 1 + 8 * V;
            let mut spill = [[0i32; MAX_NR]; MR];
            for y in 0..out_h {
                for x0 in (0..out_w).step_by(8 * V) {
                    let mut sums: [[__m256i; V]; MR] = std::array::from_fn(|r| [_mm256_set1_epi32(bias[r]); V]);
                    for p in 0..job.pairs {
                        let at = p * job.plane + y * width + x0;
                        // The last tile of the last pair reads at most `plane·pairs + 8·V − 1`
                        // (the output is `kh − 1` rows and `kw − 1` columns smaller
                        // than the padded planes), inside `data`.
                        let window = job.data[at..at + span].as_ptr();
                        let w = &weights[p * taps * MR..][..taps * MR];
                        for ky in 0..kh {
                            for kx in 0..kw {
                                // SAFETY: `ky·width + kx + 8·V ≤ span`, the window sliced above.
                                let xs: [__m256i; V] = std::array::from_fn(|v| unsafe {
                                    _mm256_loadu_si256(window.add(ky * width + kx + 8 * v).cast())
                                });
                                let wt = &w[(ky * kw + kx) * MR..][..MR];
                                for r in 0..MR {
                                    let wr = _mm256_set1_epi32(wt[r]);
                                    for v in 0..V {
                                        sums[r][v] = $dot(sums[r][v], xs[v], wr);
                                    }
                                }
                            }
                        }
                    }
                    let n = (out_w - x0).min(8 * V);
                    for r in 0..MR {
                        for v in 0..V {
                            // SAFETY: `spill[r]` has 8·MAX_V ≥ 8·V i32.
                            unsafe { _mm256_storeu_si256(spill[r].as_mut_ptr().add(8 * v).cast(), sums[r][v]) };
                        }
                        acc[(r * out_h + y) * out_w + x0..][..n].copy_from_slice(&spill[r][..n]);
                    }
                }
            }
        }
    };
}

block_kernel!(block_avx2, "avx2", dot_avx2);

/// Picks the instance of a tile kernel for the job's tile width and kernel
/// size: 3×3 and 1×1 unrolled, any other size (conv1d's 1×k) looped.
macro_rules! dispatch {
    ($kernel:ident, $job:expr, $block:expr, $acc:expr) => {
        match ($job.vectors(), $job.kh, $job.kw) {
            (1, 3, 3) => $kernel::<1, 3, 3>($job, $block, $acc),
            (2, 3, 3) => $kernel::<2, 3, 3>($job, $block, $acc),
            (_, 3, 3) => $kernel::<MAX_V, 3, 3>($job, $block, $acc),
            (1, 1, 1) => $kernel::<1, 1, 1>($job, $block, $acc),
            (2, 1, 1) => $kernel::<2, 1, 1>($job, $block, $acc),
            (_, 1, 1) => $kernel::<MAX_V, 1, 1>($job, $block, $acc),
            (1, _, _) => $kernel::<1, 0, 0>($job, $block, $acc),
            (2, _, _) => $kernel::<2, 0, 0>($job, $block, $acc),
            (_, _, _) => $kernel::<MAX_V, 0, 0>($job, $block, $acc),
        }
    };
}
use dispatch;
block_kernel!(block_vnni, "avx2,avxvnni", dot_vnni);

/// [`crate::conv::convolve`] for a full (not depthwise) filter.
pub(crate) fn convolve<T: Send>(
    isa: Isa,
    input: &Input,
    filter: &Filter,
    bias: Option<&[i8]>,
    out: &mut [T],
    dims: (usize, usize),
    finish: impl Fn(&[i32], &mut [T]) + Sync,
) {
    let plane = dims.0 * dims.1;
    let outputs = out.len() / plane;
    let job = Job::new(input, filter, bias, outputs, dims);
    let run = |acc: &mut Vec<i32>, (b, chunk): (usize, &mut [T])| {
        acc.resize(MR * plane, 0);
        job.block(isa, b, acc);
        for (sums, o) in acc.chunks_exact(plane).zip(chunk.chunks_mut(plane)) {
            finish(sums, o);
        }
    };
    let macs = out.len() * input.channels * filter.kh * filter.kw;
    if macs >= PARALLEL_MACS && outputs > MR {
        out.par_chunks_mut(MR * plane).enumerate().for_each_init(Vec::new, run);
    } else {
        let mut acc = Vec::new();
        out.chunks_mut(MR * plane)
            .enumerate()
            .for_each(|item| run(&mut acc, item));
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::conv::{Placement, direct};

    fn run(
        isa: Option<Isa>,
        input: &Input,
        filter: &Filter,
        bias: Option<&[i8]>,
        outputs: usize,
        dims: (usize, usize),
    ) -> Vec<i32> {
        let mut out = vec![0i32; outputs * dims.0 * dims.1];
        let copy = |acc: &[i32], o: &mut [i32]| o.copy_from_slice(acc);
        match isa {
            Some(isa) => convolve(isa, input, filter, bias, &mut out, dims, copy),
            None => direct(input, filter, bias, &mut out, dims, copy),
        }
        out
    }

    /// Both instruction sets (where this CPU has them) against the portable
    /// path, on shapes that leave partial tiles, odd channel counts and
    /// partial output-channel blocks, with extreme int8 values mixed in.
    #[test]
    fn every_instruction_set_matches_the_portable_path() {
        let available: Vec<Isa> = match Isa::detect() {
            Some(Isa::AvxVnni) => vec![Isa::Avx2, Isa::AvxVnni],
            Some(Isa::Avx2) => vec![Isa::Avx2],
            None => return eprintln!("no AVX2 on this CPU: only the portable path runs here"),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for case in 0..60 {
            let one_d = case % 3 == 0;
            let (kh, kw) = if one_d {
                (1, rng.random_range(1..=9))
            } else {
                [(1, 1), (3, 3)][case % 2]
            };
            let channels = rng.random_range(1..=19);
            let outputs = rng.random_range(1..=11);
            let (h, w) = if one_d {
                (1, rng.random_range(1..=70))
            } else {
                (rng.random_range(1..=9), rng.random_range(1..=40))
            };
            let pad = if kh == 3 { rng.random_range(0..=2) } else { 0 };
            let pad_w = if one_d { rng.random_range(0..=kw / 2) } else { pad };
            let at = Placement {
                top: pad,
                left: pad_w,
                bottom: pad,
                right: pad_w,
                stuff: false,
            };
            let extreme = |r: &mut ChaCha8Rng| {
                if r.random_range(0..4) == 0 {
                    [-128, 127][r.random_range(0..2)]
                } else {
                    r.random::<i8>()
                }
            };
            let x: Vec<i8> = (0..channels * h * w).map(|_| extreme(&mut rng)).collect();
            let input = Input {
                x: &x,
                channels,
                height: h,
                width: w,
                at,
            };
            let (ph, pw) = input.padded();
            if ph < kh || pw < kw {
                continue;
            }
            let (out_h, out_w) = (ph + 1 - kh, pw + 1 - kw);
            let filter = Filter {
                kh,
                kw,
                depthwise: false,
                weights: (0..outputs * channels * kh * kw)
                    .map(|_| i16::from(extreme(&mut rng)))
                    .collect(),
            };
            let bias: Vec<i8> = (0..outputs).map(|_| rng.random()).collect();
            let bias = (case % 4 != 1).then_some(bias.as_slice());
            let expected = run(None, &input, &filter, bias, outputs, (out_h, out_w));
            for &isa in &available {
                let got = run(Some(isa), &input, &filter, bias, outputs, (out_h, out_w));
                assert!(
                    got == expected,
                    "case {case}: {kh}x{kw}, {channels}->{outputs} at {h}x{w}"
                );
            }
        }
    }
}
