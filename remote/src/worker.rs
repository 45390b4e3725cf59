//! `kflow worker`: a bot on the Remote Workers API (BuildGrid's `Bots`
//! service) that runs any REAPI command.
//!
//! One session loop talks to the server; each lease runs on its own tokio
//! task: fetch the Command and the input root from the CAS into a private
//! directory, run the command there with a cleared environment (the
//! worker's `--env` entries, then the command's own variables), upload
//! stdout, stderr and the outputs, and hand the finished lease back to the
//! loop, which reports it.
//!
//! Latency: BuildGrid long-polls an `UpdateBotSession` for 0.8 x
//! min(deadline, keepalive) while the bot has a free slot and nothing
//! changed, and answers at once when the bot reports a completion (the
//! session's version moves; it also hands over the next queued job in the
//! same reply). So the loop long-polls only while a slot is free, and when
//! a lease finishes during such a poll it drops the call and reports at
//! once. Dropping is safe: a lease the server assigned during the dropped
//! call stays assigned to this bot in its database and bumps the session
//! version, and the next call, which carries the last version this bot
//! received, gets it again (BuildGrid 0.4.4, `synchronize_bot_leases`).
//! With every slot busy there is no outstanding call; the loop waits for a
//! completion or the keepalive.
//!
//! Failures, by who caused them:
//! - a command that cannot start (not found, not executable) is an
//!   ActionResult with exit code 127 (126 when it exists but cannot be
//!   run) and the reason on stderr, as a shell would report it;
//! - an Action, Command or Directory that is malformed, or names paths
//!   outside its root, completes the lease with INVALID_ARGUMENT; a
//!   missing blob, or an input tree that cannot be laid out (a file where
//!   an output's directory must go), with FAILED_PRECONDITION; a CAS that
//!   stays unreachable or overloaded (after two quick retries) with
//!   UNAVAILABLE and any other local failure with INTERNAL (both of which
//!   BuildGrid retries, up to its attempt limit);
//! - a command over `Action.timeout` is killed (its whole process group)
//!   and its lease completes with DEADLINE_EXCEEDED, its stdout and stderr
//!   so far in the result.
//!
//! Each command runs in its own process group, killed when its lease ends
//! (whatever it left in the background), and with a parent-death signal,
//! so that a worker killed outright takes its commands with it.
//!
//! A transport failure keeps the session (BuildGrid keeps sessions across
//! restarts) and retries with back-off; a server that no longer knows the
//! session gets a new one, and the leases of the old one are abandoned
//! (their processes killed; the server requeues them). SIGINT or SIGTERM
//! kills running commands, hands their leases back (UNAVAILABLE, which the
//! server requeues at once), says BOT_TERMINATING and returns.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::protobuf::{Any, Timestamp};
use bazel_remote_apis::google::rpc::Status;
use kflow_cache::cas::{self, CallError, Cas, Endpoint};
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

use crate::bots::{BotSession, BotStatus, BotsClient, Device, Lease, LeaseState, Property, Worker};

/// The environment variable holding the server's bearer token.
pub const TOKEN_ENV: &str = "KFLOW_REMOTE_EXECUTOR_TOKEN";

/// Under 3 s BuildGrid answers at once instead of long-polling: a new
/// session is registered without waiting.
const CREATE_DEADLINE: Duration = Duration::from_secs(3);
/// Long enough for BuildGrid's long poll (0.8 x min(this, keepalive)).
const POLL_DEADLINE: Duration = Duration::from_secs(20);
/// The goodbye is best effort: never hold up an exit for long.
const GOODBYE_DEADLINE: Duration = Duration::from_secs(2);
/// A reply sooner than this that brought nothing means the server did not
/// long-poll (a short keepalive); the next poll waits out the rest, so the
/// loop never spins.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(250);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Blobs fetched at once for one lease.
const FETCH_CONCURRENCY: usize = 8;
const ACTION_RESULT_URL: &str = "type.googleapis.com/build.bazel.remote.execution.v2.ActionResult";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What `kflow worker` was asked to do.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// `grpc://host:port[/instance]`.
    pub server: String,
    /// The instance name, instead of the URL's.
    pub instance: Option<String>,
    /// A bearer token for every call.
    pub token: Option<String>,
    /// How many leases run at once.
    pub capacity: usize,
    /// Where the private directories of leases go (in a directory of this
    /// run's own, removed at exit); the system's temporary directory if
    /// unset.
    pub work_dir: Option<PathBuf>,
    /// The environment every command starts from: see [`env_entries`].
    pub env: Vec<(String, String)>,
    /// The bot's id; `<hostname>-<pid>` if unset. Two workers must not
    /// share one: the server closes the older session.
    pub bot_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Server(String),
    #[error("the capacity must be at least 1")]
    Capacity,
    #[error("--env `{0}`: expected NAME or NAME=VALUE")]
    Env(String),
    #[error("work directory {path}: {source}")]
    WorkDir { path: PathBuf, source: std::io::Error },
    #[error("cannot start the worker's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot watch for SIGINT and SIGTERM: {0}")]
    Signals(std::io::Error),
}

/// The worker's base environment from `--env` specs: `NAME=VALUE` as
/// given, `NAME` with the worker's own value (skipped when it has none),
/// and `PATH` from the worker's environment unless a spec names it
/// (commands need a shell and tools).
pub fn env_entries(specs: &[String]) -> Result<Vec<(String, String)>, WorkerError> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for spec in specs {
        let (name, value) = match spec.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (spec.as_str(), std::env::var(spec).ok()),
        };
        if name.is_empty() || name.contains('\0') {
            return Err(WorkerError::Env(spec.clone()));
        }
        if let Some(value) = value {
            entries.retain(|(n, _)| n != name);
            entries.push((name.to_owned(), value));
        }
    }
    if !specs.iter().any(|s| s.split('=').next() == Some("PATH"))
        && let Ok(path) = std::env::var("PATH")
    {
        entries.insert(0, ("PATH".to_owned(), path));
    }
    Ok(entries)
}

