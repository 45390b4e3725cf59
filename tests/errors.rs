//! Errors: a wrong graph is exit 2 with the place and a suggestion; a
//! failing action is exit 1 with what it printed; `--keep-going` builds what
//! does not depend on the failure. Nothing ever panics (checked by every run
//! in `common`).

mod common;

use common::Ws;

fn ws_with(package: &str, text: &str) -> Ws {
    let ws = Ws::new();
    ws.package(package, text);
    ws
}

/// Asserts that stderr mentions `needle`, showing all of stderr if not.
fn assert_stderr_has(stderr: &str, needle: &str) {
    assert!(stderr.contains(needle), "expected `{needle}` in stderr:\n{stderr}");
}

#[test]
fn malformed_toml_is_a_graph_error_at_its_line_and_column() {
    let ws = ws_with(
        "gen",
        "[[cmd]]\nname = \"a\"\nouts = [\"a.txt\"]\ncmd = \"echo a > $OUT\"\n\n[[cmd]]\nname = \"b\"\nouts = [\"b.txt\",, \"c\"]\ncmd = \"true\"\n",
    );
    let b = ws.build(&["target//gen:a"]);
    assert_eq!(b.run.code, 2, "{}", b.run.stderr);
    // The second comma of line 8 is the 17th character.
    assert_stderr_has(&b.run.stderr, "graphs/gen/BUILD.toml:8:17");
}

#[test]
fn unknown_attribute_is_located_and_the_nearest_one_suggested() {
    let ws = ws_with(
        "gen",
        "[[cmd]]\nname = \"a\"\nouts = [\"a.txt\"]\nsrcz = [\"in.txt\"]\ncmd = \"cat $SRCS > $OUT\"\n",
    );
    ws.file("graphs/gen/in.txt", "x\n");
    let b = ws.build(&["target//gen:a"]);
    assert_eq!(b.run.code, 2, "{}", b.run.stderr);
    assert_stderr_has(&b.run.stderr, "graphs/gen/BUILD.toml:4:1");
    assert_stderr_has(&b.run.stderr, "srcz");
    assert_stderr_has(&b.run.stderr, "did you mean `srcs`?");
}

#[test]
fn a_float_that_is_not_finite_is_a_graph_error_not_a_default() {
    // `nan` as a float attribute, and `inf` inside a table one: JSON params
    // cannot hold them, and the rule would silently use its default.
    for (line, target, text) in [
        (
            4,
            "t",
            "[[train]]\nname = \"t\"\nmodel = \":m\"\nlr = nan\ndataset = \":d\"\nepochs = 1\n",
        ),
        (
            3,
            "d",
            "[[dataset]]\nname = \"d\"\ngenerator = { rows = 100, seed = 1, anomaly_fraction = -inf }\n",
        ),
    ] {
        let ws = ws_with("m", text);
        let b = ws.build(&[&format!("target//m:{target}")]);
        assert_eq!(b.run.code, 2, "{}", b.run.stderr);
        assert_stderr_has(&b.run.stderr, &format!("graphs/m/BUILD.toml:{line}:"));
        assert_stderr_has(&b.run.stderr, "is not a finite number");
    }
}

#[test]
fn unknown_rule_kind_is_located_and_the_nearest_rule_suggested() {
    let ws = ws_with("gen", "[[cmdd]]\nname = \"a\"\nouts = [\"a.txt\"]\ncmd = \"true\"\n");
    let b = ws.build(&["target//gen:a"]);
    assert_eq!(b.run.code, 2, "{}", b.run.stderr);
    assert_stderr_has(&b.run.stderr, "graphs/gen/BUILD.toml:1:3");
    assert_stderr_has(&b.run.stderr, "did you mean `cmd`?");
}

#[test]
fn unknown_label_in_srcs_is_located_and_the_nearest_label_suggested() {
    let ws = ws_with(
        "gen",
        "[[cmd]]\nname = \"table\"\nouts = [\"t.txt\"]\ncmd = \"echo t > $OUT\"\n\n\
         [[cmd]]\nname = \"use\"\nouts = [\"u.txt\"]\nsrcs = [\":tabel\"]\ncmd = \"cp $SRCS $OUT\"\n",
    );
    let b = ws.build(&["target//gen:use"]);
    assert_eq!(b.run.code, 2, "{}", b.run.stderr);
    assert_stderr_has(&b.run.stderr, "target//gen:tabel");
    assert_stderr_has(&b.run.stderr, "graphs/gen/BUILD.toml:9:");
    assert_stderr_has(&b.run.stderr, "did you mean `target//gen:table`?");
}

