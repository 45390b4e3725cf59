//! Running an action on another machine.
//!
//! The engine sends a remote executor a directory and a command: the
//! action's inputs as files `in/0`, `in/1`, … (in the order of
//! `action.json`'s `inputs`), `action.json` (the rule, its version and
//! code fingerprint, the canonical params, the input names and digests,
//! the declared outputs and the key), and the command `exec-action` of
//! the kflow binary, which the executor places beside them. On the worker
//! `kflow exec-action` ([`exec_action`]) runs the rule exactly as the
//! scheduler would, and leaves in `out/` a `result.json` ([`ExecReport`])
//! naming the files that hold each output and log. The executor brings
//! `out/` back into the local store, and the scheduler turns it into the
//! same cache entry a local run writes.
//!
//! A worker refuses an action whose rule code differs from its own (a
//! different kflow, ONNX Runtime or CPU class): the same key must mean the
//! same bytes wherever it runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kflow_cache::{BlobRef, Cache, Digest};
use serde::{Deserialize, Serialize};

use crate::registry::RuleRegistry;
use crate::rule::{ActionContext, ActionError, ChildResult, ChildSpec, InputFile, Outcome, Produced, Rule, Runtime};

/// The format of `action.json`.
const SPEC_FORMAT: &str = "kflow-exec/1";
/// The spec's file name in the input root.
pub const SPEC_FILE: &str = "action.json";
/// The directory the executor brings back.
pub const OUT_DIR: &str = "out";
/// The report's file name in [`OUT_DIR`].
pub const REPORT_FILE: &str = "result.json";

/// Runs commands elsewhere, through the local store. Implemented outside
/// the engine (kflow-remote), which knows the protocol.
pub trait Executor: Send + Sync {
    /// For messages: the executor's URL.
    fn name(&self) -> &str;
    /// Runs `kflow <arguments>` over the request's files and returns the
    /// files the command left in `request.output_dir`, by their path there,
    /// already in `cache` and verified.
    fn run(&self, request: &ExecRequest<'_>, cache: &Cache) -> Result<BTreeMap<String, BlobRef>, ExecError>;
}

/// One command for an [`Executor`].
pub struct ExecRequest<'a> {
    /// The action's identity, for messages and the server's logs.
    pub id: &'a str,
    /// Files of the input root from the local store, by relative path.
    pub files: Vec<(String, BlobRef)>,
    /// Small files made for this request, by relative path.
    pub generated: Vec<(String, Vec<u8>)>,
    /// The arguments after the kflow binary.
    pub arguments: Vec<String>,
    pub output_dir: &'a str,
}

/// Why a remote run gave no result.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The executor could not be used at all (refused connection, unknown
    /// instance): the build falls back to running locally.
    #[error("{0}")]
    Unreachable(String),
    /// The command ran and failed; its stderr says why.
    #[error("exited with code {exit_code}: {stderr}")]
    Failed { exit_code: i32, stderr: String },
    /// The executor or the server failed this action.
    #[error("{0}")]
    Broken(String),
}

/// `action.json`.
#[derive(Serialize, Deserialize)]
struct ExecSpec {
    format: String,
    id: String,
    rule: String,
    rule_version: u32,
    rule_code: String,
    /// Canonical JSON, as keyed.
    params: String,
    inputs: Vec<SpecInput>,
    outputs: Vec<String>,
    key: String,
}

#[derive(Serialize, Deserialize)]
struct SpecInput {
    name: String,
    digest: Digest,
    size: u64,
}

/// `out/result.json`: what the rule produced, by file in `out/`.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct ExecReport {
    pub rejected: Option<String>,
    pub outputs: BTreeMap<String, String>,
    pub omitted: Vec<String>,
    pub logs: BTreeMap<String, String>,
    pub metadata: serde_json::Value,
}

/// The request that runs `rule` on `inputs` remotely.
pub(crate) fn request<'a>(
    id: &'a str,
    rule: &dyn Rule,
    params: &str,
    inputs: &[(std::sync::Arc<str>, BlobRef)],
    outputs: &[std::sync::Arc<str>],
    key: &Digest,
) -> ExecRequest<'a> {
    let spec = ExecSpec {
        format: SPEC_FORMAT.to_owned(),
        id: id.to_owned(),
        rule: rule.name().to_owned(),
        rule_version: rule.version(),
        rule_code: rule.code().to_owned(),
        params: params.to_owned(),
        inputs: inputs
            .iter()
            .map(|(name, blob)| SpecInput {
                name: name.to_string(),
                digest: blob.digest,
                size: blob.size,
            })
            .collect(),
        outputs: outputs.iter().map(|o| o.to_string()).collect(),
        key: key.to_hex(),
    };
    ExecRequest {
        id,
        files: inputs
            .iter()
            .enumerate()
            .map(|(i, (_, blob))| (format!("in/{i}"), *blob))
            .collect(),
        generated: vec![(
            SPEC_FILE.to_owned(),
            serde_json::to_vec_pretty(&spec).unwrap_or_default(),
        )],
        arguments: vec!["exec-action".to_owned()],
        output_dir: OUT_DIR,
    }
}

