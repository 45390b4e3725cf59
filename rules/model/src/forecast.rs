//! Forecasters (see [`crate::Task::Forecaster`]): which outputs are checked
//! against which input values, the mask that keeps each output from seeing
//! the reading it predicts, and the anomaly score.

use crate::ir::{Model, Op, Task};
use crate::weights::Weights;

/// Where a forecaster's predictions and their truth lie, for an input
/// `[C, L]` and an output `[C − from_channel, L_out]`: output position `j`
/// predicts how the readings change from input row `L − L_out + j − 1` to
/// row `L − L_out + j`, the last row of its receptive field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forecast {
    pub from_channel: usize,
    pub channels: usize,
    pub input_length: usize,
    pub output_length: usize,
    /// The input row output position 0 predicts.
    pub first_row: usize,
}

impl Forecast {
    pub fn new(from_channel: usize, input: &[usize], output: &[usize]) -> Forecast {
        let channels = input.first().copied().unwrap_or(0);
        let input_length = input.get(1).copied().unwrap_or(0);
        let output_length = output.get(1).copied().unwrap_or(0);
        Forecast {
            from_channel,
            channels,
            input_length,
            output_length,
            first_row: input_length.saturating_sub(output_length),
        }
    }

    pub fn predicted_channels(&self) -> usize {
        self.channels.saturating_sub(self.from_channel)
    }

    /// The mean squared error of one sample's predictions, per predicted
    /// channel, from its flat output `[C − from, L_out]` and input `[C, L]`.
    /// A prediction is of the change since the previous row, which the
    /// network sees: the same error as predicting the value, without the
    /// large identity weight that 8-bit weights would render coarsely.
    pub fn channel_errors(&self, out: &[f32], x: &[f32]) -> Vec<f64> {
        let n = self.output_length;
        (0..self.predicted_channels())
            .map(|c| {
                let predicted = &out[c * n..][..n];
                let row = &x[(self.from_channel + c) * self.input_length..][..self.input_length];
                let sum: f64 = predicted
                    .iter()
                    .enumerate()
                    .map(|(j, &p)| {
                        let r = self.first_row + j;
                        let change = f64::from(row[r]) - f64::from(row[r - 1]);
                        (f64::from(p) - change).powi(2)
                    })
                    .sum();
                sum / n.max(1) as f64
            })
            .collect()
    }

    /// The mean squared error of one sample's predictions over all
    /// predicted channels: the training loss.
    pub fn error(&self, out: &[f32], x: &[f32]) -> f64 {
        let errors = self.channel_errors(out, x);
        errors.iter().sum::<f64>() / errors.len().max(1) as f64
    }
}

/// The weights a forecaster must keep at zero: in its first convolution,
/// the last kernel tap of every predicted channel. Without them, position
/// `j` sees the commands and stimuli of the row it predicts (readings
/// respond to them within the row) but not the reading itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForecastMask {
    /// The first convolution's weight tensor, `[out, C, k]`.
    pub tensor: String,
    pub out_channels: usize,
    pub in_channels: usize,
    pub kernel: usize,
    pub from_channel: usize,
}

impl ForecastMask {
    /// The mask of `model`, if it is a forecaster whose first layer is a
    /// 1-D convolution (validation makes sure that it is).
    pub fn of(model: &Model) -> Option<ForecastMask> {
        let Task::Forecaster { from_channel } = model.task else {
            return None;
        };
        let first = model.layers.first()?;
        let Op::Conv1d {
            out_channels, kernel, ..
        } = first.op
        else {
            return None;
        };
        Some(ForecastMask {
            tensor: format!("{}.weight", first.name),
            out_channels,
            in_channels: model.input.first().copied()?,
            kernel,
            from_channel,
        })
    }

    /// The flat indices into the weight tensor that must be zero.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.out_channels).flat_map(move |o| {
            (self.from_channel..self.in_channels)
                .map(move |c| (o * self.in_channels + c) * self.kernel + self.kernel - 1)
        })
    }

    /// Zeroes the masked values of a flat weight tensor.
    pub fn apply(&self, values: &mut [f32]) {
        for i in self.indices() {
            if let Some(v) = values.get_mut(i) {
                *v = 0.0;
            }
        }
    }

    /// Zeroes the masked weights of `weights`.
    pub fn apply_to(&self, weights: &mut Weights) {
        if let Some(t) = weights.tensors.get_mut(&self.tensor) {
            self.apply(&mut t.data);
        }
    }

    /// Whether `weights` keep the mask.
    pub fn holds(&self, weights: &Weights) -> bool {
        weights
            .get(&self.tensor)
            .is_none_or(|t| self.indices().all(|i| t.data.get(i).is_none_or(|&v| v == 0.0)))
    }
}

/// How much each predicted channel's error counts in the anomaly score: the
/// inverse of its `TAIL` quantile over nominal samples, so that at any
/// threshold every reading raises about as many false alarms. A reading
/// whose errors are usually small but heavy-tailed (transients after a
/// command step) would otherwise, scaled by its mean, decide the largest
/// error of most windows and push the threshold far above subtler faults
/// of the other readings; and an anomaly is a reading predicted worse than
/// it ever is when all is well.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorScale {
    pub weights: Vec<f64>,
}

/// The quantile of nominal errors that a channel's weight normalizes.
const TAIL: f64 = 0.999;