#[test]
fn unknown_target_on_the_command_line_is_a_usage_error() {
    let ws = ws_with(
        "gen",
        "[[cmd]]\nname = \"a\"\nouts = [\"a.txt\"]\ncmd = \"echo a > $OUT\"\n",
    );
    let b = ws.build(&["target//gen:nope"]);
    assert_eq!(b.run.code, 2, "{}", b.run.stderr);
    assert_stderr_has(&b.run.stderr, "target//gen:nope");
    let b = ws.build(&["target//nopkg:a"]);
    assert_eq!(b.run.code, 2, "{}", b.run.stderr);
    assert!(!ws.output("gen", "a", "a.txt").exists());
}

#[test]
fn cycle_is_a_graph_error_that_prints_the_cycle_in_order() {
    // x reads y, y reads z, z reads x; w is outside the cycle and reads x.
    let ws = ws_with(
        "a",
        "[[cmd]]\nname = \"w\"\nouts = [\"w.txt\"]\nsrcs = [\":x\"]\ncmd = \"true\"\n\n\
         [[cmd]]\nname = \"x\"\nouts = [\"x.txt\"]\nsrcs = [\":y\"]\ncmd = \"true\"\n\n\
         [[cmd]]\nname = \"y\"\nouts = [\"y.txt\"]\nsrcs = [\"//b:z\"]\ncmd = \"true\"\n",
    );
    ws.package(
        "b",
        "[[cmd]]\nname = \"z\"\nouts = [\"z.txt\"]\nsrcs = [\"target//a:x\"]\ncmd = \"true\"\n",
    );
    let b = ws.build(&["target//a:w"]);
    assert_eq!(b.run.code, 2, "{}", b.run.stderr);
    let line = b
        .run
        .stderr
        .lines()
        .find(|l| l.contains("dependency cycle"))
        .unwrap_or_else(|| panic!("no cycle in stderr:\n{}", b.run.stderr));
    let path: Vec<&str> = line
        .split("dependency cycle:")
        .nth(1)
        .expect("labels after the colon")
        .split("->")
        .map(str::trim)
        .collect();
    // The cycle, closed, in dependency order, starting anywhere on it.
    let cycle = ["target//a:x", "target//a:y", "target//b:z"];
    assert_eq!(path.len(), cycle.len() + 1, "{line}");
    assert_eq!(path.first(), path.last(), "{line}");
    let start = cycle
        .iter()
        .position(|l| *l == path[0])
        .unwrap_or_else(|| panic!("cycle starts outside the cycle: {line}"));
    let expected: Vec<&str> = (0..=cycle.len()).map(|k| cycle[(start + k) % cycle.len()]).collect();
    assert_eq!(path, expected, "{line}");
}

#[test]
fn duplicate_target_names_are_a_graph_error() {
    let ws = ws_with(
        "gen",
        "[[cmd]]\nname = \"a\"\nouts = [\"a.txt\"]\ncmd = \"echo 1 > $OUT\"\n\n\
         [[cmd]]\nname = \"a\"\nouts = [\"b.txt\"]\ncmd = \"echo 2 > $OUT\"\n",
    );
    let b = ws.build(&["target//gen:a"]);
    assert_eq!(b.run.code, 2, "{}", b.run.stderr);
    assert_stderr_has(&b.run.stderr, "graphs/gen/BUILD.toml:7:");
    assert!(!ws.output("gen", "a", "a.txt").exists() && !ws.output("gen", "a", "b.txt").exists());
}

