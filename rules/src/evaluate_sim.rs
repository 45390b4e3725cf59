//! The quantized network on the simulated accelerator, beside the float
//! model: its quality on the test split and how often it decides as the
//! float model does.

use kflow_ai8x::Device;
use kflow_data::{Quality, Split};
use kflow_engine::ActionError;
use kflow_model::{Model, Task};
use kflow_quant::Quantized;
use serde::Serialize;

use crate::evaluate::{Decisions, Scored, Splits, score};

#[derive(Serialize)]
pub struct Simulated {
    device: Device,
    layers: usize,
    /// Chosen on the simulated validation outputs, as the float model's is.
    threshold: f32,
    quality: Quality,
    /// Its F1 on the validation split at `threshold`: the quality of what
    /// is deployed, as a search can rank it without the test split.
    validation_f1: f64,
    /// Share of test windows the accelerator and the float model decide
    /// alike (each at its own threshold).
    decision_agreement: f64,
    /// Share of test windows with the same most likely class (classifiers).
    #[serde(skip_serializing_if = "Option::is_none")]
    argmax_agreement: Option<f64>,
    /// Largest difference of an output value from the float model's.
    max_abs_diff: f64,
    /// A forecaster's score on the device: the weight of each predicted
    /// channel's error, fitted on the accelerator's own validation outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    forecast_weights: Option<Vec<f64>>,
    /// A forecaster's readings whose holding still over a window flags it.
    #[serde(skip_serializing_if = "Option::is_none")]
    still_readings: Option<Vec<String>>,
}

pub fn simulated(
    model: &Model,
    q: &Quantized,
    device: Device,
    splits: &Splits<'_>,
    float: &Decisions<'_>,
    threshold_percentile: f64,
) -> Result<Simulated, ActionError> {
    let err = |e: kflow_quant::QuantError| ActionError::new(e.to_string());
    let (net, weights) = kflow_quant::to_sim(q, device);
    let run = |split: &Split| -> Result<Vec<f32>, ActionError> {
        let per = split.shape[1] * split.shape[2];
        let mut out = Vec::new();
        for i in 0..split.len() {
            let y = kflow_quant::simulate_sample(q, &net, &weights, &split.x[i * per..(i + 1) * per]).map_err(err)?;
            out.extend(y.into_iter().map(|v| v as f32));
        }
        Ok(out)
    };
    let (val_out, held_out_out, test_out) = (run(splits.val)?, run(splits.held_out)?, run(splits.test)?);
    let Scored {
        threshold,
        quality,
        validation_f1,
        test_scores,
        forecast_weights,
        still_readings,
    } = score(
        model,
        splits,
        [&val_out, &held_out_out, &test_out],
        threshold_percentile,
    );
    let n = test_scores.len().max(1) as f64;
    let alike = test_scores
        .iter()
        .zip(float.test_scores)
        .filter(|(s, f)| (**s >= threshold) == (**f >= float.threshold))
        .count();
    let argmax_agreement = match model.task {
        Task::Classifier { classes } if classes > 0 => {
            let argmax = |v: &[f32]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
            let same = test_out
                .chunks(classes)
                .zip(float.test_outputs.chunks(classes))
                .filter(|(a, b)| argmax(a) == argmax(b))
                .count();
            Some(same as f64 / n)
        }
        _ => None,
    };
    let max_abs_diff = test_out
        .iter()
        .zip(float.test_outputs)
        .map(|(a, b)| f64::from((a - b).abs()))
        .fold(0.0, f64::max);
    Ok(Simulated {
        device,
        layers: net.layers.len(),
        threshold,
        quality,
        validation_f1,
        decision_agreement: alike as f64 / n,
        argmax_agreement,
        max_abs_diff,
        forecast_weights,
        still_readings,
    })
}
