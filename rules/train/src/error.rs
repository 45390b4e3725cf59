//! What can go wrong when training or evaluating a model.

/// Errors of this crate. Every one names what to fix: the layer, the tensor,
/// the split or the file.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model and its weights disagree, or the model cannot be run.
    #[error("layer `{layer}` ({op}): {message}")]
    Layer {
        layer: String,
        op: &'static str,
        message: String,
    },
    /// The model as a whole cannot be run (e.g. an unsupported input rank).
    #[error("model: {0}")]
    Model(String),
    /// The data does not fit the model (shape, label values, empty split).
    #[error("{split} data: {message}")]
    Data { split: &'static str, message: String },
    /// A hyperparameter is out of its range.
    #[error("hyperparameter `{name}`: {message}")]
    Hyper { name: &'static str, message: String },
    /// A checkpoint file is malformed or does not match the model.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Training diverged: the loss is no longer a finite number.
    #[error("training diverged at epoch {epoch}, step {step}: the loss is {loss}; lower the learning rate")]
    Diverged { epoch: u32, step: u64, loss: f32 },
    /// The weight view of quantization-aware training failed.
    #[error("weight view: {0}")]
    View(String),
    /// candle refused an operation; this is a bug in the graph this crate
    /// built unless an earlier check should have caught the input.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl TrainError {
    pub(crate) fn layer(layer: &str, op: &'static str, message: impl Into<String>) -> TrainError {
        TrainError::Layer {
            layer: layer.to_string(),
            op,
            message: message.into(),
        }
    }

    pub(crate) fn data(split: &'static str, message: impl Into<String>) -> TrainError {
        TrainError::Data {
            split,
            message: message.into(),
        }
    }
}