/// Serves the server until SIGINT or SIGTERM; blocking. `log` receives
/// one line per lease start and finish, and each connection problem.
pub fn run(options: WorkerOptions, log: &(dyn Fn(&str) + Sync)) -> Result<(), WorkerError> {
    if options.capacity == 0 {
        return Err(WorkerError::Capacity);
    }
    let mut endpoint = Endpoint::parse(&options.server).map_err(WorkerError::Server)?;
    if let Some(instance) = &options.instance {
        endpoint.instance = instance.clone();
    }
    let work = private_work_dir(options.work_dir.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(WorkerError::Runtime)?;
    // Lease tasks are 'static and `log` is not: lines go through a channel
    // to a thread that borrows it.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
        scope.spawn(move || {
            while let Ok(Some(line)) = rx.recv() {
                log(&line);
            }
        });
        let logger = Logger(tx.clone());
        let result = runtime.block_on(async {
            let cas = Cas::connect(&endpoint, options.token.as_deref()).map_err(WorkerError::Server)?;
            let ctx = Arc::new(Ctx {
                cas,
                bot_id: options.bot_id.clone().unwrap_or_else(default_bot_id),
                capacity: options.capacity,
                env: options.env.clone(),
                work_dir: work.path().to_path_buf(),
                next_dir: AtomicU64::new(0),
                log: logger,
            });
            serve(ctx, &options.server).await
        });
        // Dropping the tasks kills their commands' process groups.
        runtime.shutdown_timeout(Duration::from_secs(3));
        let _ = tx.send(None);
        result
    })
}

/// A directory of this run's own under `base`, so that two workers (or a
/// crashed earlier run) never collide.
fn private_work_dir(base: Option<&Path>) -> Result<tempfile::TempDir, WorkerError> {
    let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
    std::fs::create_dir_all(&base)
        .and_then(|()| tempfile::Builder::new().prefix("kflow-worker-").tempdir_in(&base))
        .map_err(|source| WorkerError::WorkDir { path: base, source })
}

fn default_bot_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kflow-worker".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Log lines from any task, in order, to the caller's `log`.
#[derive(Clone)]
struct Logger(std::sync::mpsc::Sender<Option<String>>);

impl Logger {
    fn line(&self, line: String) {
        let _ = self.0.send(Some(line));
    }
}

/// What every lease task shares.
struct Ctx {
    cas: Cas,
    bot_id: String,
    capacity: usize,
    env: Vec<(String, String)>,
    work_dir: PathBuf,
    next_dir: AtomicU64,
    log: Logger,
}

impl Ctx {
    /// The session a new registration asks for.
    fn fresh_session(&self) -> BotSession {
        let isa = match std::env::consts::ARCH {
            "x86_64" => "x86-64",
            other => other,
        };
        BotSession {
            bot_id: self.bot_id.clone(),
            status: BotStatus::Ok as i32,
            worker: Some(Worker {
                devices: vec![Device {
                    handle: self.bot_id.clone(),
                    properties: vec![
                        Property::new("OSFamily", std::env::consts::OS),
                        Property::new("ISA", isa),
                    ],
                }],
                properties: Vec::new(),
                configs: vec![Property::new("capacity", &self.capacity.to_string())],
            }),
            ..Default::default()
        }
    }
}

/// Sessions, one after another, until a signal.
async fn serve(ctx: Arc<Ctx>, url: &str) -> Result<(), WorkerError> {
    let mut stop = watch_signals()?;
    let bots = BotsClient::new(&ctx.cas);
    let mut backoff = Backoff::default();
    loop {
        let created = tokio::select! {
            created = bots.create(&ctx.cas.instance, ctx.fresh_session(), CREATE_DEADLINE) => created,
            () = stopped(&mut stop) => return Ok(()),
        };
        let session = match created {
            Ok(session) => session,
            Err(status) => {
                ctx.log
                    .line(format!("cannot register with {url}: {}", describe(&status)));
                if backoff.wait(&mut stop).await {
                    return Ok(());
                }
                continue;
            }
        };
        backoff.reset();
        ctx.log.line(format!(
            "worker {} serving {url} as {} (capacity {})",
            ctx.bot_id, session.name, ctx.capacity
        ));
        let mut session = Session::new(ctx.clone(), bots.clone(), session);
        match session.run(&mut stop).await {
            End::Stopped => {
                session.goodbye().await;
                return Ok(());
            }
            End::Lost(status) => {
                session.abandon();
                ctx.log.line(format!(
                    "the server dropped session {} ({}): registering again",
                    session.state.name,
                    describe(&status)
                ));
                if backoff.wait(&mut stop).await {
                    return Ok(());
                }
            }
        }
    }
}

fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Resolves once SIGINT or SIGTERM has arrived.
fn watch_signals() -> Result<watch::Receiver<bool>, WorkerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(WorkerError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(WorkerError::Signals)?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(true);
        // Keep the sender: a dropped one would read as "stop" anyway, but
        // this says what is meant.
        std::future::pending::<()>().await;
    });
    Ok(rx)
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// 0.5 s, doubling up to 5 s, between attempts of a failing call.
#[derive(Default)]
struct Backoff(Duration);

impl Backoff {
    /// Waits out the next delay; true when a signal came meanwhile.
    async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        self.0 = match self.0.is_zero() {
            true => BACKOFF_FIRST,
            false => (self.0 * 2).min(BACKOFF_MAX),
        };
        tokio::select! {
            () = tokio::time::sleep(self.0) => false,
            () = stopped(stop) => true,
        }
    }

    fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }
}

enum End {
    Stopped,
    Lost(tonic::Status),
}

/// What the session loop waits on.
enum Event {
    Reply(Result<BotSession, tonic::Status>),
    Finished(Option<Lease>),
    Heartbeat,
    Stop,
}

/// One registered session: the leases it runs and the results it has not
/// yet reported.
struct Session {
    ctx: Arc<Ctx>,
    bots: BotsClient,
    /// Name, id, status, worker and the last version received; no leases.
    state: BotSession,
    running: HashMap<String, AbortHandle>,
    /// Completed leases not yet acknowledged by a reply.
    done: Vec<Lease>,
    heartbeat: Instant,
    finished_tx: mpsc::UnboundedSender<Lease>,
    finished_rx: mpsc::UnboundedReceiver<Lease>,
}

impl Session {
    fn new(ctx: Arc<Ctx>, bots: BotsClient, created: BotSession) -> Session {
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let mut session = Session {
            ctx,
            bots,
            state: BotSession {
                leases: Vec::new(),
                ..created.clone()
            },
            running: HashMap::new(),
            done: Vec::new(),
            heartbeat: Instant::now(),
            finished_tx,
            finished_rx,
        };
        session.absorb(created, 0);
        session
    }

