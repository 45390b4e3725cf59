//! `--remote-executor grpc://…`: actions run on `kflow worker`s behind a
//! real BuildGrid (PostgreSQL, the Execution and Bots services). A remote
//! build gives the bytes a local one gives; a second workspace with an
//! empty local cache executes nothing; a worker killed mid-build costs
//! time, not the build; a failing action reports the worker's stderr; an
//! unreachable executor falls back to local execution with one warning.

mod common;

use std::time::{Duration, Instant};

use common::Ws;
use common::buildgrid::Cluster;

/// 200 `cmd` targets: 40 chains of five, each step reading the last.
fn cmd_graph() -> String {
    let mut text = String::new();
    for chain in 0..40 {
        text.push_str(&format!(
            "[[cmd]]\nname = \"c{chain}s0\"\nouts = [\"o0.txt\"]\ncmd = \"echo chain {chain} > $OUT\"\n\n"
        ));
        for step in 1..5 {
            text.push_str(&format!(
                "[[cmd]]\nname = \"c{chain}s{step}\"\nsrcs = [\":c{chain}s{}\"]\nouts = [\"o{step}.txt\"]\n\
                 cmd = \"(cat $SRCS; echo step {step}) > $OUT\"\n\n",
                step - 1
            ));
        }
    }
    text
}

fn smoke_workspace() -> Ws {
    let ws = Ws::new();
    for package in ["datasets", "host", "spaces", "platforms", "max78002"] {
        ws.repository_package(package);
    }
    ws.package("cmds", &cmd_graph());
    ws
}

fn targets() -> Vec<&'static str> {
    vec!["//cmds/...", "//max78002:anomaly_smoke"]
}

/// How many of a build's actions executed on the workers.
fn remote_count(report: &common::Report) -> usize {
    report
        .actions()
        .iter()
        .filter(|a| a["remote"].as_bool() == Some(true))
        .count()
}

#[test]
fn two_workers_build_what_a_local_build_builds() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    cluster.add_worker(2);
    cluster.add_worker(2);
    let url = cluster.url.clone();

    let local = smoke_workspace();
    let mut args = targets();
    let expected = local.build_ok(&args).output_digests();
    assert!(expected.len() > 250, "{} actions", expected.len());

    let remote = smoke_workspace();
    args.extend(["--remote-executor", &url, "--remote-cache", &url, "--remote-jobs", "4"]);
    let built = remote.build_ok(&args);
    assert_eq!(
        built.output_digests(),
        expected,
        "remote artifacts differ from local ones"
    );
    let ran_remotely = remote_count(&built);
    assert!(ran_remotely >= 200, "only {ran_remotely} actions ran on the workers");
    for a in built.actions() {
        if a["remote"].as_bool() == Some(true) {
            let rule = a["rule"].as_str().unwrap_or_default();
            assert!(
                !["automl", "report", "space", "platform"].contains(&rule),
                "{} ({rule}) ran remotely",
                a["id"]
            );
        }
    }
    for i in 0..2 {
        assert!(cluster.worker_log(i).contains("exited 0"), "worker {i} ran nothing");
    }

    // A third workspace, empty local cache: everything comes from the
    // cluster's cache, nothing executes anywhere.
    let again = smoke_workspace();
    let fetched = again.build_ok(&args);
    assert_eq!(fetched.count("executed"), 0, "{:?}", fetched.all_ids());
    // The search's own result comes from the cache whole, so its children
    // never come up; everything that does is what the local build made.
    let got = fetched.output_digests();
    assert!(got.contains_key("target//max78002:anomaly_smoke"));
    assert!(got.len() >= 200, "{} actions", got.len());
    for (id, digests) in got {
        assert_eq!(Some(&digests), expected.get(&id), "{id}");
    }
}

#[test]
fn a_worker_killed_mid_build_costs_time_not_the_build() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    cluster.add_worker(2);
    cluster.add_worker(2);
    let url = cluster.url.clone();
    let ws = Ws::new();
    let mut text = String::new();
    for i in 0..8 {
        text.push_str(&format!(
            "[[cmd]]\nname = \"slow{i}\"\nouts = [\"o.txt\"]\ncmd = \"sleep 3; echo {i} > $OUT\"\n\n"
        ));
    }
    ws.package("p", &text);
    let build = common::start(ws.kflow().args([
        "build",
        "//p/...",
        "--remote-executor",
        &url,
        "--remote-jobs",
        "4",
        "--build-report",
        "report.json",
    ]));
    // Kill worker 0 once it is running something.
    let started = Instant::now();
    while !cluster.worker_log(0).contains("starting") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "worker 0 never got a lease"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.kill_worker(0);
    let run = build.finish(Duration::from_secs(240));
    assert_eq!(run.code, 0, "{}", run.stderr);
    for i in 0..8 {
        assert_eq!(ws.read_output("p", &format!("slow{i}"), "o.txt"), format!("{i}\n"));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.root().join("report.json")).expect("report")).expect("json");
    let remote = report["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["remote"].as_bool() == Some(true))
        .count();
    assert_eq!(remote, 8, "every action ran on a worker: {report}");
}

#[test]
fn a_remote_failure_reports_the_workers_stderr() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    cluster.add_worker(1);
    let url = cluster.url.clone();
    let ws = Ws::new();
    ws.package(
        "p",
        "[[cmd]]\nname = \"bad\"\nouts = [\"o.txt\"]\ncmd = \"echo the-reason-it-broke >&2; exit 3\"\n",
    );
    let build = ws.build(&["//p:bad", "--remote-executor", &url]);
    assert_eq!(build.run.code, 1, "{}", build.run.stderr);
    assert!(build.run.stderr.contains("on remote executor"), "{}", build.run.stderr);
    assert!(build.run.stderr.contains("the-reason-it-broke"), "{}", build.run.stderr);
    assert!(build.run.stderr.contains("status 3"), "{}", build.run.stderr);
}

#[test]
fn an_unreachable_executor_falls_back_to_local_execution_with_one_warning() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("grpc://127.0.0.1:{port}");
    let ws = Ws::new();
    ws.package("cmds", &cmd_graph());
    let build = ws.build(&["//cmds/...", "--remote-executor", &url]);
    assert_eq!(build.run.code, 0, "{}", build.run.stderr);
    assert_eq!(
        build.run.stderr.matches("warning: remote executor").count(),
        1,
        "{}",
        build.run.stderr
    );
    let report = build.report.expect("a build report");
    assert_eq!(report.count("executed"), 200);
    assert_eq!(remote_count(&report), 0);
}
