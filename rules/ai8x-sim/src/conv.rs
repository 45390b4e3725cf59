//! Direct stride-1 "valid" convolution over zero-padded i16 planes, which
//! serves conv1d (one row), conv2d and convtranspose2d (zero-stuffed input,
//! spec §2.4). Full filters go to the channel-pair kernels of `conv_pairs`
//! where the CPU has them; this file's portable path serves depthwise
//! filters and other CPUs. No im2col: for each output channel, each input channel's taps
//! are swept over whole output rows, so the inner loop runs over contiguous
//! pixels and auto-vectorizes (i16 loads widened to i32 lanes). Sums of
//! int8 products stay exact in i32 for every legal layer (spec §3.6).

use rayon::prelude::*;

/// Below this many products per layer, rayon's fork/join costs more than it saves.
pub(crate) const PARALLEL_MACS: usize = 1 << 17;

/// The operator input, zero-padded (and, for convtranspose2d, zero-stuffed)
/// so that output pixel `(y, x)` reads rows `y..y+kh`, columns `x..x+kw`.
pub(crate) struct Planes {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<i16>,
}

/// Where the input goes inside the padded planes.
#[derive(Clone, Copy)]
pub(crate) struct Placement {
    pub top: usize,
    pub left: usize,
    pub bottom: usize,
    pub right: usize,
    /// One zero between neighbouring pixels (convtranspose2d's stride 2).
    pub stuff: bool,
}

impl Planes {
    /// `x` is CHW with `height × width` pixels per channel.
    pub fn new(x: &[i8], channels: usize, height: usize, width: usize, at: Placement) -> Planes {
        let step = if at.stuff { 2 } else { 1 };
        let ph = at.top + (height - 1) * step + 1 + at.bottom;
        let pw = at.left + (width - 1) * step + 1 + at.right;
        let mut data = vec![0i16; channels * ph * pw];
        for (plane, src) in data.chunks_exact_mut(ph * pw).zip(x.chunks_exact(height * width)) {
            for (y, src_row) in src.chunks_exact(width).enumerate() {
                let row = &mut plane[(at.top + y * step) * pw + at.left..];
                for (dst, &v) in row.iter_mut().step_by(step).zip(src_row) {
                    *dst = i16::from(v);
                }
            }
        }
        Planes {
            channels,
            height: ph,
            width: pw,
            data,
        }
    }
}

/// Integer weights as `[out][in per output][kh][kw]` in i16.
pub(crate) struct Filter {
    pub kh: usize,
    pub kw: usize,
    /// Each output channel reads only its own input channel.
    pub depthwise: bool,
    pub weights: Vec<i16>,
}

/// Runs the convolution and hands each output channel's accumulators
/// (`out_h × out_w`, including `128·bias`) to `finish` with that channel's
/// slice of `out`.
pub(crate) fn convolve<T: Send>(
    input: &Planes,
    filter: &Filter,
    bias: Option<&[i8]>,
    out: &mut [T],
    (out_h, out_w): (usize, usize),
    finish: impl Fn(&[i32], &mut [T]) + Sync,
) {
    #[cfg(target_arch = "x86_64")]
    if !filter.depthwise
        && let Some(isa) = crate::conv_pairs::Isa::detect()
    {
        return crate::conv_pairs::convolve(isa, input, filter, bias, out, (out_h, out_w), finish);
    }
    direct(input, filter, bias, out, (out_h, out_w), finish)
}

/// The portable path: each output channel's taps swept over whole rows.
pub(crate) fn direct<T: Send>(
    input: &Planes,
    filter: &Filter,
    bias: Option<&[i8]>,
    out: &mut [T],
    (out_h, out_w): (usize, usize),
    finish: impl Fn(&[i32], &mut [T]) + Sync,
) {
    let plane = out_h * out_w;
    let per_output = if filter.depthwise { 1 } else { input.channels };
    let job = Job {
        input,
        filter,
        out_w,
        per_output,
    };
    let run = |acc: &mut Vec<i32>, (o, chunk): (usize, &mut [T])| {
        let start = bias.map_or(0, |b| 128 * i32::from(b[o]));
        acc.clear();
        acc.resize(plane, start);
        accumulate(acc, &job, o);
        finish(acc, chunk);
    };
    let macs = out.len() * per_output * filter.kh * filter.kw;
    if macs >= PARALLEL_MACS && out.len() > plane {
        out.par_chunks_mut(plane)
            .enumerate()
            .for_each_init(|| Vec::with_capacity(plane), run);
    } else {
        let mut acc = Vec::with_capacity(plane);
        out.chunks_mut(plane).enumerate().for_each(|item| run(&mut acc, item));
    }
}