    async fn run(&mut self, stop: &mut watch::Receiver<bool>) -> End {
        let mut backoff = Backoff::default();
        loop {
            while let Ok(lease) = self.finished_rx.try_recv() {
                self.finish(lease);
            }
            let carrying = !self.done.is_empty();
            let free = self.running.len() < self.ctx.capacity;
            if !carrying && !free && Instant::now() < self.heartbeat {
                match self.wait_busy(stop).await {
                    Event::Finished(Some(lease)) => self.finish(lease),
                    Event::Stop => return End::Stopped,
                    _ => {}
                }
                continue;
            }
            let reported = self.done.len();
            let long_poll = !carrying && free;
            let sent = Instant::now();
            match self.call(carrying, stop).await {
                Event::Reply(Ok(reply)) => {
                    backoff.reset();
                    let before = self.running.len();
                    self.absorb(reply, reported);
                    let idle_reply = self.running.len() <= before && sent.elapsed() < MIN_POLL_INTERVAL;
                    if long_poll && idle_reply && self.pause(sent + MIN_POLL_INTERVAL, stop).await {
                        return End::Stopped;
                    }
                }
                Event::Reply(Err(status)) if is_transport(&status) => {
                    self.ctx
                        .log
                        .line(format!("UpdateBotSession failed ({}): retrying", describe(&status)));
                    if backoff.wait(stop).await {
                        return End::Stopped;
                    }
                }
                Event::Reply(Err(status)) => return End::Lost(status),
                // A finished lease ends a pure long poll: report it now.
                Event::Finished(Some(lease)) => self.finish(lease),
                Event::Stop => return End::Stopped,
                Event::Finished(None) | Event::Heartbeat => {}
            }
        }
    }

    /// Every slot busy and nothing to report: wait for a lease to finish
    /// or the keepalive to come due.
    async fn wait_busy(&mut self, stop: &mut watch::Receiver<bool>) -> Event {
        tokio::select! {
            lease = self.finished_rx.recv() => Event::Finished(lease),
            () = tokio::time::sleep_until(self.heartbeat.into()) => Event::Heartbeat,
            () = stopped(stop) => Event::Stop,
        }
    }

    /// After a long poll the server answered at once with nothing: wait
    /// until `until`, unless a lease finishes. True when a signal came.
    async fn pause(&mut self, until: Instant, stop: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            lease = self.finished_rx.recv() => {
                if let Some(lease) = lease {
                    self.finish(lease);
                }
                false
            }
            () = tokio::time::sleep_until(until.into()) => false,
            () = stopped(stop) => true,
        }
    }

    /// One UpdateBotSession. A call that reports nothing is a long poll,
    /// which a finishing lease interrupts (dropping the call).
    async fn call(&mut self, carrying: bool, stop: &mut watch::Receiver<bool>) -> Event {
        let request = self.request();
        let bots = self.bots.clone();
        tokio::select! {
            reply = bots.update(request, POLL_DEADLINE) => Event::Reply(reply),
            lease = self.finished_rx.recv(), if !carrying => Event::Finished(lease),
            () = stopped(stop) => Event::Stop,
        }
    }

    /// The session as this bot sees it: running leases ACTIVE (without
    /// their payloads, which the server does not need back), finished ones
    /// COMPLETED with their results.
    fn request(&self) -> BotSession {
        let mut session = self.state.clone();
        session.leases = self
            .running
            .keys()
            .map(|id| Lease {
                id: id.clone(),
                state: LeaseState::Active as i32,
                ..Default::default()
            })
            .chain(self.done.iter().cloned())
            .collect();
        session
    }

    fn finish(&mut self, lease: Lease) {
        // A lease the server took back meanwhile is not reported.
        if self.running.remove(&lease.id).is_some() {
            self.done.push(lease);
        }
    }

    /// Takes in a reply: the first `reported` finished leases are
    /// acknowledged, leases the server no longer lists are stopped, new
    /// ACTIVE ones start.
    fn absorb(&mut self, reply: BotSession, reported: usize) {
        self.done.drain(..reported.min(self.done.len()));
        self.state.version = reply.version;
        self.heartbeat = next_heartbeat(reply.expire_time.as_ref());
        let listed: HashSet<&str> = (reply.leases.iter())
            .filter(|l| l.state != LeaseState::Cancelled as i32)
            .map(|l| l.id.as_str())
            .collect();
        let log = &self.ctx.log;
        self.running.retain(|id, task| {
            let keep = listed.contains(id.as_str());
            if !keep {
                task.abort();
                log.line(format!("lease {id}: cancelled by the server"));
            }
            keep
        });
        for lease in reply.leases {
            let new = lease.state == LeaseState::Active as i32
                && !self.running.contains_key(&lease.id)
                && !self.done.iter().any(|d| d.id == lease.id);
            if new {
                self.start(lease);
            }
        }
    }

    fn start(&mut self, lease: Lease) {
        let id = lease.id.clone();
        let task = tokio::spawn(run_lease(self.ctx.clone(), lease));
        self.running.insert(id.clone(), task.abort_handle());
        // A lease whose task failed (a bug) is still reported, so that its
        // slot comes back; an aborted one is not.
        let finished = self.finished_tx.clone();
        tokio::spawn(async move {
            let lease = match task.await {
                Ok(lease) => lease,
                Err(e) if e.is_panic() => completed(
                    id,
                    rpc_status(tonic::Code::Internal, "the worker failed while running this lease"),
                    None,
                ),
                Err(_) => return,
            };
            let _ = finished.send(lease);
        });
    }

    /// The session is gone: its leases are the server's again.
    fn abandon(&mut self) {
        for (_, task) in self.running.drain() {
            task.abort();
        }
        self.done.clear();
    }

    /// Kills what runs, hands its leases back for another bot, reports
    /// what finished, and says the bot is going away.
    async fn goodbye(&mut self) {
        while let Ok(lease) = self.finished_rx.try_recv() {
            self.finish(lease);
        }
        for (id, task) in self.running.drain() {
            task.abort();
            self.done.push(completed(
                id,
                rpc_status(tonic::Code::Unavailable, "the worker is shutting down"),
                None,
            ));
        }
        self.state.status = BotStatus::BotTerminating as i32;
        let request = self.request();
        if let Err(status) = self.bots.update(request, GOODBYE_DEADLINE).await {
            self.ctx
                .log
                .line(format!("could not tell the server goodbye: {}", describe(&status)));
        }
    }
}

