//! Max and average pooling as candle custom ops, forward and backward.
//!
//! candle's own `max_pool2d`/`avg_pool2d` have no backward pass unless the
//! window equals the stride, and its max-pool gradient splits ties, while
//! PyTorch sends the whole gradient to the first maximum of the window. The
//! IR allows any window and stride, so both directions are written here, as
//! plain sequential loops over `[planes, H, W]` (1-D pooling is the case
//! `H = 1`).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};

use super::values;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolKind {
    Max,
    Avg,
}

/// A square window over the spatial dimensions of `[B, C, L]` or
/// `[B, C, H, W]`, no padding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pool {
    pub kind: PoolKind,
    pub kernel: usize,
    pub stride: usize,
}

/// The planes and spatial extent of a pooled tensor, and the window in each
/// direction (`1` along the dummy height of a 1-D input).
#[derive(Clone, Copy)]
struct Geometry {
    planes: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    oh: usize,
    ow: usize,
}

impl Pool {
    pub(crate) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1(*self)
    }

    fn geometry(&self, dims: &[usize]) -> candle_core::Result<(Geometry, Vec<usize>)> {
        let (planes, h, w, kh, sh) = match *dims {
            [b, c, l] => (b * c, 1, l, 1, 1),
            [b, c, h, w] => (b * c, h, w, self.kernel, self.stride),
            _ => candle_core::bail!("pooling needs a [B, C, L] or [B, C, H, W] tensor, got {dims:?}"),
        };
        let (kw, sw) = (self.kernel, self.stride);
        if kh > h || kw > w || sh == 0 || sw == 0 {
            candle_core::bail!(
                "pooling window {} / stride {} does not fit {dims:?}",
                self.kernel,
                self.stride
            );
        }
        let (oh, ow) = ((h - kh) / sh + 1, (w - kw) / sw + 1);
        let mut out_dims = dims.to_vec();
        let rank = out_dims.len();
        out_dims[rank - 1] = ow;
        if rank == 4 {
            out_dims[2] = oh;
        }
        Ok((
            Geometry {
                planes,
                h,
                w,
                kh,
                kw,
                sh,
                sw,
                oh,
                ow,
            },
            out_dims,
        ))
    }
}

impl Geometry {
    /// One output row of max or average pooling over one plane, taking the
    /// window offsets in the outer loop so that the inner one runs over the
    /// row without branches.
    fn pool_row(&self, kind: PoolKind, plane: &[f32], oy: usize, out: &mut [f32]) {
        match kind {
            PoolKind::Max => out.fill(f32::NEG_INFINITY),
            PoolKind::Avg => out.fill(0.0),
        }
        for ky in 0..self.kh {
            let row = &plane[(oy * self.sh + ky) * self.w..][..self.w];
            for kx in 0..self.kw {
                let taps = row[kx..].iter().step_by(self.sw);
                match kind {
                    // NaN wins, so that it propagates as in PyTorch.
                    PoolKind::Max => out.iter_mut().zip(taps).for_each(|(m, &v)| {
                        *m = if (v > *m) | v.is_nan() { v } else { *m };
                    }),
                    PoolKind::Avg => out.iter_mut().zip(taps).for_each(|(m, &v)| *m += v),
                }
            }
        }
        if kind == PoolKind::Avg {
            // PyTorch divides the window's sum by its size (there is no
            // padding, so no `count_include_pad` question).
            let count = (self.kh * self.kw) as f32;
            out.iter_mut().for_each(|m| *m /= count);
        }
    }

    /// Adds one output row's gradient `grad` into the plane's gradient
    /// `dst`. Max pooling sends each value to the first window position
    /// (PyTorch's scan order, rows first) holding the maximum `max` (or a
    /// NaN, when the maximum is NaN); `taken` is scratch of the row's length.
    #[allow(clippy::too_many_arguments)]
    fn unpool_row(
        &self,
        kind: PoolKind,
        plane: &[f32],
        oy: usize,
        max: &[f32],
        grad: &[f32],
        dst: &mut [f32],
        taken: &mut [bool],
    ) {
        let first = oy * self.sh * self.w;
        match kind {
            PoolKind::Max => {
                taken.fill(false);
                for ky in 0..self.kh {
                    for kx in 0..self.kw {
                        let start = first + ky * self.w + kx;
                        for ox in 0..max.len() {
                            let i = start + ox * self.sw;
                            let v = plane[i];
                            let hit = ((v == max[ox]) | v.is_nan()) & !taken[ox];
                            taken[ox] |= hit;
                            // A product rather than `if` (or a bit mask, which
                            // the compiler turns back into a branch): the
                            // branch is a coin flip on real data.
                            dst[i] += grad[ox] * f32::from(u8::from(hit));
                        }
                    }
                }
            }
            PoolKind::Avg => {
                let count = (self.kh * self.kw) as f32;
                for ky in 0..self.kh {
                    for kx in 0..self.kw {
                        let start = first + ky * self.w + kx;
                        for (d, &g) in dst[start..].iter_mut().step_by(self.sw).zip(grad) {
                            *d += g / count;
                        }
                    }
                }
            }
        }
    }
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "kflow-max-pool",
            PoolKind::Avg => "kflow-avg-pool",
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(storage, layout, "pooling")?;
        let (g, out_dims) = self.geometry(layout.dims())?;
        let mut out = vec![0.0f32; g.planes * g.oh * g.ow];
        for (plane, out_plane) in x.chunks_exact(g.h * g.w).zip(out.chunks_exact_mut(g.oh * g.ow)) {
            for (oy, out_row) in out_plane.chunks_exact_mut(g.ow).enumerate() {
                g.pool_row(self.kind, plane, oy, out_row);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad_res
            .contiguous()?
            .apply_op3_no_bwd(&arg.contiguous()?, &res.contiguous()?, &PoolGrad(*self))?;
        Ok(Some(grad))
    }
}

/// The gradient of [`Pool`] with respect to its input, from the output's
/// gradient, the forward input and the forward output.
struct PoolGrad(Pool);

impl CustomOp3 for PoolGrad {
    fn name(&self) -> &'static str {
        "kflow-pool-grad"
    }

