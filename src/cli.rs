//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "kflow",
    version,
    about = "Incremental, content-hashed dataflow builds for hardware-aware AutoML on microcontrollers",
    after_help = "Exit codes: 0 success, 1 build failure, 2 usage or graph error.\n\
                  Examples:\n  kflow build target//demo:summary\n  kflow explain target//demo:summary\n  \
                  kflow query 'deps(target//demo:summary)'"
)]
pub struct Cli {
    /// When to use colors in messages.
    #[arg(long, global = true, value_enum, default_value_t = ColorMode::Auto)]
    pub color: ColorMode,
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorMode {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build targets: plan, run what changed, materialize outputs.
    Build(BuildArgs),
    /// Why each action of the last build of a target ran or came from cache.
    Explain(ExplainArgs),
    /// Query the target graph: deps(), rdeps(), kind(), and set operators.
    Query(QueryArgs),
    /// Print the action graph of targets.
    Graph(GraphArgs),
    /// List targets matching patterns (default: every target of every cell).
    Targets(TargetsArgs),
    /// Inspect and maintain the cache.
    Cache(CacheArgs),
    /// Remove `kflow-out/` (and with --cache, the cache too).
    Clean(CleanArgs),
    /// The report of a search that has been built.
    #[command(subcommand)]
    Report(ReportCommand),
    /// The MAX78000/MAX78002 toolchain on ai8x network files: check, simulate, synthesize.
    Ai8x(Ai8xArgs),
    /// Serve a simulated MAX78002/MAX78000 board over TCP (and a serial
    /// port) until killed: it configures itself from the generated code's
    /// register writes and weight stream, and runs the bit-exact simulator.
    #[command(
        after_help = "Example:\n  kflow device-sim --board max78002 --listen 127.0.0.1:7433\n\n\
                  Then use tcp://127.0.0.1:7433 as the device URL."
    )]
    DeviceSim(DeviceSimArgs),
    /// Serve a Remote Execution API cluster as a worker (a bot on the
    /// Remote Workers API): take actions from the server, run their
    /// commands in private directories, upload the results. Runs any REAPI
    /// command, not only kflow's.
    #[command(after_help = "Example:\n  kflow worker --server grpc://127.0.0.1:50051 --capacity 2")]
    Worker(crate::commands::worker::WorkerArgs),
    /// Run one action sent by a remote executor (the command kflow's
    /// actions run on a worker; not for people).
    #[command(hide = true)]
    ExecAction,
}

#[derive(Args)]
pub struct DeviceSimArgs {
    /// Which board to simulate.
    #[arg(long, value_parser = ["max78002", "max78000"])]
    pub board: String,
    /// Address to listen on for TCP connections, e.g. 127.0.0.1:7433 (port 0
    /// picks a free port; the address is printed).
    #[arg(long, value_name = "ADDR", required_unless_present = "serial")]
    pub listen: Option<String>,
    /// Also serve on this serial port (e.g. one end of a pseudo-terminal
    /// pair), with its own board state.
    #[arg(long, value_name = "PATH")]
    pub serial: Option<PathBuf>,
    /// Baud rate of --serial.
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// End a TCP connection on which nothing arrives for this many seconds
    /// (a host that vanished), so the next host gets the board.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub idle_timeout: u64,
}

#[derive(Args)]
pub struct Ai8xArgs {
    #[command(subcommand)]
    pub command: Ai8xCommand,
}

/// What every `kflow ai8x` command reads.
#[derive(Args)]
pub struct Ai8xNetwork {
    /// `max78000` or `max78002`.
    #[arg(long)]
    pub device: String,
    /// An ai8x network YAML file.
    #[arg(long, value_name = "YAML")]
    pub network: PathBuf,
    /// safetensors with int8 `<layer>.weight` (PyTorch layout) and `<layer>.bias` tensors.
    #[arg(long, value_name = "SAFETENSORS")]
    pub weights: PathBuf,
}

/// The network input's shape, from a sample or given.
#[derive(Args)]
pub struct Ai8xInputShape {
    /// A sample input (`.npy`, int8, `[C, L]` or `[C, H, W]`); only its shape is used.
    #[arg(long, value_name = "NPY", conflicts_with = "input_shape")]
    pub input: Option<PathBuf>,
    /// The input's shape: `C,L` or `C,H,W`.
    #[arg(long, value_name = "DIMS", value_delimiter = ',')]
    pub input_shape: Option<Vec<u32>>,
}