/// Transport trouble (or a server failing inside): the session is
/// probably still there.
fn is_transport(status: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(
        status.code(),
        Unavailable | DeadlineExceeded | Cancelled | Unknown | Internal | ResourceExhausted | Aborted
    )
}

/// Half the time left before the server gives up on this bot (between
/// 0.5 s and 30 s); 5 s when it did not say.
fn next_heartbeat(expire: Option<&Timestamp>) -> Instant {
    let left = expire
        .and_then(|t| {
            let at = UNIX_EPOCH.checked_add(Duration::new(
                u64::try_from(t.seconds).ok()?,
                u32::try_from(t.nanos).ok()?.min(999_999_999),
            ))?;
            at.duration_since(SystemTime::now()).ok()
        })
        .unwrap_or(Duration::from_secs(10));
    Instant::now() + (left / 2).clamp(Duration::from_millis(500), Duration::from_secs(30))
}

fn rpc_status(code: tonic::Code, message: &str) -> Status {
    Status {
        code: code as i32,
        message: message.to_owned(),
        details: Vec::new(),
    }
}

fn completed(id: String, status: Status, result: Option<reapi::ActionResult>) -> Lease {
    Lease {
        id,
        state: LeaseState::Completed as i32,
        status: Some(status),
        result: result.map(|r| Any {
            type_url: ACTION_RESULT_URL.to_owned(),
            value: r.encode_to_vec(),
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------
// One lease.

/// Why a lease ended without running its command to the end.
#[derive(Debug)]
struct LeaseError {
    code: tonic::Code,
    message: String,
}

impl LeaseError {
    fn invalid(message: impl Into<String>) -> LeaseError {
        LeaseError {
            code: tonic::Code::InvalidArgument,
            message: message.into(),
        }
    }

    /// A local file-system failure while doing `what`: FAILED_PRECONDITION
    /// when the action's own tree is at fault (a file where a directory
    /// must go), else INTERNAL, which the server retries.
    fn local(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> LeaseError {
        use std::io::ErrorKind::*;
        move |e| LeaseError {
            code: match e.kind() {
                AlreadyExists | NotADirectory | IsADirectory | InvalidInput | InvalidFilename => {
                    tonic::Code::FailedPrecondition
                }
                _ => tonic::Code::Internal,
            },
            message: format!("{what}: {e}"),
        }
    }
}

impl From<CallError> for LeaseError {
    fn from(e: CallError) -> LeaseError {
        use tonic::Code::*;
        let code = match e.status.code() {
            // REAPI's code for an input that is not in the CAS.
            NotFound => FailedPrecondition,
            // Worth another attempt, which the server makes for these.
            DeadlineExceeded | Cancelled | Unknown | ResourceExhausted | Aborted => Unavailable,
            code => code,
        };
        LeaseError {
            code,
            message: e.to_string(),
        }
    }
}

/// A command that ran (or could not start) in its private directory.
struct Ran {
    result: reapi::ActionResult,
    timed_out: Option<Duration>,
}

/// Runs one lease to its completed form, logging its start and finish.
async fn run_lease(ctx: Arc<Ctx>, lease: Lease) -> Lease {
    let started = Instant::now();
    let mut argv0 = String::from("(no command)");
    let outcome = execute(&ctx, &lease, &mut argv0).await;
    let ms = started.elapsed().as_millis();
    let id = lease.id;
    match outcome {
        Ok(Ran {
            result,
            timed_out: None,
        }) => {
            ctx.log
                .line(format!("lease {id}: {argv0} exited {} in {ms} ms", result.exit_code));
            completed(id, rpc_status(tonic::Code::Ok, ""), Some(result))
        }
        Ok(Ran {
            result,
            timed_out: Some(limit),
        }) => {
            let message = format!("the command ran over its timeout of {limit:?} and was killed");
            ctx.log.line(format!("lease {id}: {argv0} timed out after {ms} ms"));
            completed(id, rpc_status(tonic::Code::DeadlineExceeded, &message), Some(result))
        }
        Err(e) => {
            ctx.log.line(format!(
                "lease {id}: {argv0} failed after {ms} ms: {:?}: {}",
                e.code, e.message
            ));
            completed(id, rpc_status(e.code, &e.message), None)
        }
    }
}

async fn execute(ctx: &Ctx, lease: &Lease, argv0: &mut String) -> Result<Ran, LeaseError> {
    let mut times = reapi::ExecutedActionMetadata {
        worker: ctx.bot_id.clone(),
        input_fetch_start_timestamp: Some(now()),
        ..Default::default()
    };
    let action = action_of(&ctx.cas, lease.payload.as_ref()).await?;
    let command: reapi::Command = fetch_message(&ctx.cas, action.command_digest.as_ref(), "Command").await?;
    let program = command
        .arguments
        .first()
        .ok_or_else(|| LeaseError::invalid("the Command has no arguments"))?;
    argv0.clone_from(program);
    ctx.log.line(format!("lease {}: starting {program}", lease.id));
    let n = ctx.next_dir.fetch_add(1, Ordering::Relaxed);
    let dir = LeaseDir::create(ctx.work_dir.join(format!("lease-{n}")))?;
    let layout = Layout::of(&command, &dir.root())?;
    let root_digest = action
        .input_root_digest
        .as_ref()
        .ok_or_else(|| LeaseError::invalid("the Action has no input_root_digest"))?;
    fetch_tree(&ctx.cas, &ctx.work_dir.join(KEPT), root_digest, &dir.root()).await?;
    layout.prepare()?;
    times.input_fetch_completed_timestamp = Some(now());
    times.execution_start_timestamp = Some(now());
    let exit = run_command(ctx, &command, &layout, &dir, timeout_of(&action)).await?;
    times.execution_completed_timestamp = Some(now());
    times.output_upload_start_timestamp = Some(now());
    let timed_out = match exit {
        Exit::TimedOut(limit) => Some(limit),
        _ => None,
    };
    let streams = dir.streams();
    let collected = tokio::task::spawn_blocking(move || collect(&layout, &streams, &exit))
        .await
        .map_err(|e| LeaseError::local("collecting the outputs")(std::io::Error::other(e)))??;
    upload(&ctx.cas, &collected.blobs).await?;
    times.output_upload_completed_timestamp = Some(now());
    let mut result = collected.result;
    result.execution_metadata = Some(times);
    // The directory goes off the runtime's threads.
    tokio::task::spawn_blocking(move || drop(dir));
    Ok(Ran { result, timed_out })
}

/// The lease's Action: packed in the payload (BuildGrid), or named there
/// by digest (other servers).
async fn action_of(cas: &Cas, payload: Option<&Any>) -> Result<reapi::Action, LeaseError> {
    let payload = payload.ok_or_else(|| LeaseError::invalid("the lease has no payload"))?;
    if payload.type_url.ends_with("/build.bazel.remote.execution.v2.Action") {
        return reapi::Action::decode(payload.value.as_slice())
            .map_err(|e| LeaseError::invalid(format!("the lease's Action does not decode: {e}")));
    }
    if payload.type_url.ends_with("/build.bazel.remote.execution.v2.Digest") {
        let digest = reapi::Digest::decode(payload.value.as_slice())
            .map_err(|e| LeaseError::invalid(format!("the lease's Digest does not decode: {e}")))?;
        return fetch_message(cas, Some(&digest), "Action").await;
    }
    Err(LeaseError::invalid(format!(
        "the lease's payload is a {}, not an Action",
        payload.type_url
    )))
}

async fn fetch_message<M: prost::Message + Default>(
    cas: &Cas,
    digest: Option<&reapi::Digest>,
    what: &str,
) -> Result<M, LeaseError> {
    let digest = digest.ok_or_else(|| LeaseError::invalid(format!("no digest of the {what}")))?;
    let bytes = read(cas, digest, what).await?;
    M::decode(bytes.as_slice()).map_err(|e| LeaseError::invalid(format!("the {what} does not decode: {e}")))
}

/// A blob, checked against its digest; the empty blob without a call.
async fn read(cas: &Cas, digest: &reapi::Digest, what: &str) -> Result<Vec<u8>, LeaseError> {
    if digest.size_bytes == 0 && digest.hash == EMPTY_SHA256 {
        return Ok(Vec::new());
    }
    Ok(retrying(|| cas.read_required(digest, what)).await?)
}

/// A CAS call, retried twice (0.1 s, then 0.3 s later) when the server is
/// overloaded or briefly unreachable, before the lease fails with it.
async fn retrying<T, F, Fut>(mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..2 {
        match call().await {
            Err(e) if is_overload(&e.status) => tokio::time::sleep(delay).await,
            done => return done,
        }
        delay *= 3;
    }
    call().await
}

fn is_overload(status: &tonic::Status) -> bool {
    use tonic::Code::*;
    // BuildGrid answers RESOURCE_EXHAUSTED when its thread pool is full.
    matches!(status.code(), Unavailable | ResourceExhausted | Aborted)
}

fn timeout_of(action: &reapi::Action) -> Option<Duration> {
    let t = action.timeout.as_ref()?;
    let seconds = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nanos).ok()?.min(999_999_999);
    // A year is "no limit" in practice, and keeps instant arithmetic sane.
    let limit = Duration::new(seconds.min(365 * 24 * 3600), nanos);
    (!limit.is_zero()).then_some(limit)
}

fn now() -> Timestamp {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

// ---------------------------------------------------------------------
// The private directory and the input root.

/// `<work>/lease-N/`: the input root (`root/`) and the command's stdout and
/// stderr beside it; removed when dropped, also when the lease is aborted.
struct LeaseDir(PathBuf);

/// Where a command's stdout and stderr go.
struct Streams {
    stdout: PathBuf,
    stderr: PathBuf,
}

impl LeaseDir {
    fn create(path: PathBuf) -> Result<LeaseDir, LeaseError> {
        std::fs::create_dir_all(path.join("root")).map_err(LeaseError::local(format!("create {}", path.display())))?;
        Ok(LeaseDir(path))
    }

    fn root(&self) -> PathBuf {
        self.0.join("root")
    }

    fn streams(&self) -> Streams {
        Streams {
            stdout: self.0.join("stdout"),
            stderr: self.0.join("stderr"),
        }
    }
}

impl Drop for LeaseDir {
    fn drop(&mut self) {
        if std::fs::remove_dir_all(&self.0).is_err() {
            // A command may have left directories without write permission.
            make_writable(&self.0);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn make_writable(dir: &Path) {
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            make_writable(&entry.path());
        }
    }
}

/// A name inside a Directory message: one path component.
fn check_name(name: &str) -> Result<(), LeaseError> {
    if !crate::tree::is_component(name) {
        return Err(LeaseError::invalid(format!("bad name `{name}` in the input root")));
    }
    Ok(())
}

/// A relative path that stays below its base (`..` and absolute paths
/// refused); `""` and `.` are the base itself.
fn relative(path: &str, what: &str) -> Result<PathBuf, LeaseError> {
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            _ => return Err(LeaseError::invalid(format!("{what} `{path}` leaves the input root"))),
        }
    }
    if path.contains('\0') {
        return Err(LeaseError::invalid(format!("{what} `{path}` has a NUL byte")));
    }
    Ok(out)
}

/// A regular file of the input root: its contents and where they go.
struct InputFile {
    digest: reapi::Digest,
    places: Vec<(PathBuf, bool)>,
}

/// Writes the tree under `root_digest` into `root`: directories level by
/// level, then each distinct file once per place, then symlinks (last, so
/// that nothing is ever written through one).
async fn fetch_tree(cas: &Cas, kept: &Path, root_digest: &reapi::Digest, root: &Path) -> Result<(), LeaseError> {
    let mut files: HashMap<String, InputFile> = HashMap::new();
    let mut links: Vec<(PathBuf, String)> = Vec::new();
    let mut level = vec![(root.to_path_buf(), root_digest.clone())];
    while !level.is_empty() {
        let blobs = read_all(cas, level.iter().map(|(_, d)| d.clone()).collect(), "Directory").await?;
        let mut next = Vec::new();
        for (path, digest) in level {
            let bytes = blobs.get(&digest.hash).map_or(&[][..], Vec::as_slice);
            let directory = reapi::Directory::decode(bytes)
                .map_err(|e| LeaseError::invalid(format!("a Directory of the input root does not decode: {e}")))?;
            check_names(&directory)?;
            std::fs::create_dir_all(&path).map_err(LeaseError::local(format!("create {}", path.display())))?;
            for file in directory.files {
                let digest = file
                    .digest
                    .ok_or_else(|| LeaseError::invalid(format!("input file `{}` has no digest", file.name)))?;
                files
                    .entry(digest.hash.clone())
                    .or_insert_with(|| InputFile {
                        digest,
                        places: Vec::new(),
                    })
                    .places
                    .push((path.join(&file.name), file.is_executable));
            }
            for dir in directory.directories {
                let digest = dir
                    .digest
                    .ok_or_else(|| LeaseError::invalid(format!("input directory `{}` has no digest", dir.name)))?;
                next.push((path.join(&dir.name), digest));
            }
            links.extend(directory.symlinks.into_iter().map(|s| (path.join(&s.name), s.target)));
        }
        level = next;
    }
    write_files(cas, kept, files.into_values().collect()).await?;
    for (path, target) in links {
        std::os::unix::fs::symlink(&target, &path).map_err(LeaseError::local(format!("symlink {}", path.display())))?;
    }
    Ok(())
}

/// Names are single components and unique within their directory, so no
/// path built from them passes through a symlink of the tree.
fn check_names(directory: &reapi::Directory) -> Result<(), LeaseError> {
    let mut seen = HashSet::new();
    let names = (directory.files.iter().map(|f| &f.name))
        .chain(directory.directories.iter().map(|d| &d.name))
        .chain(directory.symlinks.iter().map(|s| &s.name));
    for name in names {
        check_name(name)?;
        if !seen.insert(name.as_str()) {
            return Err(LeaseError::invalid(format!(
                "`{name}` appears twice in a Directory of the input root"
            )));
        }
    }
    Ok(())
}

/// Reads distinct blobs, a few at a time.
async fn read_all(
    cas: &Cas,
    digests: Vec<reapi::Digest>,
    what: &'static str,
) -> Result<HashMap<String, Vec<u8>>, LeaseError> {
    let mut out = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut seen = HashSet::new();
    for digest in digests {
        if !seen.insert(digest.hash.clone()) {
            continue;
        }
        while tasks.len() >= FETCH_CONCURRENCY {
            absorb_read(&mut tasks, &mut out).await?;
        }
        let cas = cas.clone();
        tasks.spawn(async move { read(&cas, &digest, what).await.map(|bytes| (digest.hash, bytes)) });
    }
    while !tasks.is_empty() {
        absorb_read(&mut tasks, &mut out).await?;
    }
    Ok(out)
}

type ReadTask = Result<(String, Vec<u8>), LeaseError>;

async fn absorb_read(tasks: &mut JoinSet<ReadTask>, out: &mut HashMap<String, Vec<u8>>) -> Result<(), LeaseError> {
    if let Some(joined) = tasks.join_next().await {
        let (hash, bytes) = joined.map_err(|e| LeaseError::local("reading a blob")(std::io::Error::other(e)))??;
        out.insert(hash, bytes);
    }
    Ok(())
}

/// Fetches each input file and writes it to its places, a few at a time.
async fn write_files(cas: &Cas, kept: &Path, files: Vec<InputFile>) -> Result<(), LeaseError> {
    let mut tasks = JoinSet::new();
    for file in files {
        while tasks.len() >= FETCH_CONCURRENCY {
            join_write(&mut tasks).await?;
        }
        let (cas, kept) = (cas.clone(), kept.to_path_buf());
        tasks.spawn(async move { write_file(&cas, &kept, file).await });
    }
    while !tasks.is_empty() {
        join_write(&mut tasks).await?;
    }
    Ok(())
}

async fn join_write(tasks: &mut JoinSet<Result<(), LeaseError>>) -> Result<(), LeaseError> {
    match tasks.join_next().await {
        Some(joined) => joined.map_err(|e| LeaseError::local("writing an input")(std::io::Error::other(e)))?,
        None => Ok(()),
    }
}

/// Executables the worker keeps, by digest, for its lifetime.
const KEPT: &str = "kept";

/// The file under `kept` that holds an executable input, when its digest
/// can name a file (a server could send anything as a hash).
fn kept_path(kept: &Path, file: &InputFile) -> Option<PathBuf> {
    let hash = &file.digest.hash;
    let named = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    (named && file.places.iter().any(|(_, executable)| *executable))
        .then(|| kept.join(format!("{hash}-{}", file.digest.size_bytes)))
}

async fn write_file(cas: &Cas, kept: &Path, file: InputFile) -> Result<(), LeaseError> {
    // A client's tool (kflow sends its own binary) comes with every action
    // of a build: fetched once, then copied from here.
    let keep = kept_path(kept, &file);
    let size = u64::try_from(file.digest.size_bytes).unwrap_or(u64::MAX);
    let intact = move |path: &Path| std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == size);
    let bytes = match &keep {
        Some(path) if intact(path) => None,
        _ => Some(read(cas, &file.digest, "input file").await?),
    };
    let kept = kept.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if let (Some(path), Some(bytes)) = (&keep, &bytes) {
            // Written whole under a temporary name: another lease may be
            // copying the same executable at this moment.
            let _ = std::fs::create_dir_all(&kept);
            // Read-only: it is linked into every action that runs it.
            let _ = tempfile::NamedTempFile::new_in(&kept)
                .and_then(|mut tmp| std::io::Write::write_all(&mut tmp, bytes).map(|()| tmp))
                .and_then(|tmp| {
                    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o555))?;
                    tmp.persist(path).map_err(|e| e.error)
                });
        }
        for (path, executable) in &file.places {
            // A hard link: a 150 MB binary copied per action cost more
            // than the action. A link is never written to, so the
            // program never meets "text file busy" either.
            if let Some(from) = keep.as_ref().filter(|p| intact(p))
                && std::fs::hard_link(from, path).is_ok()
            {
                continue;
            }
            let mode = if *executable { 0o755 } else { 0o644 };
            let written = match (&keep, &bytes) {
                (Some(from), _) if intact(from) => std::fs::copy(from, path).map(drop),
                (_, Some(bytes)) => std::fs::write(path, bytes),
                (_, None) => Err(std::io::Error::other("the kept copy vanished")),
            };
            written
                .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
                .map_err(LeaseError::local(format!("write {}", path.display())))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| LeaseError::local("writing an input")(std::io::Error::other(e)))?
}

// ---------------------------------------------------------------------
// Running the command.

/// What an output path may be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Directory,
    /// v2.1's `output_paths`: whatever the command made.
    Either,
}

