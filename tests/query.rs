//! `kflow query`, `kflow graph` and `kflow targets` on a small graph:
//!
//! ```text
//! a:app ─┬─> a:mid ──> a:lib <── b:other
//!        └─> b:data
//! b:fan (test_fanout, no deps)
//! ```

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Ws;
use serde_json::Value;

fn ws() -> Ws {
    let ws = Ws::with_test_rules();
    ws.package(
        "a",
        "[[cmd]]\nname = \"lib\"\nouts = [\"lib.txt\"]\ncmd = \"echo lib > $OUT\"\n\n\
         [[cmd]]\nname = \"mid\"\nsrcs = [\":lib\"]\nouts = [\"mid.txt\"]\ncmd = \"cat $SRCS > $OUT\"\n\n\
         [[cmd]]\nname = \"app\"\nsrcs = [\":mid\", \"//b:data\"]\nouts = [\"app.txt\"]\ncmd = \"cat $SRCS > $OUT\"\n",
    );
    ws.package(
        "b",
        "[[cmd]]\nname = \"data\"\nouts = [\"data.txt\"]\ncmd = \"echo data > $OUT\"\n\n\
         [[cmd]]\nname = \"other\"\nsrcs = [\"target//a:lib\"]\nouts = [\"other.txt\"]\ncmd = \"cat $SRCS > $OUT\"\n\n\
         [[test_fanout]]\nname = \"fan\"\ncount = 1\n",
    );
    ws
}

fn labels(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| format!("target//{n}")).collect()
}

/// `kflow query EXPR` in text form: one label per line.
fn query(ws: &Ws, expr: &str) -> BTreeSet<String> {
    let run = ws.run(&["query", expr]);
    assert_eq!(run.code, 0, "query `{expr}` failed:\n{}", run.stderr);
    let lines: Vec<String> = run.stdout.lines().map(str::to_owned).collect();
    let set: BTreeSet<String> = lines.iter().cloned().collect();
    assert_eq!(set.len(), lines.len(), "duplicate labels in:\n{}", run.stdout);
    set
}

fn json(ws: &Ws, args: &[&str]) -> Value {
    let run = ws.run(args);
    assert_eq!(run.code, 0, "kflow {args:?} failed:\n{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.stdout))
}

#[test]
fn deps_is_the_transitive_closure_and_depth_limits_it() {
    let ws = ws();
    assert_eq!(
        query(&ws, "deps(target//a:app)"),
        labels(&["a:app", "a:mid", "a:lib", "b:data"])
    );
    assert_eq!(
        query(&ws, "deps(target//a:app, 1)"),
        labels(&["a:app", "a:mid", "b:data"])
    );
    assert_eq!(query(&ws, "deps(target//b:fan)"), labels(&["b:fan"]));
}

#[test]
fn rdeps_finds_every_dependent_in_the_universe() {
    let ws = ws();
    assert_eq!(
        query(&ws, "rdeps(target//a:lib)"),
        labels(&["a:lib", "a:mid", "a:app", "b:other"])
    );
    assert_eq!(
        query(&ws, "rdeps(target//a:, target//a:lib)"),
        labels(&["a:lib", "a:mid", "a:app"])
    );
    assert_eq!(query(&ws, "rdeps(target//b:data)"), labels(&["b:data", "a:app"]));
}

#[test]
fn kind_filters_by_rule_name() {
    let ws = ws();
    assert_eq!(query(&ws, "kind(test_fanout, target//...)"), labels(&["b:fan"]));
    assert_eq!(query(&ws, "kind(cmd, target//b:)"), labels(&["b:data", "b:other"]));
    assert_eq!(query(&ws, "kind(^test_, target//...)"), labels(&["b:fan"]));
    assert_eq!(query(&ws, "kind(nothing, target//...)"), BTreeSet::new());
}

#[test]
fn set_operators_combine_queries() {
    let ws = ws();
    assert_eq!(
        query(&ws, "deps(target//a:app) - target//a:lib"),
        labels(&["a:app", "a:mid", "b:data"])
    );
    assert_eq!(
        query(&ws, "deps(target//a:app) ^ rdeps(target//a:lib)"),
        labels(&["a:app", "a:mid", "a:lib"])
    );
    assert_eq!(
        query(&ws, "target//b:fan + deps(target//a:mid)"),
        labels(&["b:fan", "a:mid", "a:lib"])
    );
}

#[test]
fn query_json_gives_label_kind_and_direct_deps() {
    let ws = ws();
    let rows = json(&ws, &["query", "deps(target//a:app)", "--output", "json"]);
    let rows: BTreeMap<String, &Value> = rows
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| (r["label"].as_str().expect("label").to_owned(), r))
        .collect();
    assert_eq!(
        rows.keys().cloned().collect::<BTreeSet<_>>(),
        labels(&["a:app", "a:mid", "a:lib", "b:data"])
    );
    let app = rows["target//a:app"];
    assert_eq!(app["kind"], "cmd");
    let deps: BTreeSet<String> = app["deps"]
        .as_array()
        .expect("deps")
        .iter()
        .map(|d| d.as_str().expect("a label").to_owned())
        .collect();
    assert_eq!(deps, labels(&["a:mid", "b:data"]));
    assert_eq!(rows["target//a:lib"]["deps"], serde_json::json!([]));
}

