//! candle custom ops for the layers where candle's generic kernels are slow
//! or differ from PyTorch, each with its backward pass.
//!
//! candle's reductions over a non-last dimension (bias and BatchNorm
//! gradients), its transposed 1-D convolution with padding (the input
//! gradient of a padded conv1d) and its multi-op ReLU backward took most of
//! a training step; these kernels do the same work in one pass each, as
//! plain sequential loops, so that their results never depend on threads.

pub(crate) mod batch_norm;
pub(crate) mod bias;
pub(crate) mod fake_quant;
pub(crate) mod im2col;
pub(crate) mod pool;
pub(crate) mod relu;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};

/// The contiguous f32 values of an operand.
pub(crate) fn values<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} supports f32 only");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} needs a contiguous operand");
    };
    Ok(&data[start..end])
}

/// `[B, C, ...]` as `(B, C, spatial size)`.
pub(crate) fn batch_channels_rest(dims: &[usize], op: &str) -> candle_core::Result<(usize, usize, usize)> {
    match dims {
        [b, c, rest @ ..] => Ok((*b, *c, rest.iter().product())),
        _ => candle_core::bail!("{op} needs a [B, C, ...] tensor, got {dims:?}"),
    }
}

/// The backward pass of an element-wise op whose derivative is 1 where
/// `passes(x)` and 0 elsewhere: the incoming gradient, masked by its input.
pub(crate) struct GradWhere<F> {
    pub name: &'static str,
    pub passes: F,
}

