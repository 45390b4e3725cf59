//! What the end-to-end tests share: a throw-away workspace with its own
//! cache, a way to run the real `kflow` binary in it, and readers for the
//! `--build-report` file and the build event logs; `board` starts a
//! simulated board for the device tests.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod board;
pub mod buildgrid;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Far longer than any command of these tests takes; only a hung kflow
/// reaches it.
pub const TIMEOUT: Duration = Duration::from_secs(300);

pub const KFLOW_TOML: &str = "[workspace]\ndefault_cell = \"target\"\n[cells]\ntarget = \"graphs\"\n";

/// A workspace in a temporary directory, with a private cache directory
/// beside it (never `~/.cache`).
pub struct Ws {
    dir: TempDir,
    cache: TempDir,
    /// Where `--build-report` files go: outside the workspace, so that
    /// writing one never looks like an edit to `--watch`.
    reports: TempDir,
    report_count: AtomicUsize,
    test_rules: bool,
}

impl Default for Ws {
    fn default() -> Self {
        Self::new()
    }
}

impl Ws {
    pub fn new() -> Ws {
        let dir = tempfile::Builder::new()
            .prefix("kflow-ws-")
            .tempdir()
            .expect("temp workspace");
        let cache = tempfile::Builder::new()
            .prefix("kflow-cache-")
            .tempdir()
            .expect("temp cache");
        std::fs::write(dir.path().join("kflow.toml"), KFLOW_TOML).expect("write kflow.toml");
        std::fs::create_dir_all(dir.path().join("graphs")).expect("create graphs/");
        Ws {
            dir,
            cache,
            reports: tempfile::Builder::new()
                .prefix("kflow-reports-")
                .tempdir()
                .expect("temp dir"),
            report_count: AtomicUsize::new(0),
            test_rules: false,
        }
    }

