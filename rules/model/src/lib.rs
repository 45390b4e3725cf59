//! kflow's model IR and what is computed from it alone.

pub mod ir;
pub mod weights;

pub use ir::{FORMAT, Layer, Model, Op, Task};
pub use weights::{Tensor, Weights};
