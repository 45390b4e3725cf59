//! The scheduler: runs a DAG of actions on a rayon pool of `--jobs` threads.
//! An action is ready when every action it reads from has finished; a ready
//! action is looked up in the action cache by its key and executed only on a
//! miss. Running actions may submit child batches, which go through the same
//! path on the same pool (a thread waiting for its children helps run them).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use kflow_cache::{ActionEntry, BlobRef, Cache, Digest};
use serde::{Deserialize, Serialize};

use crate::events::{ActionRecord, BuildEvent, BuildLog, Observer};
use crate::keys::{action_key, canonical_json};
use crate::registry::RuleRegistry;
use crate::rule::{
    ActionContext, ActionError, ChildInput, ChildResult, ChildSpec, InputFile, Outcome, Produced, Rule, Runtime,
    Status,
};

/// One action ready to be scheduled.
pub(crate) struct Job {
    pub id: String,
    pub parent: Option<String>,
    pub rule: Arc<dyn Rule>,
    pub params: serde_json::Value,
    pub canonical_params: String,
    pub inputs: Vec<(String, JobInput)>,
    pub outputs: Vec<String>,
}

pub(crate) enum JobInput {
    Blob(BlobRef),
    File(PathBuf),
    /// Output `output` of job `index` of the same DAG.
    Job { index: usize, output: String },
}

/// How a job ended.
#[derive(Clone, Debug)]
pub(crate) struct JobResult {
    pub status: Status,
    pub outputs: BTreeMap<String, BlobRef>,
    pub logs: BTreeMap<String, BlobRef>,
    pub metadata: serde_json::Value,
    pub reason: Option<String>,
    pub from_cache: bool,
}

impl JobResult {
    fn skipped(reason: String) -> JobResult {
        JobResult {
            status: Status::Skipped,
            outputs: BTreeMap::new(),
            logs: BTreeMap::new(),
            metadata: serde_json::Value::Null,
            reason: Some(reason),
            from_cache: false,
        }
    }

    fn failed(reason: String) -> JobResult {
        JobResult {
            status: Status::Failed,
            ..JobResult::skipped(reason)
        }
    }
}

/// What the action cache keeps about an action besides its blobs.
#[derive(Serialize, Deserialize)]
struct EntryMeta {
    rejected: Option<String>,
    #[serde(default)]
    metadata: serde_json::Value,
    duration_ms: u64,
    kflow_version: String,
}

const OUTPUT_PREFIX: &str = "out:";
const LOG_PREFIX: &str = "log:";

