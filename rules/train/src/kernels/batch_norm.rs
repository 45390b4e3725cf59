//! BatchNorm in training mode as one op with a closed-form backward.
//!
//! Written as candle ops it took a dozen tensors and, backward, several
//! reductions over non-last dimensions, candle's slowest kernel. Statistics
//! accumulate in a fixed order (so on any thread count the same), in f32
//! lanes combined in f64, and are handed to the caller for the running
//! averages.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::{batch_channels_rest, values};

/// One batch's statistics per channel.
#[derive(Clone, Debug, Default)]
pub(crate) struct Moments {
    pub mean: Vec<f32>,
    /// Biased (divided by `count`), as used to normalize.
    pub var: Vec<f32>,
    pub inv_std: Vec<f32>,
    /// Values per channel: batch × spatial size.
    pub count: usize,
}

/// `y = (x − mean) / √(var + ε) · w + b` over dimension 1 of `[B, C, ...]`,
/// with the batch's own mean and variance.
#[derive(Clone, Debug)]
pub(crate) struct BatchNormTrain {
    pub eps: f64,
    /// Filled by the forward pass; read by the backward pass and the caller.
    pub moments: Arc<Mutex<Moments>>,
}

/// A sum over many f32 values in eight interleaved f32 lanes (so that it
/// vectorizes; a single running sum is a chain of dependent adds), combined
/// in f64 at the end. The order is fixed, so the result is too.
#[derive(Default)]
struct Lanes {
    lanes: [f32; 8],
    rest: f64,
}

impl Lanes {
    /// Adds `f(a[i], b[i])` for every `i`.
    fn add(&mut self, a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
        let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
        let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
        for (ca, cb) in a_chunks.zip(b_chunks) {
            for ((lane, &va), &vb) in self.lanes.iter_mut().zip(ca).zip(cb) {
                *lane += f(va, vb);
            }
        }
        for (&va, &vb) in a_rest.iter().zip(b_rest) {
            self.rest += f64::from(f(va, vb));
        }
    }

    fn total(&self) -> f64 {
        self.lanes.iter().map(|&v| f64::from(v)).sum::<f64>() + self.rest
    }
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::Msg("batch norm statistics lock poisoned".into())
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "kflow-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        w_storage: &CpuStorage,
        w_layout: &Layout,
        b_storage: &CpuStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(x_storage, x_layout, "batch norm")?;
        let w = values(w_storage, w_layout, "batch norm")?;
        let b = values(b_storage, b_layout, "batch norm")?;
        let (batch, channels, rest) = batch_channels_rest(x_layout.dims(), "batch norm")?;
        let count = batch * rest;
        if w.len() != channels || b.len() != channels || count < 2 {
            candle_core::bail!(
                "batch norm: {channels} channels, {} weights, {count} values per channel",
                w.len()
            );
        }
        let mut moments = Moments {
            count,
            ..Moments::default()
        };
        let mut y = vec![0.0f32; x.len()];
        for c in 0..channels {
            let rows = || (0..batch).map(move |n| &x[(n * channels + c) * rest..][..rest]);
            let mut sum = Lanes::default();
            rows().for_each(|row| sum.add(row, row, |v, _| v));
            let mean = sum.total() / count as f64;
            // Two passes, as PyTorch: the variance of centered values loses nothing to cancellation.
            let mut squares = Lanes::default();
            let mean32 = mean as f32;
            rows().for_each(|row| squares.add(row, row, |v, _| (v - mean32) * (v - mean32)));
            let var = squares.total() / count as f64;
            let inv_std = 1.0 / (var + self.eps).sqrt();
            let inv_std32 = inv_std as f32;
            for n in 0..batch {
                let at = (n * channels + c) * rest;
                for (d, &v) in y[at..at + rest].iter_mut().zip(&x[at..at + rest]) {
                    *d = (v - mean32) * inv_std32 * w[c] + b[c];
                }
            }
            moments.mean.push(mean32);
            moments.var.push(var as f32);
            moments.inv_std.push(inv_std32);
        }
        *self.moments.lock().map_err(|_| poisoned())? = moments;
        Ok((CpuStorage::F32(y), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let moments = self.moments.lock().map_err(|_| poisoned())?.clone();
        let grad = grad_res.contiguous()?;
        let weight = w.flatten_all()?.to_vec1::<f32>()?;
        let packed = grad.apply_op2_no_bwd(&x.contiguous()?, &BatchNormGrad { moments, weight })?;
        let (dx, dw, db) = split_packed(&packed, x)?;
        Ok((
            x.track_op().then_some(dx),
            w.track_op().then_some(dw),
            b.track_op().then_some(db),
        ))
    }
}

/// The three gradients travel as one tensor `[dx..., dw..., db...]`, since
/// a custom op has one output.
fn split_packed(packed: &Tensor, x: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let n = x.elem_count();
    let c = x.dim(1)?;
    let dx = packed.narrow(0, 0, n)?.reshape(x.dims())?;
    let dw = packed.narrow(0, n, c)?;
    let db = packed.narrow(0, n + c, c)?;
    Ok((dx, dw, db))
}

struct BatchNormGrad {
    moments: Moments,
    weight: Vec<f32>,
}

impl candle_core::CustomOp2 for BatchNormGrad {
    fn name(&self) -> &'static str {
        "kflow-batch-norm-grad"
    }

    fn cpu_fwd(
        &self,
        g_storage: &CpuStorage,
        g_layout: &Layout,
        x_storage: &CpuStorage,
        x_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = values(g_storage, g_layout, "batch norm")?;
        let x = values(x_storage, x_layout, "batch norm")?;
        let w = &self.weight;
        let (batch, channels, rest) = batch_channels_rest(x_layout.dims(), "batch norm")?;
        let m = &self.moments;
        if m.mean.len() != channels || w.len() != channels || g.len() != x.len() {
            candle_core::bail!(
                "batch norm backward: statistics for {} channels, input has {channels}",
                m.mean.len()
            );
        }
        let mut out = vec![0.0f32; x.len() + 2 * channels];
        for c in 0..channels {
            let (mean, inv_std) = (m.mean[c], m.inv_std[c]);
            let (mut sum_g, mut sum_g_xhat) = (Lanes::default(), Lanes::default());
            for n in 0..batch {
                let at = (n * channels + c) * rest;
                let (g_row, x_row) = (&g[at..at + rest], &x[at..at + rest]);
                sum_g.add(g_row, g_row, |gv, _| gv);
                sum_g_xhat.add(g_row, x_row, |gv, xv| gv * ((xv - mean) * inv_std));
            }
            let (sum_g, sum_g_xhat) = (sum_g.total(), sum_g_xhat.total());
            // dx = w·inv_std · (g − mean(g) − x̂ · mean(g·x̂))
            let mean_g = (sum_g / m.count as f64) as f32;
            let mean_g_xhat = (sum_g_xhat / m.count as f64) as f32;
            let scale = w[c] * inv_std;
            for n in 0..batch {
                let at = (n * channels + c) * rest;
                for i in at..at + rest {
                    let xhat = (x[i] - mean) * inv_std;
                    out[i] = (g[i] - mean_g - xhat * mean_g_xhat) * scale;
                }
            }
            out[x.len() + c] = sum_g_xhat as f32;
            out[x.len() + channels + c] = sum_g as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * channels)))
    }
}
