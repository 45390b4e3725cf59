//! ReLU with PyTorch's gradient convention (zero at zero; candle's is one)
//! and a one-pass backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::values;

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
        Ok(Some(
            grad_res.contiguous()?.apply_op2_no_bwd(&arg.contiguous()?, &ReluGrad)?,
        ))
    }
}

struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "kflow-relu-grad"
    }

    fn cpu_fwd(
        &self,
        grad_storage: &CpuStorage,
        grad_layout: &Layout,
        x_storage: &CpuStorage,
        x_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let grad = values(grad_storage, grad_layout, "relu")?;
        let x = values(x_storage, x_layout, "relu")?;
        let dx = grad
            .iter()
            .zip(x)
            .map(|(&g, &v)| if v > 0.0 { g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(dx), x_layout.shape().clone()))
    }
}
