//! kflow's host evaluation: models exported to ONNX and run by ONNX
//! Runtime (through `ort`, loading the library at run time).

pub mod runtime;
mod session;

pub use session::OnnxModel;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// ONNX Runtime is missing or unusable; the message says how to get it.
    #[error("{0}")]
    Runtime(String),
    #[error("{0}")]
    Inference(String),
}
