//! From a trained float model to what the MAX78000/MAX78002 accelerator
//! runs: fusion into hardware layers (batch norm folded), magnitude
//! pruning, and ai8x-compatible quantization calibrated on samples. The
//! facts come from `spec/max78002.md` §2 and §3.

mod compensate;
mod equalize;
mod error;
pub mod forward;
pub mod fuse;
pub mod prune;
pub mod qat;
pub mod quantize;
mod to_ai8x;
mod to_sim;

#[cfg(test)]
mod tests;

pub use error::QuantError;
pub use fuse::{Activation, Fused, FusedLayer, HwOp, HwSource, Pool, PoolKind, fuse};
pub use prune::{PruneKind, PruneReport, prune};
pub use qat::{ActivationScales, FakeQuant, fold_batchnorm};
pub use quantize::{
    Bits, QuantLayer, QuantOptions, Quantized, Rounding, dequantize_step, quantize, quantize_input, quantize_layer,
};
pub use to_ai8x::{to_ai8x, unquantized};
pub use to_sim::{real_outputs, sample_input, simulate_sample, to_sim};
