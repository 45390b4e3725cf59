//! `[[model]]`: a hand-written network in the model IR, checked when the
//! graph is loaded (shapes, names, the task's output), and its seeded
//! initial weights. The same outputs as `generate`, so either feeds `train`.

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use kflow_model::{FORMAT, Layer, Model, Task, Weights};
use serde::{Deserialize, Serialize};

use crate::json;

pub struct ModelRule;

pub const MODEL: &str = "model.json";
pub const INIT: &str = "init.safetensors";

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required(
        "input",
        AttrType::IntList,
        "per-sample input shape, channels first: [C, L] or [C, H, W]",
    ),
    AttrSpec::required(
        "task",
        AttrType::Table,
        "`{ kind = \"classifier\", classes = 2 }` or `{ kind = \"autoencoder\" }`",
    ),
    AttrSpec::required(
        "layers",
        AttrType::Any,
        "the layers, as IR tables (`{ name = \"c0\", op = \"conv1d\", out_channels = 16, ... }`)",
    ),
    AttrSpec::optional("seed", AttrType::Int, "seed of the initial weights (default 0)"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    input: Vec<usize>,
    task: Task,
    layers: Vec<Layer>,
    #[serde(default)]
    seed: u64,
}

/// A model and the seed of its initial weights.
#[derive(Serialize, Deserialize)]
pub struct Params {
    pub model: Model,
    pub seed: u64,
}

impl Rule for ModelRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "model"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "a hand-written network (model IR) and its seeded initial weights"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        let model = Model {
            format: FORMAT.to_owned(),
            name: target.label.name().to_owned(),
            task: attrs.task,
            input: attrs.input,
            layers: attrs.layers,
        };
        kflow_model::infer_shapes(&model).map_err(|e| planner.error("layers", e.to_string()))?;
        plan_model(
            planner,
            self.name(),
            &Params {
                model,
                seed: attrs.seed,
            },
        )
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        write_model(cx, &params.model, params.seed)?;
        Ok(Outcome::Done)
    }
}

/// Plans the one action that writes a model and its initial weights, and
/// exposes both.
fn plan_model(planner: &mut Planner<'_>, rule: &str, params: &Params) -> Result<(), Diagnostic> {
    let outputs = vec![MODEL.to_owned(), INIT.to_owned()];
    planner.add_final_action(ActionDecl {
        name: String::new(),
        rule: rule.to_owned(),
        params: json::to_value(params)?,
        inputs: Vec::new(),
        outputs,
    });
    Ok(())
}

/// Writes `model.json` and `init.safetensors`.
pub fn write_model(cx: &ActionContext<'_>, model: &Model, seed: u64) -> Result<(), ActionError> {
    let err = |e: kflow_model::ModelError| ActionError::new(format!("model `{}`: {e}", model.name));
    let text = model.to_json_pretty().map_err(err)?;
    cx.write_output(MODEL, text.as_bytes())?;
    let weights = Weights::init(model, seed).map_err(err)?;
    cx.write_output(INIT, &weights.to_safetensors().map_err(err)?)?;
    Ok(())
}
