use kflow_model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An IR layer the accelerator has no place for.
    #[error("layer {index} `{name}` ({op}) cannot map to an accelerator layer: {why}")]
    Unmappable {
        index: usize,
        name: String,
        op: &'static str,
        why: String,
    },
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("fused layer {layer}: {why}")]
    Forward { layer: usize, why: String },
    #[error("{0}")]
    Options(String),
    #[error("simulation: {0}")]
    Simulation(String),
    #[error("safetensors: {0}")]
    Safetensors(String),
}
