//! `[[evaluate]]` on the host: the trained model exported to ONNX and run
//! by ONNX Runtime on the test split. Reports quality at a threshold chosen
//! on the validation split (with a z-score baseline, thresholded the same
//! way, on the same split for comparison), the latency of one inference
//! (median over test windows), the model's size, and how far ONNX Runtime's
//! outputs are from candle's forward pass.
//!
//! Latency is measured, so `metrics.json` differs from run to run in its
//! `latency_us` numbers; its quality numbers do not.

use kflow_ai8x::Device;
use kflow_data::{Quality, Split, Validation, zscore_baseline};
use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use kflow_host::OnnxModel;
use kflow_model::{ErrorScale, Forecast, Model, Task};
use serde::{Deserialize, Serialize};

use crate::dataset::{META, TEST, TRAIN, VAL};
use crate::generate::one_output;
use crate::inputs;
use crate::json;
use crate::model::MODEL;
use crate::quantize::{QUANT, QUANTIZED};
use crate::split::read_split;
use crate::still::StillReadings;
use crate::train::WEIGHTS;

pub struct EvaluateRule;

pub const METRICS: &str = "metrics.json";
pub const ONNX: &str = "model.onnx";

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required(
        "model",
        AttrType::Label,
        "the `[[model]]` or `[[generate]]` target of the network",
    ),
    AttrSpec::required(
        "weights",
        AttrType::Label,
        "the `[[train]]` target whose weights to evaluate",
    ),
    AttrSpec::required("dataset", AttrType::Label, "the `[[dataset]]` whose test split to use"),
    AttrSpec::optional(
        "threshold_percentile",
        AttrType::Float,
        "autoencoders: the anomaly threshold is this percentile of nominal validation errors (default 99)",
    ),
    AttrSpec::optional(
        "latency_samples",
        AttrType::Int,
        "single-sample inferences timed (default 1000; 0: none, for a reproducible `metrics.json`)",
    ),
    AttrSpec::optional(
        "quantized",
        AttrType::Label,
        "a `[[quantize]]` target: also run its integer network on the simulated accelerator",
    ),
    AttrSpec::optional(
        "device",
        AttrType::String,
        "the simulated accelerator: `max78002` (default) or `max78000`",
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "model")]
    _model: String,
    #[serde(rename = "weights")]
    _weights: String,
    #[serde(rename = "dataset")]
    _dataset: String,
    threshold_percentile: Option<f64>,
    latency_samples: Option<usize>,
    #[serde(rename = "quantized")]
    _quantized: Option<String>,
    device: Option<Device>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Params {
    pub threshold_percentile: f64,
    /// 0: no timing, and `metrics.json` is the same on every run.
    pub latency_samples: usize,
    /// Set when a quantized network is evaluated too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
}

#[derive(Serialize)]
struct Metrics {
    model: String,
    task: Task,
    /// Scores at or above it are anomalous.
    threshold: f32,
    quality: Quality,
    /// The float model's F1 on the validation split at `threshold` (a
    /// label-free model's counting the training split's anomalous windows
    /// too, see `kflow_data::Validation`): what a search ranks candidates
    /// by, so that a fixed model can be placed among them.
    validation_f1: f64,
    baseline: Baseline,
    /// Measured, so different on every run; absent when not asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_us: Option<Latency>,
    size: Size,
    /// Largest difference between ONNX Runtime's and candle's outputs over
    /// the first test windows: the export is checked on every evaluation.
    onnx_vs_candle_max_abs_diff: f64,
    /// A forecaster's score: the weight of each predicted channel's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    forecast_weights: Option<Vec<f64>>,
    /// A forecaster's readings whose holding still over a window flags it.
    #[serde(skip_serializing_if = "Option::is_none")]
    still_readings: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator: Option<crate::evaluate_sim::Simulated>,
}

#[derive(Serialize)]
struct Baseline {
    kind: &'static str,
    f1: f64,
    threshold: f32,
    quality: Quality,
}

#[derive(Serialize)]
pub(crate) struct Latency {
    pub median: f64,
    pub p90: f64,
    mean: f64,
    samples: usize,
}

#[derive(Serialize)]
struct Size {
    params: u64,
    macs: u64,
}

/// Test windows compared between ONNX Runtime and candle.
const CROSS_CHECK: usize = 256;
const BATCH: usize = 256;

