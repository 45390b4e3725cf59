//! `[[dataset]]`: windows of a CATS-format time series, split into train,
//! validation and test, normalized with statistics of the training split.
//!
//! The rows come from a CSV file (the real CATS `data.csv`, or any file in
//! its format) or from the CATS-like generator. Generated rows are an action
//! of their own (`<label>/rows`, writing `data.csv` and `segments.json`), so
//! that changing only the window parameters re-windows without generating
//! again, and changing the generator's seed reruns everything downstream.

use kflow_data::{CsvFile, DatasetMeta, GeneratorParams, Segment, WindowParams};
use kflow_engine::{
    ActionContext, ActionDecl, ActionError, ArtifactRef, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule,
    Source, Target,
};
use serde::{Deserialize, Serialize};

use crate::json;

pub struct DatasetRule;

pub const TRAIN: &str = "train.safetensors";
pub const VAL: &str = "val.safetensors";
pub const TEST: &str = "test.safetensors";
pub const META: &str = "meta.json";
const ROWS: &str = "data.csv";
const SEGMENTS: &str = "segments.json";

const ATTRS: &[AttrSpec] = &[
    AttrSpec::optional(
        "csv",
        AttrType::Sources,
        "a CATS-format CSV (a package file or a target's output); or `generator`",
    ),
    AttrSpec::optional(
        "generator",
        AttrType::Table,
        "generate CATS-like rows: `{ rows, seed, anomaly_fraction, nominal_fraction }`",
    ),
    AttrSpec::optional("window", AttrType::Int, "window length in rows (default 16)"),
    AttrSpec::optional("stride", AttrType::Int, "rows between window starts (default 4)"),
    AttrSpec::optional(
        "label",
        AttrType::String,
        "`any` anomalous row in the window (default), or `last` row",
    ),
    AttrSpec::optional(
        "scale",
        AttrType::Float,
        "values become (x - mean) / (scale * std) (default 3)",
    ),
    AttrSpec::optional(
        "int8_grid",
        AttrType::Bool,
        "round values to the accelerators' int8 input grid, as a device receives them (default true)",
    ),
    AttrSpec::optional(
        "split",
        AttrType::Table,
        "`{ train, val, test, seed, block }`: fractions, seed and block size (windows) of the stratified split",
    ),
    AttrSpec::optional("skip_rows", AttrType::Int, "rows to skip at the start"),
    AttrSpec::optional(
        "max_rows",
        AttrType::Int,
        "rows to read at most (bounds time and memory)",
    ),
];

/// The attributes, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(default, rename = "csv")]
    _csv: Vec<String>,
    generator: Option<GeneratorParams>,
    window: Option<usize>,
    stride: Option<usize>,
    label: Option<String>,
    scale: Option<f32>,
    int8_grid: Option<bool>,
    split: Option<SplitAttrs>,
    skip_rows: Option<u64>,
    max_rows: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitAttrs {
    train: Option<f64>,
    val: Option<f64>,
    test: Option<f64>,
    seed: Option<u64>,
    block: Option<usize>,
}

/// One action's params: generating rows, or windowing them.
#[derive(Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
enum Params {
    Rows { generator: GeneratorParams },
    Windows { windows: WindowParams },
}

impl Rule for DatasetRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "dataset"
    }

    fn version(&self) -> u32 {
        2
    }

    /// Generating or reading a dataset is pure work on its inputs.
    fn remote(&self, _: &serde_json::Value) -> bool {
        true
    }

    fn summary(&self) -> &'static str {
        "train/val/test windows of a CATS-format time series (a CSV file or generated)"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        let windows = window_params(&attrs).map_err(|(attr, message)| planner.error(attr, message))?;
        let (rows, segments) = match (target.attrs.sources("csv").as_slice(), attrs.generator) {
            ([], Some(generator)) => {
                let rows = planner.add_action(ActionDecl {
                    name: "rows".to_owned(),
                    rule: self.name().to_owned(),
                    params: json::to_value(&Params::Rows { generator })?,
                    inputs: Vec::new(),
                    outputs: vec![ROWS.to_owned(), SEGMENTS.to_owned()],
                });
                (planner.output_of(rows, ROWS), Some(planner.output_of(rows, SEGMENTS)))
            }
            ([Source::File(path)], None) => (ArtifactRef::Source(path.clone()), None),
            ([Source::Target(label)], None) => {
                let outputs = planner.outputs_of(label)?;
                match outputs.as_slice() {
                    [(_, artifact)] => (artifact.clone(), None),
                    _ => {
                        return Err(planner.error(
                            "csv",
                            format!(
                                "`{label}` has {} outputs; `csv` needs a target with exactly one",
                                outputs.len()
                            ),
                        ));
                    }
                }
            }
            ([], None) => {
                return Err(planner.error("name", "a dataset needs `csv` (a file) or `generator` (its parameters)"));
            }
            (_, None) => return Err(planner.error("csv", "`csv` names one file")),
            (_, Some(_)) => return Err(planner.error("generator", "give `csv` or `generator`, not both")),
        };
        let mut inputs = vec![(ROWS.to_owned(), rows)];
        inputs.extend(segments.map(|s| (SEGMENTS.to_owned(), s)));
        let outputs: Vec<String> = [TRAIN, VAL, TEST, META].map(str::to_owned).to_vec();
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&Params::Windows { windows })?,
            inputs,
            outputs,
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        match cx.params_as::<Params>()? {
            Params::Rows { generator } => generate(cx, &generator),
            Params::Windows { windows } => window(cx, &windows),
        }
    }
}

