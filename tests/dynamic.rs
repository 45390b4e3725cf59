//! Dynamic sub-graphs through the test-only `test_fanout` rule: children
//! planned at run time are ordinary content-keyed actions with their own
//! identities, cached one by one.

mod common;

use std::collections::BTreeSet;

use common::{Report, Ws};

const FAN: &str = "target//pkg:fan";

fn fanout_ws(count: u32) -> Ws {
    let ws = Ws::with_test_rules();
    write_fanout(&ws, count);
    ws
}

fn write_fanout(ws: &Ws, count: u32) {
    ws.package(
        "pkg",
        &format!("[[test_fanout]]\nname = \"fan\"\ncount = {count}\nrounds = 2\ntext = \"leaf\"\n"),
    );
}

fn build(ws: &Ws) -> Report {
    ws.build_ok(&[FAN, "--quiet"])
}

fn child_ids(count: u32) -> BTreeSet<String> {
    (0..count)
        .flat_map(|i| (0..2).map(move |r| format!("{FAN}[child-{i}]/round-{r}")))
        .collect()
}

/// Each child's last round holds `leaf-<i>` and `round-1`; the parent
/// concatenates them in child order.
fn expected_combined(count: u32) -> String {
    (0..count).map(|i| format!("leaf-{i}\nround-1\n")).collect()
}

#[test]
fn fanout_executes_the_parent_and_every_child_of_every_round() {
    let ws = fanout_ws(5);
    let report = build(&ws);
    assert_eq!(report.count("executed"), 11);
    assert_eq!(report.count("cached"), 0);
    let mut all = child_ids(5);
    all.insert(FAN.to_owned());
    assert_eq!(report.ids("executed"), all);
    for id in child_ids(5) {
        assert_eq!(report.action(&id)["parent"], FAN, "{id}");
        assert_eq!(report.action(&id)["rule"], "cmd", "{id}");
    }
    assert!(report.action(FAN).get("parent").is_none_or(|p| p.is_null()));
    assert_eq!(report.action(FAN)["rule"], "test_fanout");
    assert_eq!(ws.read_output("pkg", "fan", "combined.txt"), expected_combined(5));
}

#[test]
fn rerun_of_a_fanout_takes_the_parent_from_cache() {
    let ws = fanout_ws(5);
    build(&ws);
    let report = build(&ws);
    assert_eq!(report.all_ids(), BTreeSet::from([FAN.to_owned()]));
    assert_eq!(report.status(FAN), "cached");
    assert_eq!(report.count("executed"), 0);
    assert_eq!(ws.read_output("pkg", "fan", "combined.txt"), expected_combined(5));
}

#[test]
fn one_more_child_executes_only_the_parent_and_the_new_child() {
    let ws = fanout_ws(5);
    let before = build(&ws);
    write_fanout(&ws, 6);
    let report = build(&ws);
    let new_child: BTreeSet<String> = (0..2).map(|r| format!("{FAN}[child-5]/round-{r}")).collect();
    let mut executed = new_child.clone();
    executed.insert(FAN.to_owned());
    assert_eq!(report.ids("executed"), executed);
    assert_eq!(report.ids("cached"), child_ids(5));
    assert_eq!(report.count("executed"), 3);
    assert_eq!(report.count("cached"), 10);
    for id in child_ids(5) {
        assert_eq!(report.action(&id)["outputs"], before.action(&id)["outputs"], "{id}");
    }
    assert_eq!(ws.read_output("pkg", "fan", "combined.txt"), expected_combined(6));
}
