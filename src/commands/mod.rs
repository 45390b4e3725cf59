//! One module per group of subcommands; this one dispatches and holds what
//! they share (opening the workspace, finding the cache).

mod ai8x;
mod build;
mod cache;
mod device;
mod inspect;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kflow_engine::{Diagnostic, Workspace};

use crate::Failure;
use crate::cli::{CacheDirArg, Cli, Command};

pub fn run(cli: Cli) -> Result<(), Failure> {
    let cwd =
        std::env::current_dir().map_err(|e| Failure::Build(Some(format!("cannot read the current directory: {e}"))))?;
    match cli.command {
        Command::Build(args) => build::run(&cwd, args, cli.quiet, cli.color),
        Command::Explain(args) => inspect::explain(&cwd, args),
        Command::Query(args) => inspect::query(&cwd, args),
        Command::Graph(args) => inspect::graph(&cwd, args),
        Command::Targets(args) => inspect::targets(&cwd, args),
        Command::Cache(args) => cache::run(&cwd, args, cli.quiet),
        Command::Clean(args) => cache::clean(&cwd, args, cli.quiet),
        Command::Report(command) => inspect::report(&cwd, command),
        Command::Ai8x(args) => ai8x::run(args),
        Command::DeviceSim(args) => device::serve(args, cli.quiet),
        Command::Worker(args) => worker::run(args, cli.quiet),
        Command::ExecAction => build::exec_action(&cwd),
    }
}

/// The rules this binary knows. The engine's own tests add a test-only rule
/// through `KFLOW_TEST_RULES=1`.
fn rules() -> Arc<kflow_engine::RuleRegistry> {
    let mut rules = kflow_rules::registry();
    if std::env::var_os("KFLOW_TEST_RULES").is_some_and(|v| v == "1") {
        kflow_rules::register_test_rules(&mut rules);
    }
    Arc::new(rules)
}

fn open_workspace(cwd: &Path) -> Result<Workspace, Diagnostic> {
    Workspace::open(cwd, rules())
}

/// `--cache-dir` (or `KFLOW_CACHE_DIR`), else the workspace's
/// `[cache] dir`, else the user's cache directory.
fn cache_dir(arg: &CacheDirArg, ws: Option<&Workspace>) -> Result<PathBuf, Failure> {
    if let Some(dir) = &arg.cache_dir {
        return Ok(dir.clone());
    }
    if let Some(dir) = ws.and_then(|ws| ws.config().ok()).and_then(|c| c.cache_dir.clone()) {
        return Ok(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| {
            Failure::Build(Some(
                "no cache directory: set KFLOW_CACHE_DIR, pass --cache-dir, or set HOME".to_owned(),
            ))
        })?;
    Ok(base.join("kflow"))
}

/// Runs `work` on one thread per core. main() sets RAYON_NUM_THREADS=1
/// for candle's sake, which leaves rayon's global pool a single thread.
fn on_every_core<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    match rayon::ThreadPoolBuilder::new().num_threads(cores).build() {
        Ok(pool) => pool.install(work),
        Err(_) => work(),
    }
}

/// Tells the user why kflow is not making progress.
fn announce_wait(quiet: bool) -> impl Fn(&str) + Sync {
    move |message: &str| {
        if !quiet {
            eprintln!("{message}");
        }
    }
}