impl ErrorScale {
    /// Fitted on the samples of `xs` (flat, `[N, C, L]`) whose `nominal`
    /// flag is set, from the network's `outputs`; every weight 1 when there
    /// are none.
    pub fn fit(f: &Forecast, outputs: &[f32], xs: &[f32], nominal: &[bool]) -> ErrorScale {
        let (per_out, per_in) = (f.predicted_channels() * f.output_length, f.channels * f.input_length);
        let mut errors = vec![Vec::new(); f.predicted_channels()];
        for ((out, x), _) in outputs
            .chunks_exact(per_out.max(1))
            .zip(xs.chunks_exact(per_in.max(1)))
            .zip(nominal)
            .filter(|(_, nominal)| **nominal)
        {
            for (channel, e) in errors.iter_mut().zip(f.channel_errors(out, x)) {
                channel.push(e);
            }
        }
        // A channel predicted perfectly (a constant) gets the weight of an
        // error of 1e-6 rather than an infinite one.
        let weights = errors
            .iter_mut()
            .map(|e| tail(e).map_or(1.0, |t| 1.0 / t.max(1e-6)))
            .collect();
        ErrorScale { weights }
    }

    /// The anomaly score of one sample: the largest of its weighted
    /// per-channel errors. A fault usually shows on one reading or a few;
    /// averaging over every channel would dilute it by the many that are
    /// still predicted as usual.
    pub fn score(&self, f: &Forecast, out: &[f32], x: &[f32]) -> f64 {
        f.channel_errors(out, x)
            .iter()
            .zip(&self.weights)
            .map(|(e, w)| e * w)
            // A NaN (a diverged network) stays NaN rather than losing to
            // the other channels.
            .fold(0.0, |worst, e| if e > worst || e.is_nan() { e } else { worst })
    }
}

/// The `TAIL` quantile (nearest rank) of `errors`; none when empty. NaNs
/// (a diverged network) sort last.
fn tail(errors: &mut [f64]) -> Option<f64> {
    errors.sort_by(f64::total_cmp);
    let rank = (TAIL * errors.len() as f64).ceil() as usize;
    errors.get(rank.clamp(1, errors.len().max(1)) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{FORMAT, Layer};

    #[test]
    fn position_j_predicts_the_last_row_it_sees() {
        // Input [2, 5], forecasting channel 1 with a receptive field of 3:
        // output [1, 3], positions 0, 1, 2 predict rows 2, 3, 4.
        let f = Forecast::new(1, &[2, 5], &[1, 3]);
        assert_eq!(f.first_row, 2);
        let x = [0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 11.0, 12.0, 13.0, 15.0];
        assert_eq!(f.error(&[1.0, 1.0, 2.0], &x), 0.0);
        assert!((f.error(&[2.0, 1.0, 2.0], &x) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_channel_counts_by_how_much_worse_than_usual_it_is_predicted() {
        // Two predicted channels over [3, 3] with L_out 1: position 0
        // predicts row 2. Channel 1 is always off by 1, channel 2 by 0.1.
        let f = Forecast::new(1, &[3, 3], &[2, 1]);
        let x = [0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 5.0];
        let usual = [6.0, 5.1];
        // (Both channels change by 5 into row 2.)
        let outputs: Vec<f32> = usual.iter().chain(&usual).copied().collect();
        let xs: Vec<f32> = x.iter().chain(&x).copied().collect();
        let scale = ErrorScale::fit(&f, &outputs, &xs, &[true, true]);
        assert!((scale.score(&f, &usual, &x) - 1.0).abs() < 1e-6);
        // Channel 2 off by 1 is 100 times its usual error, which channel
        // 1's usual error does not dilute.
        assert!((scale.score(&f, &[6.0, 6.0], &x) - 100.0).abs() < 1e-3);
        // Channel 1 off by 3 is 9 times its usual error.
        assert!((scale.score(&f, &[8.0, 5.1], &x) - 9.0).abs() < 1e-3);
    }

    #[test]
    fn a_reading_with_rare_large_errors_does_not_drown_the_others() {
        // Two predicted channels, both usually off by 0.1; channel 1 is off
        // by 2 in one nominal sample of a hundred (a transient).
        let f = Forecast::new(1, &[3, 3], &[2, 1]);
        let x = [0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 5.0];
        let usual = [5.1f32, 5.1];
        let transient = [7.0f32, 5.1];
        let outputs: Vec<f32> = transient
            .iter()
            .chain(usual.iter().cycle().take(198))
            .copied()
            .collect();
        let xs: Vec<f32> = x.iter().cycle().take(900).copied().collect();
        let scale = ErrorScale::fit(&f, &outputs, &xs, &[true; 100]);
        // The transient is as bad as channel 1 ever is when all is well,
        // while channel 2 off by 0.3 is 9 times worse than it ever is.
        let fault = [5.1f32, 5.3];
        assert!((scale.score(&f, &transient, &x) - 1.0).abs() < 1e-3);
        assert!((scale.score(&f, &fault, &x) - 9.0).abs() < 1e-2);
    }

    #[test]
    fn the_mask_hides_the_predicted_readings_of_the_last_row_only() {
        let model = Model {
            format: FORMAT.to_owned(),
            name: "f".to_owned(),
            task: Task::Forecaster { from_channel: 2 },
            input: vec![3, 8],
            layers: vec![Layer {
                name: "out".to_owned(),
                inputs: Vec::new(),
                op: Op::Conv1d {
                    out_channels: 1,
                    kernel: 2,
                    padding: 0,
                    bias: true,
                },
            }],
        };
        let mask = ForecastMask::of(&model).unwrap();
        // Weight [1, 3, 2]: channel 2's second tap is index 5.
        assert_eq!(mask.indices().collect::<Vec<_>>(), [5]);
        let mut weights = Weights::init(&model, 1).unwrap();
        assert!(mask.holds(&weights), "initial weights keep the mask");
        weights.tensors.get_mut("out.weight").unwrap().data[5] = 0.5;
        assert!(!mask.holds(&weights));
        mask.apply_to(&mut weights);
        assert!(mask.holds(&weights));
    }
}
