//! One build: plan the requested targets (or reload their saved plan), run
//! their actions through the build state and the cache, materialize their
//! outputs and record what happened.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kflow_cache::{BlobRef, Cache, CacheError, FileLock, RemoteCache};
use rustc_hash::FxHashMap;

use crate::action_graph::{ActionGraph, ActionNode, InputSource};
use crate::db::Db;
use crate::diagnostic::Diagnostic;
use crate::events::{ActionRecord, BuildEnd, BuildEvent, BuildHeader, BuildLog, Counts, Observer};
use crate::graph_cache::{self, Provenance};
use crate::label::{Label, Pattern};
use crate::materialize::{OutDir, Placement, materialize};
use crate::rule::Status;
use crate::scheduler::{Job, JobResult, LazyCache, Scheduler};
use crate::state::BuildState;
use crate::timings::Phases;
use crate::workspace::Workspace;

pub struct BuildOptions {
    pub jobs: usize,
    pub keep_going: bool,
    pub cache_dir: PathBuf,
    /// A shared cache consulted after the local one (SPEC.md §6).
    pub remote: Option<RemoteCache>,
    /// Reload the saved plan when its graph files are unchanged. Off in
    /// `--watch`, where the configuration database stays warm across
    /// builds and is the incremental layer itself.
    pub saved_plan: bool,
    /// Build-wide parameters: an action whose params are a JSON object
    /// holding one of these keys gets this value instead (before its key is
    /// computed), planned and dynamic actions alike. This is how the command
    /// line redirects every action that names some external resource
    /// without the engine knowing what the resource is.
    pub overrides: Overrides,
    /// Rules whose actions run even when their result is known: their
    /// results depend on something outside kflow (a physical device).
    pub rerun_rules: BTreeSet<String>,
    /// Runs the actions of rules that allow it elsewhere.
    pub executor: Option<std::sync::Arc<dyn crate::remote_exec::Executor>>,
    /// How many actions may be running on the executor at once.
    pub remote_jobs: usize,
}

/// See [`BuildOptions::overrides`].
pub type Overrides = BTreeMap<String, serde_json::Value>;

/// `params` with the overridden keys replaced; `None` when none applies.
pub(crate) fn overridden(params: &crate::keys::Params, overrides: &Overrides) -> Option<crate::keys::Params> {
    if overrides.is_empty() {
        return None;
    }
    let serde_json::Value::Object(mut map) = params.to_value() else {
        return None;
    };
    let mut changed = false;
    for (key, value) in overrides {
        if let Some(old) = map.get_mut(key)
            && old != value
        {
            *old = value.clone();
            changed = true;
        }
    }
    changed.then(|| crate::keys::Params::new(&serde_json::Value::Object(map)))
}

/// What a build did.
pub struct BuildResult {
    /// Every requested target's actions succeeded (or were rejected, which
    /// is a result).
    pub success: bool,
    pub counts: Counts,
    /// Every action record, in the order the actions finished.
    pub records: Vec<ActionRecord>,
    pub log_path: PathBuf,
    /// Requested targets whose outputs were materialized (see
    /// [`crate::materialize::target_out_dir`]).
    pub outputs: Vec<Label>,
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

/// Builds what `patterns` name. `on_wait` is told when another kflow process
/// holds the workspace or the cache and this one waits for it.
pub fn build(
    ws: &Workspace,
    patterns: &[Pattern],
    opts: &BuildOptions,
    observer: &dyn Observer,
    on_wait: &(dyn Fn(&str) + Sync),
) -> Result<BuildResult, BuildError> {
    let started = Instant::now();
    let mut phases = Phases::start();
    let out_dir = ws.out_dir();
    std::fs::create_dir_all(&out_dir).map_err(|e| io_err(&out_dir, e))?;
    let _workspace_lock = lock_workspace(&out_dir, on_wait)?;
    // Independent, and each a few milliseconds on large graphs.
    let (planned, state) = std::thread::scope(|s| {
        let state = s.spawn(|| BuildState::load(&out_dir));
        (plan(ws, patterns, opts.saved_plan), state.join())
    });
    let (roots, actions) = planned?;
    let mut state = state.unwrap_or_else(|_| BuildState::load(&out_dir));
    let parsed_packages = ws.db().take_parse_log();
    phases.mark("plan");

    let cache_dir = std::path::absolute(&opts.cache_dir).map_err(|e| io_err(&opts.cache_dir, e))?;
    let epoch = kflow_cache::read_epoch(&cache_dir);
    let trusted = state.trusted_with(&cache_dir, epoch);
    if !trusted {
        // Blobs may have been deleted since: nothing remembered holds.
        state.forget_actions();
    }
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
    phases.mark("state");

    let jobs = jobs_of(ws, &actions, &opts.overrides)?;
    observer.event(BuildEvent::Planned { total: jobs.len() });
    let cache = LazyCache::new(&cache_dir, on_wait);
    let open = || cache.get();
    let out = OutDir::open(&out_dir, &ws.config()?.default_cell)?;
    let materializer = Materializer::new(&roots, &actions, &state, &out, &open);
    let on_done = |node: usize, results: &[OnceLock<JobResult>]| {
        materializer.node_done(node, |i| results.get(i).and_then(OnceLock::get));
    };
    let sched = Scheduler {
        cache: &cache,
        state: trusted.then_some(&state),
        sources: state.sources(),
        rules: ws.db().rules(),
        log: &log,
        observer,
        jobs: opts.jobs,
        keep_going: opts.keep_going,
        stop: AtomicBool::new(false),
        records: Mutex::new(Vec::with_capacity(jobs.len())),
        fresh: Mutex::new(Vec::new()),
        remote: opts.remote.as_ref(),
        remote_warned: AtomicBool::new(false),
        executor: opts.executor.as_deref(),
        executor_off: AtomicBool::new(false),
        slots: match opts.executor {
            Some(_) => crate::slots::Slots::bounded(opts.jobs, opts.remote_jobs),
            None => crate::slots::Slots::unbounded(),
        },
        on_done: Some(&on_done),
        overrides: &opts.overrides,
        rerun_rules: &opts.rerun_rules,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1) + opts.executor.as_ref().map_or(0, |_| opts.remote_jobs.max(1)))
        .thread_name(|i| format!("kflow-worker-{i}"))
        .build()
        .map_err(|e| BuildError::Io(format!("cannot start worker threads: {e}")))?;
    phases.mark("jobs");
    let results = pool.install(|| sched.run_dag(&jobs, true));
    phases.mark("run");
    let records = sched.records.into_inner().unwrap_or_else(|e| e.into_inner());
    let fresh = sched.fresh.into_inner().unwrap_or_else(|e| e.into_inner());

