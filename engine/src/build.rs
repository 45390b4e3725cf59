//! One build: plan the requested targets, run their actions through the
//! cache, materialize their outputs and record what happened.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kflow_cache::{BlobRef, Cache, CacheError};
use petgraph::graph::NodeIndex;
use rayon::prelude::*;

use crate::action_graph::{ActionGraph, InputSource};
use crate::db::Db;
use crate::diagnostic::Diagnostic;
use crate::events::{ActionRecord, BuildEnd, BuildEvent, BuildHeader, BuildLog, Counts, Observer};
use crate::label::Label;
use crate::materialize::{OutputState, Placement, materialize, target_out_dir};
use crate::rule::Status;
use crate::scheduler::{Job, JobInput, JobResult, Scheduler};
use crate::workspace::Workspace;

pub struct BuildOptions {
    pub jobs: usize,
    pub keep_going: bool,
    pub cache_dir: PathBuf,
}

/// What a build did.
pub struct BuildResult {
    /// Every requested target's actions succeeded (or were rejected, which
    /// is a result).
    pub success: bool,
    pub counts: Counts,
    /// Every action record, sorted by identity.
    pub records: Vec<ActionRecord>,
    pub log_path: PathBuf,
    /// Requested targets whose outputs were materialized, with the directory.
    pub outputs: Vec<(Label, PathBuf)>,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Exit code 2: the graph is wrong.
    #[error("{0}")]
    Graph(#[from] Diagnostic),
    #[error("cache: {0}")]
    Cache(#[from] CacheError),
    #[error("{0}")]
    Io(String),
}

/// Builds `roots`. `on_wait` is told when another kflow process holds the
/// workspace or the cache and this one waits for it.
pub fn build(
    ws: &Workspace,
    roots: &[Label],
    opts: &BuildOptions,
    observer: &dyn Observer,
    on_wait: &mut dyn FnMut(&str),
) -> Result<BuildResult, BuildError> {
    let started = Instant::now();
    let targets = ws.load(roots)?;
    let actions = ActionGraph::build(ws.db(), &targets)?;
    let parsed_packages = ws.db().take_parse_log();

    let out_dir = ws.out_dir();
    std::fs::create_dir_all(&out_dir).map_err(|e| io_err(&out_dir, e))?;
    let _workspace_lock = lock_workspace(&out_dir, on_wait)?;
    let cache = Cache::open(&opts.cache_dir, on_wait)?;
    let header = BuildHeader {
        build: String::new(),
        started_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        targets: roots.iter().map(Label::to_string).collect(),
        jobs: opts.jobs,
        kflow_version: env!("CARGO_PKG_VERSION").to_owned(),
        parsed_packages,
    };
    let log = BuildLog::create(&out_dir, header).map_err(|e| io_err(&out_dir, e))?;

    let jobs = jobs_of(&actions);
    observer.event(BuildEvent::Planned { total: jobs.len() });
    let sched = Scheduler {
        cache: &cache,
        rules: ws.db().rules(),
        log: &log,
        observer,
        jobs: opts.jobs,
        keep_going: opts.keep_going,
        stop: AtomicBool::new(false),
        records: Mutex::new(Vec::new()),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .thread_name(|i| format!("kflow-worker-{i}"))
        .build()
        .map_err(|e| BuildError::Io(format!("cannot start worker threads: {e}")))?;
    let results = pool.install(|| sched.run_dag(&jobs, true));
    let mut records = sched.records.into_inner().unwrap_or_else(|e| e.into_inner());
    records.sort_by(|a, b| a.id.cmp(&b.id));

    let mut counts = Counts::default();
    records.iter().for_each(|r| counts.add(r.status));
    let success = results
        .iter()
        .all(|r| r.status.succeeded() || r.status == Status::Rejected);

    let mut state = OutputState::load(&out_dir);
    let placed: Vec<Result<Option<(PathBuf, Placement)>, BuildError>> = pool.install(|| {
        roots
            .par_iter()
            .map(|label| {
                let previous = state.targets.get(&label.to_string());
                materialize_target(&cache, &out_dir, &actions, &results, label, previous)
            })
            .collect()
    });
    let mut outputs = Vec::new();
    let mut changed = false;
    for (label, placed) in roots.iter().zip(placed) {
        if let Some((dir, placement)) = placed? {
            let key = label.to_string();
            if state.targets.get(&key) != Some(&placement) {
                state.targets.insert(key, placement);
                changed = true;
            }
            outputs.push((label.clone(), dir));
        }
    }
    if changed {
        state.save(&out_dir).map_err(|e| io_err(&out_dir, e))?;
    }
    let duration = started.elapsed();
    log.finish(BuildEnd {
        success,
        counts,
        duration_ms: duration.as_millis() as u64,
    })
    .map_err(|e| io_err(log.path(), e))?;
    cache.flush()?;
    Ok(BuildResult {
        success,
        counts,
        records,
        log_path: log.path().to_path_buf(),
        outputs,
        duration,
    })
}

fn jobs_of(actions: &ActionGraph) -> Vec<Job> {
    actions
        .graph
        .node_indices()
        .map(|n| {
            let node = &actions.graph[n];
            Job {
                id: node.id.clone(),
                parent: None,
                rule: node.rule.clone(),
                params: node.params.clone(),
                canonical_params: node.canonical_params.clone(),
                inputs: node
                    .inputs
                    .iter()
                    .map(|(name, input)| (name.clone(), job_input(input)))
                    .collect(),
                outputs: node.outputs.clone(),
            }
        })
        .collect()
}

fn job_input(input: &InputSource) -> JobInput {
    match input {
        InputSource::File(path) => JobInput::File(path.clone()),
        InputSource::Output { node, output } => JobInput::Job {
            index: node.index(),
            output: output.clone(),
        },
    }
}

/// Materializes a requested target whose outputs all exist.
fn materialize_target(
    cache: &Cache,
    out_dir: &Path,
    actions: &ActionGraph,
    results: &[JobResult],
    label: &Label,
    previous: Option<&Placement>,
) -> Result<Option<(PathBuf, Placement)>, BuildError> {
    let Some(exposed) = actions.exposes.get(label) else {
        return Ok(None);
    };
    let mut blobs: Vec<(String, BlobRef)> = Vec::with_capacity(exposed.len());
    for (name, source) in exposed {
        let blob = match source {
            InputSource::Output { node, output } => {
                match results.get(NodeIndex::index(*node)).and_then(|r| r.outputs.get(output)) {
                    Some(b) => *b,
                    None => return Ok(None),
                }
            }
            InputSource::File(path) => {
                let blob = cache.file_digest(path)?;
                if !cache.has_blob(&blob) {
                    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
                    cache.put_bytes(&bytes)?;
                }
                blob
            }
        };
        blobs.push((name.clone(), blob));
    }
    let dir = target_out_dir(out_dir, label);
    let placement = materialize(cache, &dir, &blobs, previous)?;
    Ok(Some((dir, placement)))
}

/// Two builds in one workspace would overwrite each other's outputs; the
/// second waits.
fn lock_workspace(out_dir: &Path, on_wait: &mut dyn FnMut(&str)) -> Result<File, BuildError> {
    let path = out_dir.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            on_wait(&format!(
                "waiting for another kflow build in this workspace to finish (lock: {})",
                path.display()
            ));
            file.lock().map_err(|e| io_err(&path, e))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path, e)),
    }
}

fn io_err(path: &Path, e: std::io::Error) -> BuildError {
    BuildError::Io(format!("{}: {e}", path.display()))
}