/// Node names to labels and edges of petgraph-style DOT (`0 [ label = "id\n(rule)" ]`,
/// `0 -> 1 [ ... ]`); quoted node names are taken as ids themselves.
fn dot_edges(dot: &str) -> BTreeSet<(String, String)> {
    let unquote = |s: &str| s.trim().trim_matches('"').to_owned();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut edges = Vec::new();
    for line in dot.lines().map(str::trim) {
        let head = line.split('[').next().unwrap_or("").trim();
        if let Some((from, to)) = head.split_once("->") {
            edges.push((unquote(from), unquote(to)));
        } else if !head.is_empty()
            && let Some(label) = line.split("label = \"").nth(1)
        {
            let id = label.split(['\\', '"']).next().unwrap_or("");
            names.insert(unquote(head), id.to_owned());
        }
    }
    let name = |n: String| names.get(&n).cloned().unwrap_or(n);
    edges.into_iter().map(|(a, b)| (name(a), name(b))).collect()
}

#[test]
fn graph_dot_names_the_actions_and_their_edges() {
    let ws = ws();
    let run = ws.run(&["graph", "target//a:app", "--format", "dot"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.trim_start().starts_with("digraph"), "{}", run.stdout);
    for id in labels(&["a:app", "a:mid", "a:lib", "b:data"]) {
        assert!(run.stdout.contains(&id), "{id} missing from:\n{}", run.stdout);
    }
    assert!(!run.stdout.contains("target//b:other"));
    let edges = dot_edges(&run.stdout);
    let edge = |a: &str, b: &str| (format!("target//{a}"), format!("target//{b}"));
    let expected: BTreeSet<(String, String)> =
        [edge("a:lib", "a:mid"), edge("a:mid", "a:app"), edge("b:data", "a:app")].into();
    assert_eq!(edges, expected, "{}", run.stdout);
}

#[test]
fn graph_json_lists_nodes_and_named_edges() {
    let ws = ws();
    let g = json(&ws, &["graph", "target//a:app", "--format", "json"]);
    let nodes = g["nodes"].as_array().expect("nodes");
    let ids: BTreeSet<String> = nodes.iter().map(|n| n["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(ids, labels(&["a:app", "a:mid", "a:lib", "b:data"]));
    let app = nodes.iter().find(|n| n["id"] == "target//a:app").expect("app node");
    assert_eq!(app["rule"], "cmd");
    assert_eq!(app["target"], "target//a:app");
    assert_eq!(app["outputs"], serde_json::json!(["app.txt"]));
    let edges: BTreeSet<(String, String, String)> = g["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            let s = |k: &str| {
                e[k].as_str()
                    .unwrap_or_else(|| panic!("edge field {k}: {e}"))
                    .to_owned()
            };
            (s("from"), s("to"), s("input"))
        })
        .collect();
    let edge = |a: &str, b: &str, input: &str| (format!("target//{a}"), format!("target//{b}"), input.to_owned());
    let expected: BTreeSet<(String, String, String)> = [
        edge("a:lib", "a:mid", "lib.txt"),
        edge("a:mid", "a:app", "mid.txt"),
        edge("b:data", "a:app", "data.txt"),
    ]
    .into();
    assert_eq!(edges, expected);
}

#[test]
fn targets_lists_every_target_or_those_matching_a_pattern() {
    let ws = ws();
    let all = labels(&["a:app", "a:mid", "a:lib", "b:data", "b:other", "b:fan"]);
    let list = |args: &[&str]| -> BTreeSet<String> {
        let run = ws.run(args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.stdout.lines().map(str::to_owned).collect()
    };
    assert_eq!(list(&["targets"]), all);
    assert_eq!(list(&["targets", "target//..."]), all);
    assert_eq!(
        list(&["targets", "target//b:"]),
        labels(&["b:data", "b:other", "b:fan"])
    );
    assert_eq!(list(&["targets", "target//a:mid"]), labels(&["a:mid"]));
}

#[test]
fn malformed_queries_are_usage_errors() {
    let ws = ws();
    for bad in [
        "deps(target//a:app",
        "dep(target//a:app)",
        "deps(target//a:app, x)",
        "kind(target//a:app)",
        "target//a:app )",
        "",
    ] {
        let run = ws.run(&["query", bad]);
        assert_eq!(
            run.code, 2,
            "query `{bad}` gave {}:\n{}{}",
            run.code, run.stdout, run.stderr
        );
        assert!(run.stdout.is_empty(), "query `{bad}` printed results:\n{}", run.stdout);
    }
    let run = ws.run(&["query", "deps(target//a:nope)"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}