    let mut counts = Counts::default();
    records.iter().for_each(|r| counts.add(r.status));
    let success = results
        .iter()
        .all(|r| r.status.succeeded() || r.status == Status::Rejected);

    let placed = materializer.finish(|i| results.get(i));
    let mut outputs = Vec::new();
    for (label, placed) in roots.iter().zip(placed) {
        match placed? {
            Materialized::No => {}
            Materialized::Unchanged => outputs.push(label.clone()),
            Materialized::Placed(placement) => {
                state.set_placed(label.shared(), placement);
                outputs.push(label.clone());
            }
        }
    }
    phases.mark("materialize");
    // The epoch the results are valid for: the opened cache's (it may have
    // moved during the build), else the one the trusted state was read at.
    let epoch = cache.opened().map(|c| c.epoch()).or(epoch.filter(|_| trusted));
    if let Some(epoch) = epoch {
        state.remember((cache_dir.clone(), epoch), fresh);
    }
    // Losing the state only costs the next build time.
    let _ = state.save();
    phases.mark("save");
    // The graph, the state and the results of a large build take a while to
    // free; nobody needs to wait for that.
    std::thread::spawn(move || drop((actions, jobs, results, state)));
    let duration = started.elapsed();
    log.finish(BuildEnd {
        success,
        counts,
        duration_ms: duration.as_millis() as u64,
    })
    .map_err(|e| io_err(log.path(), e))?;
    Ok(BuildResult {
        success,
        counts,
        records,
        log_path: log.path().to_path_buf(),
        outputs,
        duration,
    })
}

/// The roots and action graph of `patterns`: reloaded when every graph file
/// it came from is unchanged, else planned by the configuration database
/// and saved.
fn plan(ws: &Workspace, patterns: &[Pattern], saved: bool) -> Result<(Vec<Label>, ActionGraph), BuildError> {
    let config = ws.config()?;
    let dir = ws.out_dir().join(".state").join("graphs");
    let stamp = graph_cache::stamp(ws.db().rules());
    if saved
        && let Some((roots, graph)) = graph_cache::load(&dir, &stamp, config, patterns)
        // A missing source is a graph error; planning reports it properly.
        && graph.source_files().all(|p| p.is_file())
    {
        return Ok((roots, graph));
    }
    let roots = ws.resolve(patterns)?;
    let targets = ws.load(&roots)?;
    let graph = ActionGraph::build(ws.db(), &targets)?;
    let provenance = Provenance {
        stamp,
        patterns: patterns.iter().map(Pattern::to_string).collect(),
        files: ws.db().file_digests(),
        walks: graph_cache::walks(config, patterns),
    };
    // A graph that cannot be saved is planned again next time.
    let _ = graph_cache::save(&dir, &provenance, &roots, &graph);
    Ok((roots, graph))
}

fn jobs_of(ws: &Workspace, actions: &ActionGraph, overrides: &Overrides) -> Result<Vec<Job>, BuildError> {
    actions
        .graph
        .node_weights()
        .map(|node| {
            let rule = ws.db().rules().get(&node.rule).ok_or_else(|| {
                Diagnostic::new(format!(
                    "`{}` needs rule `{}`, which this kflow does not have",
                    node.id, node.rule
                ))
            })?;
            let node = match overridden(&node.params, overrides) {
                Some(params) => Arc::new(ActionNode {
                    params,
                    ..(**node).clone()
                }),
                None => node.clone(),
            };
            Ok(Job {
                node,
                rule: rule.clone(),
                parent: None,
            })
        })
        .collect()
}

