//! Per-channel normalization, fitted on the training split's rows only.
//!
//! Fitting on all windows (as Kenning does) lets test data shape the inputs the model is trained on.

use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::csv::NUM_CHANNELS;

/// The fitted statistics; a value becomes `(x − mean) / (scale · std)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    pub mean: [f32; NUM_CHANNELS],
    /// Population standard deviation; a channel that never varies in training gets 1, so it maps to x − mean.
    pub std: [f32; NUM_CHANNELS],
    pub scale: f32,
    /// Values are rounded to the int8 input grid (see `WindowParams::int8_grid`).
    #[serde(default)]
    pub int8_grid: bool,
}

impl Normalization {
    /// Normalizes one value of `channel` (0..17). Computed in f64 from the f32 statistics, so anyone holding the
    /// metadata can reproduce the dataset's values bit for bit.
    pub fn apply(&self, channel: usize, x: f32) -> f32 {
        let (Some(&mean), Some(&std)) = (self.mean.get(channel), self.std.get(channel)) else {
            return x;
        };
        let v = (f64::from(x) - f64::from(mean)) / (f64::from(self.scale) * f64::from(std));
        if self.int8_grid {
            ((v * 128.0).round().clamp(-128.0, 127.0) / 128.0) as f32
        } else {
            v as f32
        }
    }
}

/// Welford's running mean and variance per channel, in f64 (a plain sum of squares loses the variance of a channel
/// with a large mean over millions of rows).
#[derive(Debug, Clone, Default)]
pub(crate) struct Fit {
    count: u64,
    mean: [f64; NUM_CHANNELS],
    m2: [f64; NUM_CHANNELS],
}

impl Fit {
    pub(crate) fn add(&mut self, values: &[f32; NUM_CHANNELS]) {
        self.count += 1;
        let n = self.count as f64;
        for ((mean, m2), &x) in self.mean.iter_mut().zip(&mut self.m2).zip(values) {
            let x = f64::from(x);
            let delta = x - *mean;
            *mean += delta / n;
            *m2 += delta * (x - *mean);
        }
    }

    pub(crate) fn finish(&self, scale: f32, int8_grid: bool) -> Result<Normalization, DataError> {
        if self.count == 0 {
            return Err(DataError::Dataset(
                "the training split has no rows to fit the normalization on".into(),
            ));
        }
        let mut mean = [0f32; NUM_CHANNELS];
        let mut std = [1f32; NUM_CHANNELS];
        for c in 0..NUM_CHANNELS {
            mean[c] = self.mean[c] as f32;
            let s = (self.m2[c] / self.count as f64).sqrt() as f32;
            // A constant channel (or one below f32's resolution of it) carries no information to scale; 1 keeps it
            // finite.
            if s.is_finite() && s > 1e-12 {
                std[c] = s;
            }
        }
        Ok(Normalization {
            mean,
            std,
            scale,
            int8_grid,
        })
    }
}
