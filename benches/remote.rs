//! Remote execution on a real BuildGrid with `kflow worker`s, against the
//! same work run locally in the same run:
//!
//! 1. the overhead of one remote action: the median time of trivial `cmd`
//!    actions (one worker of capacity 1, one in flight) against the median
//!    of the same actions run locally one at a time;
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

/// The median duration of the executed actions of `rule`, in ms.
fn median_ms(report: &serde_json::Value, rule: &str) -> f64 {
    let mut times: Vec<u64> = report["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["rule"] == rule && a["status"] == "executed")
        .filter_map(|a| a["duration_ms"].as_u64())
        .collect();
    times.sort();
    times[times.len() / 2] as f64
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
    let trivial: String = (0..ACTIONS)
        .map(|i| format!("[[cmd]]\nname = \"t{i}\"\nouts = [\"o.txt\"]\ncmd = \"echo {i} > $OUT\"\n\n"))
        .collect();
    let ws = workspace(&[("p", trivial)]);

    cluster.add_worker(1);
    let (_, local) = build(ws.path(), &["//p/...", "--jobs", "1"]);
    let (_, remote) = build(
        ws.path(),
        &[
            "//p/...",
            "--jobs",
            "1",
            "--remote-executor",
            &url,
            "--remote-jobs",
            "1",
        ],
    );
    let (l, r) = (median_ms(&local, "cmd"), median_ms(&remote, "cmd"));
    println!("## one trivial `cmd` action, median of {ACTIONS}, one in flight");
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
    let ran_remotely = report["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["remote"] == true)
        .count();
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