impl Rule for EvaluateRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "evaluate"
    }

    fn version(&self) -> u32 {
        6
    }

    /// Inference over a test split (ONNX Runtime, the simulator) is heavy.
    fn remote(&self, _: &serde_json::Value) -> bool {
        true
    }

    fn summary(&self) -> &'static str {
        "quality and latency of a trained model on the host (ONNX Runtime), against a z-score baseline"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        let mut params = Params {
            threshold_percentile: attrs.threshold_percentile.unwrap_or(99.0),
            latency_samples: attrs.latency_samples.unwrap_or(1000),
            device: None,
        };
        if !(0.0..=100.0).contains(&params.threshold_percentile) {
            return Err(planner.error(
                "threshold_percentile",
                "`threshold_percentile` is a percentile, 0..=100",
            ));
        }
        let mut inputs = vec![
            (MODEL.to_owned(), one_output(planner, target, "model", MODEL)?),
            (WEIGHTS.to_owned(), one_output(planner, target, "weights", WEIGHTS)?),
            (TRAIN.to_owned(), one_output(planner, target, "dataset", TRAIN)?),
            (VAL.to_owned(), one_output(planner, target, "dataset", VAL)?),
            (TEST.to_owned(), one_output(planner, target, "dataset", TEST)?),
            (META.to_owned(), one_output(planner, target, "dataset", META)?),
        ];
        let device = if target.attrs.labels("quantized").is_empty() {
            if attrs.device.is_some() {
                return Err(planner.error("device", "`device` needs `quantized`"));
            }
            None
        } else {
            for name in [QUANT, QUANTIZED] {
                inputs.push((name.to_owned(), one_output(planner, target, "quantized", name)?));
            }
            Some(attrs.device.unwrap_or(Device::Max78002))
        };
        params.device = device;
        let outputs: Vec<String> = [METRICS, ONNX].map(str::to_owned).to_vec();
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&params)?,
            inputs,
            outputs,
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let model = inputs::model(cx)?;
        let weights = inputs::weights(cx, WEIGHTS)?;
        if let Some(mask) = kflow_model::ForecastMask::of(&model)
            && !mask.holds(&weights)
        {
            return Err(ActionError::new(format!(
                "forecaster `{}`: `{}` weighs the readings of the row it predicts (the last kernel tap of channels {}.. must be zero)",
                model.name, mask.tensor, mask.from_channel
            )));
        }
        let meta: kflow_data::DatasetMeta = json::input(cx, META)?;
        let (val, test) = (read_split(cx, VAL)?, read_split(cx, TEST)?);
        // Every detector that learns without labels is judged with the
        // training split's anomalous windows beside the validation split's:
        // the z-score detector always, the model unless it is a classifier.
        let anomalies = read_split(cx, TRAIN)?.of_class(true);
        let none = Split::default();
        let held_out = if model.task.learns_labels() { &none } else { &anomalies };
        let model_err = |e: kflow_model::ModelError| ActionError::new(format!("model `{}`: {e}", model.name));
        let onnx = kflow_model::to_onnx(&model, &weights).map_err(model_err)?;
        cx.write_output(ONNX, &onnx)?;
        let host_err = |e: kflow_host::HostError| ActionError::new(e.to_string());
        let runtime = OnnxModel::load(&onnx, &model.input).map_err(host_err)?;

        cx.progress("scoring the validation and test splits with ONNX Runtime");
        let run = |split: &Split| runtime.run_batched(&split.x, split.len(), BATCH).map_err(host_err);
        let val_out = run(&val)?;
        let held_out_out = run(held_out)?;
        let test_out = run(&test)?;
        let splits = Splits {
            val: &val,
            held_out,
            test: &test,
        };
        // A classifier's threshold is chosen on the validation split to
        // maximize F1, exactly as the baseline's is, so that the two are
        // compared on equal terms.
        let scored = score(
            &model,
            &splits,
            [&val_out, &held_out_out, &test_out],
            params.threshold_percentile,
        );
        let threshold = scored.threshold;
        let baseline =
            zscore_baseline(&val, &anomalies, &test, meta.scale).map_err(|e| ActionError::new(e.to_string()))?;

        cx.progress("cross-checking ONNX Runtime against candle");
        let n = test.len().min(CROSS_CHECK);
        let per = test.shape[1] * test.shape[2];
        let candle = kflow_train::forward(&model, &weights, &test.x[..n * per], n)
            .map_err(|e| ActionError::new(e.to_string()))?;
        let onnx_vs_candle = candle
            .iter()
            .zip(&test_out)
            .map(|(a, b)| f64::from((a - b).abs()))
            .fold(0.0, f64::max);

        let accelerator = match params.device {
            Some(device) => {
                cx.progress("running the quantized network on the simulated accelerator");
                let q = crate::quantize::quantized(cx)?;
                let float = Decisions {
                    test_outputs: &test_out,
                    test_scores: &scored.test_scores,
                    threshold,
                };
                Some(crate::evaluate_sim::simulated(
                    &model,
                    &q,
                    device,
                    &splits,
                    &float,
                    params.threshold_percentile,
                )?)
            }
            None => None,
        };

        let latency_us = match params.latency_samples {
            0 => None,
            samples => {
                cx.progress("timing single-sample inference");
                let mut times = runtime.latencies_us(&test.x, test.len(), samples).map_err(host_err)?;
                Some(latency(&mut times))
            }
        };
        let counts = kflow_model::counts(&model).map_err(model_err)?;
        let metrics = Metrics {
            model: model.name.clone(),
            task: model.task,
            threshold,
            quality: scored.quality,
            validation_f1: scored.validation_f1,
            baseline: Baseline {
                kind: "zscore",
                f1: baseline.test.f1,
                threshold: baseline.threshold,
                quality: baseline.test,
            },
            latency_us,
            size: Size {
                params: counts.total.params,
                macs: counts.total.macs,
            },
            onnx_vs_candle_max_abs_diff: onnx_vs_candle,
            forecast_weights: scored.forecast_weights,
            still_readings: scored.still_readings,
            accelerator,
        };
        cx.write_output(METRICS, &json::pretty(&metrics)?)?;
        cx.set_metadata(serde_json::json!({
            "f1": metrics.quality.f1,
            "baseline_f1": metrics.baseline.f1,
            "latency_us": metrics.latency_us.as_ref().map(|l| l.median),
        }));
        Ok(Outcome::Done)
    }
}

