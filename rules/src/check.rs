//! `check`: does a model fit a platform? A rejection is a result (cached,
//! with its reasons), not an error.

use std::time::Duration;

use kflow_ai8x::Device;
use kflow_engine::{
    ActionContext, ActionDecl, ActionError, ArtifactRef, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule,
    Source, Target,
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
    USER_CHECKS[0],
    USER_CHECKS[1],
    USER_CHECKS[2],
    USER_CHECKS[3],
    AttrSpec::optional(
        "quantized",
        AttrType::Label,
        "a `[[quantize]]` target: check its integer layers (bits, shifts, values), not only the float model's structure",
    ),
];

/// The checks of a user's own, besides the platform's: also attributes of
/// `[[automl]]`, which checks every candidate with this rule.
pub const USER_CHECKS: [AttrSpec; 4] = [
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
        "check_files",
        AttrType::Sources,
        "the files the checks read (scripts, tables): their contents key the check actions, so editing one reruns them",
    ),
];

/// Input-name prefix of the `check_files`.
pub const CHECK_FILE: &str = "check_file:";

/// The `check_files` of `target` as action inputs, each named by where a
/// check finds it in its working directory: a package file at its path in
/// the package, a target's output under the output's name.
pub fn check_file_inputs(target: &Target, planner: &Planner<'_>) -> Result<Vec<(String, ArtifactRef)>, Diagnostic> {
    let mut inputs: Vec<(String, ArtifactRef)> = Vec::new();
    let mut add = |name: String, artifact: ArtifactRef| {
        if inputs.iter().any(|(n, _)| *n == name) {
            return Err(planner.error(
                "check_files",
                format!(
                    "two check files would be `{}` in the check's directory",
                    &name[CHECK_FILE.len()..]
                ),
            ));
        }
        inputs.push((name, artifact));
        Ok(())
    };
    for source in target.attrs.sources("check_files") {
        match source {
            Source::File(path) => add(format!("{CHECK_FILE}{path}"), ArtifactRef::Source(path.clone()))?,
            Source::Target(label) => {
                for (name, artifact) in planner.outputs_of(label)? {
                    add(format!("{CHECK_FILE}{name}"), artifact)?;
                }
            }
        }
    }
    Ok(inputs)
}

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
    #[serde(default, rename = "check_files")]
    _check_files: Vec<String>,
    #[serde(rename = "quantized")]
    _quantized: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Params {
    pub constraints: Vec<String>,
    pub checks: Vec<String>,
    pub check_timeout_s: u64,
}

/// `check.json`.
#[derive(Serialize, Deserialize)]
pub struct Report {
    pub platform: String,
    pub fits: bool,
    /// Why not, one line each.
    pub reasons: Vec<String>,
    /// What kind of misfit it is, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfit: Option<Misfit>,
    /// The numbers constraints can name.
    pub resources: Resources,
}

/// Why a model does not fit, for a search to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Misfit {
    /// Every reason is a limit of size: a memory, the layer count, a user's
    /// constraint. A smaller network of the same kind could fit.
    TooBig,
    /// Something the platform cannot run at all, or an external check's
    /// refusal.
    Incompatible,
}

/// One reason a model does not fit, and whether it is a matter of size.
struct Reason {
    message: String,
    size: bool,
}

impl Reason {
    fn size(message: String) -> Reason {
        Reason { message, size: true }
    }

    fn other(message: String) -> Reason {
        Reason { message, size: false }
    }
}

/// The ai8x rules that are limits of size rather than of structure.
fn is_size_rule(rule: kflow_ai8x::Rule) -> bool {
    use kflow_ai8x::Rule as R;
    matches!(
        rule,
        R::LayerCount | R::Channels | R::Passes | R::BiasMemory | R::KernelMemory | R::DataMemory
    )
}

