//! Convolution as a matrix product: the patches of `[B, C, L]` or
//! `[B, C, H, W]` laid out as `[C·k(·k), B · positions]`.
//!
//! With the weight `[out, C, k(, k)]` viewed as `[out, C·k(·k)]` (its
//! PyTorch layout, unchanged), the convolution is one GEMM whose long side
//! is all `B · positions` outputs, and its backward is two GEMMs plus the
//! scatter back into the input (`col2im`, this op's backward). candle's own
//! conv1d takes its input gradient through a direct transposed convolution
//! when there is padding, the slowest part of a training step, and its
//! weight gradient is wrong in 0.11.1 (see `kernels.rs`'s tests).
//!
//! In this layout each patch row is, per sample and output row, a shifted
//! copy of an input row: contiguous runs, copied and summed as slices.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::values;

/// Patches of a stride-1, dilation-1 convolution with symmetric zero padding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Im2Col {
    pub kernel: usize,
    pub padding: usize,
}

/// The input's extent and the patch grid, with 1-D as a height of 1.
#[derive(Clone, Copy)]
struct Geometry {
    batch: usize,
    channels: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
}

/// Where one output row of one patch entry reads its input row: the input
/// offset of its first in-range value, and how many outputs at its start
/// and end fall into the padding.
struct Run {
    src: Option<usize>,
    left: usize,
    len: usize,
    right: usize,
}

impl Geometry {
    fn patch_len(&self) -> usize {
        self.channels * self.kh * self.kw
    }

    fn columns(&self) -> usize {
        self.batch * self.oh * self.ow
    }

    /// Calls `f(run)` for every (patch entry, sample, output row), in the
    /// order of the columns matrix.
    fn for_each_run(&self, mut f: impl FnMut(Run)) {
        for c in 0..self.channels {
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    // Outputs ox with 0 <= ox + kx − pw < w read inside the row.
                    let left = self.pw.saturating_sub(kx).min(self.ow);
                    let end = (self.w + self.pw).saturating_sub(kx).clamp(left, self.ow);
                    for b in 0..self.batch {
                        let plane = (b * self.channels + c) * self.h * self.w;
                        for oy in 0..self.oh {
                            let iy = (oy + ky).checked_sub(self.ph).filter(|&iy| iy < self.h);
                            let src = iy
                                .filter(|_| end > left)
                                .map(|iy| plane + iy * self.w + left + kx - self.pw);
                            f(match src {
                                Some(src) => Run {
                                    src: Some(src),
                                    left,
                                    len: end - left,
                                    right: self.ow - end,
                                },
                                None => Run {
                                    src: None,
                                    left: self.ow,
                                    len: 0,
                                    right: 0,
                                },
                            });
                        }
                    }
                }
            }
        }
    }
}

impl Im2Col {
    pub(crate) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1(*self)
    }

    fn geometry(&self, dims: &[usize]) -> candle_core::Result<Geometry> {
        let (k, p) = (self.kernel, self.padding);
        let (batch, channels, h, w, kh, ph) = match *dims {
            [b, c, l] => (b, c, 1, l, 1, 0),
            [b, c, h, w] => (b, c, h, w, k, p),
            _ => candle_core::bail!("im2col needs a [B, C, L] or [B, C, H, W] tensor, got {dims:?}"),
        };
        let extent = |v: usize, k: usize, p: usize| (v + 2 * p).checked_sub(k).map(|o| o + 1);
        let (Some(oh), Some(ow)) = (extent(h, kh, ph), extent(w, k, p)) else {
            candle_core::bail!("kernel {k} with padding {p} does not fit {dims:?}");
        };
        Ok(Geometry {
            batch,
            channels,
            h,
            w,
            kh,
            kw: k,
            ph,
            pw: p,
            oh,
            ow,
        })
    }

    /// The spatial output shape of the convolution on `dims`.
    pub(crate) fn output_positions(&self, dims: &[usize]) -> candle_core::Result<Vec<usize>> {
        let g = self.geometry(dims)?;
        Ok(if dims.len() == 3 { vec![g.ow] } else { vec![g.oh, g.ow] })
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "kflow-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(storage, layout, "im2col")?;
        let g = self.geometry(layout.dims())?;
        let mut cols = Vec::with_capacity(g.patch_len() * g.columns());
        g.for_each_run(|run| {
            cols.resize(cols.len() + run.left, 0.0);
            if let Some(src) = run.src {
                cols.extend_from_slice(&x[src..src + run.len]);
            }
            cols.resize(cols.len() + run.right, 0.0);
        });
        Ok((CpuStorage::F32(cols), Shape::from((g.patch_len(), g.columns()))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if !arg.track_op() {
            // The model input needs no gradient; skip the scatter.
            return Ok(None);
        }
        let grad = grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im {
            of: *self,
            input: arg.dims().to_vec(),
        })?;
        Ok(Some(grad))
    }
}

/// The adjoint of [`Im2Col`]: sums each column entry back into the input
/// position it was copied from.
struct Col2Im {
    of: Im2Col,
    input: Vec<usize>,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "kflow-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let cols = values(storage, layout, "col2im")?;
        let g = self.of.geometry(&self.input)?;
        if cols.len() != g.patch_len() * g.columns() {
            candle_core::bail!("col2im: {} values for the patches of {:?}", cols.len(), self.input);
        }
        let mut x = vec![0.0f32; self.input.iter().product()];
        let mut at = 0;
        g.for_each_run(|run| {
            if let Some(dst) = run.src {
                let src = &cols[at + run.left..at + run.left + run.len];
                for (d, &v) in x[dst..dst + run.len].iter_mut().zip(src) {
                    *d += v;
                }
            }
            at += run.left + run.len + run.right;
        });
        Ok((CpuStorage::F32(x), Shape::from(self.input.clone())))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn one_dimensional_patches_are_zero_padded_windows() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 10.0, 20.0, 30.0], (1, 2, 3), &Device::Cpu).unwrap();
        let cols = Im2Col { kernel: 3, padding: 1 }.apply(&x).unwrap();
        assert_eq!(cols.dims(), [6, 3]);
        // Row (channel, tap), column (sample, position).
        #[rustfmt::skip]
        let expected = [
            0.0, 1.0, 2.0,
            1.0, 2.0, 3.0,
            2.0, 3.0, 0.0,
            0.0, 10.0, 20.0,
            10.0, 20.0, 30.0,
            20.0, 30.0, 0.0,
        ];
        assert_eq!(cols.flatten_all().unwrap().to_vec1::<f32>().unwrap(), expected);
    }

    #[test]
    fn col2im_sums_every_use_of_an_input_value() {
        let x = Var::from_slice(&[0.0f32; 4], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let cols = Im2Col { kernel: 2, padding: 1 }.apply(x.as_tensor()).unwrap();
        assert_eq!(cols.dims(), [4, 9]);
        let grads = cols.sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // Each of the 2×2 inputs appears in 4 of the 3×3 padded 2×2 patches.
        assert_eq!(g, [4.0; 4]);
    }
}