/// What a remote run produced, as the scheduler's local runs report it.
pub(crate) fn produced(files: &BTreeMap<String, BlobRef>, cache: &Cache) -> Result<(Outcome, Produced), ActionError> {
    let report = files
        .get(REPORT_FILE)
        .ok_or_else(|| ActionError::new(format!("the remote run left no `{OUT_DIR}/{REPORT_FILE}`")))?;
    let bytes = cache
        .read_blob(report)
        .map_err(|e| ActionError::new(format!("cannot read the remote report: {e}")))?;
    let report: ExecReport =
        serde_json::from_slice(&bytes).map_err(|e| ActionError::new(format!("the remote report is not valid: {e}")))?;
    let file = |name: &str, kind: &str| {
        files
            .get(name)
            .copied()
            .ok_or_else(|| ActionError::new(format!("the remote run lost {kind} file `{name}`")))
    };
    let mut produced = Produced {
        metadata: report.metadata,
        omitted: report.omitted.into_iter().collect(),
        ..Produced::default()
    };
    for (name, path) in &report.outputs {
        produced.output_blobs.insert(name.clone(), file(path, "output")?);
    }
    for (name, path) in &report.logs {
        produced.logs.insert(name.clone(), file(path, "log")?);
    }
    let outcome = match report.rejected {
        Some(reason) => Outcome::Rejected { reason },
        None => Outcome::Done,
    };
    Ok((outcome, produced))
}

/// A run's outputs by name, and the declared outputs it left out.
pub(crate) type Collected = (Vec<(Arc<str>, BlobRef)>, Vec<Arc<str>>);

/// Where each declared output of a finished run is: produced as a blob,
/// written to `work_dir` (stored now), or left out on purpose (the second
/// list). A rejected run may stop before producing everything.
pub(crate) fn collect_outputs(
    declared: &[Arc<str>],
    produced: &Produced,
    work_dir: Option<&Path>,
    rejected: bool,
    cache: &Cache,
) -> Result<Collected, ActionError> {
    let mut outputs = Vec::new();
    let mut absent = Vec::new();
    for name in declared {
        if let Some(blob) = produced.output_blobs.get(&**name) {
            outputs.push((name.clone(), *blob));
            continue;
        }
        if produced.omitted.contains(&**name) {
            absent.push(name.clone());
            continue;
        }
        let path = work_dir.map(|dir| dir.join(&**name));
        match path.as_ref().map(|p| (p, std::fs::symlink_metadata(p))) {
            Some((path, Ok(meta))) if meta.is_file() => {
                let blob = cache
                    .put_file(path)
                    .map_err(|e| ActionError::new(format!("cache: {e}")))?;
                outputs.push((name.clone(), blob));
            }
            Some((_, Ok(_))) => {
                return Err(ActionError::new(format!(
                    "declared output `{name}` is not a regular file"
                )));
            }
            _ if rejected => {}
            _ => return Err(ActionError::new(format!("declared output `{name}` was not produced"))),
        }
    }
    Ok((outputs, absent))
}

/// Runs a rule on a context, turning a panic into the action's failure.
pub(crate) fn run_rule(rule: &dyn Rule, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rule.execute(cx))) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(ActionError::new(format!(
                "rule `{}` crashed (a bug in kflow): {what}",
                rule.name()
            )))
        }
    }
}

