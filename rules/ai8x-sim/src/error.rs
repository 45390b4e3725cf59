use crate::network::Shape;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error("the network has no layers")]
    NoLayers,
    #[error("network input: {0}")]
    Input(String),
    #[error("the network input has {actual} values, but its shape {shape:?} needs {expected}")]
    InputShape {
        shape: Shape,
        expected: usize,
        actual: usize,
    },
    #[error("{layers} layers but {weights} weight sets; give one per layer (empty for passthrough)")]
    WeightCount { layers: usize, weights: usize },
    /// A layer the device cannot run, or whose parts do not fit together.
    #[error("layer {layer}: {reason}")]
    Layer { layer: usize, reason: String },
}

pub(crate) fn layer_error(layer: usize, reason: impl Into<String>) -> SimError {
    SimError::Layer {
        layer,
        reason: reason.into(),
    }
}
