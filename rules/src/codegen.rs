//! `codegen`: Zephyr-ready C sources, the weight stream and a Zephyr
//! module for a synthesized network.

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use serde::{Deserialize, Serialize};

use crate::generate::one_output;
use crate::json;
use crate::quantize::{QUANT, QUANTIZED};
use crate::synthesize::{ALLOCATION, AllocationFile, WEIGHTS};

pub struct CodegenRule;

/// The weight stream and the register writes of the generated code: what
/// a board is flashed with.
pub const BIN: &str = "cnn_model.bin";
pub const REGS: &str = "cnn_model.regs";

/// What the generator writes, always the same set.
pub const FILES: [&str; 8] = [
    "cnn_model.c",
    "cnn_model.h",
    "cnn_model_weights.h",
    BIN,
    // The register writes of cnn_model.c as data, for boards that
    // configure themselves from them (the simulated board).
    REGS,
    "zephyr/module.yml",
    "CMakeLists.txt",
    "Kconfig",
];

const ATTRS: &[AttrSpec] = &[
    AttrSpec::optional(
        "synthesized",
        AttrType::Label,
        "the `[[ai8x_synthesize]]` target to generate accelerator code for",
    ),
    AttrSpec::optional(
        "quantized",
        AttrType::Label,
        "instead, a `[[quantize]]` target: C99 inference for a Cortex-M without an accelerator (`model.c`, `model.h`, and its weights `model.bin`)",
    ),
];

/// What the C inference for a CPU-only target writes.
pub const CPU_FILES: [&str; 3] = [
    kflow_cm_codegen::MODEL_C,
    kflow_cm_codegen::MODEL_H,
    kflow_cm_codegen::MODEL_BIN,
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "synthesized")]
    _synthesized: Option<String>,
    #[serde(rename = "quantized")]
    _quantized: Option<String>,
}

/// The params of C inference for a CPU-only target (an accelerator's
/// code has none, as before there was a choice).
#[derive(Serialize, Deserialize)]
pub(crate) struct CpuParams {
    pub cpu: bool,
}

impl Rule for CodegenRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "codegen"
    }

    fn version(&self) -> u32 {
        4
    }

    /// Code generation on the synthesized files alone.
    fn remote(&self, _: &serde_json::Value) -> bool {
        true
    }

    fn summary(&self) -> &'static str {
        "C for the device: the accelerator's driver, weights and Zephyr module for a synthesized network, or C99 inference of a quantized one for a Cortex-M without an accelerator"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let _: Attrs = planner.attrs_as()?;
        let given = |attr: &str| !target.attrs.labels(attr).is_empty();
        let (params, inputs, outputs) = match (given("synthesized"), given("quantized")) {
            (true, false) => (
                serde_json::Value::Null,
                vec![
                    (
                        ALLOCATION.to_owned(),
                        one_output(planner, target, "synthesized", ALLOCATION)?,
                    ),
                    (WEIGHTS.to_owned(), one_output(planner, target, "synthesized", WEIGHTS)?),
                ],
                FILES.map(str::to_owned).to_vec(),
            ),
            (false, true) => (
                json::to_value(&CpuParams { cpu: true })?,
                vec![
                    (QUANT.to_owned(), one_output(planner, target, "quantized", QUANT)?),
                    (
                        QUANTIZED.to_owned(),
                        one_output(planner, target, "quantized", QUANTIZED)?,
                    ),
                ],
                CPU_FILES.map(str::to_owned).to_vec(),
            ),
            _ => {
                return Err(planner.error(
                    "synthesized",
                    "`codegen` takes `synthesized` (code for the accelerator) or `quantized` (C inference for a Cortex-M without one), not both or neither",
                ));
            }
        };
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params,
            inputs,
            outputs,
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        if !cx.params().is_null() {
            return cpu_inference(cx);
        }
        let program = program(cx)?;
        let generated = kflow_ai8x_codegen::generate(&program).map_err(|e| ActionError::new(e.to_string()))?;
        for name in FILES {
            let bytes = generated
                .files
                .get(name)
                .ok_or_else(|| ActionError::new(format!("the generator wrote no `{name}`")))?;
            cx.write_output(name, bytes)?;
        }
        cx.progress(&format!(
            "{} layers, cnn_model.bin {} bytes",
            program.layers.len(),
            generated.files.get(BIN).map_or(0, Vec::len)
        ));
        Ok(Outcome::Done)
    }
}

/// The program of a synthesized network (inputs `allocation.json` and
/// `weights.safetensors`): what the accelerator's code is generated from,
/// and what a host needs to talk to a board running that code.
pub(crate) fn program(cx: &ActionContext<'_>) -> Result<kflow_ai8x_codegen::Program, ActionError> {
    let file: AllocationFile = json::input(cx, ALLOCATION)?;
    let values = kflow_ai8x::int8_values(&json::input_bytes(cx, WEIGHTS)?)
        .map_err(|e| ActionError::new(format!("input `{WEIGHTS}`: {e}")))?;
    kflow_ai8x::codegen::program(&file.allocation, &values).map_err(|e| ActionError::new(e.to_string()))
}

/// The quantized network as self-contained C99 for a Cortex-M without an
/// accelerator, computing what the simulator computes.
fn cpu_inference(cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
    let q = crate::quantize::quantized(cx)?;
    // The integer semantics are the accelerator's on either device; the
    // MAX78002's limits are the wider.
    let (net, weights) = kflow_quant::to_sim(&q, kflow_ai8x::Device::Max78002);
    let generated = kflow_cm_codegen::generate(&net, &weights, kflow_ai8x_sim::SimOptions::default())
        .map_err(|e| ActionError::new(e.to_string()))?;
    for (name, bytes) in generated.files() {
        cx.write_output(&name, &bytes)?;
    }
    cx.progress(&format!(
        "{} layers: {} bytes of weights and biases, a {}-byte arena",
        net.layers.len(),
        generated.constant_bytes,
        generated.arena_bytes
    ));
    Ok(Outcome::Done)
}
