//! `check`: does a model fit a platform? A rejection is a result (cached,
//! with its reasons), not an error.

use std::time::Duration;

use kflow_ai8x::Device;
use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use kflow_model::Model;
use kflow_platform::{ExternalVerdict, Platform, Resources};
use kflow_quant::Quantized;
use serde::{Deserialize, Serialize};

use crate::generate::one_output;
use crate::inputs;
use crate::json;
use crate::model::MODEL;
use crate::platform::PLATFORM;
use crate::quantize::{QUANT, QUANTIZED};

pub struct CheckRule;

pub const CHECK: &str = "check.json";

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required(
        "model",
        AttrType::Label,
        "the `[[model]]`, `[[generate]]` or `[[prune]]` target of the network",
    ),
    AttrSpec::required("platform", AttrType::Label, "the `[[platform]]` to check against"),
    AttrSpec::optional(
        "constraints",
        AttrType::StringList,
        "more expressions over the resource report, besides the platform's",
    ),
    AttrSpec::optional(
        "checks",
        AttrType::StringList,
        "more external check commands, besides the platform's",
    ),
    AttrSpec::optional(
        "check_timeout_s",
        AttrType::Int,
        "seconds an external check may take (default 60)",
    ),
    AttrSpec::optional(
        "quantized",
        AttrType::Label,
        "a `[[quantize]]` target: check its integer layers (bits, shifts, values), not only the float model's structure",
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "model")]
    _model: String,
    #[serde(rename = "platform")]
    _platform: String,
    #[serde(default)]
    constraints: Vec<String>,
    #[serde(default)]
    checks: Vec<String>,
    check_timeout_s: Option<u64>,
    #[serde(rename = "quantized")]
    _quantized: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Params {
    constraints: Vec<String>,
    checks: Vec<String>,
    check_timeout_s: u64,
}

/// `check.json`.
#[derive(Serialize)]
struct Report {
    platform: String,
    fits: bool,
    /// Why not, one line each.
    reasons: Vec<String>,
    /// The numbers constraints can name.
    resources: Resources,
}

impl Rule for CheckRule {
    fn name(&self) -> &'static str {
        "check"
    }

    fn version(&self) -> u32 {
        2
    }

    fn summary(&self) -> &'static str {
        "whether a model fits a platform (memories, user constraints, external checks); a misfit is a rejection"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        for expression in &attrs.constraints {
            kflow_platform::validate(expression).map_err(|e| planner.error("constraints", e.to_string()))?;
        }
        let params = Params {
            constraints: attrs.constraints,
            checks: attrs.checks,
            check_timeout_s: attrs.check_timeout_s.unwrap_or(60),
        };
        let mut inputs = vec![
            (MODEL.to_owned(), one_output(planner, target, "model", MODEL)?),
            (PLATFORM.to_owned(), one_output(planner, target, "platform", PLATFORM)?),
        ];
        if !target.attrs.labels("quantized").is_empty() {
            for name in [QUANT, QUANTIZED] {
                inputs.push((name.to_owned(), one_output(planner, target, "quantized", name)?));
            }
        }
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&params)?,
            inputs,
            outputs: vec![CHECK.to_owned()],
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let model = inputs::model(cx)?;
        let platform: Platform = json::input(cx, PLATFORM)?;
        let (mut reasons, resources) = match platform.accelerator {
            None => cpu_resources(&model, &platform)?,
            Some(device) => {
                let quantized = if cx.inputs().contains_key(QUANT) {
                    Some(inputs::quantized(cx)?)
                } else {
                    None
                };
                accelerator_resources(&model, quantized, device, &platform)?
            }
        };
        let constraints = platform.constraints.iter().chain(&params.constraints);
        for expression in constraints {
            match kflow_platform::evaluate(expression, &resources) {
                Ok(true) => {}
                Ok(false) => reasons.push(format!("constraint `{expression}` does not hold")),
                Err(e) => return Err(ActionError::new(e.to_string())),
            }
        }
        let input = serde_json::to_vec(&serde_json::json!({"model": model, "resources": resources}))
            .map_err(|e| ActionError::new(e.to_string()))?;
        let timeout = Duration::from_secs(params.check_timeout_s);
        for command in platform.checks.iter().chain(&params.checks) {
            match kflow_platform::run_check(command, &input, timeout).map_err(|e| ActionError::new(e.to_string()))? {
                ExternalVerdict::Accept => {}
                ExternalVerdict::Reject { code, message } => {
                    reasons.push(format!("check `{command}` rejected it (exit {code}): {message}"));
                }
            }
        }
        let report = Report {
            platform: platform.name.clone(),
            fits: reasons.is_empty(),
            reasons,
            resources,
        };
        cx.write_output(CHECK, &json::pretty(&report)?)?;
        if report.fits {
            Ok(Outcome::Done)
        } else {
            Ok(Outcome::Rejected {
                reason: report.reasons.join("; "),
            })
        }
    }
}

