//! The artifacts rules pass each other, read back from an action's inputs
//! with errors that name the input.

use kflow_engine::{ActionContext, ActionError};
use kflow_model::{Model, Weights};

use crate::json::input_bytes;
use crate::model::MODEL;

/// The model IR of input `model.json`.
pub fn model(cx: &ActionContext<'_>) -> Result<Model, ActionError> {
    Model::from_json(&input_bytes(cx, MODEL)?).map_err(|e| ActionError::new(format!("input `{MODEL}`: {e}")))
}

/// Float weights of input `name`.
pub fn weights(cx: &ActionContext<'_>, name: &str) -> Result<Weights, ActionError> {
    Weights::from_safetensors(&input_bytes(cx, name)?).map_err(|e| ActionError::new(format!("input `{name}`: {e}")))
}
