//! The scheduler: runs a DAG of actions on a rayon pool of `--jobs` threads.
//! An action is ready when every action it reads from has finished. A ready
//! action's key is looked up in the workspace's build state, then in the
//! action cache, and the action executes only on a miss. Running actions
//! may submit child batches, which go through the same path on the same
//! pool (a thread waiting for its children helps run them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use kflow_cache::{ActionEntry, ActionIndex, BlobRef, Cache, CacheError, Digest, RemoteCache, RemoteError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use petgraph::graph::NodeIndex;

use crate::action_graph::{ActionNode, InputSource};
use crate::events::{ActionRecord, BuildEvent, BuildLog, Named, Observer};
use crate::keys::{Params, RuleId, action_key};
use crate::registry::RuleRegistry;
use crate::remote_exec::{self, ExecError, Executor, run_rule};
use crate::rule::{
    ActionContext, ActionError, ChildInput, ChildResult, ChildSpec, InputFile, Outcome, Produced, Rule, Runtime, Status,
};
use crate::slots::Slots;
use crate::state::{BuildState, NamedBlobs, Remembered};

/// One action ready to be scheduled: a node of the action graph (or of a
/// child batch, where `Output` inputs index the batch), with its rule.
pub(crate) struct Job {
    pub node: Arc<ActionNode>,
    pub rule: Arc<dyn Rule>,
    pub parent: Option<Arc<str>>,
}

fn find(blobs: &NamedBlobs, name: &str) -> Option<BlobRef> {
    blobs
        .binary_search_by(|(n, _)| (**n).cmp(name))
        .ok()
        .map(|i| blobs[i].1)
}

/// How a job ended.
#[derive(Clone, Debug)]
pub(crate) struct JobResult {
    pub status: Status,
    pub outputs: NamedBlobs,
    /// Declared outputs the action left out on purpose (see
    /// [`ActionContext::omit_output`]), sorted.
    pub absent: Arc<[Arc<str>]>,
    pub logs: NamedBlobs,
    pub metadata: Option<Arc<RawValue>>,
    pub reason: Option<String>,
    pub from_cache: bool,
    /// Served from the workspace's build state.
    pub remembered: bool,
    /// Executed on the remote executor.
    pub remote: bool,
}

impl JobResult {
    fn skipped(reason: String) -> JobResult {
        JobResult {
            status: Status::Skipped,
            outputs: Arc::new([]),
            absent: Arc::new([]),
            logs: Arc::new([]),
            metadata: None,
            reason: Some(reason),
            from_cache: false,
            remembered: false,
            remote: false,
        }
    }

    fn failed(reason: String) -> JobResult {
        JobResult {
            status: Status::Failed,
            ..JobResult::skipped(reason)
        }
    }

    pub fn output(&self, name: &str) -> Option<BlobRef> {
        find(&self.outputs, name)
    }

    /// Whether a successful action left declared output `name` out.
    pub fn omitted(&self, name: &str) -> bool {
        self.status.succeeded() && self.absent.iter().any(|a| **a == *name)
    }

    fn remembered(&self, key: Digest) -> Remembered {
        Remembered {
            key,
            outputs: self.outputs.clone(),
            absent: self.absent.clone(),
            logs: self.logs.clone(),
            rejected: self.reason.clone().filter(|_| self.status == Status::Rejected),
            metadata: self.metadata.as_ref().map(|m| m.get().to_owned()),
        }
    }

    fn from_remembered(r: &Remembered) -> JobResult {
        JobResult {
            status: if r.rejected.is_some() {
                Status::Rejected
            } else {
                Status::Cached
            },
            outputs: r.outputs.clone(),
            absent: r.absent.clone(),
            logs: r.logs.clone(),
            metadata: r
                .metadata
                .as_ref()
                .and_then(|m| RawValue::from_string(m.clone()).ok())
                .map(Arc::from),
            reason: r.rejected.clone(),
            from_cache: true,
            remembered: true,
            remote: false,
        }
    }
}

/// A job's result from an action-cache entry; `None` when the entry lacks
/// a declared output (written by another version of the rule).
fn result_of_entry(entry: ActionEntry, job: &Job, status: Status) -> Option<JobResult> {
    let meta: EntryMeta = serde_json::from_value(entry.metadata).ok()?;
    let with_prefix = |prefix: &str| -> NamedBlobs {
        entry
            .blobs
            .iter()
            .filter_map(|(name, blob)| Some((Arc::from(name.strip_prefix(prefix)?), *blob)))
            .collect()
    };
    let outputs = with_prefix(OUTPUT_PREFIX);
    let absent: Arc<[Arc<str>]> = meta.absent.iter().map(|a| Arc::from(a.as_str())).collect();
    let complete = meta.rejected.is_some() || complete(&job.node.outputs, &outputs, &absent);
    complete.then(|| JobResult {
        status: if meta.rejected.is_some() {
            Status::Rejected
        } else {
            status
        },
        outputs,
        absent,
        logs: with_prefix(LOG_PREFIX),
        metadata: raw_json(&meta.metadata),
        reason: meta.rejected,
        from_cache: true,
        remembered: false,
        remote: false,
    })
}

