//! ReLU with PyTorch's gradient convention (zero at zero; candle's is one)
//! and a one-pass backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::{GradWhere, values};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "kflow-relu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(storage, layout, "relu")?;
        // `v < 0` is false for NaN, which passes through as in PyTorch.
        let y = x.iter().map(|&v| if v < 0.0 { 0.0 } else { v }).collect();
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op2_no_bwd(
            &arg.contiguous()?,
            &GradWhere {
                name: "kflow-relu-grad",
                passes: |v: f32| v > 0.0,
            },
        )?))
    }
}
