//! The contract between the engine and the rules.
//!
//! A rule is data plus two functions. `plan` turns a target's checked
//! attributes into actions (pure, at load time); `execute` runs one action
//! (pure in its params and input bytes, at build time). A running action may
//! plan more actions through [`ActionContext::submit`]: the engine executes
//! them in parallel, through the cache, and hands back their results. Rules
//! never open the cache, schedule threads, or print: everything goes through
//! the context.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::BlobRef;
use crate::attrs::{AttrSpec, Attrs};
use crate::diagnostic::Diagnostic;
use crate::label::Label;

/// A kind of target and the executor of its actions.
pub trait Rule: Send + Sync + 'static {
    /// The table name in graph files (`[[cmd]]`) and the rule name in keys.
    fn name(&self) -> &'static str;
    /// Part of every action key: bump it when the same params and inputs
    /// would now give different outputs. Invalidates exactly this rule's
    /// actions.
    fn version(&self) -> u32;
    /// Part of every action key: a fingerprint of the code that computes
    /// the outputs (the rule's sources and the libraries they use, and the
    /// versions of external runtimes that shape the result), so that a
    /// change there reruns exactly this rule's actions. Empty: the version
    /// alone stands for the code.
    fn code(&self) -> &str {
        ""
    }
    /// Whether this action may run on a remote executor (`kflow
    /// exec-action` on a worker). Worth it for heavy work (training
    /// epochs, evaluations); never for an action that submits children or
    /// reaches something only this machine has (a device).
    fn remote(&self, params: &serde_json::Value) -> bool {
        let _ = params;
        false
    }
    /// One line for `--help` style listings.
    fn summary(&self) -> &'static str;
    /// The attributes a target of this kind accepts (besides `name`).
    fn attrs(&self) -> &'static [AttrSpec];
    /// Declares the target's actions and the outputs it exposes.
    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic>;
    /// Runs one action. Outputs are files written to
    /// `cx.output_path(name)`, or blobs attached with `cx.set_output_blob`.
    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError>;
}

/// A target as a rule sees it when planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub label: Label,
    pub kind: String,
    pub attrs: Attrs,
    /// The package directory, absolute.
    pub package_dir: PathBuf,
}

/// Where an action input comes from, as known at planning time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArtifactRef {
    /// A file of the target's package, relative to the package directory.
    Source(String),
    /// An output exposed by another target.
    Dep { label: Label, output: String },
    /// An output of an earlier action of the same target.
    Local { action: usize, output: String },
}

/// One action a target declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionDecl {
    /// Empty for a target's main action (its identity is then the label);
    /// otherwise the identity is `label/name`.
    pub name: String,
    /// The rule that executes it; usually the planning rule itself.
    pub rule: String,
    pub params: serde_json::Value,
    /// Named inputs: the name is how the action refers to the input, and is
    /// part of the key.
    pub inputs: Vec<(String, ArtifactRef)>,
    pub outputs: Vec<String>,
}

/// What planning one target produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetPlan {
    pub actions: Vec<ActionDecl>,
    /// The target's outputs, by name, in declaration order: what dependents
    /// see and what is materialized under `kflow-out/<package>/<target>/`.
    pub exposes: Vec<(String, ArtifactRef)>,
}

/// Collects a target's actions. The engine supplies dependency outputs.
pub struct Planner<'a> {
    pub(crate) target: &'a Target,
    pub(crate) deps: &'a dyn Fn(&Label) -> Result<Vec<String>, Diagnostic>,
    pub(crate) plan: TargetPlan,
    pub(crate) location: &'a dyn Fn(Option<std::ops::Range<usize>>) -> Option<crate::diagnostic::Location>,
}

