//! Dataset splits as actions read them, and as training sees them.

use kflow_data::Split;
use kflow_engine::{ActionContext, ActionError};
use kflow_model::Task;
use kflow_train::Data;

use crate::dataset::{TRAIN, VAL};
use crate::json;

pub fn read_split(cx: &ActionContext<'_>, name: &str) -> Result<Split, ActionError> {
    Split::from_safetensors(&json::input_bytes(cx, name)?).map_err(|e| ActionError::new(format!("input `{name}`: {e}")))
}

fn data(split: &Split) -> Data<'_> {
    Data {
        x: &split.x,
        shape: split.shape,
        y: &split.y,
        held_out: &[],
    }
}

/// What training a model of one task reads: its training windows, and the
/// validation split with the training split's anomalous windows that the
/// model never learns from (none for a classifier), which are judged beside
/// the validation split's (see `kflow_data::Validation`).
pub struct Learning {
    train: Split,
    val: Split,
    held_out: Split,
}

impl Learning {
    pub fn new(train: Split, val: Split, task: Task) -> Learning {
        let (train, held_out) = if task.learns_labels() {
            (train, Split::default())
        } else {
            (train.of_class(false), train.of_class(true))
        };
        Learning { train, val, held_out }
    }

    /// The dataset's `train` and `val` inputs.
    pub fn read(cx: &ActionContext<'_>, task: Task) -> Result<Learning, ActionError> {
        Ok(Learning::new(read_split(cx, TRAIN)?, read_split(cx, VAL)?, task))
    }

    pub fn train(&self) -> Data<'_> {
        data(&self.train)
    }

    pub fn val(&self) -> Data<'_> {
        Data {
            held_out: &self.held_out.x,
            ..data(&self.val)
        }
    }
}
