//! The incremental-build acceptance test: a generated graph of 1,000 `cmd`
//! targets in eight packages, with chains and fan-ins across packages. A
//! rebuild executes exactly the actions whose inputs changed, and the result
//! does not depend on `--jobs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Build, GenGraph, Report, Ws};

const TARGETS: usize = 1000;

fn graph() -> GenGraph {
    let g = GenGraph::layered(0x006b_666c_6f77, 20, 50, 8);
    assert_eq!(g.len(), TARGETS);
    g
}

/// One workspace taken through the sequence a user goes through: a build
/// from an empty cache (`--jobs 4`), the same build again, an edit of one
/// target's command, and an edit that leaves another target's output bytes
/// as they were. Each test checks one step.
struct Sequence {
    graph: GenGraph,
    ws: Ws,
    first: Build,
    unchanged: Build,
    /// The target whose command changed, and the build after the change.
    changed: usize,
    after_change: Build,
    /// The target whose command changed without changing its output.
    same_bytes: usize,
    after_same_bytes: Build,
}

/// How many tests use the sequence; the last one to finish deletes it.
static USERS_LEFT: AtomicUsize = AtomicUsize::new(6);

struct SequenceUse(&'static Sequence);

impl Deref for SequenceUse {
    type Target = Sequence;
    fn deref(&self) -> &Sequence {
        self.0
    }
}

impl Drop for SequenceUse {
    fn drop(&mut self) {
        if USERS_LEFT.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.ws.remove_all();
        }
    }
}

fn sequence() -> SequenceUse {
    static SEQUENCE: OnceLock<Sequence> = OnceLock::new();
    SequenceUse(SEQUENCE.get_or_init(|| {
        let mut graph = graph();
        let ws = Ws::new();
        graph.write(&ws);
        let first = ws.build(&["target//...", "--jobs", "4", "--quiet"]);
        let unchanged = ws.build(&["target//...", "--quiet"]);

        let changed = target_with_some_dependents(&graph, TARGETS / 2);
        graph.cmds.insert(
            changed,
            format!("cat $SRCS | cksum > $OUT; echo {changed} changed >> $OUT"),
        );
        graph.write_package(&ws, changed % graph.packages);
        let after_change = ws.build(&["target//...", "--quiet"]);

        let same_bytes = target_with_some_dependents(&graph, changed + 1);
        graph
            .cmds
            .insert(same_bytes, format!("{}; true", graph.cmd(same_bytes)));
        graph.write_package(&ws, same_bytes % graph.packages);
        let after_same_bytes = ws.build(&["target//...", "--quiet"]);
        Sequence {
            graph,
            ws,
            first,
            unchanged,
            changed,
            after_change,
            same_bytes,
            after_same_bytes,
        }
    }))
}

/// The report of a build that must have succeeded.
fn succeeded(b: &Build) -> &Report {
    assert_eq!(b.run.code, 0, "the build failed:\n{}", b.run.stderr);
    let report = b.report.as_ref().expect("a successful build writes its report");
    assert!(report.success());
    report
}

/// A target from `from` on whose change reaches some, but far from all, of
/// the graph.
fn target_with_some_dependents(g: &GenGraph, from: usize) -> usize {
    (from..TARGETS)
        .find(|&i| (5..=200).contains(&g.dependents(i).len()))
        .expect("the generated graph has a target with 5 to 200 dependents")
}

#[test]
fn first_build_executes_every_target_once() {
    let s = sequence();
    let first = succeeded(&s.first);
    assert_eq!(first.count("executed"), TARGETS as u64);
    assert_eq!(first.count("cached"), 0);
    assert_eq!(first.ids("executed"), s.graph.ids(0..TARGETS));
    assert_eq!(first.actions().len(), TARGETS);
}

