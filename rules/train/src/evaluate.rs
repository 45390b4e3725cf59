//! Evaluation-mode passes: raw outputs, anomaly scores, and the validation
//! loss and metric of an epoch.

use candle_core::{Device, Tensor};
use kflow_model::{ErrorScale, Forecast, Model, Task, Weights};

use crate::network::{Mode, Network};
use crate::{Data, TrainError};

/// Samples per evaluation batch. Fixed, so that results never depend on the
/// caller: BatchNorm uses running statistics here, so the chunking changes
/// nothing but memory use.
const EVAL_BATCH: usize = 256;

/// A network with its tensors loaded for evaluation-mode passes.
pub(crate) struct Evaluator<'n> {
    net: &'n Network,
    params: Vec<Tensor>,
    running: Vec<(Tensor, Tensor)>,
}

impl<'n> Evaluator<'n> {
    pub(crate) fn new(net: &'n Network, weights: &Weights) -> Result<Evaluator<'n>, TrainError> {
        let load = |name: &str| -> Result<Tensor, TrainError> {
            let t = weights
                .get(name)
                .ok_or_else(|| TrainError::Model(format!("the weights have no `{name}`")))?;
            Ok(Tensor::from_slice(&t.data, t.shape.as_slice(), &Device::Cpu)?)
        };
        let params = net.params.iter().map(|name| load(name)).collect::<Result<_, _>>()?;
        let running = net
            .norms
            .iter()
            .map(|norm| Ok((load(&norm.mean)?, load(&norm.var)?)))
            .collect::<Result<_, TrainError>>()?;
        Ok(Evaluator { net, params, running })
    }

    /// The network's outputs for the `n` samples in `x`, concatenated.
    pub(crate) fn outputs(&self, x: &[f32], n: usize) -> Result<Vec<f32>, TrainError> {
        let per_sample: usize = self.net.input.iter().product();
        let per_output: usize = self.net.output.iter().product();
        let mut out = Vec::with_capacity(n * per_output);
        for (chunk, start) in x.chunks(EVAL_BATCH * per_sample).zip((0..n).step_by(EVAL_BATCH)) {
            let rows = (n - start).min(EVAL_BATCH);
            let mut shape = vec![rows];
            shape.extend_from_slice(&self.net.input);
            let batch = Tensor::from_slice(chunk, shape, &Device::Cpu)?;
            let (y, _) = self.net.forward(&batch, &self.params, &self.running, Mode::Eval)?;
            out.extend(y.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }
}

/// Per-sample loss (cross-entropy of the labelled class, or mean squared
/// reconstruction error) and anomaly score, from the outputs of `data`.
pub(crate) struct Judged {
    pub loss: Vec<f64>,
    pub score: Vec<f32>,
    /// Classifier only: the argmax class of each sample.
    pub predicted: Vec<usize>,
}

pub(crate) fn judge(net: &Network, outputs: &[f32], data: &Data) -> Judged {
    let n = data.len();
    let mut judged = Judged {
        loss: Vec::with_capacity(n),
        score: Vec::with_capacity(n),
        predicted: Vec::new(),
    };
    match net.task {
        Task::Classifier { classes } => {
            for (i, logits) in outputs.chunks_exact(classes).enumerate() {
                // log-sum-exp around the maximum, in f64, so that large logits stay finite.
                let (argmax, max) =
                    logits.iter().enumerate().fold(
                        (0, f32::NEG_INFINITY),
                        |best, (c, &v)| if v > best.1 { (c, v) } else { best },
                    );
                let max = f64::from(max);
                let sum: f64 = logits.iter().map(|&v| (f64::from(v) - max).exp()).sum();
                let log_sum = max + sum.ln();
                let label = data.y.get(i).map_or(0, |&y| usize::from(y));
                judged.loss.push(log_sum - f64::from(logits[label]));
                judged.score.push((f64::from(logits[1]) - log_sum).exp() as f32);
                judged.predicted.push(argmax);
            }
        }
        Task::Autoencoder => {
            let len = data.sample_len();
            for (reconstruction, input) in outputs.chunks_exact(len).zip(data.x.chunks_exact(len)) {
                let sum: f64 = reconstruction
                    .iter()
                    .zip(input)
                    .map(|(&r, &x)| f64::from(r - x).powi(2))
                    .sum();
                let mse = sum / len as f64;
                judged.loss.push(mse);
                judged.score.push(mse as f32);
            }
        }
        Task::Forecaster { from_channel } => {
            // Scores weigh each channel by its error on this split's nominal
            // samples, as evaluation does on the validation split.
            let forecast = Forecast::new(from_channel, &net.input, &net.output);
            let nominal: Vec<bool> = (0..n).map(|i| data.y.get(i).is_none_or(|&y| y == 0)).collect();
            let scale = ErrorScale::fit(&forecast, outputs, data.x, &nominal);
            let per_output: usize = net.output.iter().product();
            for (out, input) in outputs
                .chunks_exact(per_output)
                .zip(data.x.chunks_exact(data.sample_len()))
            {
                judged.loss.push(forecast.error(out, input));
                judged.score.push(scale.score(&forecast, out, input) as f32);
            }
        }
    }
    judged
}

/// F1 of class 1 ("anomalous"); 0 when there is neither a true nor a
/// predicted positive (scikit-learn's `zero_division=0`).
pub(crate) fn f1_of_class_one(predicted: &[usize], labels: &[u8]) -> f64 {
    let (mut tp, mut fp, mut fne) = (0u64, 0u64, 0u64);
    for (&p, &y) in predicted.iter().zip(labels) {
        match (p == 1, y == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fne += 1,
            (false, false) => {}
        }
    }
    let denominator = 2 * tp + fp + fne;
    if denominator == 0 {
        0.0
    } else {
        (2 * tp) as f64 / denominator as f64
    }
}

/// Validation loss (mean over samples) and metric (F1 of class 1 for a
/// classifier, the mean squared error for the others), and the F1 of the
/// scores at the threshold best for them, counting the held-out anomalous
/// samples beside the split's own.
pub(crate) fn validate(net: &Network, weights: &Weights, val: &Data) -> Result<(f64, f64, f64), TrainError> {
    let n = val.len();
    // Held-out samples count only beside labels to count them with.
    let held_out = if val.y.len() == n { val.held_out } else { &[] };
    let held = held_out.len() / val.sample_len().max(1);
    // One pass over both, so that a forecaster's channel weights, fitted on
    // the nominal samples, are the split's alone; without held-out samples,
    // the split as it is.
    let (x, y): (Vec<f32>, Vec<u8>);
    let both = if held == 0 {
        *val
    } else {
        x = val.x.iter().chain(held_out).copied().collect();
        y = val.y.iter().copied().chain(std::iter::repeat_n(1, held)).collect();
        Data {
            x: &x,
            shape: [n + held, val.shape[1], val.shape[2]],
            y: &y,
            held_out: &[],
        }
    };
    let outputs = Evaluator::new(net, weights)?.outputs(both.x, both.len())?;
    let judged = judge(net, &outputs, &both);
    let loss = judged.loss[..n].iter().sum::<f64>() / n as f64;
    let metric = match net.task {
        Task::Classifier { .. } => f1_of_class_one(&judged.predicted[..n], val.y),
        Task::Autoencoder | Task::Forecaster { .. } => loss,
    };
    let best_f1 = if val.y.len() == n {
        let labels: Vec<bool> = val.y.iter().map(|&y| y == 1).collect();
        let (scores, held_out) = judged.score.split_at(n);
        let validation = kflow_data::Validation {
            labels: &labels,
            scores,
            held_out,
        };
        validation.f1_at(validation.best_threshold())
    } else {
        0.0
    };
    Ok((loss, metric, best_f1))
}

/// Forward pass in evaluation mode over `n` samples: a classifier's logits
/// `[n, classes]`, or an autoencoder's reconstruction `[n, ...input]`,
/// flattened.
pub fn forward(model: &Model, weights: &Weights, x: &[f32], n: usize) -> Result<Vec<f32>, TrainError> {
    let net = Network::plan(model, weights)?;
    let per_sample: usize = net.input.iter().product();
    if n.checked_mul(per_sample) != Some(x.len()) {
        return Err(TrainError::data(
            "forward",
            format!("{} values for {n} samples of {per_sample} values", x.len()),
        ));
    }
    crate::threads::run(|| Evaluator::new(&net, weights)?.outputs(x, n))
}

/// Anomaly scores in evaluation mode, one per sample: a classifier's
/// softmax probability of class 1, or an autoencoder's mean squared
/// reconstruction error. Labels are not used.
pub fn scores(model: &Model, weights: &Weights, data: &Data) -> Result<Vec<f32>, TrainError> {
    let net = Network::plan(model, weights)?;
    data.check_shape("scored", model)?;
    let outputs = crate::threads::run(|| Evaluator::new(&net, weights)?.outputs(data.x, data.len()))?;
    Ok(judge(&net, &outputs, data).score)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_counts_class_one_only() {
        assert_eq!(f1_of_class_one(&[1, 1, 0, 0], &[1, 0, 1, 0]), 0.5);
        assert_eq!(f1_of_class_one(&[0, 0], &[0, 0]), 0.0);
        assert_eq!(f1_of_class_one(&[1, 0], &[1, 0]), 1.0);
    }
}
