//! `kflow build`, once or in `--watch` mode.

use std::path::Path;
use std::sync::Arc;

use kflow_cache::RemoteCache;
use kflow_engine::build::{BuildOptions, BuildResult, build};
use kflow_engine::events::BuildReport;
use kflow_engine::scheduler::REMOTE_TOKEN_ENV;
use kflow_engine::watch::Watcher;
use kflow_engine::{Diagnostic, Status, Workspace};

use super::{announce_wait, cache_dir, open_workspace};
use crate::Failure;

/// The file a target's results start at, when it has one (a search's).
const SUMMARY: &str = "summary.json";
/// A search's report page, printed after its summary.
const REPORT: &str = "report/report.html";
use crate::cli::{BuildArgs, ColorMode};
use crate::{progress, render};

/// The environment variable holding the remote executor's bearer token.
const EXECUTOR_TOKEN_ENV: &str = "KFLOW_REMOTE_EXECUTOR_TOKEN";

/// The remote executor at `url`; its workers run this binary.
fn executor(url: Option<String>) -> Result<Option<Arc<dyn kflow_engine::Executor>>, Failure> {
    let Some(url) = url else {
        return Ok(None);
    };
    let tool = std::env::current_exe()
        .map_err(|e| Failure::Build(Some(format!("cannot find the kflow binary to send to workers: {e}"))))?;
    let token = std::env::var(EXECUTOR_TOKEN_ENV).ok();
    let executor = kflow_remote::execute::RemoteExecutor::new(&url, token.as_deref(), tool)
        .map_err(|e| Diagnostic::new(format!("--remote-executor: {e}")))?;
    Ok(Some(Arc::new(executor)))
}

/// `kflow exec-action`: one action a remote executor sent, in the current
/// directory (see `kflow_engine::remote_exec`).
pub fn exec_action(cwd: &Path) -> Result<(), Failure> {
    kflow_engine::remote_exec::exec_action(&super::rules(), cwd).map_err(|e| Failure::Build(Some(e.message)))
}

pub fn run(cwd: &Path, args: BuildArgs, quiet: bool, color: ColorMode) -> Result<(), Failure> {
    let mut ws = open_workspace(cwd)?;
    let opts = BuildOptions {
        jobs: args
            .jobs
            .or(ws.config()?.jobs)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1),
        keep_going: args.keep_going,
        cache_dir: cache_dir(&args.cache, Some(&ws))?,
        remote: match &args.remote_cache {
            Some(url) => {
                let token = std::env::var(REMOTE_TOKEN_ENV).ok().filter(|t| !t.is_empty());
                let remote = RemoteCache::new(url, token, !args.no_remote_upload)
                    .map_err(|e| Diagnostic::new(format!("--remote-cache: {e}")))?;
                Some(remote)
            }
            None => None,
        },
        saved_plan: !args.watch,
        overrides: args
            .device
            .iter()
            .map(|url| (kflow_rules::device::DEVICE_PARAM.to_owned(), serde_json::json!(url)))
            .collect(),
        rerun_rules: match args.rerun_devices {
            true => kflow_rules::device::DEVICE_RULES.map(str::to_owned).into(),
            false => Default::default(),
        },
        executor: executor(args.remote_executor.clone().or(ws.config()?.remote_executor.clone()))?,
        remote_jobs: args.remote_jobs.or(ws.config()?.remote_jobs).unwrap_or(8).max(1),
    };
    if !args.watch {
        let result = build_once(cwd, &ws, &args, &opts, quiet);
        // Freeing the configuration database walks every memoized value
        // (milliseconds for large graphs); the process is about to exit.
        std::mem::forget(ws);
        return result;
    }
    let watcher = Watcher::new(ws.root(), vec![ws.out_dir(), opts.cache_dir.clone()])
        .map_err(|e| Failure::Build(Some(e.to_string())))?;
    loop {
        // In watch mode a failed build, or a graph error, is reported and
        // the next edit tries again.
        match build_once(cwd, &ws, &args, &opts, quiet) {
            Ok(()) | Err(Failure::Build(None)) => {}
            Err(Failure::Build(Some(m))) => render::error(&m, color),
            Err(Failure::Graph(d)) => render::diagnostic(&d, color),
        }
        if !quiet {
            eprintln!("watching {} for changes (Ctrl-C to stop)", ws.root().display());
        }
        let Some(changed) = watcher.wait() else {
            return Ok(());
        };
        for path in &changed {
            ws.db_mut().refresh(path);
        }
    }
}

fn build_once(cwd: &Path, ws: &Workspace, args: &BuildArgs, opts: &BuildOptions, quiet: bool) -> Result<(), Failure> {
    let patterns = ws.parse_patterns(cwd, &args.targets)?;
    let observer = progress::observer(quiet);
    let result = build(ws, &patterns, opts, observer.as_ref(), &announce_wait(quiet));
    drop(observer);
    let result = result?;
    if let Some(path) = &args.build_report {
        write_report(path, &result)?;
    }
    let mut failed: Vec<_> = result.records.iter().filter(|r| r.status == Status::Failed).collect();
    failed.sort_by(|a, b| a.id.cmp(&b.id));
    for record in failed {
        eprintln!(
            "\nFAILED {} ({}):\n{}",
            record.id,
            record.rule,
            record.reason.as_deref().unwrap_or("(no message)")
        );
    }
    if !quiet {
        eprintln!("{}", progress::summary(result.success, &result.counts, result.duration));
        const SHOWN: usize = 10;
        for label in result.outputs.iter().take(SHOWN) {
            let mut dir = ws.target_out_dir(label)?;
            if dir.join(SUMMARY).is_file() {
                dir.push(SUMMARY);
            }
            let shown = dir.strip_prefix(cwd).unwrap_or(&dir);
            eprintln!("  {label} -> {}", shown.display());
            let report = ws.target_out_dir(label)?.join(REPORT);
            if report.is_file() {
                eprintln!("  report: {}", report.strip_prefix(cwd).unwrap_or(&report).display());
            }
        }
        if result.outputs.len() > SHOWN {
            eprintln!(
                "  ... and {} more under {}",
                result.outputs.len() - SHOWN,
                ws.out_dir().display()
            );
        }
    }
    let success = result.success;
    // Freeing ten thousand records costs milliseconds; in the one-shot CLI
    // the process is about to exit (watch mode frees them).
    if !args.watch {
        std::mem::forget(result);
    }
    if success { Ok(()) } else { Err(Failure::Build(None)) }
}

fn write_report(path: &Path, result: &BuildResult) -> Result<(), Failure> {
    let mut actions = result.records.clone();
    actions.sort_by(|a, b| a.id.cmp(&b.id));
    let report = BuildReport {
        success: result.success,
        counts: result.counts,
        actions,
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| Failure::Build(Some(e.to_string())))?;
    std::fs::write(path, json)
        .map_err(|e| Failure::Build(Some(format!("cannot write the build report {}: {e}", path.display()))))
}