/// `kflow exec-action`: runs the action described by `dir/action.json` on
/// the files `dir/in/*` and leaves its results in `dir/out/`.
pub fn exec_action(rules: &RuleRegistry, dir: &Path) -> Result<(), ActionError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| ActionError::new(format!("{what}: {e}"));
    let spec_bytes = std::fs::read(dir.join(SPEC_FILE)).map_err(|e| fail(SPEC_FILE, &e))?;
    let spec: ExecSpec = serde_json::from_slice(&spec_bytes).map_err(|e| fail(SPEC_FILE, &e))?;
    if spec.format != SPEC_FORMAT {
        return Err(ActionError::new(format!(
            "{SPEC_FILE} is `{}`; this kflow runs `{SPEC_FORMAT}`",
            spec.format
        )));
    }
    let rule = rules
        .get(&spec.rule)
        .ok_or_else(|| ActionError::new(format!("this kflow has no rule `{}`", spec.rule)))?;
    if rule.version() != spec.rule_version || rule.code() != spec.rule_code {
        return Err(ActionError::new(format!(
            "{}: rule `{}` here is version {} with code {}, the client's is version {} with code {}: \
             this worker would not give the bytes the action's key names (another kflow, ONNX Runtime \
             or CPU class); run it on a matching worker or locally",
            spec.id,
            spec.rule,
            rule.version(),
            short(rule.code()),
            spec.rule_version,
            short(&spec.rule_code),
        )));
    }
    let params: serde_json::Value = serde_json::from_str(&spec.params).map_err(|e| fail("params", &e))?;
    let cache = Cache::open(&dir.join(".kflow-store"), &mut |_| {}).map_err(|e| fail("the worker's store", &e))?;
    let mut inputs = BTreeMap::new();
    for (i, input) in spec.inputs.iter().enumerate() {
        let blob = cache
            .put_file(&dir.join("in").join(i.to_string()))
            .map_err(|e| fail(&format!("input `{}`", input.name), &e))?;
        if blob.digest != input.digest || blob.size != input.size {
            return Err(ActionError::new(format!(
                "input `{}` arrived damaged (digest {} instead of {})",
                input.name, blob.digest, input.digest
            )));
        }
        let path = cache.blob_path(&blob.digest);
        inputs.insert(
            input.name.clone(),
            InputFile {
                path,
                blob,
                source: None,
            },
        );
    }
    let work = dir.join("work");
    std::fs::create_dir_all(&work).map_err(|e| fail("work directory", &e))?;
    let outputs: Vec<Arc<str>> = spec.outputs.iter().map(|o| Arc::from(o.as_str())).collect();
    let runtime = Standalone { cache: &cache };
    let cx = ActionContext {
        id: &spec.id,
        params: &params,
        inputs: &inputs,
        outputs: &outputs,
        work_dir: &work,
        runtime: &runtime,
        produced: Mutex::new(Produced::default()),
    };
    let outcome = run_rule(&**rule, &cx)?;
    let produced = cx.produced.into_inner().unwrap_or_else(|e| e.into_inner());
    let out = dir.join(OUT_DIR);
    std::fs::create_dir_all(&out).map_err(|e| fail("output directory", &e))?;
    let rejected = match outcome {
        Outcome::Done => None,
        Outcome::Rejected { reason } => Some(reason),
    };
    let (outputs, absent) = collect_outputs(&outputs, &produced, Some(&work), rejected.is_some(), &cache)?;
    let mut report = ExecReport {
        rejected,
        omitted: absent.iter().map(|a| a.to_string()).collect(),
        metadata: produced.metadata.clone(),
        ..ExecReport::default()
    };
    for (i, (name, blob)) in outputs.iter().enumerate() {
        let file = format!("output-{i}");
        cache.copy_out(blob, &out.join(&file)).map_err(|e| fail(name, &e))?;
        report.outputs.insert(name.to_string(), file);
    }
    for (i, (name, blob)) in produced.logs.iter().enumerate() {
        let file = format!("log-{i}");
        cache.copy_out(blob, &out.join(&file)).map_err(|e| fail(name, &e))?;
        report.logs.insert(name.clone(), file);
    }
    let bytes = serde_json::to_vec_pretty(&report).map_err(|e| fail(REPORT_FILE, &e))?;
    std::fs::write(out.join(REPORT_FILE), bytes).map_err(|e| fail(REPORT_FILE, &e))
}

fn short(code: &str) -> &str {
    code.get(..16).unwrap_or(code)
}

/// The services of an action running alone on a worker: its own store,
/// no children.
struct Standalone<'c> {
    cache: &'c Cache,
}

fn store_err(e: kflow_cache::CacheError) -> ActionError {
    ActionError::new(format!("the worker's store: {e}"))
}

impl Runtime for Standalone<'_> {
    fn submit(&self, _: Vec<ChildSpec>) -> Result<Vec<ChildResult>, ActionError> {
        Err(ActionError::new(
            "this action plans child actions, which only the build that owns it can run; its rule must not be marked remote",
        ))
    }

    fn blob_path(&self, blob: &BlobRef) -> Result<PathBuf, ActionError> {
        Ok(self.cache.blob_path(&blob.digest))
    }

    fn read_blob(&self, blob: &BlobRef) -> Result<Vec<u8>, ActionError> {
        self.cache.read_blob(blob).map_err(store_err)
    }

    fn copy_blob(&self, blob: &BlobRef, dest: &Path) -> Result<(), ActionError> {
        self.cache.copy_out(blob, dest).map_err(store_err)
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<BlobRef, ActionError> {
        self.cache.put_bytes(bytes).map_err(store_err)
    }

    fn progress(&self, _: &str, _: &str) {}

    fn threads(&self) -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}