#[test]
fn rebuild_without_changes_executes_nothing() {
    let s = sequence();
    let unchanged = succeeded(&s.unchanged);
    assert_eq!(unchanged.count("executed"), 0);
    assert_eq!(unchanged.count("cached"), TARGETS as u64);
    assert_eq!(unchanged.ids("cached"), s.graph.ids(0..TARGETS));
    assert_eq!(unchanged.output_digests(), succeeded(&s.first).output_digests());
}

#[test]
fn changing_one_cmd_executes_exactly_that_target_and_its_dependents() {
    let s = sequence();
    let report = succeeded(&s.after_change);
    let mut expected: BTreeSet<usize> = s.graph.dependents(s.changed);
    expected.insert(s.changed);
    assert_eq!(report.ids("executed"), s.graph.ids(expected.iter().copied()));
    assert_eq!(report.count("executed"), expected.len() as u64);
    assert_eq!(report.count("cached"), (TARGETS - expected.len()) as u64);
}

#[test]
fn change_that_keeps_the_output_bytes_executes_only_that_target() {
    let s = sequence();
    let report = succeeded(&s.after_same_bytes);
    assert_eq!(report.ids("executed"), s.graph.ids([s.same_bytes]));
    assert_eq!(report.count("cached"), (TARGETS - 1) as u64);
    assert_eq!(report.output_digests(), succeeded(&s.after_change).output_digests());
}

#[test]
fn every_target_is_materialized_with_its_latest_output() {
    let s = sequence();
    let report = succeeded(&s.after_same_bytes);
    for i in 0..TARGETS {
        let name = format!("t{i}.txt");
        let path = s.ws.output(&s.graph.package_of(i), &format!("t{i}"), &name);
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The store holds each blob under its digest (`kflow cache verify`
        // checks that); the output must be that blob's bytes.
        let digest = report.output_digest(&s.graph.id(i), &name);
        let blob = s.ws.cache_dir().join("cas").join(&digest[..2]).join(&digest);
        let stored = std::fs::read(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
        assert_eq!(on_disk, stored, "{}", path.display());
    }
    let changed = s.changed;
    let text = s.ws.read_output(
        &s.graph.package_of(changed),
        &format!("t{changed}"),
        &format!("t{changed}.txt"),
    );
    assert!(text.ends_with(&format!("{changed} changed\n")), "{text:?}");
}

#[test]
fn outputs_are_identical_at_jobs_1_and_jobs_4() {
    let g = graph();
    let ws = Ws::new();
    g.write(&ws);
    let serial = ws.build_ok(&["target//...", "--jobs", "1", "--quiet"]);
    let s = sequence();
    let parallel = succeeded(&s.first);
    assert_eq!(serial.count("executed"), TARGETS as u64);
    assert_eq!(serial.output_digests(), parallel.output_digests());
    let keys = |r: &Report| -> BTreeMap<String, String> {
        r.actions()
            .iter()
            .map(|a| (a["id"].to_string(), a["key"].to_string()))
            .collect()
    };
    assert_eq!(keys(&serial), keys(parallel));
}

#[test]
fn targets_of_two_cells_with_one_package_and_name_get_their_own_outputs() {
    let ws = Ws::new();
    ws.file(
        "kflow.toml",
        "[workspace]\ndefault_cell = \"target\"\n[cells]\ntarget = \"graphs\"\nvendor = \"third_party\"\n",
    );
    let cmd = |text: &str| format!("[[cmd]]\nname = \"t\"\nouts = [\"o.txt\"]\ncmd = \"echo {text} > $OUT\"\n");
    ws.file("graphs/p/BUILD.toml", &cmd("ours"));
    ws.file("third_party/p/BUILD.toml", &cmd("theirs"));
    let b = ws.build_ok(&["target//p:t", "vendor//p:t"]);
    assert_eq!(b.ids("executed").len(), 2);
    assert_eq!(ws.read_output("p", "t", "o.txt"), "ours\n");
    let theirs = ws.out_dir().join("@vendor/p/t/o.txt");
    assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "theirs\n");
}