impl<F: Fn(f32) -> bool + Send + Sync> CustomOp2 for GradWhere<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        grad_storage: &CpuStorage,
        grad_layout: &Layout,
        x_storage: &CpuStorage,
        x_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let grad = values(grad_storage, grad_layout, self.name)?;
        let x = values(x_storage, x_layout, self.name)?;
        let dx = grad
            .iter()
            .zip(x)
            .map(|(&g, &v)| if (self.passes)(v) { g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(dx), x_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    //! Each kernel against the same computation in candle's generic ops,
    //! forward and backward, on random values (no ties, no exact zeros).

    use std::sync::{Arc, Mutex};

    use candle_core::{DType, Device, Tensor, Var};

    use super::batch_norm::BatchNormTrain;
    use super::bias::ChannelBias;
    use super::im2col::Im2Col;
    use super::relu::Relu;

    fn random(shape: &[usize], seed: u64) -> Var {
        // A small LCG is enough for test values.
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Var::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn assert_close(a: &Tensor, b: &Tensor) {
        assert_eq!(a.dims(), b.dims());
        for (x, y) in values(a).iter().zip(values(b)) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// Checks `ours` against `reference`: outputs, then the gradients of
    /// `Σ out · r` with respect to every input.
    fn check(inputs: &[&Var], ours: impl Fn(&[Tensor]) -> Tensor, reference: impl Fn(&[Tensor]) -> Tensor) {
        let tensors: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (ours(&tensors), reference(&tensors));
        assert_close(&a, &b);
        let r = random(a.dims(), 99);
        let ga = (a * r.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * r.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        for t in &tensors {
            assert_close(ga.get(t).unwrap(), gb.get(t).unwrap());
        }
    }

    fn conv(x: &Tensor, w: &Tensor, b: &Tensor, kernel: usize, padding: usize) -> Tensor {
        let im2col = Im2Col { kernel, padding };
        let mut output = vec![x.dim(0).unwrap(), w.dim(0).unwrap()];
        output.extend(im2col.output_positions(x.dims()).unwrap());
        let cols = im2col.apply(x).unwrap();
        let (k, columns) = cols.dims2().unwrap();
        let (n, out) = (x.dim(0).unwrap(), w.dim(0).unwrap());
        let y = w
            .reshape((out, k))
            .unwrap()
            .matmul(&cols)
            .unwrap()
            .reshape((out, n, columns / n))
            .unwrap();
        y.apply_op2(
            b,
            ChannelBias {
                channels_outside: true,
                output,
            },
        )
        .unwrap()
    }

    #[test]
    fn conv1d_matches_candles_conv2d_on_one_row() {
        // Not candle's conv1d: its weight gradient is wrong in 0.11.1 (the
        // im2col path multiplies by the non-contiguous kernel it had just
        // copied to a contiguous buffer).
        let (x, w, b) = (random(&[3, 4, 9], 1), random(&[5, 4, 3], 2), random(&[5], 3));
        check(
            &[&x, &w, &b],
            |t| conv(&t[0], &t[1], &t[2], 3, 1),
            |t| {
                let y = t[0]
                    .unsqueeze(2)
                    .unwrap()
                    .conv2d(&t[1].unsqueeze(2).unwrap(), 1, 1, 1, 1)
                    .unwrap();
                // Padding 1 also pads the single row: the middle row is the real one.
                let y = y.narrow(2, 1, 1).unwrap().squeeze(2).unwrap();
                y.broadcast_add(&t[2].reshape((1, 5, 1)).unwrap()).unwrap()
            },
        );
    }

    #[test]
    fn conv2d_matches_candle() {
        let (x, w, b) = (random(&[2, 3, 5, 6], 4), random(&[4, 3, 3, 3], 5), random(&[4], 6));
        check(
            &[&x, &w, &b],
            |t| conv(&t[0], &t[1], &t[2], 3, 2),
            |t| {
                t[0].conv2d(&t[1], 2, 1, 1, 1)
                    .unwrap()
                    .broadcast_add(&t[2].reshape((1, 4, 1, 1)).unwrap())
                    .unwrap()
            },
        );
    }

    #[test]
    fn batch_norm_matches_candle() {
        let (x, w, b) = (random(&[4, 3, 5], 7), random(&[3], 8), random(&[3], 9));
        let eps = 1e-5;
        check(
            &[&x, &w, &b],
            |t| {
                let op = BatchNormTrain {
                    eps,
                    moments: Arc::new(Mutex::new(Default::default())),
                };
                t[0].apply_op3(&t[1], &t[2], op).unwrap()
            },
            |t| {
                let x = &t[0];
                let mean = (x.sum_keepdim(vec![0, 2]).unwrap() / 20.0).unwrap();
                let centered = x.broadcast_sub(&mean).unwrap();
                let var = (centered.sqr().unwrap().sum_keepdim(vec![0, 2]).unwrap() / 20.0).unwrap();
                let inv = (var + eps).unwrap().sqrt().unwrap().recip().unwrap();
                let y = centered.broadcast_mul(&inv).unwrap();
                let y = y.broadcast_mul(&t[1].reshape((1, 3, 1)).unwrap()).unwrap();
                y.broadcast_add(&t[2].reshape((1, 3, 1)).unwrap()).unwrap()
            },
        );
    }

    #[test]
    fn relu_and_linear_bias_match_candle() {
        let (x, b) = (random(&[6, 4], 10), random(&[4], 11));
        check(
            &[&x, &b],
            |t| {
                let y = t[0].reshape((6, 4, 1)).unwrap();
                let y = y
                    .apply_op2(
                        &t[1],
                        ChannelBias {
                            channels_outside: false,
                            output: vec![6, 4],
                        },
                    )
                    .unwrap();
                y.apply_op1(Relu).unwrap()
            },
            |t| t[0].broadcast_add(&t[1]).unwrap().relu().unwrap(),
        );
        // No gradient for an untracked bias.
        let zero = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let y = x.reshape((6, 4, 1)).unwrap();
        let y = y
            .apply_op2(
                &zero,
                ChannelBias {
                    channels_outside: false,
                    output: vec![6, 4],
                },
            )
            .unwrap();
        assert!(y.sum_all().unwrap().backward().unwrap().get(&zero).is_none());
    }
}
