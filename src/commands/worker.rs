//! `kflow worker`: a Remote Workers API bot (kflow_remote::worker) serving
//! a REAPI server until SIGINT or SIGTERM.

use std::path::PathBuf;

use kflow_remote::worker::{self, WorkerOptions};

use crate::Failure;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The server: grpc://HOST:PORT[/INSTANCE], or grpcs:// for TLS (extra
    /// CAs from KFLOW_REMOTE_CA, a PEM file). A bearer token, if the server
    /// wants one, comes from KFLOW_REMOTE_EXECUTOR_TOKEN.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// The instance name, instead of the URL's.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// How many actions run at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub capacity: u16,
    /// Where actions get their private directories (default: the system's
    /// temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// An environment variable every command gets: NAME=VALUE, or NAME for
    /// the worker's own value. Commands start from an empty environment
    /// with PATH, then these, then their own variables. Repeatable.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// The bot's id (default: HOSTNAME-PID); unique per running worker.
    #[arg(long, value_name = "ID")]
    pub bot_id: Option<String>,
}

pub fn run(args: WorkerArgs, quiet: bool) -> Result<(), Failure> {
    let fail = |e: worker::WorkerError| Failure::Build(Some(format!("worker: {e}")));
    let options = WorkerOptions {
        server: args.server,
        instance: args.instance,
        token: std::env::var(worker::TOKEN_ENV).ok().filter(|t| !t.trim().is_empty()),
        capacity: usize::from(args.capacity),
        work_dir: args.work_dir,
        env: worker::env_entries(&args.env).map_err(fail)?,
        bot_id: args.bot_id,
    };
    let log = move |line: &str| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    worker::run(options, &log).map_err(fail)
}
