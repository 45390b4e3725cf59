//! `report`: the report of an AutoML search (`kflow-report`): plots,
//! `report.html`, `report.md` and `report.json`. The `automl` rule runs it
//! as its last child; a `[[report]]` target makes it for a search by label.

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use serde::{Deserialize, Serialize};

use crate::automl::{CANDIDATES, SUMMARY};
use crate::generate::one_output;
use crate::json;

pub struct ReportRule;

const ATTRS: &[AttrSpec] = &[AttrSpec::required(
    "search",
    AttrType::Label,
    "the `[[automl]]` target to report on",
)];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "search")]
    _search: String,
}

/// The search's target, as the report names it (and the command that
/// rebuilds it), and how many kept models' files it may be given
/// (`kept-<slot>-metrics.json`, `kept-<slot>-allocation.json`).
#[derive(Serialize, Deserialize)]
pub struct Params {
    pub target: String,
    #[serde(default)]
    pub kept: usize,
}

/// The kept models' files the report reads.
pub const KEPT_FILES: [&str; 2] = [METRICS, ALLOCATION];
const METRICS: &str = "metrics.json";
const ALLOCATION: &str = "allocation.json";

impl Rule for ReportRule {
    fn name(&self) -> &'static str {
        "report"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "the report of an AutoML search: plots, a self-contained HTML page, Markdown and the numbers behind them"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let _: Attrs = planner.attrs_as()?;
        let search = target
            .attrs
            .labels("search")
            .into_iter()
            .next()
            .map(ToString::to_string)
            .ok_or_else(|| planner.error("search", "`search` is required"))?;
        let inputs = vec![
            (SUMMARY.to_owned(), one_output(planner, target, "search", SUMMARY)?),
            (
                CANDIDATES.to_owned(),
                one_output(planner, target, "search", CANDIDATES)?,
            ),
        ];
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&Params {
                target: search,
                kept: 0,
            })?,
            inputs,
            outputs: kflow_report::files(0),
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let summary = json::input_bytes(cx, SUMMARY)?;
        let candidates = json::input_bytes(cx, CANDIDATES)?;
        let details = (1..=params.kept)
            .map(|slot| detail(cx, slot))
            .collect::<Result<Vec<_>, _>>()?;
        let report = kflow_report::render(&params.target, &summary, &candidates, &details)
            .map_err(|e| ActionError::new(e.to_string()))?;
        for (name, bytes) in &report.files {
            cx.write_output(name, bytes)?;
        }
        Ok(Outcome::Done)
    }
}

/// The input of the `slot`-th kept model's `file`.
pub fn kept_input(slot: usize, file: &str) -> String {
    format!("kept-{slot}-{file}")
}

fn detail(cx: &ActionContext<'_>, slot: usize) -> Result<kflow_report::KeptDetail, ActionError> {
    let read = |file: &str| -> Result<Option<serde_json::Value>, ActionError> {
        let name = kept_input(slot, file);
        match cx.inputs().contains_key(&name) {
            true => json::input(cx, &name).map(Some),
            false => Ok(None),
        }
    };
    Ok(kflow_report::KeptDetail {
        metrics: read(METRICS)?,
        resources: read(ALLOCATION)?.as_ref().and_then(resource_use),
    })
}

/// A placement (`allocation.json`) against its device's memories.
fn resource_use(allocation: &serde_json::Value) -> Option<kflow_report::ResourceUse> {
    let r = allocation.get("resources")?;
    let device: kflow_ai8x::Device = allocation.pointer("/allocation/device")?.as_str()?.parse().ok()?;
    let numbers = |v: &serde_json::Value| -> Option<Vec<u32>> { serde_json::from_value(v.clone()).ok() };
    let names: Vec<String> = allocation
        .pointer("/allocation/layers")?
        .as_array()?
        .iter()
        .map(|l| {
            l.pointer("/layer/name")
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let shape = |v: Option<&serde_json::Value>| -> [u32; 3] {
        let dim = |k: &str| {
            v.and_then(|v| v.get(k))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0) as u32
        };
        [dim("channels"), dim("height"), dim("width")]
    };
    let count = |l: &serde_json::Value, k: &str| l.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let layers = r
        .get("per_layer")?
        .as_array()?
        .iter()
        .enumerate()
        .map(|(i, l)| kflow_report::LayerUse {
            name: names.get(i).cloned().unwrap_or_default(),
            op: l.get("op").and_then(|o| o.as_str()).unwrap_or("").to_owned(),
            input: shape(l.get("input")),
            output: shape(l.get("output")),
            processors: count(l, "processors") as u32,
            kernel_columns: l
                .pointer("/kernel/columns")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0) as u32,
            weight_bytes: count(l, "weight_bytes"),
            bias_bytes: count(l, "bias_bytes"),
            macs: count(l, "macs"),
            data_bytes: count(l, "in_bytes") + count(l, "out_bytes"),
        })
        .collect();
    let kernel_columns = numbers(r.get("kernel_columns_per_processor")?)?;
    Some(kflow_report::ResourceUse {
        device: format!("{device:?}").to_ascii_uppercase(),
        kernel_columns_limit: (0..kernel_columns.len()).map(|p| device.weight_columns(p)).collect(),
        kernel_columns,
        bias_bytes: numbers(r.get("bias_bytes_per_quadrant")?)?,
        bias_bytes_limit: device.bias_bytes_per_quadrant(),
        data_bytes_limit: device.data_instance_bytes(),
        layers,
    })
}
