//! JSON between rules and artifacts: values for params, deterministic bytes
//! for outputs, and inputs read back with errors that name them.

use kflow_engine::{ActionContext, ActionError, Diagnostic};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value as params (planning).
pub fn to_value<T: Serialize>(value: &T) -> Result<serde_json::Value, Diagnostic> {
    serde_json::to_value(value).map_err(|e| Diagnostic::new(format!("internal error: cannot encode params: {e}")))
}

/// Pretty JSON with a final newline: the form of every JSON artifact.
/// Struct fields keep their declared order and maps are sorted, so equal
/// values give equal bytes.
pub fn pretty<T: Serialize>(value: &T) -> Result<Vec<u8>, ActionError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| ActionError::new(format!("cannot encode JSON: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// An input's bytes.
pub fn input_bytes(cx: &ActionContext<'_>, name: &str) -> Result<Vec<u8>, ActionError> {
    let input = cx.input(name)?;
    std::fs::read(&input.path).map_err(|e| ActionError::new(format!("cannot read input `{name}`: {e}")))
}

/// An input parsed as JSON.
pub fn input<T: DeserializeOwned>(cx: &ActionContext<'_>, name: &str) -> Result<T, ActionError> {
    let bytes = input_bytes(cx, name)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ActionError::new(format!("input `{name}` is not what was expected: {e}")))
}
