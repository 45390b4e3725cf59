//! The workspaces users start from build as documented: every example under
//! `examples/`, and the repository's demo graph. (The machine-learning graphs
//! are exercised at test sizes by `tests/host.rs`.)

mod common;

use std::path::Path;

use common::kflow_in;

/// Copies a directory tree (without any `kflow-out/`).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "kflow-out" {
            continue;
        }
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn cmd_rule_example_counts_words() {
    let ws = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("examples/cmd-rule"), ws.path());
    let out = kflow_in(ws.path(), cache.path())
        .args(["build", "example//text:top"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let top = std::fs::read_to_string(ws.path().join("kflow-out/text/top/top.txt")).unwrap();
    assert_eq!(
        top.lines()
            .next()
            .map(str::split_whitespace)
            .map(Iterator::collect::<Vec<_>>),
        Some(vec!["4", "it"])
    );
    let total = std::fs::read_to_string(ws.path().join("kflow-out/text/top/total.txt")).unwrap();
    assert_eq!(total.trim(), "31");
}

#[test]
fn search_example_rejects_what_its_check_refuses_and_deploys_the_rest() {
    let ws = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("examples/search-with-checks"), ws.path());
    let out = kflow_in(ws.path(), cache.path())
        .args(["build", "example//search:detector"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = ws.path().join("kflow-out/search/detector");
    let candidates: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("candidates.json")).unwrap()).unwrap();
    let candidates = candidates.as_array().unwrap();
    assert!(
        candidates.iter().any(|c| c["status"] == "rejected-incompatible"
            && c["reason"]
                .as_str()
                .is_some_and(|r| r.contains("too wide for our firmware"))),
        "{candidates:?}"
    );
    assert!(candidates.iter().any(|c| c["status"] == "evaluated"), "{candidates:?}");
    assert!(dir.join("kept/1/cnn_model.c").is_file());
}

#[test]
fn demo_graph_builds_and_rebuilds_as_a_no_op() {
    let ws = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("kflow.toml"), ws.path().join("kflow.toml")).unwrap();
    copy_tree(&repo().join("graphs"), &ws.path().join("graphs"));
    let report = ws.path().join("report.json");
    for expected_executed in [4, 0] {
        let out = kflow_in(ws.path(), cache.path())
            .args(["build", "target//demo/...", "--build-report"])
            .arg(&report)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(report["counts"]["executed"], expected_executed, "{report}");
    }
    // `smoothed` mixes a package file (smooth.awk) with another target's
    // output (signal.csv).
    let summary = std::fs::read_to_string(ws.path().join("kflow-out/demo/summary/summary.md")).unwrap();
    assert!(summary.contains("- samples: 2000"), "{summary}");
    assert!(summary.contains("- flagged: 3"), "{summary}");
}