/// The float model's results that the simulated accelerator is compared
/// with.
pub struct Decisions<'a> {
    pub test_outputs: &'a [f32],
    pub test_scores: &'a [f32],
    pub threshold: f32,
}

/// Turns a network's outputs into anomaly scores: the probability of class
/// 1 for a classifier, the mean squared reconstruction error for an
/// autoencoder, and for a forecaster the largest error of its checked
/// predictions, each channel's divided by its largest usual errors on the
/// nominal windows of the validation split (see `ErrorScale`).
pub struct Scorer<'m> {
    model: &'m Model,
    forecast: Option<(Forecast, ErrorScale)>,
    /// A forecaster's readings watched for holding still.
    still: Option<StillReadings>,
}

impl<'m> Scorer<'m> {
    /// Fitted (for a forecaster) on the outputs of the validation split.
    pub fn fit(model: &'m Model, val_outputs: &[f32], val: &Split) -> Scorer<'m> {
        let forecast = match model.task {
            Task::Forecaster { from_channel } => {
                let f = forecast_of(from_channel, val_outputs, val);
                let nominal: Vec<bool> = val.y.iter().map(|&y| y == 0).collect();
                Some((f, ErrorScale::fit(&f, val_outputs, &val.x, &nominal)))
            }
            _ => None,
        };
        let still = forecast
            .as_ref()
            .map(|(f, _)| StillReadings::fit(val, f.from_channel..f.channels));
        Scorer { model, forecast, still }
    }

    /// The forecaster's channel weights, for the record.
    pub fn weights(&self) -> Option<&[f64]> {
        self.forecast.as_ref().map(|(_, scale)| scale.weights.as_slice())
    }

    pub fn scores(&self, outputs: &[f32], split: &Split) -> Vec<f32> {
        match &self.forecast {
            Some((f, scale)) => {
                let per_out = (f.predicted_channels() * f.output_length).max(1);
                outputs
                    .chunks(per_out)
                    .zip(split.x.chunks((f.channels * f.input_length).max(1)))
                    .map(|(y, x)| scale.score(f, y, x) as f32)
                    .collect()
            }
            None => scores(self.model, outputs, split),
        }
    }
}

/// A forecaster's alignment, from its outputs over `split`.
fn forecast_of(from_channel: usize, outputs: &[f32], split: &Split) -> Forecast {
    let [n, channels, length] = split.shape;
    let predicted = channels.saturating_sub(from_channel).max(1);
    let output_length = outputs.len() / (n * predicted).max(1);
    Forecast::new(from_channel, &[channels, length], &[predicted, output_length])
}

/// Anomaly scores from the network's outputs, without a fitted scale (every
/// forecast channel weighted alike).
fn scores(model: &Model, outputs: &[f32], split: &Split) -> Vec<f32> {
    match model.task {
        Task::Classifier { classes } => outputs
            .chunks(classes.max(1))
            .map(|logits| {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
                logits.get(1).map_or(0.0, |l| (l - max).exp() / sum)
            })
            .collect(),
        Task::Autoencoder => {
            let per = split.shape[1] * split.shape[2];
            outputs
                .chunks(per.max(1))
                .zip(split.x.chunks(per.max(1)))
                .map(|(y, x)| y.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / per as f32)
                .collect()
        }
        Task::Forecaster { from_channel } => {
            let f = forecast_of(from_channel, outputs, split);
            outputs
                .chunks((f.predicted_channels() * f.output_length).max(1))
                .zip(split.x.chunks((f.channels * f.input_length).max(1)))
                .map(|(y, x)| f.error(y, x) as f32)
                .collect()
        }
    }
}

/// The anomaly threshold, chosen on the validation scores: the one that
/// maximizes F1 (as the z-score baseline's is chosen, so that the two are
/// compared on equal terms), or for an autoencoder the `percentile` of the
/// validation split's nominal windows' errors.
pub fn threshold(model: &Model, val: &Split, validation: &Validation<'_>, percentile: f64) -> f32 {
    match model.task {
        Task::Classifier { .. } | Task::Forecaster { .. } => validation.best_threshold(),
        Task::Autoencoder => nominal_percentile(val, validation.scores, percentile),
    }
}

/// The splits a detector is judged on: its threshold is chosen on `val`
/// and `held_out` (see `crate::split::Learning`), then applied to
/// `test`.
pub struct Splits<'a> {
    pub val: &'a Split,
    pub held_out: &'a Split,
    pub test: &'a Split,
}