struct Output {
    /// As the Command names it (relative to the working directory).
    name: String,
    path: PathBuf,
    kind: Kind,
}

/// The working directory and the outputs, checked to stay in the root.
struct Layout {
    workdir: PathBuf,
    outputs: Vec<Output>,
}

impl Layout {
    // output_files and output_directories are deprecated since v2.1, but
    // clients of v2.0 still send them.
    #[allow(deprecated)]
    fn of(command: &reapi::Command, root: &Path) -> Result<Layout, LeaseError> {
        let workdir = root.join(relative(&command.working_directory, "the working directory")?);
        let declared: Vec<(&String, Kind)> = match command.output_paths.is_empty() {
            // REAPI v2.1: output_paths, when given, replace the other two.
            false => command.output_paths.iter().map(|p| (p, Kind::Either)).collect(),
            true => (command.output_files.iter().map(|p| (p, Kind::File)))
                .chain(command.output_directories.iter().map(|p| (p, Kind::Directory)))
                .collect(),
        };
        let mut outputs = Vec::new();
        for (name, kind) in declared {
            let rel = relative(name, "output path")?;
            if rel.as_os_str().is_empty() && kind != Kind::Directory {
                return Err(LeaseError::invalid(format!("output path `{name}` names no file")));
            }
            outputs.push(Output {
                name: name.clone(),
                path: workdir.join(rel),
                kind,
            });
        }
        Ok(Layout { workdir, outputs })
    }

