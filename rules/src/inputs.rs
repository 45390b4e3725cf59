//! The artifacts rules pass each other, read back from an action's inputs
//! with errors that name the input.

use kflow_engine::{ActionContext, ActionError};
use kflow_model::{Model, Weights};
use kflow_quant::Quantized;

use crate::json::input_bytes;
use crate::model::MODEL;
use crate::quantize::{QUANT, QUANTIZED};

/// The model IR of input `model.json`.
pub fn model(cx: &ActionContext<'_>) -> Result<Model, ActionError> {
    Model::from_json(&input_bytes(cx, MODEL)?).map_err(|e| ActionError::new(format!("input `{MODEL}`: {e}")))
}

/// Float weights of input `name`.
pub fn weights(cx: &ActionContext<'_>, name: &str) -> Result<Weights, ActionError> {
    Weights::from_safetensors(&input_bytes(cx, name)?).map_err(|e| ActionError::new(format!("input `{name}`: {e}")))
}

/// The quantized network of inputs `quant.json` and `quantized.safetensors`.
pub fn quantized(cx: &ActionContext<'_>) -> Result<Quantized, ActionError> {
    Quantized::from_files(&input_bytes(cx, QUANT)?, &input_bytes(cx, QUANTIZED)?)
        .map_err(|e| ActionError::new(format!("inputs `{QUANT}`, `{QUANTIZED}`: {e}")))
}
