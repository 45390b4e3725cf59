//! `kflow build --watch`: an edit to one package's BUILD.toml re-parses only
//! that package and re-executes only what the edit changed.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{EventLog, KillOnDrop, Ws, read_event_log, wait_for, wait_for_every};

/// Long enough for a debug build on a loaded CI machine; the waits poll and
/// return as soon as the build is done.
const PATIENCE: Duration = Duration::from_secs(20);

fn package(name: &str, text: &str) -> String {
    format!("[[cmd]]\nname = \"t\"\nouts = [\"{name}.txt\"]\ncmd = \"echo {text} > $OUT\"\n")
}

/// A workspace with packages `a`, `b` and `c`, and `kflow build --watch`
/// running in it.
struct Watching {
    ws: Ws,
    process: KillOnDrop,
    stderr: tempfile::NamedTempFile,
}

fn watching() -> Watching {
    watching_after(false)
}

/// As `watching`, optionally after an ordinary build (which saves its plan).
fn watching_after(built: bool) -> Watching {
    let ws = Ws::new();
    for name in ["a", "b", "c"] {
        ws.package(name, &package(name, "one"));
    }
    if built {
        ws.build_ok(&["target//..."]);
    }
    let stderr = tempfile::NamedTempFile::new().expect("temp file");
    let process = KillOnDrop(
        ws.kflow()
            .args(["build", "--watch", "target//...", "--quiet"])
            .stdout(Stdio::null())
            .stderr(stderr.reopen().expect("reopen"))
            .spawn()
            .expect("start kflow --watch"),
    );
    Watching { ws, process, stderr }
}

impl Watching {
    /// Stops the watcher and checks that it never panicked.
    fn stop(self) {
        drop(self.process);
        let stderr = std::fs::read_to_string(self.stderr.path()).expect("read stderr");
        assert!(!stderr.contains("panicked"), "kflow --watch panicked:\n{stderr}");
    }
}

/// The `n`-th build log (1-based) once its `end` line is written, looking
/// every `every`.
fn finished_build(ws: &Ws, n: usize, every: Duration) -> (PathBuf, EventLog) {
    wait_for_every(&format!("build {n} of the watcher to finish"), PATIENCE, every, || {
        let path = ws.build_logs().get(n - 1)?.clone();
        let log = read_event_log(&path);
        log.end.is_some().then_some((path, log))
    })
}

#[test]
fn edit_in_watch_mode_reparses_only_the_edited_package() {
    edit_reparses_only_the_edited_package(watching());
}

/// The saved plan of an ordinary build must not leave the watcher's
/// configuration database cold: the first edit would re-parse everything.
#[test]
fn watch_after_an_ordinary_build_still_reparses_only_the_edited_package() {
    edit_reparses_only_the_edited_package(watching_after(true));
}

fn edit_reparses_only_the_edited_package(watching: Watching) {
    let ws = &watching.ws;
    let built_before = ws.build_logs().len();
    // Looking less often than the watcher's 150 ms settling time: see
    // `watch_rebuilds_while_a_tool_keeps_reading_the_outputs` for why.
    let every = Duration::from_millis(300);

    let (_, first) = finished_build(ws, built_before + 1, every);
    let header = first.header.expect("a header line");
    assert_eq!(header["parsed_packages"].as_array().map(Vec::len), Some(3), "{header}");
    assert_eq!(first.actions.len(), 3);

    ws.package("b", &package("b", "two"));
    let (_, second) = finished_build(ws, built_before + 2, every);
    let header = second.header.expect("a header line");
    assert_eq!(header["parsed_packages"], serde_json::json!(["target//b"]), "{header}");
    let status = |id: &str| {
        second
            .actions
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no action {id} in the second build"))["status"]
            .clone()
    };
    assert_eq!(status("target//b:t"), "executed");
    assert_eq!(status("target//a:t"), "cached");
    assert_eq!(status("target//c:t"), "cached");
    assert_eq!(second.end.expect("end")["success"], true);
    assert_eq!(ws.read_output("b", "t", "b.txt"), "two\n");
    watching.stop();
}

/// A progress viewer, an editor or a test reading `kflow-out/` must not keep
/// the watcher from noticing an edit: reads are not edits, and `kflow-out/`
/// is ignored.
#[test]
fn watch_rebuilds_while_a_tool_keeps_reading_the_outputs() {
    let watching = watching();
    let ws = &watching.ws;
    finished_build(ws, 1, Duration::from_millis(300));

    ws.package("b", &package("b", "two"));
    // Reading the build logs every 50 ms, as `wait_for` does.
    let (_, second) = wait_for("the rebuild after the edit", PATIENCE, || {
        let path = ws.build_logs().get(1)?.clone();
        let log = read_event_log(&path);
        log.end.is_some().then_some((path, log))
    });
    assert_eq!(second.end.expect("end")["success"], true);
    watching.stop();
}