    /// The working directory and the directories leading to each output
    /// exist before the command runs (REAPI asks the worker to make them).
    fn prepare(&self) -> Result<(), LeaseError> {
        let parents = self.outputs.iter().filter_map(|o| o.path.parent());
        for dir in std::iter::once(self.workdir.as_path()).chain(parents) {
            std::fs::create_dir_all(dir).map_err(LeaseError::local(format!("create {}", dir.display())))?;
        }
        Ok(())
    }
}

enum Exit {
    Code(i32),
    /// The program could not be started: exit code and why.
    NotStarted(i32, String),
    TimedOut(Duration),
}

/// Kills a command's whole process group when dropped: after it exits
/// (what it left in the background), on a timeout, and when its lease is
/// aborted.
struct Group(Option<rustix::process::Pid>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

async fn run_command(
    ctx: &Ctx,
    command: &reapi::Command,
    layout: &Layout,
    dir: &LeaseDir,
    timeout: Option<Duration>,
) -> Result<Exit, LeaseError> {
    let streams = dir.streams();
    let open =
        |path: &Path| std::fs::File::create(path).map_err(LeaseError::local(format!("create {}", path.display())));
    let (stdout, stderr) = (open(&streams.stdout)?, open(&streams.stderr)?);
    for var in &command.environment_variables {
        if var.name.is_empty() || var.name.contains(['=', '\0']) {
            return Err(LeaseError::invalid(format!(
                "bad environment variable name `{}`",
                var.name
            )));
        }
    }
    let (program, args) = command
        .arguments
        .split_first()
        .ok_or_else(|| LeaseError::invalid("the Command has no arguments"))?;
    let mut cmd = tokio::process::Command::new(program_path(program, &layout.workdir));
    cmd.arg0(program)
        .args(args)
        .current_dir(&layout.workdir)
        .env_clear()
        .envs(ctx.env.iter().map(|(k, v)| (k, v)))
        .envs(command.environment_variables.iter().map(|v| (&v.name, &v.value)))
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    // A worker killed outright (SIGKILL) takes its commands with it, so
    // that a requeued action never runs twice at once.
    // SAFETY: the closure makes one system call, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    let mut child = match spawn(&mut cmd).await {
        Ok(child) => child,
        Err(e) => return Ok(not_started(program, &e)),
    };
    let group = Group(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw),
    );
    let wait =
        |r: std::io::Result<std::process::ExitStatus>| r.map_err(LeaseError::local(format!("wait for {program}")));
    let Some(limit) = timeout else {
        return Ok(Exit::Code(exit_code(wait(child.wait().await)?)));
    };
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => Ok(Exit::Code(exit_code(wait(status)?))),
        Err(_) => {
            drop(group);
            let _ = child.wait().await;
            Ok(Exit::TimedOut(limit))
        }
    }
}

