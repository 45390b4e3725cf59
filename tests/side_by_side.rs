//! Builds that share a cache run side by side: a long build in one
//! workspace does not stop a build in another, nor `kflow cache stats`;
//! what one writes the other reuses; two builds of one workspace take
//! turns; and `kflow cache gc` waits for the builds using the cache.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Ws, kflow_in, start, wait_for};

const LONG: Duration = Duration::from_secs(120);

/// A `cmd` target that says it started, then waits until `gate` exists.
fn gated(name: &str, gate: &Path, started: &Path) -> String {
    format!(
        "[[cmd]]\nname = \"{name}\"\nouts = [\"o.txt\"]\ncmd = \"touch {started}; while [ ! -e {gate} ]; do sleep 0.05; done; echo {name} > $OUT\"\n",
        started = started.display(),
        gate = gate.display()
    )
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
    let signals = tempfile::tempdir().unwrap();
    let (gate, started) = (signals.path().join("gate"), signals.path().join("started"));
    let a = Ws::new();
    a.package("p", &format!("{}{}", gated("slow", &gate, &started), quick("shared")));
    let long = start(a.kflow().args(["build", "//p:slow"]));
    wait_for("the slow build to start", LONG, || started.exists().then_some(()));

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
    assert!(!gate.exists(), "both ran while the slow build was still going");

    std::fs::write(&gate, b"").unwrap();
    let long = long.finish(LONG);
    assert_eq!(long.code, 0, "{}", long.stderr);
    assert_eq!(a.read_output("p", "slow", "o.txt"), "slow\n");

    // What one workspace wrote, the other reads: the same action is cached.
    b.package("p", &format!("{}{}", gated("slow", &gate, &started), quick("shared")));
    let again = run(&b, &["build", "//p:slow"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("0 executed"), "{}", again.stderr);
    assert_eq!(b.read_output("p", "slow", "o.txt"), "slow\n");
}

#[test]
fn two_builds_of_one_workspace_take_turns_and_both_succeed() {
    let signals = tempfile::tempdir().unwrap();
    let (gate, started) = (signals.path().join("gate"), signals.path().join("started"));
    let ws = Ws::new();
    ws.package("p", &format!("{}{}", gated("slow", &gate, &started), quick("other")));
    let first = start(ws.kflow().args(["build", "//p:slow"]));
    wait_for("the first build to start", LONG, || started.exists().then_some(()));
    let second = start(ws.kflow().args(["build", "//p:other"]));
    // The second says it waits, and does not finish before the first.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&gate, b"").unwrap();
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
    let signals = tempfile::tempdir().unwrap();
    let (gate, started) = (signals.path().join("gate"), signals.path().join("started"));
    let ws = Ws::new();
    ws.package("p", &gated("slow", &gate, &started));
    let build = start(ws.kflow().args(["build", "//p:slow"]));
    wait_for("the build to start", LONG, || started.exists().then_some(()));
    let gc = start(ws.kflow().args(["cache", "gc", "--max-size", "0"]));
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&gate, b"").unwrap();
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
