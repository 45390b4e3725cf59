//! Why a program cannot be turned into code.

use crate::device::Device;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodegenError {
    #[error("the program has no layers")]
    NoLayers,
    #[error("{count} layers exceed the {limit} hardware layers of the {device:?}")]
    TooManyLayers { count: usize, limit: usize, device: Device },
    #[error("layer {layer} ({name}): {problem}")]
    Invalid {
        layer: usize,
        name: String,
        problem: String,
    },
    #[error("layer {layer} ({name}): {what} is not supported by the code generator: {why}")]
    Unsupported {
        layer: usize,
        name: String,
        what: String,
        why: &'static str,
    },
    #[error("layer {layer}: kernel memory of processor {processor} needs columns up to {end}, limit {limit}")]
    KernelMemory {
        layer: usize,
        processor: u32,
        end: u32,
        limit: u32,
    },
    #[error("layer {layer}: kernel column {column} of processor {processor} is already used by layer {other}")]
    KernelOverlap {
        layer: usize,
        other: usize,
        processor: u32,
        column: u32,
    },
    #[error("layer {layer}: bias byte {byte} of quadrant {quadrant} is already used by layer {other}")]
    BiasOverlap {
        layer: usize,
        other: usize,
        quadrant: u32,
        byte: u32,
    },
}
