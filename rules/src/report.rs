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
/// rebuilds it).
#[derive(Serialize, Deserialize)]
pub struct Params {
    pub target: String,
}

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
            params: json::to_value(&Params { target: search })?,
            inputs,
            outputs: kflow_report::FILES.map(str::to_owned).to_vec(),
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let summary = json::input_bytes(cx, SUMMARY)?;
        let candidates = json::input_bytes(cx, CANDIDATES)?;
        let report =
            kflow_report::render(&params.target, &summary, &candidates).map_err(|e| ActionError::new(e.to_string()))?;
        for (name, bytes) in &report.files {
            cx.write_output(name, bytes)?;
        }
        Ok(Outcome::Done)
    }
}
