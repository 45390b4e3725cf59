//! `quantize`: a trained float model as the accelerator's integer layers
//! (kflow-quant): fusion, batch-norm folding, calibration on training
//! windows, ai8x-compatible weight quantization, and optional
//! quantization-aware fine-tuning (kflow-train) before the final pass.

use std::collections::BTreeMap;

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use kflow_model::{Model, Weights};
use kflow_quant::{Bits, FakeQuant, QuantOptions, Rounding};
use kflow_train::{Checkpoint, EpochStats, Hyper};
use serde::{Deserialize, Serialize};

use crate::dataset::{TRAIN, VAL};
use crate::generate::one_output;
use crate::inputs;
use crate::json;
use crate::model::MODEL;
use crate::split::{Learning, read_split};
use crate::train::WEIGHTS;

pub struct QuantizeRule;

pub const QUANTIZED: &str = "quantized.safetensors";
pub const QUANT: &str = "quant.json";
/// The fine-tuning log, when there were QAT epochs.
pub const QAT_LOG: &str = "qat.json";

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required(
        "model",
        AttrType::Label,
        "the `[[model]]`, `[[generate]]` or `[[prune]]` target of the network",
    ),
    AttrSpec::required(
        "weights",
        AttrType::Label,
        "the `[[train]]` or `[[prune]]` target of its weights",
    ),
    AttrSpec::required(
        "dataset",
        AttrType::Label,
        "the `[[dataset]]` whose training windows calibrate activations (and fine-tune, with `qat_epochs`)",
    ),
    AttrSpec::optional(
        "weight_bits",
        AttrType::Any,
        "weight bits of every layer: 8 (default), 4, 2, 1, or \"binary\" (±1, MAX78002)",
    ),
    AttrSpec::optional(
        "layer_bits",
        AttrType::Table,
        "weight bits per fused layer, by name: `{ conv1 = 4 }`",
    ),
    AttrSpec::optional(
        "qat_epochs",
        AttrType::Int,
        "quantization-aware fine-tune epochs before quantizing (default 0)",
    ),
    AttrSpec::optional("qat_lr", AttrType::Float, "fine-tune learning rate (default 0.0001)"),
    AttrSpec::optional("qat_seed", AttrType::Int, "fine-tune batch order (default 0)"),
    AttrSpec::optional(
        "shift_quantile",
        AttrType::Float,
        "quantile of weight magnitudes that sets each layer's shift (default 1.0: the largest)",
    ),
    AttrSpec::optional(
        "calibration_samples",
        AttrType::Int,
        "training windows used for calibration (default 256)",
    ),
    AttrSpec::optional(
        "calibration_percentile",
        AttrType::Float,
        "percentile of activation magnitudes mapped into range (default 99.9)",
    ),
    AttrSpec::optional(
        "wide_output",
        AttrType::Bool,
        "last layer writes 32-bit values (default true)",
    ),
    AttrSpec::optional(
        "align_shifts",
        AttrType::Bool,
        "move each layer's calibration factor so that its weights fill the int8 range their shift leaves (default false)",
    ),
    AttrSpec::optional(
        "rounding",
        AttrType::String,
        "\"compensated\" (hidden channels equalized, then each rounding error absorbed by the weights not yet rounded, weighed by the calibration inputs; the default without QAT) or \"nearest\" (as quantize.py; the default after QAT epochs)",
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
    weight_bits: Option<Bits>,
    #[serde(default)]
    layer_bits: BTreeMap<String, Bits>,
    shift_quantile: Option<f64>,
    calibration_samples: Option<usize>,
    calibration_percentile: Option<f64>,
    wide_output: Option<bool>,
    align_shifts: Option<bool>,
    rounding: Option<Rounding>,
    qat_epochs: Option<u32>,
    qat_lr: Option<f64>,
    qat_seed: Option<u64>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Params {
    pub options: QuantOptions,
    pub calibration_samples: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat: Option<Qat>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Qat {
    pub epochs: u32,
    pub hyper: Hyper,
}

impl Rule for QuantizeRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "quantize"
    }

    fn version(&self) -> u32 {
        5
    }

    /// Quantization-aware epochs are training.
    fn remote(&self, _: &serde_json::Value) -> bool {
        true
    }

    fn summary(&self) -> &'static str {
        "ai8x-compatible quantization: fused layers, integer weights, per-layer bits and shifts"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        let defaults = QuantOptions::default();
        let options = QuantOptions {
            weight_bits: attrs.weight_bits.unwrap_or(defaults.weight_bits),
            layer_bits: attrs.layer_bits,
            shift_quantile: attrs.shift_quantile.unwrap_or(defaults.shift_quantile),
            calibration_percentile: attrs.calibration_percentile.unwrap_or(defaults.calibration_percentile),
            target: defaults.target,
            wide_output: attrs.wide_output.unwrap_or(defaults.wide_output),
            align_shifts: attrs.align_shifts.unwrap_or(defaults.align_shifts),
            rounding: attrs
                .rounding
                .unwrap_or(default_rounding(attrs.qat_epochs.unwrap_or(0))),
        };
        let calibration_samples = attrs.calibration_samples.unwrap_or(256);
        if calibration_samples == 0 {
            return Err(planner.error("calibration_samples", "`calibration_samples` must be at least 1"));
        }
        let qat = match attrs.qat_epochs.unwrap_or(0) {
            0 => None,
            epochs => Some(Qat {
                epochs,
                hyper: Hyper {
                    lr: attrs.qat_lr.unwrap_or(1e-4),
                    seed: attrs.qat_seed.unwrap_or(0),
                    ..Hyper::default()
                },
            }),
        };
        let mut inputs = vec![
            (MODEL.to_owned(), one_output(planner, target, "model", MODEL)?),
            (WEIGHTS.to_owned(), one_output(planner, target, "weights", WEIGHTS)?),
            (TRAIN.to_owned(), one_output(planner, target, "dataset", TRAIN)?),
        ];
        let mut outputs = vec![QUANTIZED.to_owned(), QUANT.to_owned()];
        if qat.is_some() {
            inputs.push((VAL.to_owned(), one_output(planner, target, "dataset", VAL)?));
            outputs.push(QAT_LOG.to_owned());
        }
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&Params {
                options,
                calibration_samples,
                qat,
            })?,
            inputs,
            outputs,
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let model = inputs::model(cx)?;
        let weights = inputs::weights(cx, WEIGHTS)?;
        let train = read_split(cx, TRAIN)?;
        let per = train.shape[1] * train.shape[2];
        if per != model.input.iter().product::<usize>() {
            return Err(ActionError::new(format!(
                "the dataset's windows have {per} values, the model's input {:?} needs {}",
                model.input,
                model.input.iter().product::<usize>()
            )));
        }
        // Evenly spaced windows: a deterministic sample of the whole split.
        let n = params.calibration_samples.min(train.len());
        let x: Vec<f32> = (0..n)
            .flat_map(|k| train.window(k * train.len() / n.max(1)).iter().copied())
            .collect();
        let (model, weights) = match &params.qat {
            Some(qat) => {
                let (model, weights, log) = fine_tune(cx, qat, &params.options, (&x, n), model, weights, train)?;
                cx.write_output(QAT_LOG, &json::pretty(&log)?)?;
                (model, weights)
            }
            None => (model, weights),
        };
        let fused = kflow_quant::fuse(&model, &weights).map_err(quant_err)?;
        cx.progress(&format!(
            "{} accelerator layers; calibrating on {n} training windows",
            fused.layers.len()
        ));
        let quantized = kflow_quant::quantize(&fused, &x, n, &params.options).map_err(quant_err)?;
        cx.write_output(QUANTIZED, &quantized.to_safetensors().map_err(quant_err)?)?;
        cx.write_output(QUANT, &json::pretty(&quantized)?)?;
        Ok(Outcome::Done)
    }
}