/// Spawns, retrying while the program is "busy": a command forked by
/// another lease at the moment this lease's files were open for writing
/// holds them open until its own exec, and exec refuses such a file
/// (ETXTBSY). The window is short; up to 0.6 s of retries covers it.
async fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut delay = Duration::from_millis(5);
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && delay < Duration::from_millis(400) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            spawned => return spawned,
        }
    }
}

/// A program with a slash but not absolute is relative to the working
/// directory (REAPI); a bare name is looked up on the command's PATH.
fn program_path(program: &str, workdir: &Path) -> PathBuf {
    match program.contains('/') && !program.starts_with('/') {
        true => workdir.join(program),
        false => PathBuf::from(program),
    }
}

/// A shell's answer: 127 for a program that is not there, 126 for one
/// that cannot be run.
fn not_started(program: &str, e: &std::io::Error) -> Exit {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    };
    Exit::NotStarted(code, format!("kflow worker: cannot run `{program}`: {e}\n"))
}

/// The exit code, or 128 + the signal that ended the command (a shell's
/// convention).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

// ---------------------------------------------------------------------
// Results.

/// Blobs to upload, each once.
#[derive(Default)]
struct Blobs {
    list: Vec<(reapi::Digest, Vec<u8>)>,
    seen: HashSet<String>,
}

impl Blobs {
    fn add(&mut self, bytes: Vec<u8>) -> reapi::Digest {
        let digest = cas::sha256(&bytes);
        if self.seen.insert(digest.hash.clone()) {
            self.list.push((digest.clone(), bytes));
        }
        digest
    }
}

struct Collected {
    result: reapi::ActionResult,
    blobs: Blobs,
}