/// A detector's quality from its own outputs, as a deployment would
/// measure it: the threshold (and a forecaster's channel weights) fitted on
/// its validation outputs, then applied to its test outputs.
pub struct Scored {
    pub threshold: f32,
    pub quality: Quality,
    pub validation_f1: f64,
    pub test_scores: Vec<f32>,
    pub forecast_weights: Option<Vec<f64>>,
    /// A forecaster's readings whose holding still flags a window outright:
    /// none where that did not raise its validation F1.
    pub still_readings: Option<Vec<String>>,
}

/// Scores from the outputs over `splits`' validation, held-out and test
/// windows, in that order.
pub fn score(model: &Model, splits: &Splits<'_>, outputs: [&[f32]; 3], threshold_percentile: f64) -> Scored {
    let [val_out, held_out_out, test_out] = outputs;
    let scorer = Scorer::fit(model, val_out, splits.val);
    let mut scores = [
        scorer.scores(val_out, splits.val),
        scorer.scores(held_out_out, splits.held_out),
        scorer.scores(test_out, splits.test),
    ];
    let labels = splits.val.labels();
    let judge = |[val, held_out, _]: &[Vec<f32>; 3]| {
        let validation = Validation {
            labels: &labels,
            scores: val,
            held_out,
        };
        let threshold = threshold(model, splits.val, &validation, threshold_percentile);
        (threshold, validation.f1_at(threshold))
    };
    let (mut threshold, mut validation_f1) = judge(&scores);
    // Holding still flags a window outright, where that helps on
    // validation (a forecaster only).
    let mut still_readings = scorer.still.as_ref().map(|_| Vec::new());
    if let Some(still) = scorer.still.as_ref().filter(|s| !s.is_empty()) {
        let parts = [splits.val, splits.held_out, splits.test];
        let flagged: [Vec<f32>; 3] = std::array::from_fn(|k| {
            let flags = |(i, &s): (usize, &f32)| if still.flags(parts[k], i) { f32::MAX } else { s };
            scores[k].iter().enumerate().map(flags).collect()
        });
        let (t, f1) = judge(&flagged);
        if f1 > validation_f1 {
            (threshold, validation_f1, scores) = (t, f1, flagged);
            still_readings = Some(still.names());
        }
    }
    let [_, _, test_scores] = scores;
    Scored {
        threshold,
        quality: Quality::at_threshold(&splits.test.labels(), &test_scores, threshold),
        validation_f1,
        forecast_weights: scorer.weights().map(<[f64]>::to_vec),
        still_readings,
        test_scores,
    }
}

