//! `report`: the report of an AutoML search (`kflow-report`): plots,
//! `report.html`, `report.md` and `report.json`. The `automl` rule runs it
//! as its last child; a `[[report]]` target makes it for a search by label.

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use serde::{Deserialize, Serialize};

use crate::automl::{CANDIDATES, SUMMARY};
use crate::evaluate::METRICS;
use crate::generate::one_output;
use crate::json;
use crate::synthesize::{ALLOCATION, AllocationFile};

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

impl Rule for ReportRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "report"
    }

    fn version(&self) -> u32 {
        2
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
    let present = |file: &str| cx.inputs().contains_key(&kept_input(slot, file));
    let metrics = match present(METRICS) {
        true => Some(json::input(cx, &kept_input(slot, METRICS))?),
        false => None,
    };
    let resources = match present(ALLOCATION) {
        true => Some(resource_use(&json::input(cx, &kept_input(slot, ALLOCATION))?)),
        false => None,
    };
    Ok(kflow_report::KeptDetail { metrics, resources })
}

/// A placement (`allocation.json`) against its device's memories.
fn resource_use(file: &AllocationFile) -> kflow_report::ResourceUse {
    let device = file.allocation.device;
    let shape = |s: &kflow_ai8x::Shape| [s.channels, s.height, s.width];
    let layers = file
        .resources
        .per_layer
        .iter()
        .zip(&file.allocation.layers)
        .map(|(l, placed)| kflow_report::LayerUse {
            name: placed.layer.name.clone().unwrap_or_default(),
            op: l.op.clone(),
            input: shape(&l.input),
            output: shape(&l.output),
            processors: l.processors,
            kernel_columns: l.kernel.as_ref().map_or(0, |k| k.columns),
            weight_bytes: l.weight_bytes,
            bias_bytes: l.bias_bytes,
            macs: l.macs,
            data_bytes: l.in_bytes + l.out_bytes,
        })
        .collect();
    let kernel_columns = file.resources.kernel_columns_per_processor.clone();
    kflow_report::ResourceUse {
        device: device.to_string().to_ascii_uppercase(),
        kernel_columns_limit: (0..kernel_columns.len()).map(|p| device.weight_columns(p)).collect(),
        kernel_columns,
        bias_bytes: file.resources.bias_bytes_per_quadrant.clone(),
        bias_bytes_limit: device.bias_bytes_per_quadrant(),
        data_bytes_limit: device.data_instance_bytes(),
        layers,
    }
}
