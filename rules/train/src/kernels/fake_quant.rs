//! Rounding to a [`Grid`] with the straight-through estimator: the forward
//! pass rounds and clips, the backward pass lets the gradient through where
//! the value was inside the grid's range and stops it where it was clipped
//! (what ai8x-training's quantization-aware layers do).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::{GradWhere, values};
use crate::grid::Grid;

#[derive(Clone, Copy, Debug)]
pub(crate) struct FakeQuant(pub Grid);

impl FakeQuant {
    fn range(&self) -> (f32, f32) {
        let Grid { step, min, max } = self.0;
        (min as f32 * step, max as f32 * step)
    }
}

impl CustomOp1 for FakeQuant {
    fn name(&self) -> &'static str {
        "kflow-fake-quant"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(storage, layout, "fake-quant")?;
        let Grid { step, min, max } = self.0;
        let y = x
            .iter()
            .map(|&v| (v / step).round().clamp(min as f32, max as f32) * step)
            .collect();
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (lo, hi) = self.range();
        let inside = GradWhere {
            name: "kflow-fake-quant-grad",
            passes: move |v: f32| v >= lo && v <= hi,
        };
        Ok(Some(
            grad_res.contiguous()?.apply_op2_no_bwd(&arg.contiguous()?, &inside)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn rounds_clips_and_passes_gradients_inside_the_range_only() {
        let grid = Grid {
            step: 0.25,
            min: -4,
            max: 3,
        };
        let x = Var::from_slice(&[0.1f32, 0.13, -0.2, 5.0, -5.0, 0.74], 6, &Device::Cpu).unwrap();
        let y = x.as_tensor().apply_op1(FakeQuant(grid)).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), [0.0, 0.25, -0.25, 0.75, -1.0, 0.75]);
        let grads = (y * 2.0).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g, [2.0, 2.0, 2.0, 0.0, 0.0, 2.0]);
    }
}
