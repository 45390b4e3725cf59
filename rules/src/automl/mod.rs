//! `[[automl]]`: the search for the best model that fits a platform
//! (SPEC.md §8). Candidates are drawn from one or more spaces (random,
//! regularized evolution or a grid) in batches; each is pruned, quantized
//! and compiled for the platform before any training, and rejected with its
//! reasons when it does not fit; the admitted ones train in rungs of
//! successive halving; the best by the declared objectives go through the
//! whole deployment chain. Every stage is a child action of the rule that
//! does it alone, so a search rerun with one setting changed replays all it
//! shares from the cache.
//!
//! Outputs: `summary.json`, `candidates.json`, and for each kept model
//! `kept/<rank>/…` (network, weights, quantized weights, YAML, C sources,
//! `.bin`, Zephyr module, ONNX, metrics). Slots without a model, and files
//! a platform does not produce, are left out.

mod baseline;
mod candidate;
mod children;
mod config;
mod rungs;
mod search;
mod select;

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, BlobRef, ChildInput, ChildSpec, Diagnostic, Outcome, Planner,
    Rule, Target,
};
use kflow_platform::Platform;
use kflow_search::Space;
use serde::Serialize;

use self::candidate::{Candidate, counts};
use self::children::Shared;
use self::config::Params;
use self::search::{Kept, Search, kept_files};
use crate::check::{CHECK_FILE, check_file_inputs};
use crate::dataset::{META, TEST, TRAIN, VAL};
use crate::generate::{Strategy, one_output};
use crate::json;
use crate::platform::PLATFORM;
use crate::space::OUTPUT as SPACE;

pub struct AutomlRule;

pub const SUMMARY: &str = "summary.json";
pub const CANDIDATES: &str = "candidates.json";

/// The input name of the `k`-th space.
fn space_input(k: usize) -> String {
    format!("space-{k}.json")
}

/// A kept model's file, as the target exposes it.
fn kept_output(slot: usize, file: &str) -> String {
    format!("kept/{slot}/{file}")
}

impl Rule for AutomlRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "automl"
    }

    /// Its children's rules are modules its code fingerprint covers, so a
    /// change in any of them is a new search result too.
    fn version(&self) -> u32 {
        3
    }

    fn summary(&self) -> &'static str {
        "searches for the best models that fit a platform: checked before training, trained in rungs, deployed"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        config::ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let mut params = config::params(planner)?;
        params.baseline = target
            .attrs
            .labels(baseline::ATTR)
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut inputs = baseline::inputs(target, planner)?;
        for (k, label) in target.attrs.labels("space").into_iter().enumerate() {
            let space = planner
                .outputs_of(label)?
                .into_iter()
                .find(|(n, _)| n == SPACE)
                .map(|(_, a)| a)
                .ok_or_else(|| planner.error("space", format!("`{label}` is not a `[[space]]`")))?;
            inputs.push((space_input(k), space));
        }
        for name in [META, TRAIN, VAL, TEST] {
            inputs.push((name.to_owned(), one_output(planner, target, "dataset", name)?));
        }
        if !target.attrs.labels("platform").is_empty() {
            inputs.push((PLATFORM.to_owned(), one_output(planner, target, "platform", PLATFORM)?));
        }
        inputs.extend(check_file_inputs(target, planner)?);
        let mut outputs = vec![SUMMARY.to_owned(), CANDIDATES.to_owned()];
        outputs.extend(kflow_report::files(params.keep).iter().map(|f| report_output(f)));
        for slot in 1..=params.keep {
            outputs.extend(kept_files().iter().map(|f| kept_output(slot, f)));
        }
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&params)?,
            inputs,
            outputs,
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let mut spaces: Vec<serde_json::Value> = Vec::new();
        while cx.inputs().contains_key(&space_input(spaces.len())) {
            spaces.push(json::input(cx, &space_input(spaces.len()))?);
        }
        let parsed: Vec<Space> = serde_json::from_value(serde_json::Value::Array(spaces.clone()))
            .map_err(|e| ActionError::new(format!("unreadable search space: {e}")))?;
        let blob = |name: &str| cx.input(name).map(|i| i.blob);
        let platform: Option<Platform> = match cx.inputs().contains_key(PLATFORM) {
            true => Some(json::input(cx, PLATFORM)?),
            false => None,
        };
        let shared = Shared {
            spaces: cx.put_artifact(&json::pretty(&spaces)?)?,
            meta: blob(META)?,
            train: blob(TRAIN)?,
            val: blob(VAL)?,
            test: blob(TEST)?,
            platform: platform.as_ref().map(|_| blob(PLATFORM)).transpose()?,
            check_files: cx
                .inputs()
                .iter()
                .filter(|(name, _)| name.starts_with(CHECK_FILE))
                .map(|(name, file)| (name.clone(), file.blob))
                .collect(),
        };
        let mut search = Search::new(cx, &params, shared, platform);
        let total = search.total(&parsed)?;
        let mut start = 0;
        while start < total {
            let end = (start + params.batch as u64).min(total);
            search.propose(start..end)?;
            start = end;
        }
        for (rung, &epochs) in params.budget.rungs().iter().enumerate().skip(1) {
            search.promote(rung, epochs)?;
        }
        let fixed = baseline::read(cx, &params.baseline)?;
        let (kept, front) = search.deploy()?;
        search.report_progress();
        write_outputs(cx, &params, &search, (&kept, &front), fixed)?;
        cx.set_metadata(serde_json::json!({ "epoch_wall_ms": search.walls }));
        Ok(Outcome::Done)
    }
}