/// Compensated rounding, except after quantization-aware epochs: those
/// trained the weights for the nearest rounding their forward pass saw, and
/// compensation would move them off the levels they were tuned to.
pub(crate) fn default_rounding(qat_epochs: u32) -> Rounding {
    match qat_epochs {
        0 => Rounding::Compensated,
        _ => Rounding::Nearest,
    }
}

fn quant_err(e: kflow_quant::QuantError) -> ActionError {
    ActionError::new(e.to_string())
}

/// Quantization-aware fine-tuning as ai8x-training runs it: batch norms
/// folded first, then epochs whose forward pass sees the quantized weights
/// and activations rounded as the accelerator rounds them, recalibrated at
/// the start of each epoch. The weights kept are those of the epoch (the
/// start counts as epoch 0) whose quantized network has the best
/// validation F1: the loss fine-tuning lowers is not the detector's
/// quality, and more epochs of it can cost a forecaster its F1.
fn fine_tune(
    cx: &ActionContext<'_>,
    qat: &Qat,
    options: &QuantOptions,
    (x, n): (&[f32], usize),
    model: Model,
    weights: Weights,
    train: kflow_data::Split,
) -> Result<(Model, Weights, QatLog), ActionError> {
    let (model, weights) = kflow_quant::fold_batchnorm(&model, &weights).map_err(quant_err)?;
    let splits = Learning::new(train, read_split(cx, VAL)?, model.task);
    let train_err = |e: kflow_train::TrainError| ActionError::new(e.to_string());
    let mut checkpoint = Checkpoint::fresh(weights);
    let mut log = QatLog::default();
    let mut kept = checkpoint.weights.clone();
    let mut best_f1 = None;
    for epoch in 1..=qat.epochs {
        let fake = FakeQuant::calibrate(&model, &checkpoint.weights, x, n, options).map_err(quant_err)?;
        let weights = |w: &Weights| fake.apply(w).map_err(|e| e.to_string());
        let grid = activation_grid(fake.activations());
        let view = kflow_train::View {
            weights: Some(&weights),
            activations: Some(&grid),
        };
        let best = match best_f1 {
            Some(f1) => f1,
            None => {
                let (_, _, f1) = kflow_train::validate_viewed(&model, &checkpoint.weights, &splits.val(), view)
                    .map_err(train_err)?;
                log.start_val_f1 = f1;
                f1
            }
        };
        let (next, stats) =
            kflow_train::train_epoch_viewed(&model, checkpoint, &splits.train(), &splits.val(), &qat.hyper, view)
                .map_err(train_err)?;
        cx.progress(&format!(
            "quantization-aware epoch {epoch}/{}: train loss {:.4}, val loss {:.4}, val F1 {:.4}",
            qat.epochs, stats.train_loss, stats.val_loss, stats.val_f1
        ));
        if stats.val_f1 > best {
            log.kept_epoch = epoch;
            kept = next.weights.clone();
        }
        best_f1 = Some(best.max(stats.val_f1));
        log.epochs.push(stats);
        checkpoint = next;
    }
    Ok((model, kept, log))
}

/// What fine-tuning did: every epoch, the validation F1 of the quantized
/// network before it, and the epoch whose weights were kept (0: none
/// improved on the start).
#[derive(Debug, Default, Serialize)]
struct QatLog {
    epochs: Vec<EpochStats>,
    start_val_f1: f64,
    kept_epoch: u32,
}

/// The grid on which `kflow-train` rounds what the accelerator rounds.
fn activation_grid(scales: &kflow_quant::ActivationScales) -> kflow_train::ActivationGrid {
    kflow_train::ActivationGrid {
        input: Some(kflow_train::Grid::int8(scales.input)),
        layers: scales
            .layers
            .iter()
            .map(|(name, &s)| (name.clone(), kflow_train::Grid::int8(s)))
            .collect(),
    }
}

/// The quantized network of inputs `quant.json` and `quantized.safetensors`.
pub fn quantized(cx: &ActionContext<'_>) -> Result<kflow_quant::Quantized, ActionError> {
    kflow_quant::Quantized::from_files(&json::input_bytes(cx, QUANT)?, &json::input_bytes(cx, QUANTIZED)?)
        .map_err(|e| ActionError::new(format!("inputs `{QUANT}`, `{QUANTIZED}`: {e}")))
}