    fn cpu_fwd(
        &self,
        grad_storage: &CpuStorage,
        grad_layout: &Layout,
        arg_storage: &CpuStorage,
        arg_layout: &Layout,
        res_storage: &CpuStorage,
        res_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let grad = values(grad_storage, grad_layout, "pooling")?;
        let arg = values(arg_storage, arg_layout, "pooling")?;
        let res = values(res_storage, res_layout, "pooling")?;
        let (g, out_dims) = self.0.geometry(arg_layout.dims())?;
        if grad_layout.dims() != out_dims.as_slice() || res_layout.dims() != out_dims.as_slice() {
            candle_core::bail!(
                "pooling gradient of shape {:?}, expected {out_dims:?}",
                grad_layout.dims()
            );
        }
        let mut out = vec![0.0f32; arg.len()];
        let mut taken = vec![false; g.ow];
        let per_out = g.oh * g.ow;
        let planes = arg
            .chunks_exact(g.h * g.w)
            .zip(grad.chunks_exact(per_out))
            .zip(res.chunks_exact(per_out));
        for (((plane, plane_grad), plane_res), dst) in planes.zip(out.chunks_exact_mut(g.h * g.w)) {
            let rows = plane_grad.chunks_exact(g.ow).zip(plane_res.chunks_exact(g.ow));
            for (oy, (grad_row, max_row)) in rows.enumerate() {
                g.unpool_row(self.0.kind, plane, oy, max_row, grad_row, dst, &mut taken);
            }
        }
        Ok((CpuStorage::F32(out), arg_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The gradient of `sum(pool(x) · weights)` with respect to `x` of shape `[1, 1, L]`.
    fn grad_1d(pool: Pool, x: &[f32], weights: &[f32]) -> Vec<f32> {
        let x = Var::from_slice(x, (1, 1, x.len()), &Device::Cpu).unwrap();
        let w = Tensor::from_slice(weights, (1, 1, weights.len()), &Device::Cpu).unwrap();
        let loss = (pool.apply(x.as_tensor()).unwrap() * w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn max_pool_sends_each_gradient_to_its_windows_maximum() {
        let pool = Pool {
            kind: PoolKind::Max,
            kernel: 3,
            stride: 1,
        };
        assert_eq!(
            grad_1d(pool, &[1.0, 3.0, 2.0, 5.0, 4.0], &[1.0, 10.0, 100.0]),
            [0.0, 1.0, 0.0, 110.0, 0.0]
        );
    }

    #[test]
    fn max_pool_ties_go_to_the_first_maximum_as_in_pytorch() {
        let pool = Pool {
            kind: PoolKind::Max,
            kernel: 2,
            stride: 2,
        };
        assert_eq!(
            grad_1d(pool, &[2.0, 2.0, -1.0, -1.0], &[1.0, 3.0]),
            [1.0, 0.0, 3.0, 0.0]
        );
    }

    #[test]
    fn avg_pool_spreads_each_gradient_over_its_window() {
        let pool = Pool {
            kind: PoolKind::Avg,
            kernel: 3,
            stride: 2,
        };
        assert_eq!(grad_1d(pool, &[0.0; 5], &[3.0, 6.0]), [1.0, 1.0, 3.0, 2.0, 2.0]);
    }

    #[test]
    fn two_dimensional_max_pool_gradient_follows_the_window_maximum() {
        // [[1, 2, 0], [4, 3, 0], [0, 0, 9]] with a 2×2 window, stride 1.
        let x = Var::from_slice(
            &[1.0f32, 2.0, 0.0, 4.0, 3.0, 0.0, 0.0, 0.0, 9.0],
            (1, 1, 3, 3),
            &Device::Cpu,
        )
        .unwrap();
        let pool = Pool {
            kind: PoolKind::Max,
            kernel: 2,
            stride: 1,
        };
        let y = pool.apply(x.as_tensor()).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [4.0, 3.0, 4.0, 9.0]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(g, [0.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    }
}
