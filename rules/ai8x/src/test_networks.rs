//! Networks the unit tests share.

use crate::weights::{LayerWeights, Weights};

/// The spec's §4.5 network (input 17 channels × 8) without maps or
/// offsets, as the allocator receives it.
pub const CATS_BARE: &str = "
arch: a
dataset: d
layers:
  - {processors: 1, op: conv1d, kernel_size: 3, pad: 1, activate: ReLU, output_shift: -1, quantization: 8}
  - {processors: 1, op: conv1d, max_pool: 2, pool_stride: 2, kernel_size: 3, pad: 1, activate: ReLU, output_shift: -2, quantization: 8}
  - {processors: 1, op: mlp, flatten: true, activate: ReLU, output_shift: 0, quantization: 8}
  - {processors: 1, op: mlp, output_shift: 0, quantization: 8}
";

/// Weights of the §4.5 network.
pub fn cats_weights() -> Weights {
    let mut w = Weights::default();
    w.insert(0, LayerWeights::shape(&[32, 17, 3], Some(32)));
    w.insert(1, LayerWeights::shape(&[16, 32, 3], Some(16)));
    w.insert(2, LayerWeights::shape(&[16, 64], Some(16)));
    w.insert(3, LayerWeights::shape(&[2, 16], Some(2)));
    w
}
