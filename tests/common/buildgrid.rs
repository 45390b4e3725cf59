//! A BuildGrid server (the Remote Execution API) on a free loopback port:
//! `start()` as a cache only (CAS, ByteStream, ActionCache; no database),
//! `Cluster::start()` with execution (its scheduler on a private
//! PostgreSQL) and `kflow worker`s; both stopped when dropped. `bgd` comes
//! from `KFLOW_BUILDGRID_BGD`, which scripts/test.sh sets after
//! scripts/install-buildgrid.sh. The set-up follows
//! /work/shared/spec/reapi.md.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct BuildGrid {
    child: Child,
    /// The certificate of a TLS server ([`start_tls`]).
    #[allow(dead_code)]
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
    pub url: String,
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server, or `None` (with a line saying so) when BuildGrid is not
/// installed and `KFLOW_REQUIRE_BUILDGRID` is not set.
pub fn start() -> Option<BuildGrid> {
    start_with(false)
}

/// Like [`start`], serving TLS with a self-signed certificate for
/// 127.0.0.1 (made with `openssl`); `url` is `grpcs://…`, and `ca` is the
/// certificate a client must trust.
#[allow(dead_code)]
pub fn start_tls() -> Option<BuildGrid> {
    start_with(true)
}

fn start_with(tls: bool) -> Option<BuildGrid> {
    let bgd = bgd_path()?;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let channel = match tls {
        false => format!("!channel {{ address: \"127.0.0.1:{port}\", insecure-mode: true }}"),
        true => {
            // A CA, and a server certificate it signs: rustls refuses a
            // self-signed CA certificate as the server's own.
            std::fs::write(
                dir.path().join("ext.cnf"),
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
            )
            .expect("ext.cnf");
            let steps: [&[&str]; 3] = [
                &[
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", "ca.key",
                ],
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "key.pem",
                    "-out",
                    "server.csr",
                ],
                &[
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                ],
            ];
            let tails: [&[&str]; 3] = [
                &["-out", "ca.pem", "-subj", "/CN=kflow test CA"],
                &["-subj", "/CN=127.0.0.1"],
                &["-out", "cert.pem", "-days", "1", "-extfile", "ext.cnf"],
            ];
            for (step, tail) in steps.iter().zip(tails) {
                let made = Command::new("openssl")
                    .args(*step)
                    .args(tail)
                    .current_dir(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("run openssl");
                assert!(made.success(), "openssl {step:?} failed");
            }
            format!(
                "!channel {{ address: \"127.0.0.1:{port}\", insecure-mode: false, \
                 credentials: {{ tls-server-key: key.pem, tls-server-cert: cert.pem }} }}"
            )
        }
    };
    let config = format!(
        "server:\n  - {channel}\n\
         storages:\n  - !lru-storage &cas {{ size: 512MB }}\n\
         caches:\n  - !lru-action-cache &ac {{ storage: *cas, max-cached-refs: 100000, allow-updates: true, cache-failed-actions: false }}\n\
         instances:\n  - name: \"\"\n    services: [ !cas {{ storage: *cas }}, !bytestream {{ storage: *cas }}, !action-cache {{ cache: *ac }} ]\n"
    );
    std::fs::write(dir.path().join("bgd.yml"), config).expect("bgd.yml");
    let child = Command::new(bgd)
        .args(["server", "start", "bgd.yml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bgd");
    let scheme = if tls { "grpcs" } else { "grpc" };
    let server = BuildGrid {
        child,
        ca: dir.path().join("ca.pem"),
        _dir: dir,
        url: format!("{scheme}://127.0.0.1:{port}"),
    };
    wait_for_port(port, None);
    Some(server)
}

/// `bgd`, or `None` (with a line saying so) when BuildGrid is not
/// installed and `KFLOW_REQUIRE_BUILDGRID` is not set.
fn bgd_path() -> Option<std::ffi::OsString> {
    let found = std::env::var_os("KFLOW_BUILDGRID_BGD").filter(|b| Path::new(b).exists());
    if found.is_none() {
        assert!(
            std::env::var_os("KFLOW_REQUIRE_BUILDGRID").is_none(),
            "BuildGrid is missing (KFLOW_BUILDGRID_BGD) and KFLOW_REQUIRE_BUILDGRID is set"
        );
        println!("BuildGrid is not installed (scripts/install-buildgrid.sh): skipped");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something listens on `port`; fails the test after 60 s, or
/// at once if `child` (the server) has exited, showing `log`.
fn wait_for_port(port: u16, mut server: Option<(&mut Child, &Path)>) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some((child, log)) = server.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "BuildGrid exited ({status}) before serving:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "BuildGrid did not start in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// BuildGrid with execution: a private PostgreSQL for its scheduler, the
/// server on a free port, and `kflow worker`s added by the test; all in one
/// temporary directory. Dropping it stops the workers (SIGTERM, so they say
/// goodbye), the server and PostgreSQL.
pub struct Cluster {
    /// `grpc://127.0.0.1:PORT` (instance `""`).
    pub url: String,
    // Dropped in this order: PostgreSQL stops before its directory goes.
    postgres: Postgres,
    dir: tempfile::TempDir,
    bgd_path: PathBuf,
    port: u16,
    bgd: Option<Child>,
    workers: Vec<Option<Child>>,
}

/// A PostgreSQL server in `<dir>/pg`. It refuses to run as root, so as
/// root its commands run as `postgres` on a directory it owns.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    port: u16,
}

impl Postgres {
    fn start(dir: &Path) -> Postgres {
        let bin = postgres_bin();
        let as_postgres = is_root();
        let pg = dir.join("pg");
        std::fs::create_dir_all(&pg).expect("create pg/");
        if as_postgres {
            // postgres must reach its directory inside our private one.
            run(Command::new("chmod").arg("755").arg(dir));
            run(Command::new("chown").arg("postgres:postgres").arg(&pg));
        }
        let postgres = Postgres {
            bin,
            data: pg.join("data"),
            as_postgres,
            port: free_port(),
        };
        run(postgres.tool("initdb").arg("-D").arg(&postgres.data).args([
            "-U",
            "bgd",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]));
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            postgres.port,
            pg.display()
        );
        run(postgres
            .tool("pg_ctl")
            .arg("-D")
            .arg(&postgres.data)
            .arg("-l")
            .arg(pg.join("server.log"))
            .args(["-w", "-o", &options, "start"]));
        let port = postgres.port.to_string();
        run(Command::new(postgres.bin.join("createdb")).args(["-h", "127.0.0.1", "-p", &port, "-U", "bgd", "bgd"]));
        postgres
    }

    /// A PostgreSQL program, as `postgres` when we are root.
    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        match self.as_postgres {
            true => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).arg(program);
                cmd
            }
            false => Command::new(program),
        }
    }

    /// `postgresql+psycopg2://`: SQLAlchemy 2.1 maps plain `postgresql://`
    /// to psycopg 3, with which BuildGrid's notifier fails (reapi.md).
    fn url(&self) -> String {
        format!("postgresql+psycopg2://bgd@127.0.0.1:{}/bgd", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The newest `/usr/lib/postgresql/*/bin` with `initdb`.
fn postgres_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL is not installed (/usr/lib/postgresql/*/bin); scripts/install-packages.sh installs it")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a set-up command, failing the test with its output if it fails.
fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `signal` to a process group.
fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

/// Waits up to `limit` for `child` to exit; true if it did.
fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Cluster {
    /// PostgreSQL and BuildGrid with execution, or `None` (with a line
    /// saying so) when BuildGrid is not installed and
    /// `KFLOW_REQUIRE_BUILDGRID` is not set. No workers yet.
    pub fn start() -> Option<Cluster> {
        let bgd = bgd_path()?;
        let dir = tempfile::Builder::new()
            .prefix("kflow-cluster-")
            .tempdir()
            .expect("temp dir");
        let postgres = Postgres::start(dir.path());
        run(Command::new(&bgd).args(["migrate", "apply", &postgres.url()]));
        let port = free_port();
        let config = cluster_config(port, &postgres.url(), &dir.path().join("cas"));
        std::fs::write(dir.path().join("bgd.yml"), config).expect("bgd.yml");
        let mut cluster = Cluster {
            url: format!("grpc://127.0.0.1:{port}"),
            postgres,
            dir,
            bgd_path: bgd.into(),
            port,
            bgd: None,
            workers: Vec::new(),
        };
        cluster.start_server();
        Some(cluster)
    }

    fn start_server(&mut self) {
        let log = self.dir.path().join("bgd.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("bgd.log");
        let mut bgd = Command::new(&self.bgd_path)
            .args(["server", "start", "bgd.yml"])
            .current_dir(self.dir.path())
            // Its own process group, so that stopping it stops all of it.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start bgd");
        wait_for_port(self.port, Some((&mut bgd, &log)));
        self.bgd = Some(bgd);
    }

    fn stop_server(&mut self) {
        if let Some(mut bgd) = self.bgd.take() {
            // Nothing to save: SIGKILL is quicker than its 3 s shutdown.
            signal_group(bgd.id(), "-KILL");
            let _ = bgd.wait();
        }
    }

    /// Kills the server and starts it again on the same port and database
    /// (which keeps the bots' sessions).
    pub fn restart_server(&mut self) {
        self.stop_server();
        self.start_server();
    }

    /// Starts `kflow worker --capacity N` on the cluster (its stderr in a
    /// log file, see [`Cluster::worker_log`]); returns its index.
    pub fn add_worker(&mut self, capacity: usize) -> usize {
        self.add_worker_with(capacity, &[])
    }

    /// Like [`Cluster::add_worker`], with more arguments (e.g. `--env`).
    pub fn add_worker_with(&mut self, capacity: usize, args: &[&str]) -> usize {
        let i = self.workers.len();
        let log = std::fs::File::create(self.worker_log_path(i)).expect("worker log");
        let child = Command::new(env!("CARGO_BIN_EXE_kflow"))
            .arg("worker")
            .args(["--server", &self.url, "--capacity", &capacity.to_string()])
            .arg("--work-dir")
            .arg(self.dir.path().join(format!("work-{i}")))
            .args(["--bot-id", &format!("test-worker-{i}-{}", std::process::id())])
            .args(args)
            .env_remove("KFLOW_REMOTE_EXECUTOR_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kflow worker");
        self.workers.push(Some(child));
        i
    }

    /// SIGKILL: the worker says no goodbye, and the server keeps its
    /// session (and leases) until the keepalive runs out (about 11 s).
    pub fn kill_worker(&mut self, i: usize) {
        if let Some(mut child) = self.workers.get_mut(i).and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything worker `i` has logged so far.
    pub fn worker_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.worker_log_path(i)).unwrap_or_default()
    }

    /// The server's own log.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bgd.log")).unwrap_or_default()
    }

    fn worker_log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("worker-{i}.log"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Workers first, while the server can still hear their goodbye.
        let mut workers: Vec<Child> = self.workers.iter_mut().filter_map(Option::take).collect();
        for child in &workers {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
        for child in &mut workers {
            if !wait_exit(child, Duration::from_secs(5)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.stop_server();
    }
}

/// bgd.yml for execution, with the fast assigner of reapi.md (about 1.5 s
/// per action with the defaults) and a 10 s keepalive. Every open call
/// (an Execute stream, a bot's long poll) holds one of the server's
/// threads, and past its pool (5 per core by default: 10 here) calls fail
/// with RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!": hence a
/// larger pool.
fn cluster_config(port: u16, sql: &str, cas: &Path) -> String {
    format!(
        r#"thread-pool-size: 100
server:
  - !channel {{ address: "127.0.0.1:{port}", insecure-mode: true }}
connections:
  - !sql-connection &sql {{ connection-string: "{sql}", pool-size: 5, max-overflow: 10 }}
storages:
  - !disk-storage &cas {{ path: "{cas}" }}
caches:
  - !lru-action-cache &ac {{ storage: *cas, max-cached-refs: 10000, allow-updates: true, cache-failed-actions: false }}
schedulers:
  - !sql-scheduler &sched
    sql: *sql
    storage: *cas
    action-cache: *ac
    bot-session-keepalive-timeout: 10
    session-expiry-timer-interval: 1
    assigners: [ !priority-age-assigner {{ count: 1, interval: 0.05, jitter-factor: 0.0, failure-backoff: 0.1 }} ]
    property-set: !dynamic-property-set {{ wildcard-property-keys: [] }}
instances:
  - name: ""
    services: [ !cas {{ storage: *cas }}, !bytestream {{ storage: *cas }}, !action-cache {{ cache: *ac }}, !execution {{ scheduler: *sched }} ]
"#,
        cas = cas.display()
    )
}