/// The `p`-th percentile (nearest rank) of the scores of nominal windows.
pub fn nominal_percentile(split: &Split, scores: &[f32], p: f64) -> f32 {
    let mut nominal: Vec<f32> = scores
        .iter()
        .zip(&split.y)
        .filter(|(_, y)| **y == 0)
        .map(|(s, _)| *s)
        .collect();
    if nominal.is_empty() {
        return f32::INFINITY;
    }
    nominal.sort_by(f32::total_cmp);
    let rank = ((p / 100.0) * nominal.len() as f64).ceil() as usize;
    nominal[rank.clamp(1, nominal.len()) - 1]
}

pub(crate) fn latency(times: &mut [f64]) -> Latency {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Latency {
        median: at(0.5),
        p90: at(0.9),
        mean: if times.is_empty() {
            0.0
        } else {
            times.iter().sum::<f64>() / times.len() as f64
        },
        samples: times.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank_over_nominal_windows() {
        let split = Split {
            x: vec![0.0; 5],
            shape: [5, 1, 1],
            y: vec![0, 0, 1, 0, 0],
        };
        let scores = [4.0, 1.0, 100.0, 3.0, 2.0];
        assert_eq!(nominal_percentile(&split, &scores, 50.0), 2.0);
        assert_eq!(nominal_percentile(&split, &scores, 100.0), 4.0);
        assert_eq!(nominal_percentile(&split, &scores, 0.0), 1.0);
    }

    /// Windows `[2, 3]` of a forecaster of channel 1 (`amud`), and its
    /// outputs: each window's change into row 2, predicted a little off.
    /// Channel 1 holds still in the windows listed in `still`.
    fn forecast(n: usize, still: &[usize], anomalous: &[usize]) -> (Split, Vec<f32>) {
        let (mut x, mut out) = (Vec::new(), Vec::new());
        for i in 0..n {
            let step = if still.contains(&i) {
                0.0
            } else {
                0.1 + 0.1 * (i % 7) as f32
            };
            x.extend([0.0, 0.0, 0.0, 0.5, 0.5 + step, 0.5 + 2.0 * step]);
            out.push(step + 0.01 * (1 + i % 3) as f32);
        }
        let y = (0..n).map(|i| u8::from(anomalous.contains(&i))).collect();
        (Split { x, shape: [n, 2, 3], y }, out)
    }

    #[test]
    fn a_forecaster_flags_still_readings_where_that_raises_its_validation_f1() {
        let model = Model {
            format: kflow_model::FORMAT.to_owned(),
            name: "f".to_owned(),
            task: Task::Forecaster { from_channel: 1 },
            input: vec![2, 3],
            layers: Vec::new(),
        };
        let (held_out, none) = forecast(0, &[], &[]);
        // A stuck reading is predicted better than usual, so only holding
        // still gives it away.
        let stuck: Vec<usize> = (2000..2010).collect();
        let (val, val_out) = forecast(2010, &stuck, &stuck);
        let (test, test_out) = forecast(4, &[1], &[1]);
        let splits = Splits {
            val: &val,
            held_out: &held_out,
            test: &test,
        };
        let scored = score(&model, &splits, [&val_out, &none, &test_out], 99.0);
        assert_eq!(scored.still_readings, Some(vec!["amud".to_owned()]));
        assert_eq!(scored.validation_f1, 1.0);
        assert_eq!(scored.quality.f1, 1.0);

        // Where the reading holds still as often when all is well, the
        // check is left out: it cannot raise validation F1.
        let quiet: Vec<usize> = (0..2010).step_by(100).chain(stuck.iter().copied()).collect();
        let (val, val_out) = forecast(2010, &quiet, &stuck);
        let splits = Splits { val: &val, ..splits };
        let scored = score(&model, &splits, [&val_out, &none, &test_out], 99.0);
        assert_eq!(scored.still_readings, Some(Vec::new()));
        assert!(scored.quality.f1 < 1.0);
    }

    #[test]
    fn latency_summary_takes_the_middle_value() {
        let mut t = vec![5.0, 1.0, 3.0];
        let l = latency(&mut t);
        assert_eq!((l.median, l.samples), (3.0, 3));
    }
}
