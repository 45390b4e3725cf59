//! The bias of a convolution or linear layer, fused with the layout change
//! a convolution's GEMM needs, so that its gradient (a sum per channel) is
//! one pass rather than candle's generic reduction over non-last dimensions.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::values;

/// `y[b, c, s] = x[c, b, s] + bias[c]` (`channels_outside`, a convolution
/// GEMM's output), or `y[b, c, s] = x[b, c, s] + bias[c]`; `x` is 3-D, the
/// output has the shape given in `output`.
#[derive(Clone, Debug)]
pub(crate) struct ChannelBias {
    pub channels_outside: bool,
    pub output: Vec<usize>,
}

impl ChannelBias {
    fn dims(&self, x: &[usize]) -> candle_core::Result<(usize, usize, usize)> {
        match *x {
            [c, b, s] if self.channels_outside => Ok((b, c, s)),
            [b, c, s] => Ok((b, c, s)),
            _ => candle_core::bail!("channel bias needs a 3-D operand, got {x:?}"),
        }
    }
}

impl CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "kflow-channel-bias"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        bias_storage: &CpuStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(x_storage, x_layout, "channel bias")?;
        let bias = values(bias_storage, bias_layout, "channel bias")?;
        let (batch, channels, rest) = self.dims(x_layout.dims())?;
        if bias.len() != channels || self.output.iter().product::<usize>() != x.len() {
            candle_core::bail!(
                "channel bias: {} biases for {:?} → {:?}",
                bias.len(),
                x_layout.dims(),
                self.output
            );
        }
        let mut y = vec![0.0f32; x.len()];
        for (i, dst) in y.chunks_exact_mut(rest).enumerate() {
            let (b, c) = (i / channels, i % channels);
            let src = if self.channels_outside { c * batch + b } else { i };
            for (d, &v) in dst.iter_mut().zip(&x[src * rest..][..rest]) {
                *d = v + bias[c];
            }
        }
        Ok((CpuStorage::F32(y), Shape::from(self.output.clone())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad_res.contiguous()?;
        let grad_x = if !x.track_op() {
            None
        } else if self.channels_outside {
            let (batch, channels, rest) = self.dims(x.dims())?;
            Some(grad.reshape((batch, channels, rest))?.transpose(0, 1)?.contiguous()?)
        } else {
            Some(grad.reshape(x.dims())?)
        };
        let grad_bias = if bias.track_op() {
            let (batch, channels, rest) = self.dims(x.dims())?;
            Some(grad.apply_op1_no_bwd(&SumPerChannel { batch, channels, rest })?)
        } else {
            None
        };
        Ok((grad_x, grad_bias))
    }
}

/// `Σ_b Σ_s g[b, c, s]` for each channel `c`, in a fixed order.
struct SumPerChannel {
    batch: usize,
    channels: usize,
    rest: usize,
}

impl candle_core::CustomOp1 for SumPerChannel {
    fn name(&self) -> &'static str {
        "kflow-sum-per-channel"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = values(storage, layout, "sum per channel")?;
        if g.len() != self.batch * self.channels * self.rest {
            candle_core::bail!("sum per channel: {} values", g.len());
        }
        let mut sums = vec![0.0f32; self.channels];
        for sample in g.chunks_exact(self.channels * self.rest) {
            for (sum, row) in sums.iter_mut().zip(sample.chunks_exact(self.rest)) {
                *sum += row.iter().sum::<f32>();
            }
        }
        Ok((CpuStorage::F32(sums), Shape::from(self.channels)))
    }
}
