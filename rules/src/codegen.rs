//! `codegen`: Zephyr-ready C sources, the weight stream and a Zephyr
//! module for a synthesized network.

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use serde::Deserialize;

use crate::generate::one_output;
use crate::json;
use crate::synthesize::{ALLOCATION, WEIGHTS};

pub struct CodegenRule;

/// What the generator writes, always the same set.
pub const FILES: [&str; 8] = [
    "cnn_model.c",
    "cnn_model.h",
    "cnn_model_weights.h",
    "cnn_model.bin",
    // The register writes of cnn_model.c as data, for boards that
    // configure themselves from them (the simulated board).
    "cnn_model.regs",
    "zephyr/module.yml",
    "CMakeLists.txt",
    "Kconfig",
];

const ATTRS: &[AttrSpec] = &[AttrSpec::required(
    "synthesized",
    AttrType::Label,
    "the `[[ai8x_synthesize]]` target to generate code for",
)];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "synthesized")]
    _synthesized: String,
}

/// The part of `allocation.json` code generation reads.
#[derive(Deserialize)]
struct AllocationFile {
    allocation: kflow_ai8x::Allocation,
}

impl Rule for CodegenRule {
    fn name(&self) -> &'static str {
        "codegen"
    }

    fn version(&self) -> u32 {
        4
    }

    fn summary(&self) -> &'static str {
        "C sources (cnn_model.c/.h), the weight stream (cnn_model.bin) and a Zephyr module for a synthesized network"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let _: Attrs = planner.attrs_as()?;
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: serde_json::Value::Null,
            inputs: vec![
                (
                    ALLOCATION.to_owned(),
                    one_output(planner, target, "synthesized", ALLOCATION)?,
                ),
                (WEIGHTS.to_owned(), one_output(planner, target, "synthesized", WEIGHTS)?),
            ],
            outputs: FILES.map(str::to_owned).to_vec(),
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let file: AllocationFile = json::input(cx, ALLOCATION)?;
        let values = kflow_ai8x::int8_values(&json::input_bytes(cx, WEIGHTS)?)
            .map_err(|e| ActionError::new(format!("input `{WEIGHTS}`: {e}")))?;
        let program =
            kflow_ai8x::codegen::program(&file.allocation, &values).map_err(|e| ActionError::new(e.to_string()))?;
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
            generated.files.get("cnn_model.bin").map_or(0, Vec::len)
        ));
        Ok(Outcome::Done)
    }
}