struct Job<'a> {
    input: &'a Planes,
    filter: &'a Filter,
    out_w: usize,
    per_output: usize,
}

/// Adds output channel `o`'s products into `acc`, with the widest vector
/// instructions the CPU has: the portable build targets plain x86-64.
fn accumulate(acc: &mut [i32], job: &Job, o: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { accumulate_avx2(acc, job, o) };
    }
    accumulate_portable(acc, job, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn accumulate_avx2(acc: &mut [i32], job: &Job, o: usize) {
    accumulate_portable(acc, job, o)
}

#[inline(always)]
fn accumulate_portable(acc: &mut [i32], job: &Job, o: usize) {
    let f = job.filter;
    // kw is 1..=9 (validated: conv1d kernels up to 9, 2-D kernels 1×1 and 3×3).
    match (f.kh, f.kw) {
        (3, 3) => channels::<3, 3>(acc, job, o),
        (_, 1) => channels::<1, 1>(acc, job, o),
        (_, 2) => channels::<1, 2>(acc, job, o),
        (_, 3) => channels::<1, 3>(acc, job, o),
        (_, 4) => channels::<1, 4>(acc, job, o),
        (_, 5) => channels::<1, 5>(acc, job, o),
        (_, 6) => channels::<1, 6>(acc, job, o),
        (_, 7) => channels::<1, 7>(acc, job, o),
        (_, 8) => channels::<1, 8>(acc, job, o),
        _ => channels::<1, 9>(acc, job, o),
    }
}

/// `KH` rows of `KW` taps are fused into one pass over an output row; any
/// further kernel rows (`f.kh / KH` groups) take further passes.
#[inline(always)]
fn channels<const KH: usize, const KW: usize>(acc: &mut [i32], job: &Job, o: usize) {
    let (input, f) = (job.input, job.filter);
    let (ph, pw) = (input.height, input.width);
    let first = if f.depthwise { o } else { 0 };
    let taps = f.kh * f.kw;
    for local in 0..job.per_output {
        let plane = &input.data[(first + local) * ph * pw..][..ph * pw];
        let w = &f.weights[(o * job.per_output + local) * taps..][..taps];
        for ky0 in (0..f.kh).step_by(KH) {
            let w: [[i32; KW]; KH] =
                std::array::from_fn(|r| std::array::from_fn(|t| i32::from(w[(ky0 + r) * f.kw + t])));
            for (y, acc_row) in acc.chunks_exact_mut(job.out_w).enumerate() {
                let rows: [[&[i16]; KW]; KH] = std::array::from_fn(|r| {
                    let row = &plane[(y + ky0 + r) * pw..][..pw];
                    std::array::from_fn(|t| &row[t..t + job.out_w])
                });
                row_taps(acc_row, &rows, &w);
            }
        }
    }
}

/// `acc[x] += Σ w[r][t]·row[r][t][x]`: every slice has `acc.len()` elements,
/// which lets the compiler drop bounds checks and vectorize over `x`.
#[inline(always)]
fn row_taps<const KH: usize, const KW: usize>(acc: &mut [i32], rows: &[[&[i16]; KW]; KH], w: &[[i32; KW]; KH]) {
    let n = acc.len();
    let rows: [[&[i16]; KW]; KH] = std::array::from_fn(|r| std::array::from_fn(|t| &rows[r][t][..n]));
    for x in 0..n {
        let mut s = acc[x];
        for r in 0..KH {
            for t in 0..KW {
                s += w[r][t] * i32::from(rows[r][t][x]);
            }
        }
        acc[x] = s;
    }
}
