//! `ai8x_synthesize`: quantized layers placed on the accelerator: the ai8x
//! network YAML with every key explicit, the allocation, and the weights in
//! the `kflow ai8x` convention.

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use kflow_platform::Platform;
use kflow_quant::Quantized;
use serde::{Deserialize, Serialize};

use crate::generate::one_output;
use crate::json;
use crate::platform::PLATFORM;
use crate::quantize::{QUANT, QUANTIZED};

pub struct SynthesizeRule;

pub const NETWORK: &str = "network.yaml";
pub const ALLOCATION: &str = "allocation.json";

/// What the rules that read `allocation.json` take from it: the placement
/// (code generation) and the checker's resource report (the search's report).
#[derive(Deserialize)]
pub(crate) struct AllocationFile {
    pub allocation: kflow_ai8x::Allocation,
    pub resources: kflow_ai8x::Resources,
}
pub const WEIGHTS: &str = "weights.safetensors";

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required("quantized", AttrType::Label, "the `[[quantize]]` target to place"),
    AttrSpec::required("platform", AttrType::Label, "a `[[platform]]` with an accelerator"),
    AttrSpec::optional(
        "arch",
        AttrType::String,
        "the YAML's `arch` (default: the target's name)",
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "quantized")]
    _quantized: String,
    #[serde(rename = "platform")]
    _platform: String,
    arch: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Params {
    pub arch: String,
}

impl Rule for SynthesizeRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "ai8x_synthesize"
    }

    fn version(&self) -> u32 {
        5
    }

    /// Allocation and file generation on the model's files alone.
    fn remote(&self, _: &serde_json::Value) -> bool {
        true
    }

    fn summary(&self) -> &'static str {
        "places quantized layers on the MAX78000/MAX78002: ai8x network YAML, allocation, weights"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        let params = Params {
            arch: attrs.arch.unwrap_or_else(|| target.label.name().to_owned()),
        };
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&params)?,
            inputs: vec![
                (QUANT.to_owned(), one_output(planner, target, "quantized", QUANT)?),
                (
                    QUANTIZED.to_owned(),
                    one_output(planner, target, "quantized", QUANTIZED)?,
                ),
                (PLATFORM.to_owned(), one_output(planner, target, "platform", PLATFORM)?),
            ],
            outputs: [NETWORK, ALLOCATION, WEIGHTS].map(str::to_owned).to_vec(),
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let platform: Platform = json::input(cx, PLATFORM)?;
        let Some(device) = platform.accelerator else {
            return Err(ActionError::new(format!(
                "platform `{}` has no CNN accelerator to synthesize for",
                platform.name
            )));
        };
        let weights_file = json::input_bytes(cx, QUANTIZED)?;
        let q = Quantized::from_files(&json::input_bytes(cx, QUANT)?, &weights_file)
            .map_err(|e| ActionError::new(e.to_string()))?;
        let (layers, weights, input) = kflow_quant::to_ai8x(&q);
        let allocation =
            kflow_ai8x::allocate(device, &layers).map_err(|e| ActionError::new(format!("allocation: {e}")))?;
        let network = allocation.to_network(&params.arch, "kflow");
        // What is emitted must pass the checker on its own, as a user's
        // `kflow ai8x check` of these files would.
        let report = kflow_ai8x::check(device, &network, &weights, input);
        if !report.passed {
            let reasons: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
            return Ok(Outcome::Rejected {
                reason: reasons.join("; "),
            });
        }
        cx.write_output(NETWORK, kflow_ai8x::to_yaml(&network).as_bytes())?;
        cx.write_output(
            ALLOCATION,
            &json::pretty(&serde_json::json!({
                "input": input,
                "allocation": allocation,
                "resources": report.resources,
                "timing": kflow_ai8x::timing::accelerator(&allocation),
                "software_baseline": kflow_ai8x::timing::software_baseline(&allocation),
            }))?,
        )?;
        cx.write_output(WEIGHTS, &weights_file)?;
        Ok(Outcome::Done)
    }
}
