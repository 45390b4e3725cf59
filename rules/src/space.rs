//! `[[space]]`: a declarative search space. It is checked when the graph is
//! loaded (a bad range or an unsupported kernel is a graph error at its
//! attribute), and its one action writes `space.json`, so that changing a
//! space invalidates exactly what was generated from it.

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use kflow_search::Space;

use crate::json;

pub struct SpaceRule;

pub const OUTPUT: &str = "space.json";

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required(
        "family",
        AttrType::String,
        "`cnn` (classifiers), `autoencoder` or `forecaster` (one-step predictors)",
    ),
    AttrSpec::optional("blocks", AttrType::Table, "`{ min, max }` convolution blocks"),
    AttrSpec::optional("conv", AttrType::StringList, "cnn: `conv1d` and/or `conv2d`"),
    AttrSpec::optional("filters", AttrType::IntList, "output channels a block may have"),
    AttrSpec::optional(
        "kernel",
        AttrType::IntList,
        "kernel sizes: 1 and/or 3 (forecaster: 1..=9)",
    ),
    AttrSpec::optional("padding", AttrType::IntList, "cnn: paddings, 0..=2"),
    AttrSpec::optional("pool", AttrType::StringList, "cnn: `none`, `max`, `avg`"),
    AttrSpec::optional("activation", AttrType::StringList, "`none`, `relu`, `abs`"),
    AttrSpec::optional("batchnorm", AttrType::BoolList, "with and/or without batch norm"),
    AttrSpec::optional(
        "linear_layers",
        AttrType::Table,
        "cnn: `{ min, max }` hidden linear layers, 0..=3",
    ),
    AttrSpec::optional("linear_units", AttrType::IntList, "cnn: widths of hidden linear layers"),
    AttrSpec::optional(
        "classes",
        AttrType::Int,
        "cnn: output classes (2 for anomaly detection)",
    ),
    AttrSpec::optional("bottleneck", AttrType::IntList, "autoencoder: bottleneck channels"),
    AttrSpec::optional(
        "out_kernel",
        AttrType::IntList,
        "forecaster: kernel sizes of the output convolution",
    ),
    AttrSpec::optional(
        "predict",
        AttrType::StringList,
        "forecaster: `telemetry` (the channels after the exogenous ones) and/or `all`",
    ),
    AttrSpec::optional(
        "exogenous",
        AttrType::Int,
        "forecaster: leading channels that are inputs only (default 7, CATS' commands and stimuli)",
    ),
];

impl Rule for SpaceRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "space"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "a search space of networks (CNN classifiers, autoencoders or forecasters)"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let space: Space = planner.attrs_as()?;
        space
            .validate()
            .map_err(|e| planner.error(&e.field, format!("space `{}`: {e}", target.label)))?;
        let action = planner.add_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&space)?,
            inputs: Vec::new(),
            outputs: vec![OUTPUT.to_owned()],
        });
        let out = planner.output_of(action, OUTPUT);
        planner.expose(OUTPUT, out);
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let space: Space = cx.params_as()?;
        cx.write_output(OUTPUT, &json::pretty(&space)?)?;
        Ok(Outcome::Done)
    }
}
