//! A split of windows as the training loop reads it: borrowed, never copied
//! whole; mini-batches are gathered row by row in the shuffled order.

use kflow_model::{Model, Task};

use crate::TrainError;

/// One split: `N` samples of `[C, W]` values each (row-major, sample-major),
/// reshaped to the model's input shape (same element count), and a 0/1
/// label per sample (unused by autoencoders, which may pass an empty `y`).
#[derive(Clone, Copy, Debug)]
pub struct Data<'a> {
    pub x: &'a [f32],
    /// `[N, C, W]`.
    pub shape: [usize; 3],
    pub y: &'a [u8],
    /// Validation only: anomalous samples from outside this split that a
    /// label-free model never learned from (its training split's), laid out
    /// as `x`; F1 and its threshold count them beside the split's own (see
    /// `kflow_data::Validation`). Empty otherwise.
    pub held_out: &'a [f32],
}

impl Data<'_> {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }

    /// Values per sample.
    pub(crate) fn sample_len(&self) -> usize {
        self.shape[1] * self.shape[2]
    }

    /// Checks that the split fits `model` and that its labels are valid for
    /// the task.
    pub(crate) fn check(&self, split: &'static str, model: &Model) -> Result<(), TrainError> {
        self.check_shape(split, model)?;
        let n = self.len();
        if !self.held_out.len().is_multiple_of(self.sample_len()) {
            return Err(TrainError::data(
                split,
                format!(
                    "{} held-out values are not whole samples of {} values",
                    self.held_out.len(),
                    self.sample_len()
                ),
            ));
        }
        match model.task {
            Task::Classifier { classes } => {
                if self.y.len() != n {
                    return Err(TrainError::data(
                        split,
                        format!("{} labels for {n} samples", self.y.len()),
                    ));
                }
                if let Some(bad) = self.y.iter().find(|&&label| usize::from(label) >= classes) {
                    return Err(TrainError::data(
                        split,
                        format!("label {bad} is out of range for a classifier of {classes} classes"),
                    ));
                }
            }
            Task::Autoencoder | Task::Forecaster { .. } => {
                if !self.y.is_empty() && self.y.len() != n {
                    return Err(TrainError::data(
                        split,
                        format!("{} labels for {n} samples", self.y.len()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that the values fit `model`'s input; an empty split is an
    /// error because neither a loss nor a metric is defined over it.
    pub(crate) fn check_shape(&self, split: &'static str, model: &Model) -> Result<(), TrainError> {
        let [n, c, w] = self.shape;
        if n == 0 {
            return Err(TrainError::data(split, "the split is empty"));
        }
        let expected = n.checked_mul(c).and_then(|v| v.checked_mul(w));
        if expected != Some(self.x.len()) {
            return Err(TrainError::data(
                split,
                format!(
                    "shape {:?} needs {} values, found {}",
                    self.shape,
                    n * c * w,
                    self.x.len()
                ),
            ));
        }
        let per_sample: usize = model.input.iter().product();
        if c * w != per_sample {
            return Err(TrainError::data(
                split,
                format!(
                    "samples of shape [{c}, {w}] ({} values) do not fit the model input {:?} ({per_sample} values)",
                    c * w,
                    model.input
                ),
            ));
        }
        Ok(())
    }

    /// The rows `indices`, in that order, as one contiguous buffer.
    pub(crate) fn gather_x(&self, indices: &[u32]) -> Vec<f32> {
        let len = self.sample_len();
        let mut out = Vec::with_capacity(indices.len() * len);
        for &i in indices {
            let start = i as usize * len;
            out.extend_from_slice(&self.x[start..start + len]);
        }
        out
    }

    pub(crate) fn gather_y(&self, indices: &[u32]) -> Vec<u32> {
        indices.iter().map(|&i| u32::from(self.y[i as usize])).collect()
    }
}
