//! Dataset splits as actions read them, and as training sees them.

use kflow_data::Split;
use kflow_engine::{ActionContext, ActionError};
use kflow_model::Task;
use kflow_train::Data;

use crate::json;

pub fn read_split(cx: &ActionContext<'_>, name: &str) -> Result<Split, ActionError> {
    Split::from_safetensors(&json::input_bytes(cx, name)?).map_err(|e| ActionError::new(format!("input `{name}`: {e}")))
}

pub fn data(split: &Split) -> Data<'_> {
    Data {
        x: &split.x,
        shape: split.shape,
        y: &split.y,
    }
}

/// What a model of `task` trains on: every window for a classifier; for an
/// autoencoder or a forecaster, which learn what nominal data looks like,
/// the nominal windows only.
pub fn training_windows(split: Split, task: Task) -> Split {
    match task {
        Task::Classifier { .. } => split,
        Task::Autoencoder | Task::Forecaster { .. } => nominal(&split),
    }
}

/// The windows labelled nominal.
pub fn nominal(split: &Split) -> Split {
    let per = split.shape[1] * split.shape[2];
    let keep: Vec<usize> = (0..split.y.len()).filter(|&i| split.y[i] == 0).collect();
    Split {
        x: keep
            .iter()
            .flat_map(|&i| split.x[i * per..(i + 1) * per].iter().copied())
            .collect(),
        shape: [keep.len(), split.shape[1], split.shape[2]],
        y: vec![0; keep.len()],
    }
}
