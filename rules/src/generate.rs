//! `generate`: one candidate of a search space, as a pure function of the
//! space, the dataset's sample shape, the seed and the candidate's index
//! (and, for evolution, the history of results). Writes the model IR, its
//! seeded initial weights and the genome it came from.

use kflow_data::DatasetMeta;
use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use kflow_search::{Evaluated, Evolution, Genome, Space};
use serde::{Deserialize, Serialize};

use crate::json;
use crate::model::{INIT, MODEL, write_model};

pub struct GenerateRule;

pub const GENOME: &str = "genome.json";
/// Inputs of a generate action.
pub const SPACE_INPUT: &str = "space.json";
pub const META_INPUT: &str = "meta.json";
pub const HISTORY_INPUT: &str = "history.json";

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required("space", AttrType::Label, "the `[[space]]` to draw from"),
    AttrSpec::required(
        "dataset",
        AttrType::Label,
        "the `[[dataset]]` whose windows the model reads",
    ),
    AttrSpec::optional("index", AttrType::Int, "which candidate (default 0)"),
    AttrSpec::optional("seed", AttrType::Int, "the search's seed (default 0)"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "space")]
    _space: String,
    #[serde(rename = "dataset")]
    _dataset: String,
    #[serde(default)]
    index: u64,
    #[serde(default)]
    seed: u64,
}

/// How the candidate is chosen.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Strategy {
    Random,
    /// Reads the history (`history.json`: evaluated genomes, oldest first).
    Evolution(Evolution),
    /// Point `index` of the grid of the spaces, one after another.
    Grid,
}

/// What `space.json` holds: one space (the `space` rule's output), or
/// several searched together.
#[derive(Deserialize)]
#[serde(untagged)]
enum Spaces {
    One(Box<Space>),
    Many(Vec<Space>),
}

impl Spaces {
    fn into_vec(self) -> Vec<Space> {
        match self {
            Spaces::One(space) => vec![*space],
            Spaces::Many(spaces) => spaces,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct Params {
    pub strategy: Strategy,
    pub index: u64,
    pub seed: u64,
    /// The model's name (`cand-17`).
    pub name: String,
}

impl Rule for GenerateRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "generate"
    }

    fn version(&self) -> u32 {
        2
    }

    fn summary(&self) -> &'static str {
        "one candidate network of a search space, with its seeded initial weights"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        let space = one_output(planner, target, "space", SPACE_INPUT)?;
        let meta = one_output(planner, target, "dataset", META_INPUT)?;
        let params = Params {
            strategy: Strategy::Random,
            index: attrs.index,
            seed: attrs.seed,
            name: target.label.name().to_owned(),
        };
        let outputs: Vec<String> = [MODEL, INIT, GENOME].map(str::to_owned).to_vec();
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&params)?,
            inputs: vec![(SPACE_INPUT.to_owned(), space), (META_INPUT.to_owned(), meta)],
            outputs,
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let spaces = json::input::<Spaces>(cx, SPACE_INPUT)?.into_vec();
        if spaces.is_empty() {
            return Err(ActionError::new("no search space to draw from"));
        }
        let input = sample_shape(&json::input(cx, META_INPUT)?);
        let genome = match params.strategy {
            Strategy::Random => kflow_search::random(&spaces, &input, params.seed, params.index),
            Strategy::Evolution(evolution) => {
                let history: Vec<Evaluated> = json::input(cx, HISTORY_INPUT)?;
                kflow_search::evolve(&spaces, &input, &history, evolution, params.seed, params.index)
            }
            Strategy::Grid => {
                kflow_search::grid::point(&spaces, &input, u128::from(params.index)).ok_or_else(|| {
                    ActionError::new(format!(
                        "the grid has {} points; there is no point {}",
                        kflow_search::grid::total_size(&spaces),
                        params.index
                    ))
                })?
            }
        };
        let model = genome.to_model(&params.name, &input);
        // Each candidate's weights start from their own stream.
        write_model(cx, &model, params.seed ^ params.index.rotate_left(32))?;
        cx.write_output(GENOME, &json::pretty::<Genome>(&genome)?)?;
        Ok(Outcome::Done)
    }
}

/// A dataset's per-sample shape, `[channels, window]`.
pub fn sample_shape(meta: &DatasetMeta) -> Vec<usize> {
    vec![meta.channels.len(), meta.window]
}

/// The output named `name` of the target in attribute `attr`.
pub fn one_output(
    planner: &Planner<'_>,
    target: &Target,
    attr: &str,
    name: &str,
) -> Result<kflow_engine::ArtifactRef, Diagnostic> {
    let label = target
        .attrs
        .labels(attr)
        .into_iter()
        .next()
        .cloned()
        .ok_or_else(|| planner.error(attr, format!("`{attr}` is required")))?;
    planner
        .outputs_of(&label)?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| a)
        .ok_or_else(|| {
            planner.error(
                attr,
                format!("`{label}` has no output `{name}`; is it the right kind of target?"),
            )
        })
}
