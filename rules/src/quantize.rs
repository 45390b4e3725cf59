//! `quantize`: a trained float model as the accelerator's integer layers
//! (kflow-quant): fusion, batch-norm folding, calibration on training
//! windows, ai8x-compatible weight quantization.

use std::collections::BTreeMap;

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use kflow_quant::QuantOptions;
use serde::{Deserialize, Serialize};

use crate::dataset::TRAIN;
use crate::generate::one_output;
use crate::inputs;
use crate::json;
use crate::model::MODEL;
use crate::split::read_split;
use crate::train::WEIGHTS;

pub struct QuantizeRule;

pub const QUANTIZED: &str = "quantized.safetensors";
pub const QUANT: &str = "quant.json";

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
        "the `[[dataset]]` whose training windows calibrate activations",
    ),
    AttrSpec::optional(
        "weight_bits",
        AttrType::Int,
        "weight bits of every layer: 8 (default), 4, 2 or 1",
    ),
    AttrSpec::optional(
        "layer_bits",
        AttrType::Table,
        "weight bits per fused layer, by name: `{ conv1 = 4 }`",
    ),
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
    weight_bits: Option<u8>,
    #[serde(default)]
    layer_bits: BTreeMap<String, u8>,
    shift_quantile: Option<f64>,
    calibration_samples: Option<usize>,
    calibration_percentile: Option<f64>,
    wide_output: Option<bool>,
}

#[derive(Serialize, Deserialize)]
struct Params {
    options: QuantOptions,
    calibration_samples: usize,
}

impl Rule for QuantizeRule {
    fn name(&self) -> &'static str {
        "quantize"
    }

    fn version(&self) -> u32 {
        2
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
        };
        for (attr, bits) in std::iter::once(("weight_bits", &options.weight_bits))
            .chain(options.layer_bits.values().map(|b| ("layer_bits", b)))
        {
            if !matches!(bits, 1 | 2 | 4 | 8) {
                return Err(planner.error(attr, format!("weight bits are 1, 2, 4 or 8, not {bits}")));
            }
        }
        let calibration_samples = attrs.calibration_samples.unwrap_or(256);
        if calibration_samples == 0 {
            return Err(planner.error("calibration_samples", "`calibration_samples` must be at least 1"));
        }
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&Params {
                options,
                calibration_samples,
            })?,
            inputs: vec![
                (MODEL.to_owned(), one_output(planner, target, "model", MODEL)?),
                (WEIGHTS.to_owned(), one_output(planner, target, "weights", WEIGHTS)?),
                (TRAIN.to_owned(), one_output(planner, target, "dataset", TRAIN)?),
            ],
            outputs: [QUANTIZED, QUANT].map(str::to_owned).to_vec(),
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let model = inputs::model(cx)?;
        let weights = inputs::weights(cx, WEIGHTS)?;
        let quant_err = |e: kflow_quant::QuantError| ActionError::new(e.to_string());
        let fused = kflow_quant::fuse(&model, &weights).map_err(quant_err)?;
        let train = read_split(cx, TRAIN)?;
        // Evenly spaced windows: a deterministic sample of the whole split.
        let per = train.shape[1] * train.shape[2];
        let n = params.calibration_samples.min(train.len());
        let x: Vec<f32> = (0..n)
            .flat_map(|k| train.window(k * train.len() / n.max(1)).iter().copied())
            .collect();
        if per != model.input.iter().product::<usize>() {
            return Err(ActionError::new(format!(
                "the dataset's windows have {per} values, the model's input {:?} needs {}",
                model.input,
                model.input.iter().product::<usize>()
            )));
        }
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
