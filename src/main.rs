//! The `kflow` command: parses arguments, calls the engine, renders results.

mod cli;
mod commands;
mod output;
mod progress;
mod render;

use std::process::ExitCode;

/// kflow allocates many small values while planning large graphs; mimalloc
/// is markedly faster than glibc's allocator at that (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use kflow_engine::Diagnostic;

use crate::cli::Cli;

/// Why a command did not succeed, mapped to the exit codes of SPEC.md §1.
pub enum Failure {
    /// 1: a target failed, or the cache or the disk failed us.
    Build(Option<String>),
    /// 2: the graph or the command line is wrong.
    Graph(Diagnostic),
}

impl From<Diagnostic> for Failure {
    fn from(d: Diagnostic) -> Failure {
        Failure::Graph(d)
    }
}

impl From<kflow_engine::build::BuildError> for Failure {
    fn from(e: kflow_engine::build::BuildError) -> Failure {
        match e {
            kflow_engine::build::BuildError::Graph(d) => Failure::Graph(d),
            other => Failure::Build(Some(other.to_string())),
        }
    }
}

impl From<kflow_cache::CacheError> for Failure {
    fn from(e: kflow_cache::CacheError) -> Failure {
        Failure::Build(Some(format!("cache: {e}")))
    }
}

fn main() -> ExitCode {
    // candle splits each matrix product into as many tasks as
    // RAYON_NUM_THREADS says (else one per core, re-reading /proc/cpuinfo
    // every time) and keeps a pool of spinning workers, sized by
    // CANDLE_NUM_THREADS, for large element-wise ops. Training runs one
    // model per build job, on the job's own thread: both only cost time
    // there (17% of the baseline's training; kflow-train's threads.rs).
    // The results do not depend on it either way.
    // SAFETY: no other thread exists yet to read the environment.
    unsafe {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let cli = Cli::parse();
    let color = cli.color;
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Build(message)) => {
            if let Some(m) = message {
                render::error(&m, color);
            }
            ExitCode::from(1)
        }
        Err(Failure::Graph(d)) => {
            render::diagnostic(&d, color);
            ExitCode::from(2)
        }
    }
}
