//! Builds that share a cache run side by side: a long build in one
//! workspace does not stop a build in another, nor `kflow cache stats`;
//! what one writes the other reuses; two builds of one workspace take
//! turns; and `kflow cache gc` waits for the builds using the cache.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Ws, kflow_in, start, wait_for};

const LONG: Duration = Duration::from_secs(120);

/// Files a gated target and a test signal each other with.
struct Gate {
    dir: tempfile::TempDir,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A `cmd` target that says it started, then waits until the gate opens.
    fn target(&self, name: &str) -> String {
        format!(
            "[[cmd]]\nname = \"{name}\"\nouts = [\"o.txt\"]\ncmd = \"touch {started}; while [ ! -e {gate} ]; do sleep 0.05; done; echo {name} > $OUT\"\n",
            started = self.dir.path().join("started").display(),
            gate = self.dir.path().join("open").display()
        )
    }

    fn wait_started(&self) {
        let started = self.dir.path().join("started");
        wait_for("the gated build to start", LONG, || started.exists().then_some(()));
    }

    fn open(&self) {
        std::fs::write(self.dir.path().join("open"), b"").unwrap();
    }

    fn is_open(&self) -> bool {
        self.dir.path().join("open").exists()
    }
}

fn quick(name: &str) -> String {
    format!("[[cmd]]\nname = \"{name}\"\nouts = [\"o.txt\"]\ncmd = \"echo {name} > $OUT\"\n")
}

/// `kflow ARGS` in `ws` with the cache at `cache`.
fn run_on(ws: &Ws, cache: &Path, args: &[&str]) -> common::Run {
    common::run_with_timeout(kflow_in(ws.root(), cache).args(args), LONG)
}

#[test]
fn a_long_build_does_not_stop_another_workspace_or_cache_stats() {
    let gate = Gate::new();
    let a = Ws::new();
    a.package("p", &format!("{}{}", gate.target("slow"), quick("shared")));
    let long = start(a.kflow().args(["build", "//p:slow"]));
    gate.wait_started();

    let b = Ws::new();
    let run = |ws: &Ws, args: &[&str]| run_on(ws, a.cache_dir(), args);
    b.package("q", &quick("fast"));
    let fast = run(&b, &["build", "//q:fast"]);
    assert_eq!(fast.code, 0, "{}", fast.stderr);
    assert!(!fast.stderr.contains("waiting"), "{}", fast.stderr);
    assert_eq!(b.read_output("q", "fast", "o.txt"), "fast\n");
    let stats = run(&b, &["cache", "stats"]);
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    assert!(!stats.stderr.contains("waiting"), "{}", stats.stderr);
    assert!(!gate.is_open(), "both ran while the slow build was still going");

    gate.open();
    let long = long.finish(LONG);
    assert_eq!(long.code, 0, "{}", long.stderr);
    assert_eq!(a.read_output("p", "slow", "o.txt"), "slow\n");

    // What one workspace wrote, the other reads: the same action is cached.
    b.package("p", &format!("{}{}", gate.target("slow"), quick("shared")));
    let again = run(&b, &["build", "//p:slow"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("0 executed"), "{}", again.stderr);
    assert_eq!(b.read_output("p", "slow", "o.txt"), "slow\n");
}

#[test]
fn two_builds_of_one_workspace_take_turns_and_both_succeed() {
    let gate = Gate::new();
    let ws = Ws::new();
    ws.package("p", &format!("{}{}", gate.target("slow"), quick("other")));
    let first = start(ws.kflow().args(["build", "//p:slow"]));
    gate.wait_started();
    let second = start(ws.kflow().args(["build", "//p:other"]));
    // The second says it waits, and does not finish before the first.
    std::thread::sleep(Duration::from_millis(500));
    gate.open();
    let (first, second) = (first.finish(LONG), second.finish(LONG));
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains("waiting for another kflow build of this workspace"),
        "{}",
        second.stderr
    );
    assert_eq!(ws.read_output("p", "slow", "o.txt"), "slow\n");
    assert_eq!(ws.read_output("p", "other", "o.txt"), "other\n");
}

#[test]
fn gc_waits_for_the_builds_using_the_cache() {
    let gate = Gate::new();
    let ws = Ws::new();
    ws.package("p", &gate.target("slow"));
    let build = start(ws.kflow().args(["build", "//p:slow"]));
    gate.wait_started();
    let gc = start(ws.kflow().args(["cache", "gc", "--max-size", "0"]));
    std::thread::sleep(Duration::from_millis(500));
    gate.open();
    let (build, gc) = (build.finish(LONG), gc.finish(LONG));
    assert_eq!(build.code, 0, "{}", build.stderr);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert!(
        gc.stderr.contains("waiting for the builds using the cache"),
        "{}",
        gc.stderr
    );
    assert_eq!(ws.read_output("p", "slow", "o.txt"), "slow\n");
}
