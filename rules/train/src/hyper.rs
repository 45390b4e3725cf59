//! Training hyperparameters: what a `train` action's params carry.

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Mini-batch AdamW settings. Defaults are PyTorch's `AdamW` defaults except
/// the learning rate (`1e-3`, as for `Adam`) and a batch of 64.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hyper {
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Seeds the per-epoch shuffle; nothing else in training is random.
    pub seed: u64,
}

impl Default for Hyper {
    fn default() -> Hyper {
        Hyper {
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            seed: 0,
        }
    }
}

impl Hyper {
    pub(crate) fn check(&self) -> Result<(), TrainError> {
        let bad = |name, message: &str| {
            Err(TrainError::Hyper {
                name,
                message: message.to_string(),
            })
        };
        if self.batch_size < 2 {
            // BatchNorm in training mode needs two samples to have a variance.
            return bad("batch_size", "must be at least 2");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be a positive number");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", "must be a number >= 0");
        }
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(name, "must be in [0, 1)");
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps", "must be a positive number");
        }
        Ok(())
    }
}