impl Rule for CheckRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "check"
    }

    fn version(&self) -> u32 {
        7
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
        inputs.extend(check_file_inputs(target, planner)?);
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
                    Some(crate::quantize::quantized(cx)?)
                } else {
                    None
                };
                accelerator_resources(&model, quantized, device, &platform)?
            }
        };
        let constraints = platform.constraints.iter().chain(&params.constraints);
        // Without resources (a structure the platform cannot take) no
        // expression can be evaluated, and the reason is already given.
        for expression in constraints.filter(|_| !resources.is_empty()) {
            match kflow_platform::evaluate(expression, &resources) {
                Ok(true) => {}
                Ok(false) => reasons.push(Reason::size(format!("constraint `{expression}` does not hold"))),
                Err(e) => return Err(ActionError::new(e.to_string())),
            }
        }
        let input = serde_json::to_vec(&serde_json::json!({"model": model, "resources": resources}))
            .map_err(|e| ActionError::new(e.to_string()))?;
        let timeout = Duration::from_secs(params.check_timeout_s);
        let sandbox = check_sandbox(cx, &platform)?;
        for command in platform.checks.iter().chain(&params.checks) {
            let process = crate::cmd::sandboxed_sh(command, &sandbox);
            match kflow_platform::run_check(process, command, &input, timeout)
                .map_err(|e| ActionError::new(e.to_string()))?
            {
                ExternalVerdict::Accept => {}
                ExternalVerdict::Reject { code, message } => {
                    reasons.push(Reason::other(format!(
                        "check `{command}` rejected it (exit {code}): {message}"
                    )));
                }
            }
        }
        let misfit = match (reasons.is_empty(), reasons.iter().all(|r| r.size)) {
            (true, _) => None,
            (false, true) => Some(Misfit::TooBig),
            (false, false) => Some(Misfit::Incompatible),
        };
        let report = Report {
            platform: platform.name.clone(),
            fits: reasons.is_empty(),
            reasons: reasons.into_iter().map(|r| r.message).collect(),
            misfit,
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
) -> Result<(Vec<Reason>, Resources), ActionError> {
    let q = match quantized {
        Some(q) => q,
        None => {
            // Structure only: any weights of the right shapes will do.
            let weights = kflow_model::Weights::init(model, 0).map_err(|e| ActionError::new(e.to_string()))?;
            match kflow_quant::fuse(model, &weights) {
                Ok(fused) => kflow_quant::unquantized(&fused),
                // A layer the accelerator cannot run is a rejection.
                Err(e @ kflow_quant::QuantError::Unmappable { .. }) => {
                    return Ok((vec![Reason::other(e.to_string())], Resources::new()));
                }
                Err(e) => return Err(ActionError::new(e.to_string())),
            }
        }
    };
    let (layers, weights, input) = kflow_quant::to_ai8x(&q);
    let allocation = match kflow_ai8x::allocate(device, &layers) {
        Ok(a) => a,
        Err(e) => {
            let message = format!("allocation: {e}");
            let reason = match e {
                kflow_ai8x::AllocError::Unsupported { .. } => Reason::other(message),
                _ => Reason::size(message),
            };
            return Ok((vec![reason], Resources::new()));
        }
    };
    let network = allocation.to_network(&model.name, "kflow");
    let report = kflow_ai8x::check(device, &network, &weights, input);
    let mut reasons: Vec<Reason> = report
        .violations
        .iter()
        .map(|v| Reason {
            message: v.to_string(),
            size: is_size_rule(v.rule),
        })
        .collect();
    let mut resources = Resources::new();
    if let Some(r) = &report.resources {
        let timing = report.allocation.as_ref().map(kflow_ai8x::timing::accelerator);
        let flash_bytes = r.total_bytes + platform.firmware_flash_kb * 1024;
        if flash_bytes > platform.flash_kb * 1024 {
            reasons.push(Reason::size(format!(
                "flash: {} B of weights + {} KiB of firmware exceed {} KiB",
                r.total_bytes, platform.firmware_flash_kb, platform.flash_kb
            )));
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

/// The resource report of an int8 model run by the platform's CPU (with
/// the estimated latency of kflow's generated C when kflow has a model of
/// the core), and what does not fit.
fn cpu_resources(model: &Model, platform: &Platform) -> Result<(Vec<Reason>, Resources), ActionError> {
    let fit = kflow_platform::cpu_fit(model, platform).map_err(|e| ActionError::new(e.to_string()))?;
    let counts = kflow_model::counts(model).map_err(|e| ActionError::new(e.to_string()))?;
    let layers = counts.layers.iter().filter(|t| t.macs > 0).count();
    let mut resources: Resources = [
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
    // Only for a core kflow has a model of, so that `latency_us` never
    // stands for a guess.
    let latency = kflow_platform::software_latency_us(model, platform).map_err(|e| ActionError::new(e.to_string()))?;
    if let Some(us) = latency {
        resources.insert("latency_us".to_owned(), us);
    }
    Ok((fit.problems.into_iter().map(Reason::size).collect(), resources))
}

/// The directory external checks run in: the check files of the target and
/// of the platform, and nothing else, so that a verdict depends only on
/// what the key covers.
fn check_sandbox(cx: &ActionContext<'_>, platform: &Platform) -> Result<std::path::PathBuf, ActionError> {
    let dir = cx.work_dir().join("check-sandbox");
    let place = |name: &str| -> Result<std::path::PathBuf, ActionError> {
        let dest = dir.join(
            kflow_engine::relative_path(name).map_err(|why| ActionError::new(format!("check file `{name}` {why}")))?,
        );
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ActionError::new(format!("cannot create {}: {e}", parent.display())))?;
        }
        Ok(dest)
    };
    std::fs::create_dir_all(&dir).map_err(|e| ActionError::new(format!("cannot create {}: {e}", dir.display())))?;
    for (name, stored) in &platform.check_files {
        let digest = kflow_engine::Digest::from_hex(&stored.digest)
            .map_err(|e| ActionError::new(format!("platform check file `{name}`: {e}")))?;
        let bytes = cx.read_artifact(&kflow_engine::BlobRef {
            digest,
            size: stored.size,
        })?;
        let dest = place(name)?;
        std::fs::write(&dest, bytes).map_err(|e| ActionError::new(format!("cannot write {}: {e}", dest.display())))?;
    }
    for name in cx.inputs().keys() {
        if let Some(staged) = name.strip_prefix(CHECK_FILE) {
            cx.stage_input(name, &place(staged)?)?;
        }
    }
    Ok(dir)
}