#[test]
fn failing_command_is_a_build_failure_that_shows_its_stderr_tail() {
    let ws = ws_with(
        "gen",
        "[[cmd]]\nname = \"bad\"\nouts = [\"bad.txt\"]\n\
         cmd = \"echo early-line >&2; echo the-actual-problem-is-here >&2; exit 3\"\n",
    );
    let b = ws.build(&["target//gen:bad"]);
    assert_eq!(b.run.code, 1, "{}", b.run.stderr);
    assert_stderr_has(&b.run.stderr, "the-actual-problem-is-here");
    let report = b.report.expect("a failed build still writes its report");
    assert!(!report.success());
    assert_eq!(report.status("target//gen:bad"), "failed");
    assert_eq!(report.count("failed"), 1);
    let reason = report.action("target//gen:bad")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("the-actual-problem-is-here"), "{reason}");
    assert!(!ws.output("gen", "bad", "bad.txt").exists());
}

#[test]
fn missing_declared_output_is_a_build_failure() {
    let ws = ws_with(
        "gen",
        "[[cmd]]\nname = \"lazy\"\nouts = [\"made.txt\", \"forgotten.txt\"]\ncmd = \"echo m > made.txt\"\n",
    );
    let b = ws.build(&["target//gen:lazy"]);
    assert_eq!(b.run.code, 1, "{}", b.run.stderr);
    assert_stderr_has(&b.run.stderr, "forgotten.txt");
    let report = b.report.expect("a failed build still writes its report");
    assert_eq!(report.status("target//gen:lazy"), "failed");
    // A failure is not cached: the same build fails again.
    let again = ws.build(&["target//gen:lazy"]);
    assert_eq!(again.run.code, 1, "{}", again.run.stderr);
    assert_eq!(again.report.expect("report").status("target//gen:lazy"), "failed");
}

/// `bad` fails at once; `dep1` and `dep2` depend on it; `good` depends only
/// on `slow`, which finishes well after `bad` failed.
const FAILURE_GRAPH: &str = "\
[[cmd]]
name = \"bad\"
outs = [\"bad.txt\"]
cmd = \"exit 1\"

[[cmd]]
name = \"dep1\"
srcs = [\":bad\"]
outs = [\"dep1.txt\"]
cmd = \"cp $SRCS $OUT\"

[[cmd]]
name = \"dep2\"
srcs = [\":dep1\"]
outs = [\"dep2.txt\"]
cmd = \"cp $SRCS $OUT\"

[[cmd]]
name = \"slow\"
outs = [\"slow.txt\"]
cmd = \"sleep 1; echo slow > $OUT\"

[[cmd]]
name = \"good\"
srcs = [\":slow\"]
outs = [\"good.txt\"]
cmd = \"cat $SRCS > $OUT; echo good >> $OUT\"
";

#[test]
fn keep_going_builds_everything_not_downstream_of_a_failure() {
    let ws = ws_with("pkg", FAILURE_GRAPH);
    let b = ws.build(&["target//pkg:", "--keep-going", "--jobs", "2"]);
    assert_eq!(b.run.code, 1, "{}", b.run.stderr);
    let report = b.report.expect("report");
    assert!(!report.success());
    assert_eq!(report.count("failed"), 1);
    assert_eq!(report.count("skipped"), 2);
    assert_eq!(report.count("executed"), 2);
    assert_eq!(report.status("target//pkg:bad"), "failed");
    assert_eq!(report.status("target//pkg:dep1"), "skipped");
    assert_eq!(report.status("target//pkg:dep2"), "skipped");
    assert_eq!(report.status("target//pkg:good"), "executed");
    assert_eq!(ws.read_output("pkg", "good", "good.txt"), "slow\ngood\n");
    assert!(!ws.output("pkg", "dep2", "dep2.txt").exists());
}

#[test]
fn without_keep_going_the_build_stops_after_a_failure() {
    let ws = ws_with("pkg", FAILURE_GRAPH);
    let b = ws.build(&["target//pkg:", "--jobs", "2"]);
    assert_eq!(b.run.code, 1, "{}", b.run.stderr);
    let report = b.report.expect("report");
    assert!(!report.success());
    assert_eq!(report.count("failed"), 1);
    // `good` became ready only after the failure, so it never ran.
    assert_eq!(report.status("target//pkg:good"), "skipped");
    assert!(!ws.output("pkg", "good", "good.txt").exists());
    assert_eq!(report.count("executed"), report.ids("executed").len() as u64);
    assert!(
        report.count("executed") <= 1,
        "only `slow`, already running, may finish"
    );
}