/// `summary.json`.
#[derive(Serialize)]
struct Summary<'a> {
    platform: Option<&'a str>,
    search: SearchSummary<'a>,
    counts: std::collections::BTreeMap<&'static str, usize>,
    objectives: Vec<String>,
    /// The last rung's Pareto front over the objectives.
    pareto_front: Vec<&'a str>,
    /// The z-score detector on the same test split.
    zscore: Option<serde_json::Value>,
    /// The fixed model the search is meant to beat, when one is named.
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<kflow_report::Fixed>,
    kept: Vec<KeptSummary<'a>>,
    /// Why there are fewer kept models than asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<String>,
}

#[derive(Serialize)]
struct SearchSummary<'a> {
    strategy: &'a Strategy,
    seed: u64,
    candidates: usize,
    batch: usize,
    budget: &'a rungs::Budget,
    /// Per rung: its epochs and how many candidates trained in it.
    rungs: Vec<serde_json::Value>,
    /// Epochs trained, summed over candidates (each counted once, however
    /// many rungs it reached).
    epochs: u64,
}

#[derive(Serialize)]
struct KeptSummary<'a> {
    candidate: &'a str,
    family: Option<&'static str>,
    /// Test F1 as deployed: on the simulated accelerator when the platform
    /// has one, else the float model's.
    f1: Option<f64>,
    /// The float model's test F1 (ONNX Runtime).
    f1_float: Option<f64>,
    roc_auc: Option<f64>,
    /// Validation F1 at the last rung of training (the float model).
    val_f1: Option<f64>,
    /// Validation F1 of the deployed network, which orders the kept models.
    deployed_val_f1: Option<f64>,
    latency_us: Option<f64>,
    weight_bytes: Option<f64>,
    /// On the board it was flashed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<serde_json::Value>,
    /// Accelerator platforms with `cpu_device`: the same quantized model as
    /// C inference on the platform's core without the accelerator, and how
    /// many times faster the accelerator is.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<serde_json::Value>,
    dir: String,
}

/// The summary of a board's `metrics.json`.
fn on_board(d: &serde_json::Value) -> serde_json::Value {
    let mut row = serde_json::json!({
        "url": d.pointer("/board/device"),
        "identity": d.pointer("/board/identity"),
        "f1": d.pointer("/quality/f1"),
        "matches_simulator": d.get("matches_simulator"),
        "windows_compared": d.get("windows_compared"),
        "latency_us": d.pointer("/latency/us/median"),
        "cycles": d.pointer("/latency/cycles/median"),
    });
    if let (Some(i), Some(obj)) = (d.pointer("/latency/instructions/median"), row.as_object_mut()) {
        obj.insert("instructions".into(), i.clone());
    }
    row
}

