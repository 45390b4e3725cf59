//! `kflow cache stats|gc|verify`, `kflow clean`, and two builds sharing one
//! cache.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{TIMEOUT, Ws, tree_files};
use serde_json::Value;

/// `a` reads a source file; `b` reads `a`. Outputs are distinct, and no
/// command prints anything (so no log blobs).
const GRAPH: &str = "\
[[cmd]]
name = \"a\"
srcs = [\"in.txt\"]
outs = [\"a.txt\"]
cmd = \"cat $SRCS > $OUT; echo a >> $OUT\"

[[cmd]]
name = \"b\"
srcs = [\":a\"]
outs = [\"b.txt\"]
cmd = \"cat $SRCS > $OUT; echo b >> $OUT\"
";

const IN_TXT: &str = "input\n";
const A_TXT: &str = "input\na\n";
const B_TXT: &str = "input\na\nb\n";

fn built_ws() -> Ws {
    let ws = Ws::new();
    ws.package("pkg", GRAPH);
    ws.file("graphs/pkg/in.txt", IN_TXT);
    let report = ws.build_ok(&["target//pkg:", "--quiet"]);
    assert_eq!(report.count("executed"), 2);
    ws
}

fn stats(ws: &Ws) -> Value {
    let run = ws.run(&["cache", "stats", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("stats is not JSON ({e}):\n{}", run.stdout))
}

fn assert_outputs_correct(ws: &Ws) {
    assert_eq!(ws.read_output("pkg", "a", "a.txt"), A_TXT);
    assert_eq!(ws.read_output("pkg", "b", "b.txt"), B_TXT);
}

#[test]
fn stats_count_the_blobs_and_actions_of_a_build() {
    let ws = built_ws();
    let s = stats(&ws);
    assert_eq!(s["actions"], 2, "{s}");
    // in.txt, a.txt and b.txt.
    assert_eq!(s["blobs"], 3, "{s}");
    assert_eq!(
        s["blob_bytes"],
        (IN_TXT.len() + A_TXT.len() + B_TXT.len()) as u64,
        "{s}"
    );

    ws.package(
        "pkg",
        &format!("{GRAPH}\n[[cmd]]\nname = \"c\"\nouts = [\"c.txt\"]\ncmd = \"echo c > $OUT\"\n"),
    );
    ws.build_ok(&["target//pkg:", "--quiet"]);
    let s = stats(&ws);
    assert_eq!(s["actions"], 3, "{s}");
    assert_eq!(s["blobs"], 4, "{s}");
}

#[test]
fn gc_to_one_byte_removes_the_blobs_and_the_next_build_executes_again() {
    let ws = built_ws();
    let run = ws.run(&["cache", "gc", "--max-size", "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s = stats(&ws);
    assert_eq!(s["blobs"], 0, "{s}");
    assert_eq!(s["blob_bytes"], 0, "{s}");

    let report = ws.build_ok(&["target//pkg:", "--quiet"]);
    assert_eq!(report.count("executed"), 2);
    assert_eq!(report.count("cached"), 0);
    assert_outputs_correct(&ws);
    assert_eq!(stats(&ws)["blobs"], 3);
}

#[test]
fn verify_finds_a_corrupt_blob_removes_it_and_a_rebuild_restores_the_output() {
    let ws = built_ws();
    let report = ws.build_ok(&["target//pkg:", "--quiet"]);
    let digest = report.output_digest("target//pkg:a", "a.txt");
    let blob = ws.cache_dir().join("cas").join(&digest[..2]).join(&digest);
    assert!(blob.is_file(), "no blob at {}", blob.display());

    // Same length, other bytes: only a rehash can tell.
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).expect("chmod u+w");
    std::fs::write(&blob, "X".repeat(A_TXT.len())).expect("overwrite blob");

    let verify = ws.run(&["cache", "verify"]);
    assert_eq!(
        verify.code, 1,
        "verify missed the damage:\n{}\n{}",
        verify.stdout, verify.stderr
    );
    assert!(
        verify.stdout.contains(&digest) || verify.stderr.contains(&digest),
        "verify does not name the damaged blob {digest}:\n{}\n{}",
        verify.stdout,
        verify.stderr
    );
    let again = ws.run(&["cache", "verify"]);
    assert_eq!(
        again.code, 0,
        "the damage was not removed:\n{}\n{}",
        again.stdout, again.stderr
    );

    let report = ws.build_ok(&["target//pkg:", "--quiet"]);
    assert_eq!(report.status("target//pkg:a"), "executed");
    assert_eq!(report.output_digest("target//pkg:a", "a.txt"), digest);
    assert_outputs_correct(&ws);
    assert_eq!(ws.run(&["cache", "verify"]).code, 0);
}

#[test]
fn clean_removes_the_outputs_and_with_cache_the_cache() {
    let ws = built_ws();
    let run = ws.run(&["clean"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!ws.out_dir().exists());
    assert_eq!(stats(&ws)["actions"], 2, "plain `clean` keeps the cache");

    let report = ws.build_ok(&["target//pkg:", "--quiet"]);
    assert_eq!(report.count("cached"), 2);
    assert_outputs_correct(&ws);

    let run = ws.run(&["clean", "--cache"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!ws.out_dir().exists());
    assert!(!ws.cache_dir().join("cas").exists(), "`clean --cache` left the store");
    let report = ws.build_ok(&["target//pkg:", "--quiet"]);
    assert_eq!(report.count("executed"), 2);
}

#[test]
fn two_builds_started_together_on_one_cache_both_succeed() {
    // Two workspaces, one cache; each build takes a while, so that they
    // overlap.
    let graph = "\
[[cmd]]
name = \"slow1\"
outs = [\"s1.txt\"]
cmd = \"sleep 0.3; echo 1 > $OUT\"

[[cmd]]
name = \"slow2\"
srcs = [\":slow1\"]
outs = [\"s2.txt\"]
cmd = \"sleep 0.3; cat $SRCS > $OUT; echo 2 >> $OUT\"
";
    let first = Ws::new();
    let second = Ws::new();
    for ws in [&first, &second] {
        ws.package("pkg", graph);
    }
    let shared = first.cache_dir();
    let start = |ws: &Ws| common::start(common::kflow_in(ws.root(), shared).args(["build", "target//pkg:"]));
    let (a, b) = (start(&first), start(&second));
    let (ra, rb) = (a.finish(TIMEOUT), b.finish(TIMEOUT));
    assert_eq!(ra.code, 0, "first build failed:\n{}", ra.stderr);
    assert_eq!(rb.code, 0, "second build failed:\n{}", rb.stderr);
    for ws in [&first, &second] {
        assert_eq!(ws.read_output("pkg", "slow2", "s2.txt"), "1\n2\n");
    }
    assert_eq!(tree_files(&first.out_dir()), tree_files(&second.out_dir()));
    let verify = common::run_with_timeout(
        common::kflow_in(first.root(), shared).args(["cache", "verify"]),
        TIMEOUT,
    );
    assert_eq!(verify.code, 0, "{}\n{}", verify.stdout, verify.stderr);
}
