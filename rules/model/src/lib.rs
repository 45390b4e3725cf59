//! kflow's model IR and what is computed from it alone: validation and
//! shapes, parameter and MAC counts, weights (expected tensors,
//! initialization, safetensors files) and ONNX export.

mod counts;
mod error;
mod forecast;
mod init;
pub mod ir;
pub mod onnx;
mod params;
mod shape;
mod validate;
pub mod weights;

#[cfg(test)]
mod fixtures;

pub use counts::{Counts, Tally, counts};
pub use error::{LayerProblem, ModelError, TensorProblem};
pub use forecast::{ErrorScale, Forecast, ForecastMask};
pub use ir::{FORMAT, Layer, Model, Op, Task};
pub use onnx::to_onnx;
pub use shape::{LayerShapes, Shapes, Source};
pub use validate::infer_shapes;
pub use weights::{Tensor, Weights, expected};
