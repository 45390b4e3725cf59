//! A search's fixed baseline (`baseline = [":evaluated", ":checked"]`): a
//! hand-made model the search is meant to beat, placed beside the kept
//! models in `summary.json` and on the report's Pareto plots. Its quality
//! comes from an `[[evaluate]]` target's `metrics.json`, its latency and
//! weight memory from a `[[check]]` target's `check.json`.

use kflow_engine::{ActionContext, ActionError, ArtifactRef, Diagnostic, Planner, Target};
use kflow_report::Fixed;

use super::number;
use crate::check::CHECK;
use crate::evaluate::METRICS;
use crate::json;

pub const ATTR: &str = "baseline";

/// The search action's input of the baseline's `file`.
fn input(file: &str) -> String {
    format!("baseline-{file}")
}

/// The baseline's `metrics.json` and `check.json`, found among the outputs
/// of the targets `baseline` names; each must give one of them.
pub fn inputs(target: &Target, planner: &Planner<'_>) -> Result<Vec<(String, ArtifactRef)>, Diagnostic> {
    let mut found: Vec<(String, ArtifactRef)> = Vec::new();
    for label in target.attrs.labels(ATTR) {
        let outputs = planner.outputs_of(label)?;
        let mut gives = outputs
            .into_iter()
            .filter(|(n, _)| n == METRICS || n == CHECK)
            .peekable();
        if gives.peek().is_none() {
            return Err(planner.error(
                ATTR,
                format!("`{label}` is neither an `[[evaluate]]` (metrics.json) nor a `[[check]]` (check.json)"),
            ));
        }
        for (name, artifact) in gives {
            if found.iter().any(|(n, _)| *n == input(&name)) {
                return Err(planner.error(ATTR, format!("two of the targets give the baseline's {name}")));
            }
            found.push((input(&name), artifact));
        }
    }
    Ok(found)
}

/// The baseline of a search whose `baseline` names `targets`, from the
/// files [`inputs`] found.
/// It is recorded as the report reads it ([`kflow_report::Fixed`]).
pub fn read(cx: &ActionContext<'_>, targets: &[String]) -> Result<Option<Fixed>, ActionError> {
    if targets.is_empty() {
        return Ok(None);
    }
    let file = |name: &str| -> Result<serde_json::Value, ActionError> {
        match cx.inputs().contains_key(&input(name)) {
            true => json::input(cx, &input(name)),
            false => Ok(serde_json::Value::Null),
        }
    };
    let (metrics, check) = (file(METRICS)?, file(CHECK)?);
    let deployed = |field: &str| {
        number(&metrics, &["accelerator", "quality", field]).or_else(|| number(&metrics, &["quality", field]))
    };
    Ok(Some(Fixed {
        targets: targets.to_vec(),
        f1: deployed("f1"),
        f1_float: number(&metrics, &["quality", "f1"]),
        roc_auc: deployed("roc_auc"),
        val_f1: number(&metrics, &["validation_f1"]),
        latency_us: number(&check, &["resources", "latency_us"]),
        weight_bytes: number(&check, &["resources", "weight_bytes"]),
    }))
}
