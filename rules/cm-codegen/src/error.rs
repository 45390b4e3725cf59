use kflow_ai8x_sim::SimError;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodegenError {
    /// The network is one the simulator refuses, so there is no reference
    /// semantics to generate.
    #[error(transparent)]
    Network(#[from] SimError),
    #[error("{layers} layers but {weights} weight sets; give one per layer (empty for passthrough)")]
    WeightCount { layers: usize, weights: usize },
    #[error("layer {layer} ({kind}): {reason}")]
    Weights { layer: usize, kind: String, reason: String },
    /// A layer the simulator runs but the C generator cannot express.
    #[error("layer {layer} ({kind}): the C generator does not support {what}: {missing}")]
    Unsupported {
        layer: usize,
        kind: String,
        what: String,
        missing: String,
    },
}
