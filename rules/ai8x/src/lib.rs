//! The MAX78000/MAX78002 CNN accelerator toolchain: device facts, the ai8x
//! network YAML, resolved hardware layers, the constraint checker, and
//! processor/memory allocation (spec/max78002.md).

pub mod alloc;
pub mod bias_memory;
pub mod check;
pub mod codegen;
pub mod data_memory;
pub mod device;
mod generator_limits;
pub mod kernel_memory;
pub mod layer;
pub mod network;
pub mod sim;
#[cfg(test)]
mod test_networks;
pub mod timing;
pub mod violation;
pub mod weights;
pub mod yaml;

pub use alloc::{AllocError, Allocation, LayerAllocation, LayerMaps, allocate, place};
pub use check::{CheckReport, LayerResources, Resources, check};
pub use device::Device;
pub use layer::{Findings, HwLayer, Operator, Shape, Source, resolve};
pub use network::{Layer, Network};
pub use violation::{Rule, Violation};
pub use weights::{Int8Layer, LayerWeights, Weights, WeightsError, int8_values};
pub use yaml::{YamlError, parse_network, to_yaml};