    /// A workspace whose kflow runs also know the test-only rules
    /// (`KFLOW_TEST_RULES=1`: `test_fanout`).
    pub fn with_test_rules() -> Ws {
        Ws {
            test_rules: true,
            ..Ws::new()
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Deletes the workspace, its cache and its reports now, for a `Ws` that
    /// is never dropped (one kept in a `static`).
    pub fn remove_all(&self) {
        for dir in [self.dir.path(), self.cache.path(), self.reports.path()] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    pub fn out_dir(&self) -> PathBuf {
        self.root().join("kflow-out")
    }

    /// Writes `graphs/<package>/BUILD.toml`.
    pub fn package(&self, package: &str, text: &str) -> &Ws {
        self.file(&format!("graphs/{package}/BUILD.toml"), text)
    }

    /// `//data:small`: `rows` generated CATS-like rows (seed `seed`), in
    /// windows of 16 every 4 rows.
    pub fn small_dataset(&self, rows: u64, seed: u64) -> &Ws {
        self.package(
            "data",
            &format!(
                "[[dataset]]\nname = \"small\"\ngenerator = {{ rows = {rows}, seed = {seed}, anomaly_fraction = 0.038 }}\nwindow = 16\nstride = 4\n"
            ),
        )
    }

    /// `graphs/<package>/BUILD.toml`: a small CNN (`:cnn`) trained one
    /// epoch on `//data:small` (`:train`) and quantized for the
    /// accelerators (`:q`), then `extra` targets.
    pub fn quantized_cnn(&self, package: &str, extra: &str) -> &Ws {
        self.package(package, &format!("{QUANTIZED_CNN}{extra}"))
    }

    /// The repository's own `graphs/<package>/BUILD.toml`, copied.
    pub fn repository_package(&self, package: &str) -> &Ws {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("graphs")
            .join(package)
            .join("BUILD.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        self.package(package, &text)
    }

    /// Writes a file relative to the workspace root, creating directories.
    pub fn file(&self, rel: &str, text: &str) -> &Ws {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self
    }

    /// A materialized output: `kflow-out/<package>/<target>/<name>`.
    pub fn output(&self, package: &str, target: &str, name: &str) -> PathBuf {
        self.out_dir().join(package).join(target).join(name)
    }

    pub fn read_output(&self, package: &str, target: &str, name: &str) -> String {
        let path = self.output(package, target, name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// `kflow` run in the workspace root with this workspace's cache.
    pub fn kflow(&self) -> Command {
        let mut cmd = kflow_in(self.root(), self.cache_dir());
        if self.test_rules {
            cmd.env("KFLOW_TEST_RULES", "1");
        }
        cmd
    }

    /// Runs `kflow ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        run_with_timeout(self.kflow().args(args), TIMEOUT)
    }

    /// Runs `kflow build ARGS --build-report FILE` and reads the report
    /// (absent when the build never got as far as writing one).
    pub fn build(&self, args: &[&str]) -> Build {
        self.build_within(args, TIMEOUT)
    }

    fn build_within(&self, args: &[&str], timeout: Duration) -> Build {
        let n = self.report_count.fetch_add(1, Ordering::Relaxed);
        let report_path = self.reports.path().join(format!("report-{n}.json"));
        let mut cmd = self.kflow();
        cmd.arg("build").args(args).arg("--build-report").arg(&report_path);
        let run = run_with_timeout(&mut cmd, timeout);
        let report = std::fs::read(&report_path)
            .ok()
            .map(|bytes| Report(serde_json::from_slice(&bytes).expect("the build report is JSON")));
        Build { run, report }
    }

    /// Like [`Ws::build`], asserting success.
    pub fn build_ok(&self, args: &[&str]) -> Report {
        self.build_ok_within(args, TIMEOUT)
    }

    /// Like [`Ws::build_ok`], for a build allowed `timeout` (a search at its
    /// real size).
    pub fn build_ok_within(&self, args: &[&str], timeout: Duration) -> Report {
        let b = self.build_within(args, timeout);
        assert_eq!(b.run.code, 0, "kflow build {args:?} failed:\n{}", b.run.stderr);
        let report = b.report.expect("a successful build writes its report");
        assert_eq!(report.0["success"], Value::Bool(true), "{}", b.run.stderr);
        report
    }

    /// Build event logs under `kflow-out/.builds/`, oldest first.
    pub fn build_logs(&self) -> Vec<PathBuf> {
        kflow_engine::events::list_builds(&self.out_dir())
    }
}

/// The `kflow` binary under test, run in `dir` with cache `cache`.
pub fn kflow_in(dir: &Path, cache: &Path) -> Command {
    kflow_under(&[], dir, cache)
}

/// Like [`kflow_in`], with the binary run by `wrapper` (e.g. `qemu-x86_64
/// -cpu Nehalem`) when it is not empty.
pub fn kflow_under(wrapper: &[&str], dir: &Path, cache: &Path) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(env!("CARGO_BIN_EXE_kflow"));
            cmd
        }
        None => Command::new(env!("CARGO_BIN_EXE_kflow")),
    };
    cmd.current_dir(dir)
        .env("KFLOW_CACHE_DIR", cache)
        .env_remove("KFLOW_TEST_RULES")
        .env_remove("XDG_CACHE_HOME")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command, killing it and failing the test if it has not finished
/// within `timeout` (a hung kflow must not hang the test suite).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Run {
    start(cmd).finish(timeout)
}

/// A command started with its output captured.
pub struct Pending {
    pid: u32,
    output: std::sync::mpsc::Receiver<std::io::Result<Output>>,
}

pub fn start(cmd: &mut Command) -> Pending {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kflow");
    let pid = child.id();
    let (tx, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    Pending { pid, output }
}

impl Pending {
    /// Waits for the command; after `timeout`, kills it and fails the test.
    pub fn finish(self, timeout: Duration) -> Run {
        match self.output.recv_timeout(timeout) {
            Ok(output) => finished(output.expect("wait for kflow")),
            Err(_) => {
                // The child is owned by the waiting thread; end it by its id.
                let _ = Command::new("kill").arg("-9").arg(self.pid.to_string()).status();
                let output = self.output.recv().ok().and_then(Result::ok);
                let stderr = output.map(|o| String::from_utf8_lossy(&o.stderr).into_owned());
                panic!(
                    "kflow did not finish within {timeout:?}; stderr:\n{}",
                    stderr.unwrap_or_default()
                );
            }
        }
    }
}

/// The result of a finished command, checked for the one thing every kflow
/// invocation must satisfy, whatever it was asked: it never panics.
pub fn finished(output: Output) -> Run {
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert_no_panic(&run);
    run
}

pub fn assert_no_panic(run: &Run) {
    assert!(
        !run.stdout.contains("panicked") && !run.stderr.contains("panicked"),
        "kflow panicked:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    // 101 is Rust's exit code for a panic that escaped main.
    assert_ne!(run.code, 101, "kflow exited like a panic:\n{}", run.stderr);
}

/// `kflow build` and the report it wrote.
#[derive(Debug)]
pub struct Build {
    pub run: Run,
    pub report: Option<Report>,
}

/// A `--build-report` file (the same rows as the event log's actions).
#[derive(Debug, Clone)]
pub struct Report(pub Value);

impl Report {
    pub fn actions(&self) -> &[Value] {
        self.0["actions"].as_array().expect("`actions` is an array")
    }

    pub fn count(&self, name: &str) -> u64 {
        self.0["counts"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no count `{name}` in {}", self.0["counts"]))
    }

    pub fn success(&self) -> bool {
        self.0["success"].as_bool().expect("`success` is a bool")
    }

    pub fn action(&self, id: &str) -> &Value {
        self.actions()
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no action `{id}` in the report; ids: {:?}", self.all_ids()))
    }

    pub fn status(&self, id: &str) -> String {
        self.action(id)["status"]
            .as_str()
            .expect("status is a string")
            .to_owned()
    }

    pub fn all_ids(&self) -> BTreeSet<String> {
        self.actions().iter().map(id_of).collect()
    }

    /// Ids of the actions with `status`.
    pub fn ids(&self, status: &str) -> BTreeSet<String> {
        self.actions()
            .iter()
            .filter(|a| a["status"] == status)
            .map(id_of)
            .collect()
    }

    /// Output digests of every action, by id and output name.
    pub fn output_digests(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.actions()
            .iter()
            .map(|a| {
                let outputs = a["outputs"]
                    .as_object()
                    .expect("`outputs` is an object")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("digest is a string").to_owned()))
                    .collect();
                (id_of(a), outputs)
            })
            .collect()
    }

    /// The digest of output `name` of action `id`.
    pub fn output_digest(&self, id: &str, name: &str) -> String {
        self.action(id)["outputs"][name]
            .as_str()
            .unwrap_or_else(|| panic!("`{id}` has no output `{name}`"))
            .to_owned()
    }
}

fn id_of(action: &Value) -> String {
    action["id"].as_str().expect("`id` is a string").to_owned()
}

/// One build event log read back: header, action rows and end line.
#[derive(Debug, Default)]
pub struct EventLog {
    pub header: Option<Value>,
    pub actions: Vec<Value>,
    pub end: Option<Value>,
}

pub fn read_event_log(path: &Path) -> EventLog {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut log = EventLog::default();
    for line in text.lines() {
        // A line being written right now may be incomplete.
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match value["type"].as_str() {
            Some("build") => log.header = Some(value),
            Some("end") => log.end = Some(value),
            // `action` lines, and any shorter form of them: what matters
            // here is an identity with a status.
            _ if value["id"].is_string() && value["status"].is_string() => log.actions.push(value),
            _ => {}
        }
    }
    log
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after
/// `timeout` saying what was awaited.
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_for_every(what, timeout, Duration::from_millis(50), check)
}

pub fn wait_for_every<T>(what: &str, timeout: Duration, every: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

/// Kills and reaps a child process when dropped, so that a failing
/// assertion never leaves a kflow running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small deterministic PRNG (splitmix64), so that generated graphs and
/// timings are the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A generated graph of `cmd` targets: target `i` is `t{i}` in package
/// `p{i % packages}`, writes `t{i}.txt`, and reads the outputs of `deps[i]`
/// (all lower indices). Outputs stay a few bytes: each is a checksum of its
/// inputs plus the target's own number.
#[derive(Clone, Debug)]
pub struct GenGraph {
    pub packages: usize,
    pub deps: Vec<Vec<usize>>,
    /// Command overrides by target index.
    pub cmds: BTreeMap<usize, String>,
    /// Extra shell run by the targets listed, before their real work (e.g.
    /// `sleep 0.05`).
    pub prelude: BTreeMap<usize, String>,
}

impl GenGraph {
    /// `layers` layers of `width` targets; each target outside the first
    /// layer reads one to three targets of the previous two layers.
    pub fn layered(seed: u64, layers: usize, width: usize, packages: usize) -> GenGraph {
        let mut rng = Rng::new(seed);
        let mut deps = Vec::with_capacity(layers * width);
        for layer in 0..layers {
            for _ in 0..width {
                let mut mine = BTreeSet::new();
                if layer > 0 {
                    let n = 1 + rng.below(3);
                    for _ in 0..n {
                        let back = if layer >= 2 { 1 + rng.below(2) } else { 1 };
                        mine.insert((layer - back) * width + rng.below(width));
                    }
                }
                deps.push(mine.into_iter().collect::<Vec<usize>>());
            }
        }
        GenGraph {
            packages,
            deps,
            cmds: BTreeMap::new(),
            prelude: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.deps.len()
    }

    pub fn package_of(&self, i: usize) -> String {
        format!("p{}", i % self.packages)
    }

    pub fn id(&self, i: usize) -> String {
        format!("target//{}:t{i}", self.package_of(i))
    }

    pub fn default_cmd(&self, i: usize) -> String {
        if self.deps[i].is_empty() {
            format!("echo {i} > $OUT")
        } else {
            format!("cat $SRCS | cksum > $OUT; echo {i} >> $OUT")
        }
    }

    pub fn cmd(&self, i: usize) -> String {
        let base = self.cmds.get(&i).cloned().unwrap_or_else(|| self.default_cmd(i));
        match self.prelude.get(&i) {
            Some(pre) => format!("{pre}; {base}"),
            None => base,
        }
    }

    /// The text of package `p`'s BUILD.toml. Dependencies are written in all
    /// three label forms: `:t1`, `//p1:t1` and `target//p1:t1`.
    pub fn package_text(&self, p: usize) -> String {
        let mut text = String::new();
        for i in (p..self.len()).step_by(self.packages) {
            let srcs: Vec<String> = self.deps[i]
                .iter()
                .map(|&d| {
                    if d % self.packages == p {
                        format!("\":t{d}\"")
                    } else if d % 2 == 0 {
                        format!("\"//{}:t{d}\"", self.package_of(d))
                    } else {
                        format!("\"{}\"", self.id(d))
                    }
                })
                .collect();
            text.push_str(&format!(
                "[[cmd]]\nname = \"t{i}\"\nsrcs = [{}]\nouts = [\"t{i}.txt\"]\ncmd = {}\n\n",
                srcs.join(", "),
                toml_string(&self.cmd(i))
            ));
        }
        text
    }

    /// Writes every package of the graph into `ws`.
    pub fn write(&self, ws: &Ws) {
        for p in 0..self.packages {
            self.write_package(ws, p);
        }
    }

    pub fn write_package(&self, ws: &Ws, p: usize) {
        ws.package(&format!("p{p}"), &self.package_text(p));
    }

    /// Every target that reads `i`'s output, directly or not (excluding `i`).
    pub fn dependents(&self, i: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        // Dependencies always have lower indices, so one forward pass finds
        // every transitive dependent.
        for j in i + 1..self.len() {
            if self.deps[j].iter().any(|d| *d == i || out.contains(d)) {
                out.insert(j);
            }
        }
        out
    }

    pub fn ids(&self, indices: impl IntoIterator<Item = usize>) -> BTreeSet<String> {
        indices.into_iter().map(|i| self.id(i)).collect()
    }
}

/// A TOML basic string.
/// Whether `qemu-system-arm` and `arm-none-eabi-gcc` are installed; a test
/// that needs them skips without them, unless `KFLOW_REQUIRE_QEMU` is set
/// (scripts/test.sh installs both and sets it).
pub fn qemu_tools_present() -> bool {
    let present = |tool: &str| Command::new(tool).arg("--version").output().is_ok();
    let ok = present("qemu-system-arm") && present("arm-none-eabi-gcc");
    if !ok {
        assert!(
            std::env::var_os("KFLOW_REQUIRE_QEMU").is_none(),
            "qemu-system-arm or arm-none-eabi-gcc is missing and KFLOW_REQUIRE_QEMU is set"
        );
        println!("qemu-system-arm or arm-none-eabi-gcc is not installed: skipped");
    }
    ok
}

pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Every regular file under `dir` (relative path to bytes), skipping
/// kflow's own bookkeeping directories (`.builds`, `.state`, `.lock`).
pub fn tree_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("list {}: {e}", d.display())) {
            let entry = entry.expect("dir entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).expect("read output"));
            }
        }
    }
    out
}

/// Runs a compiler on the generated `source` in `dir`, warnings as
/// errors; a missing compiler is a failure (scripts/test.sh installs both).
pub fn compile_c(compiler: &str, flags: &[&str], (dir, source): (&Path, &str), out: &Path) {
    let result = Command::new(compiler)
        .args(flags)
        .args(["-Wall", "-Wextra", "-Werror", "-c", source, "-o"])
        .arg(out)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler} ({e}); scripts/test.sh installs it"));
    assert!(
        result.status.success(),
        "{compiler} failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// See [`Ws::quantized_cnn`].
const QUANTIZED_CNN: &str = r#"
[[model]]
name = "cnn"
input = [17, 16]
task = { kind = "classifier", classes = 2 }
seed = 3
layers = [
    { name = "conv0", op = "conv1d", out_channels = 16, kernel = 3, padding = 1, bias = false },
    { name = "bn0", op = "batch_norm" },
    { name = "act0", op = "relu" },
    { name = "pool0", op = "max_pool", kernel = 2, stride = 2 },
    { name = "conv1", op = "conv1d", out_channels = 8, kernel = 3, padding = 1 },
    { name = "act1", op = "relu" },
    { name = "flatten", op = "flatten" },
    { name = "out", op = "linear", out_features = 2 },
]

[[train]]
name = "train"
model = ":cnn"
dataset = "//data:small"
epochs = 1

[[quantize]]
name = "q"
model = ":cnn"
weights = ":train"
dataset = "//data:small"
"#;