/// The environment variable holding the remote cache's bearer token.
pub const REMOTE_TOKEN_ENV: &str = "KFLOW_REMOTE_CACHE_TOKEN";

/// Whether a result accounts for every declared output: produced, or left
/// out on purpose. An entry written by another version of a rule may not.
fn complete(declared: &[Arc<str>], outputs: &NamedBlobs, absent: &[Arc<str>]) -> bool {
    declared
        .iter()
        .all(|o| find(outputs, o).is_some() || absent.iter().any(|a| a == o))
}

/// What the action cache keeps about an action besides its blobs.
#[derive(Serialize, Deserialize)]
struct EntryMeta {
    rejected: Option<String>,
    /// Declared outputs the action left out on purpose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    absent: Vec<String>,
    #[serde(default)]
    metadata: serde_json::Value,
    duration_ms: u64,
    kflow_version: String,
}

const OUTPUT_PREFIX: &str = "out:";
const LOG_PREFIX: &str = "log:";

/// The cache, opened on first use: a build that finds everything in the
/// workspace's build state never takes the cache's lock or opens its index.
pub(crate) struct LazyCache<'a> {
    pub dir: &'a Path,
    pub on_wait: &'a (dyn Fn(&str) + Sync),
    cache: OnceLock<Result<Cache, String>>,
}

impl<'a> LazyCache<'a> {
    pub fn new(dir: &'a Path, on_wait: &'a (dyn Fn(&str) + Sync)) -> LazyCache<'a> {
        LazyCache {
            dir,
            on_wait,
            cache: OnceLock::new(),
        }
    }

    pub fn get(&self) -> Result<&Cache, CacheError> {
        self.cache
            .get_or_init(|| Cache::open(self.dir, &mut |m| (self.on_wait)(m)).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|m| CacheError::Unavailable(m.clone()))
    }

    /// The cache, if this build opened it.
    pub fn opened(&self) -> Option<&Cache> {
        self.cache.get().and_then(|c| c.as_ref().ok())
    }
}

pub(crate) struct Scheduler<'a> {
    pub cache: &'a LazyCache<'a>,
    /// The workspace's memory of earlier results, when it may be trusted.
    pub state: Option<&'a BuildState>,
    /// The stat cache of source files.
    pub sources: &'a dyn ActionIndex,
    pub rules: &'a RuleRegistry,
    pub log: &'a BuildLog,
    pub observer: &'a dyn Observer,
    pub jobs: usize,
    pub keep_going: bool,
    pub stop: AtomicBool,
    pub records: Mutex<Vec<ActionRecord>>,
    /// Results to remember in the build state.
    pub fresh: Mutex<Vec<(Arc<str>, Remembered)>>,
    /// The shared cache, consulted after the local one and filled with what
    /// this build executes.
    pub remote: Option<&'a RemoteCache>,
    pub remote_warned: AtomicBool,
    /// Where actions of rules that allow it run, when set.
    pub executor: Option<&'a dyn Executor>,
    /// Set when the executor could not be reached: the rest of the build
    /// runs here.
    pub executor_off: AtomicBool,
    pub slots: Slots,
    /// Told when a top-level action has finished, with access to every
    /// finished result (the build materializes outputs as soon as they
    /// exist, overlapping with the actions still running).
    pub on_done: Option<&'a OnDone<'a>>,
    /// See [`crate::build::BuildOptions::overrides`].
    pub overrides: &'a crate::build::Overrides,
    /// See [`crate::build::BuildOptions::rerun_rules`].
    pub rerun_rules: &'a std::collections::BTreeSet<String>,
}

/// See [`Scheduler::on_done`].
pub(crate) type OnDone<'a> = dyn Fn(usize, &[OnceLock<JobResult>]) + Sync + 'a;

struct Dag<'j> {
    jobs: &'j [Job],
    dependents: Vec<Vec<usize>>,
    pending: Vec<AtomicUsize>,
    results: Vec<OnceLock<JobResult>>,
    /// Top-level DAGs stop scheduling after a failure unless `--keep-going`;
    /// child batches always run to the end and let their parent decide.
    top_level: bool,
}

