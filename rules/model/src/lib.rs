//! kflow's model IR and what is computed from it alone.

pub mod ir;

pub use ir::{FORMAT, Layer, Model, Op, Task};
