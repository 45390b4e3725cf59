//! `kflow explain`: for each action of the last build of a target, whether
//! it ran, and why.
//!
//! The graph: `gen` ─> `use` ─> `top` <─ `other`.

mod common;

use std::collections::BTreeMap;

use common::Ws;
use serde_json::Value;

const TOP: &str = "target//pkg:top";

fn graph(gen_cmd: &str) -> String {
    format!(
        "[[cmd]]\nname = \"gen\"\nouts = [\"gen.txt\"]\ncmd = {}\n\n\
         [[cmd]]\nname = \"use\"\nsrcs = [\":gen\"]\nouts = [\"use.txt\"]\ncmd = \"cat $SRCS > $OUT; echo use >> $OUT\"\n\n\
         [[cmd]]\nname = \"other\"\nouts = [\"other.txt\"]\ncmd = \"echo other > $OUT\"\n\n\
         [[cmd]]\nname = \"top\"\nsrcs = [\":use\", \":other\"]\nouts = [\"top.txt\"]\ncmd = \"cat $SRCS > $OUT\"\n",
        common::toml_string(gen_cmd)
    )
}

const GEN_A: &str = "echo a > $OUT";
const GEN_B: &str = "echo b > $OUT";

fn built_ws() -> Ws {
    let ws = Ws::new();
    ws.package("pkg", &graph(GEN_A));
    ws.build_ok(&[TOP, "--quiet"]);
    ws
}

/// `kflow explain TOP --output json`: status and reasons by action id.
fn explain(ws: &Ws) -> BTreeMap<String, (String, Vec<String>)> {
    let run = ws.run(&["explain", TOP, "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.stdout));
    assert!(
        v["build"]["targets"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == TOP)),
        "{v}"
    );
    v["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            let reasons = a["reasons"]
                .as_array()
                .expect("reasons")
                .iter()
                .map(|r| r.as_str().expect("a reason is a string").to_owned())
                .collect();
            (
                a["id"].as_str().expect("id").to_owned(),
                (a["status"].as_str().expect("status").to_owned(), reasons),
            )
        })
        .collect()
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("target//pkg:{n}")).collect()
}

#[test]
fn first_build_says_there_was_no_earlier_build() {
    let ws = built_ws();
    let e = explain(&ws);
    assert_eq!(
        e.keys().cloned().collect::<Vec<_>>(),
        ids(&["gen", "other", "top", "use"])
    );
    for (id, (status, reasons)) in &e {
        assert_eq!(status, "executed", "{id}");
        assert!(
            reasons.iter().any(|r| r.contains("no earlier build")),
            "{id}: {reasons:?}"
        );
    }
}

#[test]
fn changed_cmd_is_named_and_dependents_say_which_input_reran() {
    let ws = built_ws();
    ws.package("pkg", &graph(GEN_B));
    ws.build_ok(&[TOP, "--quiet"]);
    let e = explain(&ws);

    let (status, reasons) = &e["target//pkg:gen"];
    assert_eq!(status, "executed");
    assert!(reasons.iter().any(|r| r.starts_with("param `cmd`")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains(GEN_A) && r.contains(GEN_B)),
        "the reason shows the old and new command: {reasons:?}"
    );

    let (status, reasons) = &e["target//pkg:use"];
    assert_eq!(status, "executed");
    assert!(
        reasons.iter().any(|r| r.contains("because `target//pkg:gen` reran")),
        "{reasons:?}"
    );
    assert!(
        !reasons.iter().any(|r| r.contains("param")),
        "`use`'s params did not change: {reasons:?}"
    );

    let (status, reasons) = &e[TOP];
    assert_eq!(status, "executed");
    assert!(
        reasons.iter().any(|r| r.contains("because `target//pkg:use` reran")),
        "{reasons:?}"
    );

    let (status, reasons) = &e["target//pkg:other"];
    assert_eq!(status, "cached");
    assert!(reasons.is_empty(), "{reasons:?}");
}

#[test]
fn text_output_shows_status_and_reason() {
    let ws = built_ws();
    ws.package("pkg", &graph(GEN_B));
    ws.build_ok(&[TOP, "--quiet"]);
    let run = ws.run(&["explain", "target//pkg:use"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line_of = |id: &str| {
        run.stdout
            .lines()
            .find(|l| l.split_whitespace().last() == Some(id))
            .unwrap_or_else(|| panic!("no line for {id}:\n{}", run.stdout))
    };
    assert!(line_of("target//pkg:use").contains("executed"), "{}", run.stdout);
    assert!(line_of("target//pkg:gen").contains("executed"), "{}", run.stdout);
    assert!(run.stdout.contains("because `target//pkg:gen` reran"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("target//pkg:other"),
        "`other` is not a dependency of `use`"
    );
}

#[test]
fn rebuild_after_the_cache_is_deleted_says_the_cached_result_was_missing() {
    let ws = built_ws();
    std::fs::remove_dir_all(ws.cache_dir()).expect("delete the cache");
    let report = ws.build_ok(&[TOP, "--quiet"]);
    assert_eq!(report.count("executed"), 4);
    let e = explain(&ws);
    assert_eq!(e.len(), 4);
    for (id, (status, reasons)) in &e {
        assert_eq!(status, "executed", "{id}");
        assert!(
            reasons.iter().any(|r| r.contains("cached result was missing")),
            "{id}: {reasons:?}"
        );
    }
}

#[test]
fn explain_before_any_build_is_an_error_not_a_crash() {
    let ws = Ws::new();
    ws.package("pkg", &graph(GEN_A));
    let run = ws.run(&["explain", TOP]);
    assert_ne!(run.code, 0);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}