impl Scheduler<'_> {
    /// Runs every job of a DAG whose job inputs refer only to other jobs of
    /// the same DAG, and returns their results in order.
    pub fn run_dag(&self, jobs: &[Job], top_level: bool) -> Vec<JobResult> {
        let n = jobs.len();
        let mut dependents = vec![Vec::new(); n];
        let mut pending = Vec::with_capacity(n);
        for (i, job) in jobs.iter().enumerate() {
            let deps = InputSource::producers(job.node.inputs.iter().map(|(_, input)| input));
            for d in &deps {
                dependents[*d].push(i);
            }
            pending.push(AtomicUsize::new(deps.len()));
        }
        let dag = Dag {
            jobs,
            dependents,
            pending,
            results: (0..n).map(|_| OnceLock::new()).collect(),
            top_level,
        };
        // The ready set is taken before anything runs: a spawned job
        // decrements its dependents' counters, and a loop that read them as
        // it went would start such a dependent a second time, whose second
        // run would in turn release its own dependents early.
        let ready: Vec<usize> = (0..n)
            .filter(|&i| dag.pending[i].load(Ordering::Relaxed) == 0)
            .collect();
        rayon::scope(|s| {
            for i in ready {
                let dag = &dag;
                s.spawn(move |s| self.step(dag, s, i));
            }
        });
        dag.results
            .into_iter()
            .map(|r| {
                r.into_inner()
                    .unwrap_or_else(|| JobResult::skipped("never became ready (its inputs form a cycle)".to_owned()))
            })
            .collect()
    }

    fn step<'s>(&'s self, dag: &'s Dag<'s>, s: &rayon::Scope<'s>, i: usize) {
        let job = &dag.jobs[i];
        let failed_dep = job.node.inputs.iter().find_map(|(_, input)| match input {
            InputSource::Output { node, .. } => dag.results[node.index()]
                .get()
                .filter(|r| !r.status.succeeded())
                .map(|r| (&dag.jobs[node.index()].node.id, r.status)),
            _ => None,
        });
        let (result, record) = match failed_dep {
            Some((dep, status)) => {
                let result = JobResult::skipped(format!("dependency `{dep}` {}", status.as_str()));
                let record = self.record(job, None, &[], &result, 0, dag);
                (result, record)
            }
            None if self.stop.load(Ordering::Relaxed) => {
                let result = JobResult::skipped("the build stopped after a failure".to_owned());
                let record = self.record(job, None, &[], &result, 0, dag);
                (result, record)
            }
            None => self.run_job(job, dag),
        };
        if dag.top_level && result.status == Status::Failed && !self.keep_going {
            self.stop.store(true, Ordering::Relaxed);
        }
        self.log.record(&record);
        self.observer.event(BuildEvent::Finished { record: &record });
        lock(&self.records).push(record);
        let _ = dag.results[i].set(result);
        if dag.top_level
            && let Some(on_done) = self.on_done
        {
            on_done(i, &dag.results);
        }
        for &d in &dag.dependents[i] {
            if dag.pending[d].fetch_sub(1, Ordering::AcqRel) == 1 {
                s.spawn(move |s| self.step(dag, s, d));
            }
        }
    }

    fn run_job(&self, job: &Job, dag: &Dag<'_>) -> (JobResult, ActionRecord) {
        let started = Instant::now();
        let mut inputs: Vec<(Arc<str>, BlobRef)> = Vec::with_capacity(job.node.inputs.len());
        // Inputs read from source files, by index into `inputs`.
        let mut from_files: Vec<(usize, &Path)> = Vec::new();
        for (name, input) in &job.node.inputs {
            let blob = match input {
                InputSource::Blob(b) => Ok(*b),
                InputSource::File(path) => {
                    from_files.push((inputs.len(), path));
                    kflow_cache::file_digest(self.sources, path)
                        .map_err(|e| format!("cannot read source `{}`: {e}", path.display()))
                }
                InputSource::Output { node, output } => dag.results[node.index()]
                    .get()
                    .and_then(|r| r.output(output))
                    .ok_or_else(|| format!("`{}` did not produce `{output}`", dag.jobs[node.index()].node.id)),
            };
            match blob {
                Ok(b) => inputs.push((name.clone(), b)),
                Err(reason) => {
                    let result = JobResult::failed(reason);
                    let record = self.record(job, None, &inputs, &result, elapsed_ms(started), dag);
                    return (result, record);
                }
            }
        }
        let key = action_key(
            RuleId::of(&*job.rule),
            job.node.params.as_str(),
            inputs.iter().map(|(n, b)| (&**n, &b.digest)),
        );
        // A rule asked to run again skips what is remembered and cached, and
        // its fresh result replaces them.
        let rerun = self.rerun_rules.contains(job.rule.name());
        let result = match self.remembered(&key, job).filter(|_| !rerun) {
            Some(hit) => hit,
            None => {
                let known = || self.lookup(&key, job).or_else(|| self.remote_lookup(&key, job));
                let result = match if rerun { None } else { known() } {
                    Some(hit) => hit,
                    None => {
                        self.observer.event(BuildEvent::Started { id: &job.node.id });
                        let result = self.execute(job, &key, &inputs, &from_files, started);
                        if matches!(result.status, Status::Executed | Status::Rejected) {
                            self.remote_store(&key);
                        }
                        result
                    }
                };
                if result.status != Status::Failed {
                    lock(&self.fresh).push((job.node.id.clone(), result.remembered(key)));
                }
                result
            }
        };
        let record = self.record(job, Some(key), &inputs, &result, elapsed_ms(started), dag);
        (result, record)
    }

    /// The result the workspace remembers for this identity and key.
    fn remembered(&self, key: &Digest, job: &Job) -> Option<JobResult> {
        let r = self.state?.action(&job.node.id)?;
        let complete = r.rejected.is_some() || complete(&job.node.outputs, &r.outputs, &r.absent);
        (r.key == *key && complete).then(|| JobResult::from_remembered(r))
    }

    fn lookup(&self, key: &Digest, job: &Job) -> Option<JobResult> {
        // A damaged or unreadable entry is a miss: the action simply runs.
        let entry = self.cache.get().ok()?.get_action(key).ok()??;
        result_of_entry(entry, job, Status::Cached)
    }

    /// The remote cache's result for `key`, imported into the local cache.
    fn remote_lookup(&self, key: &Digest, job: &Job) -> Option<JobResult> {
        let remote = self.remote?;
        let local = self.cache.get().ok()?;
        match remote.fetch_action(key, local) {
            Ok(entry) => result_of_entry(entry?, job, Status::RemoteCached),
            Err(e) => {
                self.warn_remote(&e);
                None
            }
        }
    }

    /// Shares a fresh result through the remote cache.
    fn remote_store(&self, key: &Digest) {
        let (Some(remote), Ok(local)) = (self.remote, self.cache.get()) else {
            return;
        };
        // The entry was just written locally; reading it back gives exactly
        // the bytes other machines will see.
        if let Ok(Some(entry)) = local.get_action(key)
            && let Err(e) = remote.store_action(key, &entry, local)
        {
            self.warn_remote(&e);
        }
    }

    /// A remote cache problem never fails a build; the user hears of it once.
    fn warn_remote(&self, e: &RemoteError) {
        if !self.remote_warned.swap(true, Ordering::Relaxed) {
            let message = match e {
                RemoteError::Refused(_) => {
                    format!("{e} (is {REMOTE_TOKEN_ENV} set correctly? continuing with the local cache)")
                }
                _ => e.to_string(),
            };
            self.observer.event(BuildEvent::Warning { message: &message });
        }
    }

    fn execute(
        &self,
        job: &Job,
        key: &Digest,
        inputs: &[(Arc<str>, BlobRef)],
        from_files: &[(usize, &Path)],
        started: Instant,
    ) -> JobResult {
        let mut logs = Vec::new();
        match self.try_execute(job, key, inputs, from_files, started, &mut logs) {
            Ok(r) => r,
            Err(e) => JobResult {
                logs: logs.into(),
                ..JobResult::failed(e.message)
            },
        }
    }

    fn try_execute(
        &self,
        job: &Job,
        key: &Digest,
        inputs: &[(Arc<str>, BlobRef)],
        from_files: &[(usize, &Path)],
        started: Instant,
        logs: &mut Vec<(Arc<str>, BlobRef)>,
    ) -> Result<JobResult, ActionError> {
        let cache = self.cache.get().map_err(cache_err)?;
        // The rule reads inputs from the store, so that it sees exactly the
        // bytes that were hashed into the key even if a source file is being
        // edited meanwhile.
        for &(i, path) in from_files {
            let blob = inputs[i].1;
            if !cache.has_blob(&blob) {
                let bytes = std::fs::read(path)
                    .map_err(|e| ActionError::new(format!("cannot read source `{}`: {e}", path.display())))?;
                let stored = cache.put_bytes(&bytes).map_err(cache_err)?;
                if stored != blob {
                    return Err(ActionError::new(format!(
                        "source `{}` changed while the build was running; run the build again",
                        path.display()
                    )));
                }
            }
        }
        let params = job.node.params.to_value();
        let remote = self
            .executor
            .filter(|_| !self.executor_off.load(Ordering::Relaxed) && job.rule.remote(&params));
        let ran_remotely = match remote {
            Some(executor) => self.run_remote(executor, job, key, inputs, cache)?,
            None => None,
        };
        // Kept until the outputs are collected from it.
        let mut scratch = None;
        let remote = ran_remotely.is_some();
        let (outcome, produced) = match ran_remotely {
            Some((outcome, produced)) => (Ok(outcome), produced),
            None => {
                let _slot = self.slots.local();
                let input_files: BTreeMap<String, InputFile> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, (name, blob))| {
                        let source = from_files.iter().find(|&&(at, _)| at == i).map(|&(_, p)| p.to_owned());
                        (
                            name.to_string(),
                            InputFile {
                                path: cache.blob_path(&blob.digest),
                                blob: *blob,
                                source,
                            },
                        )
                    })
                    .collect();
                let dir = scratch.insert(cache.scratch_dir("action").map_err(cache_err)?);
                let runtime = ActionRuntime { sched: self, job };
                let cx = ActionContext {
                    id: &job.node.id,
                    params: &params,
                    inputs: &input_files,
                    outputs: &job.node.outputs,
                    work_dir: dir.path(),
                    runtime: &runtime,
                    produced: Mutex::new(Produced::default()),
                };
                let outcome = run_rule(&*job.rule, &cx);
                (outcome, cx.produced.into_inner().unwrap_or_else(|e| e.into_inner()))
            }
        };
        logs.extend(produced.logs.iter().map(|(n, b)| (Arc::from(n.as_str()), *b)));
        let outcome = outcome?;
        let rejected = match outcome {
            Outcome::Done => None,
            Outcome::Rejected { reason } => Some(reason),
        };
        // A remote run reported every output it made as a blob.
        let work_dir = scratch.as_ref().map(|dir| dir.path());
        let (mut outputs, mut absent) =
            remote_exec::collect_outputs(&job.node.outputs, &produced, work_dir, rejected.is_some(), cache)?;
        outputs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut blobs: BTreeMap<String, BlobRef> = outputs
            .iter()
            .map(|(n, b)| (format!("{OUTPUT_PREFIX}{n}"), *b))
            .collect();
        blobs.extend(logs.iter().map(|(n, b)| (format!("{LOG_PREFIX}{n}"), *b)));
        absent.sort();
        let meta = EntryMeta {
            rejected: rejected.clone(),
            absent: absent.iter().map(|a| a.to_string()).collect(),
            metadata: produced.metadata.clone(),
            duration_ms: elapsed_ms(started),
            kflow_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let entry = ActionEntry {
            blobs,
            metadata: serde_json::to_value(&meta).unwrap_or_default(),
        };
        cache.put_action(key, &entry).map_err(cache_err)?;
        Ok(JobResult {
            status: if rejected.is_some() {
                Status::Rejected
            } else {
                Status::Executed
            },
            outputs: outputs.into(),
            absent: absent.into(),
            logs: std::mem::take(logs).into(),
            metadata: raw_json(&produced.metadata),
            reason: rejected,
            from_cache: false,
            remembered: false,
            remote,
        })
    }

    /// Runs `job` on the executor; `None` when it cannot be reached (the
    /// build goes on here, after one warning).
    fn run_remote(
        &self,
        executor: &dyn Executor,
        job: &Job,
        key: &Digest,
        inputs: &[(Arc<str>, BlobRef)],
        cache: &Cache,
    ) -> Result<Option<(Outcome, Produced)>, ActionError> {
        let request = remote_exec::request(
            &job.node.id,
            &*job.rule,
            job.node.params.as_str(),
            inputs,
            &job.node.outputs,
            key,
        );
        let ran = {
            let _slot = self.slots.remote();
            executor.run(&request, cache)
        };
        match ran {
            Ok(files) => remote_exec::produced(&files, cache).map(Some),
            Err(ExecError::Unreachable(why)) => {
                if !self.executor_off.swap(true, Ordering::Relaxed) {
                    let message = format!(
                        "remote executor {}: {why}; running the build's actions here",
                        executor.name()
                    );
                    self.observer.event(BuildEvent::Warning { message: &message });
                }
                Ok(None)
            }
            Err(ExecError::Failed { exit_code, stderr }) => Err(ActionError::new(format!(
                "on remote executor {} (exit code {exit_code}): {}",
                executor.name(),
                tail(stderr.trim_end(), 4000)
            ))),
            Err(ExecError::Broken(why)) => Err(ActionError::new(format!("remote executor {}: {why}", executor.name()))),
        }
    }

    fn record(
        &self,
        job: &Job,
        key: Option<Digest>,
        inputs: &[(Arc<str>, BlobRef)],
        result: &JobResult,
        duration_ms: u64,
        dag: &Dag<'_>,
    ) -> ActionRecord {
        let digests = |blobs: &[(Arc<str>, BlobRef)]| Named(blobs.iter().map(|(n, b)| (n.clone(), b.digest)).collect());
        // A remembered result is logged abridged, so its inputs need not be
        // listed (they are those of the last full record with its key).
        let abridged = result.remembered;
        ActionRecord {
            id: job.node.id.clone(),
            rule: job.node.rule.clone(),
            rule_version: job.rule.version(),
            rule_code: code_in_record(job.rule.code()),
            key,
            status: result.status,
            from_cache: result.from_cache,
            forced: !result.from_cache && self.rerun_rules.contains(job.rule.name()),
            remote: result.remote,
            duration_ms,
            inputs: if abridged { Named::default() } else { digests(inputs) },
            producers: Named(if abridged {
                Vec::new()
            } else {
                job.node
                    .inputs
                    .iter()
                    .filter_map(|(n, input)| match input {
                        InputSource::Output { node, .. } => Some((n.clone(), dag.jobs[node.index()].node.id.clone())),
                        _ => None,
                    })
                    .collect()
            }),
            params: job.node.params.clone(),
            outputs: digests(&result.outputs),
            logs: digests(&result.logs),
            reason: result.reason.clone(),
            parent: job.parent.clone(),
            metadata: result.metadata.clone(),
            abridged,
        }
    }

    /// Turns a child batch into jobs.
    fn child_jobs(&self, parent: &Job, batch: Vec<ChildSpec>) -> Result<Vec<Job>, ActionError> {
        let parent_id = &parent.node.id;
        let mut jobs = Vec::with_capacity(batch.len());
        for (i, child) in batch.into_iter().enumerate() {
            let rule = self
                .rules
                .get(&child.rule)
                .ok_or_else(|| {
                    ActionError::new(format!(
                        "`{parent_id}` submitted a child of unknown rule `{}`",
                        child.rule
                    ))
                })?
                .clone();
            let inputs = child
                .inputs
                .into_iter()
                .map(|(name, input)| match input {
                    ChildInput::Blob(b) => Ok((Arc::from(name), InputSource::Blob(b))),
                    // Only earlier siblings: that keeps every batch acyclic.
                    ChildInput::Sibling { child, output } if child < i => Ok((
                        Arc::from(name),
                        InputSource::Output {
                            node: NodeIndex::new(child),
                            output: Arc::from(output),
                        },
                    )),
                    ChildInput::Sibling { child, .. } => Err(ActionError::new(format!(
                        "`{parent_id}`: child #{i} reads from child #{child}; a child may only read from earlier ones"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let id = if child.group.is_empty() {
                format!("{parent_id}/{}", child.name)
            } else {
                format!("{parent_id}[{}]/{}", child.group, child.name)
            };
            jobs.push(Job {
                node: Arc::new(ActionNode {
                    id: Arc::from(id),
                    target: parent.node.target.clone(),
                    rule: Arc::from(rule.name()),
                    rule_version: rule.version(),
                    params: {
                        let params = Params::new(&child.params);
                        crate::build::overridden(&params, self.overrides).unwrap_or(params)
                    },
                    inputs,
                    outputs: child.outputs.into_iter().map(Arc::from).collect(),
                }),
                rule,
                parent: Some(parent_id.clone()),
            });
        }
        Ok(jobs)
    }
}

struct ActionRuntime<'s> {
    sched: &'s Scheduler<'s>,
    job: &'s Job,
}

impl Runtime for ActionRuntime<'_> {
    fn submit(&self, batch: Vec<ChildSpec>) -> Result<Vec<ChildResult>, ActionError> {
        if self.sched.stop.load(Ordering::Relaxed) {
            return Err(ActionError::new("the build stopped after a failure"));
        }
        let jobs = self.sched.child_jobs(self.job, batch)?;
        self.sched.observer.event(BuildEvent::Added { count: jobs.len() });
        let results = self.sched.slots.lend(|| self.sched.run_dag(&jobs, false));
        Ok(jobs
            .into_iter()
            .zip(results)
            .map(|(job, r)| ChildResult {
                id: job.node.id.to_string(),
                status: r.status,
                outputs: r.outputs.iter().map(|(n, b)| (n.to_string(), *b)).collect(),
                metadata: r
                    .metadata
                    .as_ref()
                    .and_then(|m| serde_json::from_str(m.get()).ok())
                    .unwrap_or_default(),
                reason: r.reason,
            })
            .collect())
    }

    fn blob_path(&self, blob: &BlobRef) -> Result<PathBuf, ActionError> {
        Ok(self.sched.cache.get().map_err(cache_err)?.blob_path(&blob.digest))
    }

    fn read_blob(&self, blob: &BlobRef) -> Result<Vec<u8>, ActionError> {
        self.sched
            .cache
            .get()
            .and_then(|c| c.read_blob(blob))
            .map_err(cache_err)
    }

    fn copy_blob(&self, blob: &BlobRef, dest: &Path) -> Result<(), ActionError> {
        self.sched
            .cache
            .get()
            .and_then(|c| c.copy_out(blob, dest))
            .map_err(cache_err)
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<BlobRef, ActionError> {
        self.sched
            .cache
            .get()
            .and_then(|c| c.put_bytes(bytes))
            .map_err(cache_err)
    }

    fn progress(&self, id: &str, message: &str) {
        self.sched.observer.event(BuildEvent::Progress { id, message });
    }

    fn threads(&self) -> usize {
        self.sched.jobs
    }
}

fn raw_json(value: &serde_json::Value) -> Option<Arc<RawValue>> {
    if value.is_null() {
        return None;
    }
    serde_json::value::to_raw_value(value).ok().map(Arc::from)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn cache_err(e: CacheError) -> ActionError {
    match e {
        CacheError::BlobMissing(_) => ActionError::new(format!(
            "cache: {e}; if files were deleted from the cache by hand, run `kflow cache verify`"
        )),
        e => ActionError::new(format!("cache: {e}")),
    }
}

/// The last `max` bytes of `text` (at a character boundary): where a
/// failing command says why.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}

/// The start of a rule's code fingerprint, as build records keep it.
fn code_in_record(code: &str) -> Option<Arc<str>> {
    (!code.is_empty()).then(|| Arc::from(code.chars().take(16).collect::<String>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::AttrSpec;
    use crate::events::{BuildHeader, Silent};
    use crate::label::Label;
    use crate::rule::{Planner, Target};
    use crate::{Diagnostic, RuleRegistry};
    use kflow_cache::MemoryIndex;

    /// Writes one small output and counts its executions.
    struct Counting(AtomicUsize);

    impl Rule for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn version(&self) -> u32 {
            1
        }
        fn summary(&self) -> &'static str {
            "test rule"
        }
        fn attrs(&self) -> &'static [AttrSpec] {
            &[]
        }
        fn plan(&self, _: &Target, _: &mut Planner<'_>) -> Result<(), Diagnostic> {
            Ok(())
        }
        fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            cx.write_output("o", cx.params().to_string().as_bytes())?;
            Ok(Outcome::Done)
        }
    }

    fn scheduler<'a>(
        cache: &'a LazyCache<'a>,
        state: Option<&'a BuildState>,
        log: &'a BuildLog,
        sources: &'a MemoryIndex,
        rules: &'a RuleRegistry,
    ) -> Scheduler<'a> {
        Scheduler {
            cache,
            state,
            sources,
            rules,
            log,
            observer: &Silent,
            jobs: 2,
            keep_going: false,
            stop: AtomicBool::new(false),
            records: Mutex::new(Vec::new()),
            fresh: Mutex::new(Vec::new()),
            remote: None,
            remote_warned: AtomicBool::new(false),
            executor: None,
            executor_off: AtomicBool::new(false),
            slots: Slots::unbounded(),
            on_done: None,
            overrides: &NO_OVERRIDES,
            rerun_rules: &NO_RERUNS,
        }
    }

    static NO_OVERRIDES: crate::build::Overrides = crate::build::Overrides::new();
    static NO_RERUNS: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();

    /// The build log of a scheduler under test, in `out_dir`.
    fn test_log(out_dir: &Path) -> BuildLog {
        let header = BuildHeader {
            build: String::new(),
            started_unix_ms: 0,
            targets: Vec::new(),
            jobs: 2,
            kflow_version: String::new(),
            parsed_packages: Vec::new(),
        };
        BuildLog::create(out_dir, header).unwrap()
    }

    /// Roots first, then one dependent per root. While the loop that starts
    /// the ready jobs is still spawning roots, the first roots finish and
    /// release their dependents, which the loop then reaches with nothing
    /// pending. Every action must still run exactly once, both when the
    /// actions execute and when a rebuild serves them from the build state
    /// (microseconds each, where the race is widest).
    #[test]
    fn every_action_runs_once_when_dependents_are_released_during_startup() {
        const ROOTS: usize = 2000;
        let dir = tempfile::tempdir().unwrap();
        let rule = Arc::new(Counting(AtomicUsize::new(0)));
        let target = Label::new("t", "p", "x").unwrap();
        let jobs: Vec<Job> = (0..2 * ROOTS)
            .map(|i| {
                let inputs = match i.checked_sub(ROOTS) {
                    Some(root) => vec![(
                        Arc::from("dep"),
                        InputSource::Output {
                            node: NodeIndex::new(root),
                            output: Arc::from("o"),
                        },
                    )],
                    None => Vec::new(),
                };
                Job {
                    node: Arc::new(ActionNode {
                        id: Arc::from(format!("t//p:x/{i}")),
                        target: target.clone(),
                        rule: Arc::from("counting"),
                        rule_version: 1,
                        params: Params::new(&serde_json::json!(i)),
                        inputs,
                        outputs: vec![Arc::from("o")],
                    }),
                    rule: rule.clone(),
                    parent: None,
                }
            })
            .collect();
        let on_wait = |_: &str| {};
        let cache_dir = dir.path().join("cache");
        let cache = LazyCache::new(&cache_dir, &on_wait);
        let out_dir = dir.path().join("out");
        let log = test_log(&out_dir);
        let sources = MemoryIndex::from_entries([]);
        let rules = RuleRegistry::new();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();

        let first = scheduler(&cache, None, &log, &sources, &rules);
        let results = pool.install(|| first.run_dag(&jobs, true));
        assert!(results.iter().all(|r| r.status == Status::Executed));
        assert_eq!(rule.0.load(Ordering::SeqCst), jobs.len());
        assert_eq!(lock(&first.records).len(), jobs.len());

        let mut state = BuildState::load(&out_dir);
        let epoch = kflow_cache::read_epoch(&cache_dir).unwrap();
        state.remember((cache_dir.clone(), epoch), first.fresh.into_inner().unwrap());
        for _ in 0..20 {
            let again = scheduler(&cache, Some(&state), &log, &sources, &rules);
            let results = pool.install(|| again.run_dag(&jobs, true));
            assert!(results.iter().all(|r| r.status == Status::Cached && r.remembered));
            assert_eq!(lock(&again.records).len(), jobs.len());
        }
        assert_eq!(rule.0.load(Ordering::SeqCst), jobs.len());
    }

    /// Declares `kept` and `spare`, writes `kept` only and omits `spare`.
    struct Omitting;

    impl Rule for Omitting {
        fn name(&self) -> &'static str {
            "omitting"
        }
        fn version(&self) -> u32 {
            1
        }
        fn summary(&self) -> &'static str {
            "test rule"
        }
        fn attrs(&self) -> &'static [AttrSpec] {
            &[]
        }
        fn plan(&self, _: &Target, _: &mut Planner<'_>) -> Result<(), Diagnostic> {
            Ok(())
        }
        fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
            cx.write_output("kept", b"k")?;
            cx.omit_output("spare");
            Ok(Outcome::Done)
        }
    }

    #[test]
    fn an_omitted_output_is_a_complete_result_from_the_cache_and_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let job = Job {
            node: Arc::new(ActionNode {
                id: Arc::from("t//p:x"),
                target: Label::new("t", "p", "x").unwrap(),
                rule: Arc::from("omitting"),
                rule_version: 1,
                params: Params::new(&serde_json::Value::Null),
                inputs: Vec::new(),
                outputs: vec![Arc::from("kept"), Arc::from("spare")],
            }),
            rule: Arc::new(Omitting),
            parent: None,
        };
        let jobs = [job];
        let on_wait = |_: &str| {};
        let cache_dir = dir.path().join("cache");
        let cache = LazyCache::new(&cache_dir, &on_wait);
        let out_dir = dir.path().join("out");
        let log = test_log(&out_dir);
        let sources = MemoryIndex::from_entries([]);
        let rules = RuleRegistry::new();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();

        let first = scheduler(&cache, None, &log, &sources, &rules);
        let run = pool.install(|| first.run_dag(&jobs, true));
        assert_eq!(run[0].status, Status::Executed);
        assert!(run[0].output("kept").is_some() && run[0].omitted("spare") && !run[0].omitted("kept"));

        // From the action cache: a hit, not a re-execution.
        let again = scheduler(&cache, None, &log, &sources, &rules);
        let run = pool.install(|| again.run_dag(&jobs, true));
        assert_eq!(run[0].status, Status::Cached);
        assert!(run[0].omitted("spare"));

        // From the workspace state, saved and loaded again.
        let mut state = BuildState::load(&out_dir);
        let epoch = kflow_cache::read_epoch(&cache_dir).unwrap();
        state.remember((cache_dir.clone(), epoch), again.fresh.into_inner().unwrap());
        state.save().unwrap();
        let state = BuildState::load(&out_dir);
        let third = scheduler(&cache, Some(&state), &log, &sources, &rules);
        let run = pool.install(|| third.run_dag(&jobs, true));
        assert!(run[0].remembered && run[0].omitted("spare"));
    }

    /// A rule in `rerun_rules` executes although the build state and the
    /// cache both know its result; other rules still come from them.
    #[test]
    fn a_rule_asked_to_rerun_executes_though_its_result_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let rule = Arc::new(Counting(AtomicUsize::new(0)));
        let job = |i: usize| Job {
            node: Arc::new(ActionNode {
                id: Arc::from(format!("t//p:x/{i}")),
                target: Label::new("t", "p", "x").unwrap(),
                rule: Arc::from("counting"),
                rule_version: 1,
                params: Params::new(&serde_json::json!({ "i": i })),
                inputs: Vec::new(),
                outputs: vec![Arc::from("o")],
            }),
            rule: rule.clone(),
            parent: None,
        };
        let jobs = [job(0), job(1)];
        let on_wait = |_: &str| {};
        let cache_dir = dir.path().join("cache");
        let cache = LazyCache::new(&cache_dir, &on_wait);
        let out_dir = dir.path().join("out");
        let log = test_log(&out_dir);
        let sources = MemoryIndex::from_entries([]);
        let rules = RuleRegistry::new();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let first = scheduler(&cache, None, &log, &sources, &rules);
        pool.install(|| first.run_dag(&jobs, true));
        let mut state = BuildState::load(&out_dir);
        let epoch = kflow_cache::read_epoch(&cache_dir).unwrap();
        state.remember((cache_dir.clone(), epoch), first.fresh.into_inner().unwrap());
        assert_eq!(rule.0.load(Ordering::SeqCst), 2);

        let rerun: std::collections::BTreeSet<String> = ["counting".to_owned()].into();
        let mut again = scheduler(&cache, Some(&state), &log, &sources, &rules);
        again.rerun_rules = &rerun;
        let run = pool.install(|| again.run_dag(&jobs, true));
        assert!(
            run.iter().all(|r| r.status == Status::Executed),
            "{:?}",
            run.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        assert_eq!(rule.0.load(Ordering::SeqCst), 4);
        let plain = scheduler(&cache, Some(&state), &log, &sources, &rules);
        let run = pool.install(|| plain.run_dag(&jobs, true));
        assert!(run.iter().all(|r| r.status == Status::Cached));
        assert_eq!(rule.0.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn an_override_replaces_only_keys_the_params_have() {
        let overrides: crate::build::Overrides = [("device".to_owned(), serde_json::json!("tcp://h:1"))].into();
        let with = Params::new(&serde_json::json!({ "device": "sim://a", "n": 1 }));
        let changed = crate::build::overridden(&with, &overrides).unwrap();
        assert_eq!(changed.to_value(), serde_json::json!({ "device": "tcp://h:1", "n": 1 }));
        assert_ne!(changed.as_str(), with.as_str());
        // Absent key, non-object params, or the same value: nothing to do.
        for params in [
            serde_json::json!({ "n": 1 }),
            serde_json::json!(3),
            serde_json::json!({ "device": "tcp://h:1" }),
        ] {
            assert!(crate::build::overridden(&Params::new(&params), &overrides).is_none());
        }
    }
}
