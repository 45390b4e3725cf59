#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("constraint `{expression}`: {message}")]
    Constraint { expression: String, message: String },
    #[error("check `{command}`: {message}")]
    Check { command: String, message: String },
    #[error(transparent)]
    Model(#[from] kflow_model::ModelError),
}