fn number(v: &serde_json::Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn write_outputs(
    cx: &ActionContext<'_>,
    params: &Params,
    search: &Search<'_, '_>,
    (kept, front): (&[Kept], &[usize]),
    fixed: Option<kflow_report::Fixed>,
) -> Result<(), ActionError> {
    let candidates: &[Candidate] = &search.candidates;
    for slot in 1..=params.keep {
        let files = kept.get(slot - 1).map(|k| &k.files);
        for file in kept_files() {
            match files.and_then(|f| f.get(file)) {
                Some(b) => cx.set_output_blob(&kept_output(slot, file), *b),
                None => cx.omit_output(&kept_output(slot, file)),
            }
        }
    }
    let accelerator = search.platform.as_ref().is_some_and(|p| p.accelerator.is_some());
    let kept_rows = kept
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let c = &candidates[m.candidate];
            let float = number(&m.metrics, &["quality", "f1"]);
            KeptSummary {
                candidate: &c.candidate,
                family: c.family,
                f1: if accelerator {
                    number(&m.metrics, &["accelerator", "quality", "f1"])
                } else {
                    float
                },
                f1_float: float,
                roc_auc: if accelerator {
                    number(&m.metrics, &["accelerator", "quality", "roc_auc"])
                } else {
                    number(&m.metrics, &["quality", "roc_auc"])
                },
                val_f1: c.fitness(),
                deployed_val_f1: m.deployed_val_f1(),
                latency_us: m.resources.get("latency_us").copied(),
                weight_bytes: m.resources.get("weight_bytes").copied(),
                device: m.device_metrics.as_ref().map(on_board),
                cpu: m.cpu_metrics.as_ref().map(|d| {
                    let mut row = on_board(d);
                    // The accelerator's time as measured on its board, else
                    // as the check estimated it.
                    let accelerator_us = m
                        .device_metrics
                        .as_ref()
                        .and_then(|a| number(a, &["latency", "us", "median"]))
                        .or_else(|| m.resources.get("latency_us").copied());
                    let cpu_us = number(d, &["latency", "us", "median"]);
                    if let (Some(a), Some(c), Some(obj)) = (accelerator_us, cpu_us, row.as_object_mut()) {
                        obj.insert("accelerator_us".into(), a.into());
                        obj.insert("accelerator_speedup".into(), (c / a.max(f64::MIN_POSITIVE)).into());
                    }
                    row
                }),
                dir: format!("kept/{}", k + 1),
            }
        })
        .collect();
    let rungs = params.budget.rungs();
    let rung_rows = rungs
        .iter()
        .enumerate()
        .map(|(r, e)| {
            let n = candidates.iter().filter(|c| c.rung.is_some_and(|cr| cr >= r)).count();
            serde_json::json!({ "epochs": e, "candidates": n })
        })
        .collect();
    let summary = Summary {
        platform: search.platform.as_ref().map(|p| p.name.as_str()),
        search: SearchSummary {
            strategy: &params.strategy,
            seed: params.seed,
            candidates: candidates.len(),
            batch: params.batch,
            budget: &params.budget,
            rungs: rung_rows,
            epochs: candidates.iter().map(|c| u64::from(c.epochs)).sum(),
        },
        counts: counts(candidates),
        objectives: params
            .objectives
            .iter()
            .map(|o| format!("{}:{}", o.name, if o.maximize { "max" } else { "min" }))
            .collect(),
        pareto_front: front.iter().map(|&i| candidates[i].candidate.as_str()).collect(),
        zscore: kept.first().and_then(|m| {
            let b = m.metrics.get("baseline")?;
            Some(serde_json::json!({
                "f1": b.get("f1"),
                "roc_auc": b.get("quality").and_then(|q| q.get("roc_auc")),
            }))
        }),
        baseline: fixed,
        kept: kept_rows,
        missing: (kept.len() < params.keep).then(|| {
            format!(
                "{} of {} models could be deployed: no other candidate finished training and deployment",
                kept.len(),
                params.keep
            )
        }),
    };
    let summary = cx.put_artifact(&json::pretty(&summary)?)?;
    let candidates = cx.put_artifact(&json::pretty(&candidates)?)?;
    cx.set_output_blob(SUMMARY, summary);
    cx.set_output_blob(CANDIDATES, candidates);
    report(cx, params, (summary, candidates), kept)
}

/// The report's file `name`, as the target exposes it.
fn report_output(name: &str) -> String {
    format!("report/{name}")
}

/// The search's report, an ordinary cached child over its records and the
/// kept models' metrics and placements: a new `keep` gives new records and
/// so a new report, without retraining.
fn report(
    cx: &ActionContext<'_>,
    params: &Params,
    (summary, candidates): (BlobRef, BlobRef),
    kept: &[Kept],
) -> Result<(), ActionError> {
    let mut inputs = vec![
        (SUMMARY.to_owned(), ChildInput::Blob(summary)),
        (CANDIDATES.to_owned(), ChildInput::Blob(candidates)),
    ];
    for (k, model) in kept.iter().enumerate() {
        for file in crate::report::KEPT_FILES {
            if let Some(blob) = model.files.get(file) {
                inputs.push((crate::report::kept_input(k + 1, file), ChildInput::Blob(*blob)));
            }
        }
    }
    let written = kflow_report::files(kept.len());
    let spec = ChildSpec {
        group: "report".to_owned(),
        name: "report".to_owned(),
        rule: "report".to_owned(),
        params: serde_json::json!({ "target": cx.id(), "kept": kept.len() }),
        inputs,
        outputs: written.clone(),
    };
    let result = cx
        .submit(vec![spec])?
        .pop()
        .ok_or_else(|| ActionError::new("the report was not run"))?;
    for name in kflow_report::files(params.keep) {
        match result.outputs.get(&name) {
            Some(blob) => cx.set_output_blob(&report_output(&name), *blob),
            None if written.contains(&name) => {
                let why = result.reason.as_deref().unwrap_or("no reason given");
                return Err(ActionError::new(format!("the report did not write {name}: {why}")));
            }
            None => cx.omit_output(&report_output(&name)),
        }
    }
    Ok(())
}