/// The resource report of the model on the platform's CNN accelerator:
/// every rule of the ai8x checker, the exact memories of its allocation,
/// the estimated latency, and the weight stream in the MCU's flash.
fn accelerator_resources(
    model: &Model,
    quantized: Option<Quantized>,
    device: Device,
    platform: &Platform,
) -> Result<(Vec<String>, Resources), ActionError> {
    let q = match quantized {
        Some(q) => q,
        None => {
            // Structure only: any weights of the right shapes will do.
            let weights = kflow_model::Weights::init(model, 0).map_err(|e| ActionError::new(e.to_string()))?;
            match kflow_quant::fuse(model, &weights) {
                Ok(fused) => kflow_quant::unquantized(&fused),
                // A layer the accelerator cannot run is a rejection.
                Err(e @ kflow_quant::QuantError::Unmappable { .. }) => {
                    return Ok((vec![e.to_string()], Resources::new()));
                }
                Err(e) => return Err(ActionError::new(e.to_string())),
            }
        }
    };
    let (layers, weights, input) = kflow_quant::to_ai8x(&q);
    let allocation = match kflow_ai8x::allocate(device, &layers) {
        Ok(a) => a,
        Err(e) => return Ok((vec![format!("allocation: {e}")], Resources::new())),
    };
    let network = allocation.to_network(&model.name, "kflow");
    let report = kflow_ai8x::check(device, &network, &weights, input);
    let mut reasons: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
    let mut resources = Resources::new();
    if let Some(r) = &report.resources {
        let timing = report.allocation.as_ref().map(kflow_ai8x::timing::accelerator);
        let flash_bytes = r.total_bytes + platform.firmware_flash_kb * 1024;
        if flash_bytes > platform.flash_kb * 1024 {
            reasons.push(format!(
                "flash: {} B of weights + {} KiB of firmware exceed {} KiB",
                r.total_bytes, platform.firmware_flash_kb, platform.flash_kb
            ));
        }
        let max_columns = r.kernel_columns_per_processor.iter().copied().max().unwrap_or(0);
        resources.extend(
            [
                ("layers", r.layers as f64),
                ("weight_bytes", r.weight_bytes as f64),
                ("bias_bytes", r.bias_bytes as f64),
                ("total_bytes", r.total_bytes as f64),
                ("kernel_bytes", r.kernel_bytes_allocated as f64),
                ("max_kernel_columns", f64::from(max_columns)),
                ("params", r.parameters as f64),
                ("macs", r.macs as f64),
                ("flash_bytes", flash_bytes as f64),
                ("latency_us", timing.as_ref().map_or(0.0, |t| t.seconds * 1e6)),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
    }
    Ok((reasons, resources))
}

/// The resource report of an int8 model run by the platform's CPU, and
/// what does not fit.
fn cpu_resources(model: &Model, platform: &Platform) -> Result<(Vec<String>, Resources), ActionError> {
    let fit = kflow_platform::cpu_fit(model, platform).map_err(|e| ActionError::new(e.to_string()))?;
    let counts = kflow_model::counts(model).map_err(|e| ActionError::new(e.to_string()))?;
    let layers = counts.layers.iter().filter(|t| t.macs > 0).count();
    let resources: Resources = [
        ("weight_bytes", fit.weight_bytes as f64),
        ("arena_bytes", fit.arena_bytes as f64),
        ("flash_bytes", fit.flash_bytes as f64),
        ("ram_bytes", fit.ram_bytes as f64),
        ("macs", fit.macs as f64),
        ("params", counts.total.params as f64),
        ("layers", layers as f64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Ok((fit.problems, resources))
}