enum Materialized {
    /// Some output does not exist (the target failed).
    No,
    Unchanged,
    Placed(Placement),
}

/// Materializes each requested target as soon as every action it exposes
/// outputs of has finished.
struct Materializer<'a, 'c> {
    roots: &'a [Label],
    actions: &'a ActionGraph,
    state: &'a BuildState,
    out: &'a OutDir,
    cache: &'a (dyn Fn() -> Result<&'c Cache, CacheError> + Sync),
    /// Per root: actions still to finish before it can be materialized.
    waiting: Vec<AtomicUsize>,
    /// Per action: the roots waiting for it.
    waiters: FxHashMap<usize, Vec<usize>>,
    done: Vec<OnceLock<Result<Materialized, BuildError>>>,
}

impl<'a, 'c> Materializer<'a, 'c> {
    fn new(
        roots: &'a [Label],
        actions: &'a ActionGraph,
        state: &'a BuildState,
        out: &'a OutDir,
        cache: &'a (dyn Fn() -> Result<&'c Cache, CacheError> + Sync),
    ) -> Self {
        let mut waiters: FxHashMap<usize, Vec<usize>> = FxHashMap::default();
        let mut waiting = Vec::with_capacity(roots.len());
        for (r, label) in roots.iter().enumerate() {
            let nodes = InputSource::producers(actions.exposes.get(label).into_iter().flatten().map(|(_, s)| s));
            for n in &nodes {
                waiters.entry(*n).or_default().push(r);
            }
            waiting.push(AtomicUsize::new(nodes.len()));
        }
        Materializer {
            roots,
            actions,
            state,
            out,
            cache,
            waiting,
            waiters,
            done: (0..roots.len()).map(|_| OnceLock::new()).collect(),
        }
    }

    fn node_done<'r>(&self, node: usize, result: impl Fn(usize) -> Option<&'r JobResult>) {
        for &r in self.waiters.get(&node).into_iter().flatten() {
            if self.waiting[r].fetch_sub(1, Ordering::AcqRel) == 1 {
                let _ = self.done[r].set(self.materialize(r, &result));
            }
        }
    }

    /// The outcome for every root, materializing those not done yet (the
    /// ones that expose no action output).
    fn finish<'r>(self, result: impl Fn(usize) -> Option<&'r JobResult>) -> Vec<Result<Materialized, BuildError>> {
        let mut out = Vec::with_capacity(self.roots.len());
        for (r, cell) in self.done.iter().enumerate() {
            out.push(match cell.get() {
                Some(_) => None,
                None => Some(self.materialize(r, &result)),
            });
        }
        self.done
            .into_iter()
            .zip(out)
            .map(|(cell, late)| late.or_else(|| cell.into_inner()).unwrap_or(Ok(Materialized::No)))
            .collect()
    }

    fn materialize<'r>(
        &self,
        r: usize,
        result: &impl Fn(usize) -> Option<&'r JobResult>,
    ) -> Result<Materialized, BuildError> {
        let label = &self.roots[r];
        let Some(exposed) = self.actions.exposes.get(label) else {
            return Ok(Materialized::No);
        };
        let mut blobs: Vec<(&Arc<str>, BlobRef)> = Vec::with_capacity(exposed.len());
        for (name, source) in exposed {
            let blob = match source {
                InputSource::Output { node, output } => match result(node.index()) {
                    Some(r) if r.omitted(output) => continue,
                    Some(r) => match r.output(output) {
                        Some(b) => b,
                        None => return Ok(Materialized::No),
                    },
                    None => return Ok(Materialized::No),
                },
                InputSource::Blob(blob) => *blob,
                InputSource::File(path) => {
                    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
                    (self.cache)()?.put_bytes(&bytes)?
                }
            };
            blobs.push((name, blob));
        }
        let previous = self.state.placed(label.as_str());
        Ok(
            match materialize(self.cache, self.out, &self.out.target_rel_dir(label), &blobs, previous)? {
                Some(placement) => Materialized::Placed(placement),
                None => Materialized::Unchanged,
            },
        )
    }
}

/// Two builds in one workspace would overwrite each other's outputs; the
/// second waits.
/// Two builds of one workspace would race on its state and `kflow-out/`;
/// builds of different workspaces share the cache side by side.
fn lock_workspace(out_dir: &Path, on_wait: &(dyn Fn(&str) + Sync)) -> Result<FileLock, BuildError> {
    Ok(FileLock::exclusive(
        &out_dir.join(".lock"),
        "another kflow build of this workspace to finish, lock",
        &mut |m| on_wait(m),
    )?)
}

fn io_err(path: &Path, e: std::io::Error) -> BuildError {
    BuildError::Io(format!("{}: {e}", path.display()))
}
