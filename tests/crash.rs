//! `kill -9` at any moment leaves a cache and a workspace that the next
//! build uses correctly (SPEC.md §6).

mod common;

use std::process::Stdio;
use std::time::Instant;

use common::{GenGraph, Rng, Ws, tree_files};

const KILLS: usize = 12;
/// Each variant of the graph is built (and killed) twice: once from nothing,
/// once resuming what the killed build left.
const VARIANTS: usize = 6;

/// About 200 targets; every fifth sleeps a little, so a build takes a second
/// or two and a kill lands in the middle of real work.
fn graph() -> GenGraph {
    let mut g = GenGraph::layered(0xc7a5_4001, 10, 20, 4);
    for i in (0..g.len()).step_by(5) {
        g.prelude.insert(i, "sleep 0.05".to_owned());
    }
    g
}

/// Variant 0 is the graph itself; the others change the first layer, so that
/// everything downstream has to run again and a kill interrupts work rather
/// than a no-op build.
fn variant(v: usize) -> GenGraph {
    let mut g = graph();
    if v > 0 {
        for i in 0..g.len() {
            if g.deps[i].is_empty() {
                g.cmds.insert(i, format!("echo {i} variant {v} > $OUT"));
            }
        }
    }
    g
}

#[test]
fn build_after_repeated_sigkills_matches_a_clean_build_and_the_cache_verifies() {
    // The reference: a build from an empty cache in another workspace. Its
    // duration scales the kill delays to this machine.
    let reference = Ws::new();
    variant(0).write(&reference);
    let started = Instant::now();
    let expected = reference.build_ok(&["target//...", "--quiet"]);
    let duration = started.elapsed();
    assert_eq!(expected.count("executed"), graph().len() as u64);

    let ws = Ws::new();
    let mut rng = Rng::new(0x5eed_0009);
    for round in 0..KILLS {
        variant(round % VARIANTS).write(&ws);
        let delay = duration.mul_f64(0.05 + 0.95 * rng.unit());
        let stderr = tempfile::NamedTempFile::new().expect("temp file");
        let mut child = ws
            .kflow()
            .args(["build", "target//...", "--quiet"])
            .stdout(Stdio::null())
            .stderr(stderr.reopen().expect("reopen"))
            .spawn()
            .expect("start kflow");
        std::thread::sleep(delay);
        // SIGKILL on Unix; the build may already have finished.
        let _ = child.kill();
        child.wait().expect("reap kflow");
        let stderr = std::fs::read_to_string(stderr.path()).expect("read stderr");
        assert!(!stderr.contains("panicked"), "round {round}: kflow panicked:\n{stderr}");
    }
    // The test means something only if kills landed inside builds.
    let interrupted = ws
        .build_logs()
        .iter()
        .filter(|log| common::read_event_log(log).end.is_none())
        .count();
    assert!(
        interrupted >= KILLS / 2,
        "only {interrupted} of {KILLS} kills interrupted a build"
    );

    variant(0).write(&ws);
    let report = ws.build_ok(&["target//...", "--quiet"]);
    assert_eq!(report.output_digests(), expected.output_digests());
    assert_eq!(tree_files(&ws.out_dir()), tree_files(&reference.out_dir()));

    let verify = ws.run(&["cache", "verify"]);
    assert_eq!(
        verify.code, 0,
        "cache verify found damage:\n{}\n{}",
        verify.stdout, verify.stderr
    );
}