#[derive(Subcommand)]
pub enum Ai8xCommand {
    /// Whether the network fits the device: every violation (exit 1), or the exact resources (exit 0).
    Check {
        #[command(flatten)]
        net: Ai8xNetwork,
        #[command(flatten)]
        shape: Ai8xInputShape,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Run the network bit-exactly on an int8 input (`.npy`, CHW); write the last layer's output (`.npy`).
    Simulate {
        #[command(flatten)]
        net: Ai8xNetwork,
        /// `.npy`, int8, `[C, L]` or `[C, H, W]`.
        #[arg(long, value_name = "NPY")]
        input: PathBuf,
        /// `.npy`: int8, or int32 for a 32-bit output layer; `[C, L]`, `[C, H, W]`, or `[C, 1, 1]` after a linear layer.
        #[arg(long, value_name = "NPY")]
        output: PathBuf,
        /// Round average pooling half away from zero (ai8xize's `--avg-pool-rounding`) instead of truncating.
        #[arg(long)]
        avg_pool_rounding: bool,
    },
    /// Check and place the network; write the explicit YAML, the allocation, C sources and the weight stream to DIR.
    Synthesize {
        #[command(flatten)]
        net: Ai8xNetwork,
        #[command(flatten)]
        shape: Ai8xInputShape,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct CacheDirArg {
    /// The cache directory [default: from kflow.toml, else ~/.cache/kflow].
    #[arg(long, env = "KFLOW_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct BuildArgs {
    /// Targets or patterns: `cell//pkg:name`, `//pkg:name`, `:name`, `cell//pkg:`, `cell//pkg/...`, `cell//...`.
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Actions to run in parallel [default: kflow.toml's build.jobs, else the number of cores].
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
    /// Build everything that does not depend on a failure.
    #[arg(long, short)]
    pub keep_going: bool,
    /// Write a JSON summary of the build (counts and one row per action).
    #[arg(long, value_name = "FILE")]
    pub build_report: Option<PathBuf>,
    /// Keep running, and rebuild when a graph or source file changes.
    #[arg(long)]
    pub watch: bool,
    /// A shared cache, consulted after the local cache and given what this build executes: `http(s)://…` speaks the
    /// Bazel HTTP cache protocol (nginx with WebDAV), `grpc(s)://host:port[/instance]` the Remote Execution API's
    /// ActionCache and CAS (BuildGrid, Buildbarn, …). The bearer token, if any, comes from KFLOW_REMOTE_CACHE_TOKEN.
    #[arg(long, env = "KFLOW_REMOTE_CACHE", value_name = "URL")]
    pub remote_cache: Option<String>,
    /// Read from the remote cache but never write to it.
    #[arg(long, requires = "remote_cache")]
    pub no_remote_upload: bool,
    /// Run heavy actions (training epochs, evaluations, datasets, `cmd` steps) on a Remote Execution API cluster
    /// (BuildGrid, Buildbarn, BuildBuddy, …): `grpc://host:port[/instance]`, or `grpcs://` for TLS [default:
    /// kflow.toml's remote.executor]. Its workers run this kflow binary's `exec-action`. The bearer token, if any,
    /// comes from KFLOW_REMOTE_EXECUTOR_TOKEN; extra certificate authorities from KFLOW_REMOTE_CA (a PEM file).
    #[arg(long, env = "KFLOW_REMOTE_EXECUTOR", value_name = "URL")]
    pub remote_executor: Option<String>,
    /// Actions in flight on the remote executor at once, besides --jobs local ones [default: kflow.toml's
    /// remote.jobs, else 8].
    #[arg(long, value_name = "N")]
    pub remote_jobs: Option<usize>,
    /// Flash and evaluate on this board instead of the one the graph names: `sim://max78002`, `sim://max78000`,
    /// `tcp://HOST:PORT` (e.g. `kflow device-sim`) or `serial:///dev/ttyACM0?baud=115200`.
    #[arg(long, value_name = "URL", value_parser = parse_device_url)]
    pub device: Option<String>,
    /// Run every action that talks to a board again, even when its result is cached: a physical board can change
    /// behind its URL (new firmware, another kit).
    #[arg(long)]
    pub rerun_devices: bool,
    #[command(flatten)]
    pub cache: CacheDirArg,
}

/// A device URL as typed, checked (and written canonically) before any build.
fn parse_device_url(url: &str) -> Result<String, String> {
    url.parse::<kflow_device::DeviceUrl>()
        .map(|u| u.to_string())
        .map_err(|e| e.to_string())
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Print the path of a search's `report.html` and open it in the
    /// browser, when there is one ($BROWSER, else the system's default).
    Open(ReportArgs),
    /// Print the path of a search's `report.html`.
    Path(ReportArgs),
}

#[derive(Args)]
pub struct ReportArgs {
    /// The `[[automl]]` target, e.g. target//max78002:anomaly.
    pub target: String,
}

#[derive(Args)]
pub struct ExplainArgs {
    /// The target whose last build to explain.
    pub target: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Args)]
pub struct QueryArgs {
    /// e.g. 'deps(target//demo:summary)', 'rdeps(target//..., //demo:signal)', 'kind(cmd, target//...)'.
    pub expr: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Json,
}

#[derive(Args)]
pub struct GraphArgs {
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

#[derive(Args)]
pub struct TargetsArgs {
    /// Patterns [default: `cell//...` for every cell].
    pub patterns: Vec<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
    #[command(flatten)]
    pub cache: CacheDirArg,
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Location, number of blobs and actions, and size.
    Stats {
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Delete least recently used blobs until the cache fits in SIZE.
    Gc {
        /// e.g. 5G, 500MiB, 1.5GB.
        #[arg(long, value_name = "SIZE")]
        max_size: bytesize::ByteSize,
    },
    /// Rehash every blob; drop damaged blobs and the entries that use them (exit 1 if any).
    Verify,
}

#[derive(Args)]
pub struct CleanArgs {
    /// Also delete the cache.
    #[arg(long)]
    pub cache: bool,
    #[command(flatten)]
    pub cache_dir: CacheDirArg,
}