/// The ActionResult of a finished command: exit code, stdout and stderr,
/// and (unless it timed out) its outputs; a missing output is left out.
fn collect(layout: &Layout, streams: &Streams, exit: &Exit) -> Result<Collected, LeaseError> {
    let mut blobs = Blobs::default();
    let mut result = reapi::ActionResult::default();
    let read_stream = |path: &Path| std::fs::read(path).map_err(LeaseError::local(format!("read {}", path.display())));
    let mut stderr = read_stream(&streams.stderr)?;
    result.exit_code = match exit {
        Exit::Code(code) => *code,
        Exit::NotStarted(code, why) => {
            stderr.extend_from_slice(why.as_bytes());
            *code
        }
        Exit::TimedOut(_) => 128 + 9,
    };
    result.stdout_digest = Some(blobs.add(read_stream(&streams.stdout)?));
    result.stderr_digest = Some(blobs.add(stderr));
    if let Exit::Code(_) = exit {
        for output in &layout.outputs {
            collect_output(output, &mut result, &mut blobs)?;
        }
    }
    Ok(Collected { result, blobs })
}

fn collect_output(output: &Output, result: &mut reapi::ActionResult, blobs: &mut Blobs) -> Result<(), LeaseError> {
    let failed = LeaseError::local(format!("read output {}", output.name));
    // Top-level outputs are followed through symlinks.
    let meta = match std::fs::metadata(&output.path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(e)),
    };
    if meta.is_file() && output.kind != Kind::Directory {
        let bytes = std::fs::read(&output.path).map_err(failed)?;
        result.output_files.push(reapi::OutputFile {
            path: output.name.clone(),
            digest: Some(blobs.add(bytes)),
            is_executable: meta.permissions().mode() & 0o111 != 0,
            ..Default::default()
        });
    } else if meta.is_dir() && output.kind != Kind::File {
        let mut children = Vec::new();
        let mut seen = HashSet::new();
        let root = directory(&output.path, blobs, &mut children, &mut seen).map_err(failed)?;
        let tree = reapi::Tree {
            root: Some(root),
            children,
        };
        result.output_directories.push(reapi::OutputDirectory {
            path: output.name.clone(),
            tree_digest: Some(blobs.add(tree.encode_to_vec())),
            ..Default::default()
        });
    }
    Ok(())
}

/// The Directory message of `path`, its files added to `blobs` and its
/// subdirectories (recursively, each distinct one once) to `children`.
/// Symlinks inside stay symlinks; other special files are left out.
fn directory(
    path: &Path,
    blobs: &mut Blobs,
    children: &mut Vec<reapi::Directory>,
    seen: &mut HashSet<String>,
) -> std::io::Result<reapi::Directory> {
    let mut entries = std::fs::read_dir(path)?.collect::<Result<Vec<_>, _>>()?;
    // REAPI wants each list sorted by name.
    entries.sort_by_key(|e| e.file_name());
    let mut dir = reapi::Directory::default();
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            let target = std::fs::read_link(entry.path())?.to_string_lossy().into_owned();
            dir.symlinks.push(reapi::SymlinkNode {
                name,
                target,
                ..Default::default()
            });
        } else if kind.is_dir() {
            let child = directory(&entry.path(), blobs, children, seen)?;
            let digest = cas::sha256(&child.encode_to_vec());
            if seen.insert(digest.hash.clone()) {
                children.push(child);
            }
            dir.directories.push(reapi::DirectoryNode {
                name,
                digest: Some(digest),
            });
        } else if kind.is_file() {
            let executable = entry.metadata()?.permissions().mode() & 0o111 != 0;
            dir.files.push(reapi::FileNode {
                name,
                digest: Some(blobs.add(std::fs::read(entry.path())?)),
                is_executable: executable,
                ..Default::default()
            });
        }
    }
    Ok(dir)
}

async fn upload(cas: &Cas, blobs: &Blobs) -> Result<(), LeaseError> {
    let refs: Vec<(&reapi::Digest, &[u8])> = blobs.list.iter().map(|(d, b)| (d, b.as_slice())).collect();
    Ok(retrying(|| cas.upload_missing(&refs)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_below_their_root() {
        assert_eq!(relative("a/./b", "x").unwrap(), PathBuf::from("a/b"));
        assert_eq!(relative("", "x").unwrap(), PathBuf::new());
        assert!(relative("../a", "x").is_err());
        assert!(relative("a/../../b", "x").is_err());
        assert!(relative("/etc", "x").is_err());
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("ok.txt").is_ok());
    }

    #[test]
    fn env_specs_resolve_and_path_comes_by_default() {
        let entries = env_entries(&["A=1".into(), "A=2".into(), "KFLOW_SURELY_UNSET_VAR".into()]).unwrap();
        assert!(entries.iter().any(|(n, _)| n == "PATH"));
        assert_eq!(entries.iter().filter(|(n, _)| n == "A").count(), 1);
        assert!(entries.contains(&("A".into(), "2".into())));
        let own = env_entries(&["PATH=/x".into()]).unwrap();
        assert_eq!(own, vec![("PATH".to_owned(), "/x".to_owned())]);
        assert!(env_entries(&["=x".into()]).is_err());
    }

    /// Another thread forks all the time, as other leases do: the child
    /// briefly holds a program being written open, which exec refuses.
    #[test]
    fn a_program_written_while_others_fork_still_runs() {
        use std::os::unix::process::CommandExt as _;
        use std::sync::atomic::AtomicBool;
        let dir = tempfile::tempdir().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let forker = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut true_ = std::process::Command::new("true");
                    // SAFETY: does nothing; only forces fork over posix_spawn.
                    unsafe { true_.pre_exec(|| Ok(())) };
                    let _ = true_.status();
                }
            })
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let program = [&b"#!/bin/sh\nexit 0\n"[..], &vec![b'#'; 1 << 20]].concat();
        for i in 0..40 {
            let path = dir.path().join(format!("p{i}"));
            std::fs::write(&path, &program).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            let status = runtime.block_on(async {
                let mut child = spawn(&mut tokio::process::Command::new(&path)).await.unwrap();
                child.wait().await.unwrap()
            });
            assert!(status.success());
        }
        stop.store(true, Ordering::Relaxed);
        forker.join().unwrap();
    }

    #[test]
    fn timeouts_and_expiry_from_the_server_never_panic() {
        let mut action = reapi::Action::default();
        for (seconds, nanos) in [(-1, 0), (0, -5), (i64::MAX, i32::MAX), (0, 0), (2, 5)] {
            action.timeout = Some(bazel_remote_apis::google::protobuf::Duration { seconds, nanos });
            let _ = timeout_of(&action);
            let _ = next_heartbeat(Some(&Timestamp { seconds, nanos }));
        }
        assert_eq!(timeout_of(&action), Some(Duration::new(2, 5)));
    }
}