impl Planner<'_> {
    /// The outputs exposed by a target this target depends on (it must be
    /// named in one of the target's label attributes), by name.
    pub fn outputs_of(&self, label: &Label) -> Result<Vec<(String, ArtifactRef)>, Diagnostic> {
        if !self.target.attrs.deps().iter().any(|(l, _)| l == label) {
            return Err(Diagnostic::new(format!(
                "rule `{}` asked for the outputs of `{label}`, which `{}` does not depend on",
                self.target.kind, self.target.label
            )));
        }
        Ok((self.deps)(label)?
            .into_iter()
            .map(|output| {
                (
                    output.clone(),
                    ArtifactRef::Dep {
                        label: label.clone(),
                        output,
                    },
                )
            })
            .collect())
    }

    /// Declares an action and returns its index for [`Planner::output_of`].
    pub fn add_action(&mut self, action: ActionDecl) -> usize {
        self.plan.actions.push(action);
        self.plan.actions.len() - 1
    }

    /// Declares the action that makes the target's results: every output is
    /// exposed under its own name.
    pub fn add_final_action(&mut self, action: ActionDecl) -> usize {
        let outputs = action.outputs.clone();
        let index = self.add_action(action);
        for out in outputs {
            let artifact = self.output_of(index, &out);
            self.expose(out, artifact);
        }
        index
    }

    pub fn output_of(&self, action: usize, output: &str) -> ArtifactRef {
        ArtifactRef::Local {
            action,
            output: output.to_owned(),
        }
    }

    pub fn expose(&mut self, name: impl Into<String>, artifact: ArtifactRef) {
        self.plan.exposes.push((name.into(), artifact));
    }

    /// An error located at attribute `attr` of the target (or at the target
    /// when the attribute is absent).
    pub fn error(&self, attr: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(message).at((self.location)(self.target.attrs.span(attr)))
    }

    /// The target's attributes as the rule's own serde type (labels as
    /// their strings). A value that does not fit is reported at its
    /// attribute, with the path inside it (`generator.rows`).
    pub fn attrs_as<T: DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        serde_path_to_error::deserialize(self.target.attrs.to_json()).map_err(|e| {
            let path = e.path().to_string();
            let attr = path.split(['.', '[']).next().unwrap_or_default().to_owned();
            let message = e.into_inner().to_string();
            if path == "." {
                // At the top level, serde's "field" is one of the target's attributes.
                self.error(&attr, message.replace("missing field", "missing attribute"))
            } else {
                self.error(&attr, format!("attribute `{path}`: {message}"))
            }
        })
    }
}

/// How an action ended, when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The action ran correctly and decided its subject is not acceptable
    /// (a candidate that does not fit the device). Cached like a success.
    Rejected {
        reason: String,
    },
}

/// An action that could not complete. Not cached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub message: String,
}

impl ActionError {
    pub fn new(message: impl Into<String>) -> ActionError {
        ActionError {
            message: message.into(),
        }
    }
}

/// The status of a finished action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Executed,
    Cached,
    RemoteCached,
    Failed,
    Rejected,
    /// Not run: a dependency failed or the build stopped.
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Executed => "executed",
            Status::Cached => "cached",
            Status::RemoteCached => "remote-cached",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
            Status::Skipped => "skipped",
        }
    }

    /// Whether the action's outputs are usable by dependents.
    pub fn succeeded(self) -> bool {
        matches!(self, Status::Executed | Status::Cached | Status::RemoteCached)
    }
}

/// An input of a child action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildInput {
    /// An artifact the parent already has (one of its inputs, or an output
    /// of an earlier child).
    Blob(BlobRef),
    /// An output of another child of the same batch, by its index.
    Sibling { child: usize, output: String },
}

/// An action planned at run time by a running action.
#[derive(Clone, Debug, PartialEq)]
pub struct ChildSpec {
    /// Groups children in identities: `parent[group]/name`, e.g.
    /// `target//max78002:anomaly[cand-17]/quantize`.
    pub group: String,
    pub name: String,
    pub rule: String,
    pub params: serde_json::Value,
    pub inputs: Vec<(String, ChildInput)>,
    pub outputs: Vec<String>,
}

/// What became of a child action.
#[derive(Clone, Debug, PartialEq)]
pub struct ChildResult {
    pub id: String,
    pub status: Status,
    pub outputs: BTreeMap<String, BlobRef>,
    pub metadata: serde_json::Value,
    /// Why it failed, was rejected or skipped.
    pub reason: Option<String>,
}

/// An input of a running action: a read-only file in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFile {
    pub path: PathBuf,
    pub blob: BlobRef,
    /// The source file it was read from, when it is one: what messages
    /// about its contents should name (`path` is the store's copy).
    pub source: Option<PathBuf>,
}

/// The engine services an executing action may use. Implemented by the
/// scheduler; rules only see [`ActionContext`].
pub(crate) trait Runtime: Sync {
    fn submit(&self, batch: Vec<ChildSpec>) -> Result<Vec<ChildResult>, ActionError>;
    fn blob_path(&self, blob: &BlobRef) -> Result<PathBuf, ActionError>;
    fn read_blob(&self, blob: &BlobRef) -> Result<Vec<u8>, ActionError>;
    fn copy_blob(&self, blob: &BlobRef, dest: &Path) -> Result<(), ActionError>;
    fn put_bytes(&self, bytes: &[u8]) -> Result<BlobRef, ActionError>;
    fn progress(&self, id: &str, message: &str);
    fn threads(&self) -> usize;
}

/// Per-action state filled in by the rule while it executes.
#[derive(Default)]
pub(crate) struct Produced {
    pub output_blobs: BTreeMap<String, BlobRef>,
    pub omitted: std::collections::BTreeSet<String>,
    pub logs: BTreeMap<String, BlobRef>,
    pub metadata: serde_json::Value,
}

