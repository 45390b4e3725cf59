//! Remote execution on a real BuildGrid with `kflow worker`s, against the
//! same work run locally in the same run:
//!
//! 1. the overhead of one remote action: trivial `cmd` actions one at a
//!    time (one worker of capacity 1, one in flight) against the same
//!    actions run locally one at a time, as the build's wall time per
//!    action (a record's own duration would count the wait for a slot);
//! 2. the cold wall time of `target//max78002:anomaly_smoke` on this
//!    machine (`--jobs 2`) against two local workers (`--jobs 2
//!    --remote-jobs 4`).
//!
//! Needs BuildGrid (scripts/install-buildgrid.sh; `KFLOW_BUILDGRID_BGD`)
//! and PostgreSQL. `cargo bench --bench remote`.

#[path = "../tests/common/buildgrid.rs"]
#[allow(dead_code)]
mod buildgrid;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ACTIONS: usize = 41;

fn workspace(packages: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("kflow.toml"), "[cells]\ntarget = \"graphs\"\n").expect("kflow.toml");
    for (package, text) in packages {
        let at = dir.path().join("graphs").join(package);
        std::fs::create_dir_all(&at).expect("package dir");
        std::fs::write(at.join("BUILD.toml"), text).expect("BUILD.toml");
    }
    dir
}

fn repository_package(package: &str) -> (&str, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("graphs")
        .join(package)
        .join("BUILD.toml");
    (package, std::fs::read_to_string(path).expect("repository graph"))
}

/// Runs `kflow build ARGS` in `ws` with an empty cache; the wall time and
/// the build report.
fn build(ws: &Path, args: &[&str]) -> (Duration, serde_json::Value) {
    let cache = tempfile::tempdir().expect("cache dir");
    let report = ws.join("report.json");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kflow"))
        .current_dir(ws)
        .env("KFLOW_CACHE_DIR", cache.path())
        .arg("build")
        .args(args)
        .arg("--build-report")
        .arg(&report)
        .output()
        .expect("run kflow");
    let wall = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("report JSON");
    let _ = std::fs::remove_dir_all(ws.join("kflow-out"));
    (wall, report)
}

/// Independent trivial `cmd` targets; `salt` makes their keys new.
fn trivial_graph(salt: &str) -> String {
    (0..ACTIONS)
        .map(|i| format!("[[cmd]]\nname = \"t{i}\"\nouts = [\"o.txt\"]\ncmd = \"echo {salt} {i} > $OUT\"\n\n"))
        .collect()
}

fn count_remote(report: &serde_json::Value) -> usize {
    report["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["remote"] == true)
        .count()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("remote: bench");
        return;
    }
    let Some(mut cluster) = buildgrid::Cluster::start() else {
        return;
    };
    let url = cluster.url.clone();
    let ws = workspace(&[("p", trivial_graph("first"))]);

    cluster.add_worker(1);
    // The first remote build sends the kflow binary; the second is timed.
    let remote_args = [
        "//p/...",
        "--jobs",
        "1",
        "--remote-executor",
        &url,
        "--remote-jobs",
        "1",
    ];
    build(ws.path(), &remote_args);
    std::fs::write(ws.path().join("graphs/p/BUILD.toml"), trivial_graph("again")).expect("BUILD.toml");
    let (local, _) = build(ws.path(), &["//p/...", "--jobs", "1"]);
    let (remote, report) = build(ws.path(), &remote_args);
    assert_eq!(count_remote(&report), ACTIONS);
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / ACTIONS as f64;
    let (l, r) = (per(local), per(remote));
    println!("## one trivial `cmd` action: a build's wall time per action over {ACTIONS}, one in flight");
    println!("| local | remote (1 worker) | overhead | remote / local |");
    println!("|---|---|---|---|");
    println!("| {l:.0} ms | {r:.0} ms | {:.0} ms | {:.1}x |", r - l, r / l.max(1.0));

    // A second worker beside the first: two of capacity 1 on two cores.
    cluster.add_worker(1);
    let smoke = workspace(&[
        repository_package("datasets"),
        repository_package("host"),
        repository_package("spaces"),
        repository_package("platforms"),
        repository_package("max78002"),
    ]);
    let target = "//max78002:anomaly_smoke";
    let (local, _) = build(smoke.path(), &[target, "--jobs", "2"]);
    let (remote, report) = build(
        smoke.path(),
        &[target, "--jobs", "2", "--remote-executor", &url, "--remote-jobs", "4"],
    );
    let ran_remotely = count_remote(&report);
    println!();
    println!("## `{target}`, cold (empty caches)");
    println!("| local (--jobs 2) | two local workers (--remote-jobs 4) | remote / local | actions run remotely |");
    println!("|---|---|---|---|");
    println!(
        "| {:.1} s | {:.1} s | {:.2}x | {ran_remotely} |",
        local.as_secs_f64(),
        remote.as_secs_f64(),
        remote.as_secs_f64() / local.as_secs_f64()
    );
}