/// The windowing parameters, or the attribute that is wrong and why.
fn window_params(attrs: &Attrs) -> Result<WindowParams, (&'static str, String)> {
    let mut p = WindowParams::default();
    if let Some(w) = attrs.window {
        p.length = w;
    }
    if let Some(s) = attrs.stride {
        p.stride = s;
    }
    if let Some(label) = &attrs.label {
        p.label = serde_json::from_value(serde_json::Value::String(label.clone()))
            .map_err(|_| ("label", format!("`label` is `any` or `last`, not `{label}`")))?;
    }
    if let Some(scale) = attrs.scale {
        p.scale = scale;
    }
    p.int8_grid = attrs.int8_grid.unwrap_or(p.int8_grid);
    if let Some(split) = &attrs.split {
        let [train, val, test] = &mut p.fractions;
        *train = split.train.unwrap_or(*train);
        *val = split.val.unwrap_or(*val);
        *test = split.test.unwrap_or(*test);
        p.seed = split.seed.unwrap_or(p.seed);
        p.block = split.block.unwrap_or(p.block);
    }
    p.skip_rows = attrs.skip_rows.unwrap_or(p.skip_rows);
    p.max_rows = attrs.max_rows.or(p.max_rows);
    if p.length == 0 || p.stride == 0 {
        return Err(("window", "`window` and `stride` must be at least 1".to_owned()));
    }
    let sum: f64 = p.fractions.iter().sum();
    if p.fractions.iter().any(|f| !(0.0..=1.0).contains(f)) || (sum - 1.0).abs() > 1e-9 {
        return Err((
            "split",
            format!("split fractions must be in 0..=1 and add up to 1, found {sum}"),
        ));
    }
    Ok(p)
}

fn generate(cx: &ActionContext<'_>, params: &GeneratorParams) -> Result<Outcome, ActionError> {
    let path = cx.output_path(ROWS);
    let file = std::fs::File::create(&path).map_err(|e| ActionError::new(format!("cannot create {ROWS}: {e}")))?;
    let mut out = std::io::BufWriter::new(file);
    let meta = kflow_data::generate(params, &mut out).map_err(|e| ActionError::new(e.to_string()))?;
    std::io::Write::flush(&mut out).map_err(|e| ActionError::new(format!("cannot write {ROWS}: {e}")))?;
    cx.progress(&format!("{} rows, {} anomalous", meta.rows, meta.anomalous_rows));
    cx.write_output(SEGMENTS, &json::pretty(&meta.segments)?)?;
    Ok(Outcome::Done)
}

fn window(cx: &ActionContext<'_>, params: &WindowParams) -> Result<Outcome, ActionError> {
    let rows = cx.input(ROWS)?;
    // Errors in the store's copy of a source file name the file the user wrote.
    let mut source = CsvFile::named(&rows.path, rows.source.as_ref().unwrap_or(&rows.path));
    let mut dataset = kflow_data::build_dataset(&mut source, params).map_err(|e| ActionError::new(e.to_string()))?;
    if cx.inputs().contains_key(SEGMENTS) {
        let segments: Vec<Segment> = json::input(cx, SEGMENTS)?;
        dataset.meta.anomaly_segments = Some(segments);
    }
    // The source path is where the store keeps the blob: not a fact about
    // the data, and different on every machine.
    dataset.meta.source = "rows".to_owned();
    let meta: &DatasetMeta = &dataset.meta;
    let c = &meta.counts;
    cx.progress(&format!(
        "{} windows: train {}+{}, val {}+{}, test {}+{} (nominal+anomalous)",
        meta.windows,
        c.train.negative,
        c.train.positive,
        c.val.negative,
        c.val.positive,
        c.test.negative,
        c.test.positive
    ));
    for (name, split) in [(TRAIN, &dataset.train), (VAL, &dataset.val), (TEST, &dataset.test)] {
        cx.write_output(
            name,
            &split.to_safetensors().map_err(|e| ActionError::new(e.to_string()))?,
        )?;
    }
    let meta_json = dataset.meta.to_json().map_err(|e| ActionError::new(e.to_string()))?;
    cx.write_output(META, meta_json.as_bytes())?;
    Ok(Outcome::Done)
}