/// Everything an executing action may see and do.
pub struct ActionContext<'a> {
    pub(crate) id: &'a str,
    pub(crate) params: &'a serde_json::Value,
    pub(crate) inputs: &'a BTreeMap<String, InputFile>,
    pub(crate) outputs: &'a [std::sync::Arc<str>],
    pub(crate) work_dir: &'a Path,
    pub(crate) runtime: &'a dyn Runtime,
    pub(crate) produced: std::sync::Mutex<Produced>,
}

impl ActionContext<'_> {
    /// The action's identity, e.g. `target//gen:t5` or `label[cand-3]/train`.
    pub fn id(&self) -> &str {
        self.id
    }

    pub fn params(&self) -> &serde_json::Value {
        self.params
    }

    /// The params deserialized into the rule's own type.
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T, ActionError> {
        serde_json::from_value(self.params.clone())
            .map_err(|e| ActionError::new(format!("{}: invalid params: {e}", self.id)))
    }

    pub fn inputs(&self) -> &BTreeMap<String, InputFile> {
        self.inputs
    }

    pub fn input(&self, name: &str) -> Result<&InputFile, ActionError> {
        self.inputs
            .get(name)
            .ok_or_else(|| ActionError::new(format!("{}: no input named `{name}`", self.id)))
    }

    /// A private writable copy of an input at `dest`.
    pub fn stage_input(&self, name: &str, dest: &Path) -> Result<(), ActionError> {
        let input = self.input(name)?;
        self.runtime.copy_blob(&input.blob, dest)
    }

    /// The declared output names.
    pub fn outputs(&self) -> &[std::sync::Arc<str>] {
        self.outputs
    }

    /// An empty directory for the action's own use, removed afterwards.
    /// Declared outputs are collected from it by name.
    pub fn work_dir(&self) -> &Path {
        self.work_dir
    }

    /// Where to write declared output `name`.
    pub fn output_path(&self, name: &str) -> PathBuf {
        self.work_dir.join(name)
    }

    /// Writes declared output `name`.
    pub fn write_output(&self, name: &str, bytes: &[u8]) -> Result<(), ActionError> {
        let path = self.output_path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ActionError::new(format!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::write(&path, bytes).map_err(|e| ActionError::new(format!("cannot write {}: {e}", path.display())))
    }

    /// Uses an artifact that already exists (an input, a child's output) as
    /// declared output `name`, without copying it.
    pub fn set_output_blob(&self, name: &str, blob: BlobRef) {
        self.lock().output_blobs.insert(name.to_owned(), blob);
    }

    /// Leaves declared output `name` out of this result on purpose: what a
    /// target declares at planning time may be more than one run has (a
    /// search asked for five models that found three). An omitted output is
    /// not materialized, and an action that reads it fails.
    pub fn omit_output(&self, name: &str) {
        self.lock().omitted.insert(name.to_owned());
    }

    /// Keeps `bytes` as the action's log `name` (e.g. `stdout`). Empty logs
    /// are not kept: most actions have none, and each kept log is one more
    /// blob for every cache hit to check.
    pub fn log(&self, name: &str, bytes: &[u8]) -> Result<(), ActionError> {
        if !bytes.is_empty() {
            let blob = self.runtime.put_bytes(bytes)?;
            self.lock().logs.insert(name.to_owned(), blob);
        }
        Ok(())
    }

    /// Small JSON facts about the result (metrics, counts), kept in the
    /// action cache and in build events.
    pub fn set_metadata(&self, metadata: serde_json::Value) {
        self.lock().metadata = metadata;
    }

    /// Plans and runs a batch of child actions, waiting for all of them.
    /// Children run in parallel and through the cache like any action; a
    /// failed child is reported in its result, not as an error here.
    pub fn submit(&self, batch: Vec<ChildSpec>) -> Result<Vec<ChildResult>, ActionError> {
        self.runtime.submit(batch)
    }

    /// The read-only file of an artifact (e.g. a child's output).
    pub fn artifact_path(&self, blob: &BlobRef) -> Result<PathBuf, ActionError> {
        self.runtime.blob_path(blob)
    }

    /// An artifact's bytes, verified against its digest.
    pub fn read_artifact(&self, blob: &BlobRef) -> Result<Vec<u8>, ActionError> {
        self.runtime.read_blob(blob)
    }

    /// Stores bytes as an artifact, e.g. to pass to a child.
    pub fn put_artifact(&self, bytes: &[u8]) -> Result<BlobRef, ActionError> {
        self.runtime.put_bytes(bytes)
    }

    /// A progress line for the live view and event log (e.g. a training
    /// epoch). Never part of any artifact.
    pub fn progress(&self, message: &str) {
        self.runtime.progress(self.id, message);
    }

    /// How many threads the action may use for its own parallel work.
    pub fn threads(&self) -> usize {
        self.runtime.threads()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Produced> {
        // A rule that panicked while holding the lock has already failed its
        // action; its partial state is still the best we have.
        self.produced.lock().unwrap_or_else(|e| e.into_inner())
    }
}