pub(crate) struct Scheduler<'a> {
    pub cache: &'a Cache,
    pub rules: &'a RuleRegistry,
    pub log: &'a BuildLog,
    pub observer: &'a dyn Observer,
    pub jobs: usize,
    pub keep_going: bool,
    pub stop: AtomicBool,
    pub records: Mutex<Vec<ActionRecord>>,
}

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
            let mut deps: Vec<usize> = job
                .inputs
                .iter()
                .filter_map(|(_, input)| match input {
                    JobInput::Job { index, .. } => Some(*index),
                    _ => None,
                })
                .collect();
            deps.sort_unstable();
            deps.dedup();
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
        rayon::scope(|s| {
            for i in 0..n {
                if dag.pending[i].load(Ordering::Relaxed) == 0 {
                    let dag = &dag;
                    s.spawn(move |s| self.step(dag, s, i));
                }
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
        let failed_dep = job.inputs.iter().find_map(|(_, input)| match input {
            JobInput::Job { index, .. } => dag.results[*index]
                .get()
                .filter(|r| !r.status.succeeded())
                .map(|r| (&dag.jobs[*index].id, r.status)),
            _ => None,
        });
        let (result, record) = match failed_dep {
            Some((dep, status)) => {
                let result = JobResult::skipped(format!("dependency `{dep}` {}", status.as_str()));
                let record = self.record(job, None, &BTreeMap::new(), &result, 0, dag);
                (result, record)
            }
            None if self.stop.load(Ordering::Relaxed) => {
                let result = JobResult::skipped("the build stopped after a failure".to_owned());
                let record = self.record(job, None, &BTreeMap::new(), &result, 0, dag);
                (result, record)
            }
            None => self.run_job(job, dag),
        };
        if dag.top_level && result.status == Status::Failed && !self.keep_going {
            self.stop.store(true, Ordering::Relaxed);
        }
        self.log.record(&record);
        self.observer.event(BuildEvent::Finished { record: &record });
        self.records.lock().unwrap_or_else(|e| e.into_inner()).push(record);
        let _ = dag.results[i].set(result);
        for &d in &dag.dependents[i] {
            if dag.pending[d].fetch_sub(1, Ordering::AcqRel) == 1 {
                s.spawn(move |s| self.step(dag, s, d));
            }
        }
    }

    fn run_job(&self, job: &Job, dag: &Dag<'_>) -> (JobResult, ActionRecord) {
        let started = Instant::now();
        let mut inputs: BTreeMap<String, BlobRef> = BTreeMap::new();
        let mut from_files: Vec<(&str, &Path)> = Vec::new();
        for (name, input) in &job.inputs {
            let blob = match input {
                JobInput::Blob(b) => Ok(*b),
                JobInput::File(path) => {
                    from_files.push((name, path));
                    self.cache
                        .file_digest(path)
                        .map_err(|e| format!("cannot read source `{}`: {e}", path.display()))
                }
                JobInput::Job { index, output } => dag.results[*index]
                    .get()
                    .and_then(|r| r.outputs.get(output).copied())
                    .ok_or_else(|| format!("`{}` did not produce `{output}`", dag.jobs[*index].id)),
            };
            match blob {
                Ok(b) => {
                    inputs.insert(name.clone(), b);
                }
                Err(reason) => {
                    let result = JobResult::failed(reason);
                    let record = self.record(job, None, &inputs, &result, elapsed_ms(started), dag);
                    return (result, record);
                }
            }
        }
        let key = action_key(
            job.rule.name(),
            job.rule.version(),
            &job.canonical_params,
            inputs.iter().map(|(n, b)| (n.as_str(), &b.digest)),
        );
        let result = match self.lookup(&key, job) {
            Some(hit) => hit,
            None => {
                self.observer.event(BuildEvent::Started { id: &job.id });
                self.execute(job, &key, &inputs, &from_files, started)
            }
        };
        let record = self.record(job, Some(&key), &inputs, &result, elapsed_ms(started), dag);
        (result, record)
    }

    fn lookup(&self, key: &Digest, job: &Job) -> Option<JobResult> {
        // A damaged or unreadable entry is a miss: the action simply runs.
        let entry = self.cache.get_action(key).ok()??;
        let meta: EntryMeta = serde_json::from_value(entry.metadata).ok()?;
        let with_prefix = |prefix: &str| -> BTreeMap<String, BlobRef> {
            entry
                .blobs
                .iter()
                .filter_map(|(name, blob)| Some((name.strip_prefix(prefix)?.to_owned(), *blob)))
                .collect()
        };
        let outputs = with_prefix(OUTPUT_PREFIX);
        let complete = meta.rejected.is_some() || job.outputs.iter().all(|o| outputs.contains_key(o));
        complete.then(|| JobResult {
            status: if meta.rejected.is_some() {
                Status::Rejected
            } else {
                Status::Cached
            },
            outputs,
            logs: with_prefix(LOG_PREFIX),
            metadata: meta.metadata,
            reason: meta.rejected,
            from_cache: true,
        })
    }

    fn execute(
        &self,
        job: &Job,
        key: &Digest,
        inputs: &BTreeMap<String, BlobRef>,
        from_files: &[(&str, &Path)],
        started: Instant,
    ) -> JobResult {
        let mut logs = BTreeMap::new();
        match self.try_execute(job, key, inputs, from_files, started, &mut logs) {
            Ok(r) => r,
            Err(e) => JobResult {
                logs,
                ..JobResult::failed(e.message)
            },
        }
    }

    fn try_execute(
        &self,
        job: &Job,
        key: &Digest,
        inputs: &BTreeMap<String, BlobRef>,
        from_files: &[(&str, &Path)],
        started: Instant,
        logs: &mut BTreeMap<String, BlobRef>,
    ) -> Result<JobResult, ActionError> {
        // The rule reads inputs from the store, so that it sees exactly the
        // bytes that were hashed into the key even if a source file is being
        // edited meanwhile.
        for (name, path) in from_files {
            let blob = inputs[*name];
            if !self.cache.has_blob(&blob) {
                let bytes = std::fs::read(path)
                    .map_err(|e| ActionError::new(format!("cannot read source `{}`: {e}", path.display())))?;
                let stored = self.cache.put_bytes(&bytes).map_err(cache_err)?;
                if stored != blob {
                    return Err(ActionError::new(format!(
                        "source `{}` changed while the build was running; run the build again",
                        path.display()
                    )));
                }
            }
        }
        let input_files: BTreeMap<String, InputFile> = inputs
            .iter()
            .map(|(name, blob)| {
                (
                    name.clone(),
                    InputFile {
                        path: self.cache.blob_path(&blob.digest),
                        blob: *blob,
                    },
                )
            })
            .collect();
        let scratch = self.cache.scratch_dir("action").map_err(cache_err)?;
        let runtime = ActionRuntime { sched: self };
        let cx = ActionContext {
            id: &job.id,
            params: &job.params,
            inputs: &input_files,
            outputs: &job.outputs,
            work_dir: scratch.path(),
            runtime: &runtime,
            produced: Mutex::new(Produced::default()),
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job.rule.execute(&cx)));
        let produced = cx.produced.into_inner().unwrap_or_else(|e| e.into_inner());
        logs.clone_from(&produced.logs);
        let outcome = match outcome {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => return Err(e),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                return Err(ActionError::new(format!(
                    "rule `{}` crashed (a bug in kflow): {what}",
                    job.rule.name()
                )));
            }
        };
        let rejected = match outcome {
            Outcome::Done => None,
            Outcome::Rejected { reason } => Some(reason),
        };
        let mut outputs = produced.output_blobs;
        for name in &job.outputs {
            if outputs.contains_key(name) {
                continue;
            }
            let path = scratch.path().join(name);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    outputs.insert(name.clone(), self.cache.put_file(&path).map_err(cache_err)?);
                }
                Ok(_) => return Err(ActionError::new(format!("declared output `{name}` is not a regular file"))),
                // A rejected action may stop before producing everything.
                Err(_) if rejected.is_some() => {}
                Err(_) => return Err(ActionError::new(format!("declared output `{name}` was not produced"))),
            }
        }
        let mut blobs: BTreeMap<String, BlobRef> =
            outputs.iter().map(|(n, b)| (format!("{OUTPUT_PREFIX}{n}"), *b)).collect();
        blobs.extend(produced.logs.iter().map(|(n, b)| (format!("{LOG_PREFIX}{n}"), *b)));
        let meta = EntryMeta {
            rejected: rejected.clone(),
            metadata: produced.metadata.clone(),
            duration_ms: elapsed_ms(started),
            kflow_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let entry = ActionEntry {
            blobs,
            metadata: serde_json::to_value(&meta).unwrap_or_default(),
        };
        self.cache.put_action(key, &entry).map_err(cache_err)?;
        Ok(JobResult {
            status: if rejected.is_some() {
                Status::Rejected
            } else {
                Status::Executed
            },
            outputs,
            logs: produced.logs,
            metadata: produced.metadata,
            reason: rejected,
            from_cache: false,
        })
    }

    fn record(
        &self,
        job: &Job,
        key: Option<&Digest>,
        inputs: &BTreeMap<String, BlobRef>,
        result: &JobResult,
        duration_ms: u64,
        dag: &Dag<'_>,
    ) -> ActionRecord {
        ActionRecord {
            id: job.id.clone(),
            rule: job.rule.name().to_owned(),
            rule_version: job.rule.version(),
            key: key.map(Digest::to_hex).unwrap_or_default(),
            status: result.status,
            from_cache: result.from_cache,
            duration_ms,
            inputs: inputs.iter().map(|(n, b)| (n.clone(), b.digest.to_hex())).collect(),
            producers: job
                .inputs
                .iter()
                .filter_map(|(n, input)| match input {
                    JobInput::Job { index, .. } => Some((n.clone(), dag.jobs[*index].id.clone())),
                    _ => None,
                })
                .collect(),
            params: job.params.clone(),
            outputs: result.outputs.iter().map(|(n, b)| (n.clone(), b.digest.to_hex())).collect(),
            logs: result.logs.iter().map(|(n, b)| (n.clone(), b.digest.to_hex())).collect(),
            reason: result.reason.clone(),
            parent: job.parent.clone(),
            metadata: result.metadata.clone(),
        }
    }

    /// Turns a child batch into jobs.
    fn child_jobs(&self, parent: &str, batch: Vec<ChildSpec>) -> Result<Vec<Job>, ActionError> {
        let mut jobs = Vec::with_capacity(batch.len());
        for (i, child) in batch.into_iter().enumerate() {
            let rule = self
                .rules
                .get(&child.rule)
                .ok_or_else(|| ActionError::new(format!("`{parent}` submitted a child of unknown rule `{}`", child.rule)))?
                .clone();
            let inputs = child
                .inputs
                .into_iter()
                .map(|(name, input)| match input {
                    ChildInput::Blob(b) => Ok((name, JobInput::Blob(b))),
                    // Only earlier siblings: that keeps every batch acyclic.
                    ChildInput::Sibling { child, output } if child < i => {
                        Ok((name, JobInput::Job { index: child, output }))
                    }
                    ChildInput::Sibling { child, .. } => Err(ActionError::new(format!(
                        "`{parent}`: child #{i} reads from child #{child}; a child may only read from earlier ones"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let id = if child.group.is_empty() {
                format!("{parent}/{}", child.name)
            } else {
                format!("{parent}[{}]/{}", child.group, child.name)
            };
            jobs.push(Job {
                id,
                parent: Some(parent.to_owned()),
                rule,
                canonical_params: canonical_json(&child.params),
                params: child.params,
                inputs,
                outputs: child.outputs,
            });
        }
        Ok(jobs)
    }
}

struct ActionRuntime<'s> {
    sched: &'s Scheduler<'s>,
}

impl Runtime for ActionRuntime<'_> {
    fn submit(&self, parent: &str, batch: Vec<ChildSpec>) -> Result<Vec<ChildResult>, ActionError> {
        if self.sched.stop.load(Ordering::Relaxed) {
            return Err(ActionError::new("the build stopped after a failure"));
        }
        let jobs = self.sched.child_jobs(parent, batch)?;
        self.sched.observer.event(BuildEvent::Added { count: jobs.len() });
        let results = self.sched.run_dag(&jobs, false);
        Ok(jobs
            .into_iter()
            .zip(results)
            .map(|(job, r)| ChildResult {
                id: job.id,
                status: r.status,
                outputs: r.outputs,
                metadata: r.metadata,
                reason: r.reason,
            })
            .collect())
    }

    fn blob_path(&self, blob: &BlobRef) -> PathBuf {
        self.sched.cache.blob_path(&blob.digest)
    }

    fn read_blob(&self, blob: &BlobRef) -> Result<Vec<u8>, ActionError> {
        self.sched.cache.read_blob(blob).map_err(cache_err)
    }

    fn copy_blob(&self, blob: &BlobRef, dest: &Path) -> Result<(), ActionError> {
        self.sched.cache.copy_out(blob, dest).map_err(cache_err)
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<BlobRef, ActionError> {
        self.sched.cache.put_bytes(bytes).map_err(cache_err)
    }

    fn progress(&self, id: &str, message: &str) {
        self.sched.observer.event(BuildEvent::Progress { id, message });
    }

    fn threads(&self) -> usize {
        self.sched.jobs
    }
}

fn cache_err(e: kflow_cache::CacheError) -> ActionError {
    ActionError::new(format!("cache: {e}"))
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}
