//! Activations on an integer grid, as quantization-aware training sees
//! them: a layer's output rounded to the steps its int8 hardware value can
//! take, and clipped to that value's range, so that training minimizes the
//! loss of the network the accelerator will run rather than of the float
//! one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Values `step · k` for integers `k` in `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub step: f32,
    pub min: i32,
    pub max: i32,
}

impl Grid {
    /// The int8 grid of values in [-1, 1) scaled by `1 / scale`, which is
    /// how ai8x represents an activation that the float network computes
    /// as `value` and the hardware as `round(value · scale · 128)`.
    pub fn int8(scale: f64) -> Grid {
        Grid {
            step: (1.0 / (128.0 * scale)) as f32,
            min: -128,
            max: 127,
        }
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.step.is_finite() && self.step > 0.0 && self.min <= self.max
    }
}

/// Where the forward pass rounds activations: the model input, and the
/// outputs of layers by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivationGrid {
    pub input: Option<Grid>,
    pub layers: BTreeMap<String, Grid>,
}
