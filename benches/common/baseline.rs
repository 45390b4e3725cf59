//! The repository's baseline CNN (`graphs/host/BUILD.toml`, `[[model]]
//! baseline_cnn`), read from its graph file as the `model` rule reads it.

use kflow_model::{FORMAT, Layer, Model, Task};
use serde::Deserialize;

pub const GRAPH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/graphs/host/BUILD.toml");
pub const MODEL: &str = "baseline_cnn";

/// The `[[model]]` tables of a graph file; the other rules' tables are ignored.
#[derive(Deserialize)]
struct GraphFile {
    #[serde(default)]
    model: Vec<ModelTable>,
}

#[derive(Deserialize)]
struct ModelTable {
    name: String,
    input: Vec<usize>,
    task: Task,
    layers: Vec<Layer>,
    #[serde(default)]
    seed: u64,
}

/// The baseline CNN as the `model` rule builds it, and its weights' seed.
pub fn baseline_model() -> Result<(Model, u64), String> {
    let text = std::fs::read_to_string(GRAPH).map_err(|e| format!("cannot read {GRAPH}: {e}"))?;
    let graph: GraphFile = toml::from_str(&text).map_err(|e| format!("{GRAPH}: {e}"))?;
    let table = graph
        .model
        .into_iter()
        .find(|m| m.name == MODEL)
        .ok_or_else(|| format!("{GRAPH} has no [[model]] named `{MODEL}`"))?;
    let model = Model {
        format: FORMAT.to_owned(),
        name: table.name,
        task: table.task,
        input: table.input,
        layers: table.layers,
    };
    kflow_model::infer_shapes(&model).map_err(|e| format!("{MODEL}: {e}"))?;
    Ok((model, table.seed))
}
