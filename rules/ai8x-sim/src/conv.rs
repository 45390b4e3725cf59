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

/// The operator input (CHW int8) and where it goes inside the zero-padded
/// (for convtranspose2d, zero-stuffed) planes the kernels read, so that
/// output pixel `(y, x)` reads rows `y..y+kh`, columns `x..x+kw`.
pub(crate) struct Input<'a> {
    pub x: &'a [i8],
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub at: Placement,
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

impl Input<'_> {
    fn step(&self) -> usize {
        if self.at.stuff { 2 } else { 1 }
    }

    /// Rows and columns of a padded plane.
    pub fn padded(&self) -> (usize, usize) {
        let (at, step) = (self.at, self.step());
        (
            at.top + (self.height - 1) * step + 1 + at.bottom,
            at.left + (self.width - 1) * step + 1 + at.right,
        )
    }

    /// Fills the padded planes in `dst` (zeroed by the caller), plane `p`
    /// pixel by pixel with `value(p, i)` of source pixel `i`.
    pub fn lay_out<T>(&self, dst: &mut [T], value: impl Fn(usize, usize) -> T) {
        let ((ph, pw), step) = (self.padded(), self.step());
        for (p, plane) in dst.chunks_exact_mut(ph * pw).enumerate() {
            for y in 0..self.height {
                let row = &mut plane[(self.at.top + y * step) * pw + self.at.left..];
                for (x, dst) in row.iter_mut().step_by(step).take(self.width).enumerate() {
                    *dst = value(p, y * self.width + x);
                }
            }
        }
    }
}

/// The padded planes of every input channel, in i16.
struct Planes {
    channels: usize,
    height: usize,
    width: usize,
    data: Vec<i16>,
}

impl Planes {
    fn new(input: &Input) -> Planes {
        let (ph, pw) = input.padded();
        let plane = input.height * input.width;
        let mut data = vec![0i16; input.channels * ph * pw];
        input.lay_out(&mut data, |c, i| i16::from(input.x[c * plane + i]));
        Planes {
            channels: input.channels,
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
    input: &Input,
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
    input: &Input,
    filter: &Filter,
    bias: Option<&[i8]>,
    out: &mut [T],
    (out_h, out_w): (usize, usize),
    finish: impl Fn(&[i32], &mut [T]) + Sync,
) {
    let planes = Planes::new(input);
    let input = &planes;
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
