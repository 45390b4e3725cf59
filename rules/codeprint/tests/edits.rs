//! Fingerprints of kflow's own rules on copies of this workspace with one
//! edit each: a whitespace-only change reruns exactly the rules that
//! depend on the edited code, and nothing else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kflow_codeprint::{BYTE_MOVERS, Fingerprints, fingerprints};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The sources of the workspace (no build outputs, no VCS data).
fn copy_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = workspace_root();
    for file in ["Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root.join(file), dir.path().join(file)).unwrap();
    }
    for sub in ["engine", "cache", "remote", "rules"] {
        copy_dir(&root.join(sub), &dir.path().join(sub));
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

fn rules(root: &Path) -> Fingerprints {
    fingerprints(root, "kflow-rules", &BYTE_MOVERS).unwrap()
}

/// The modules whose fingerprint differs.
fn changed(before: &Fingerprints, after: &Fingerprints) -> BTreeSet<String> {
    before
        .modules
        .iter()
        .filter(|(name, m)| after.modules[*name].digest != m.digest)
        .map(|(name, _)| name.clone())
        .collect()
}

/// The modules for which `uses` holds.
fn modules_where(f: &Fingerprints, uses: impl Fn(&kflow_codeprint::Module) -> bool) -> BTreeSet<String> {
    f.modules
        .iter()
        .filter(|(_, m)| uses(m))
        .map(|(name, _)| name.clone())
        .collect()
}

fn append_space(path: &Path) {
    let mut text = std::fs::read(path).unwrap();
    text.push(b' ');
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_whitespace_edit_in_a_library_changes_exactly_the_rules_that_use_it() {
    let ws = copy_workspace();
    let before = rules(ws.path());
    assert_eq!(before.modules, rules(ws.path()).modules, "deterministic");

    append_space(&ws.path().join("rules/train/src/lib.rs"));
    let after = rules(ws.path());
    let users = modules_where(&before, |m| m.crates.contains("kflow-train"));
    assert_eq!(changed(&before, &after), users);
    for rule in ["train", "prune", "quantize", "evaluate", "automl"] {
        assert!(users.contains(rule), "{rule} trains or runs candle models");
    }
    for rule in ["dataset", "space", "generate", "model", "cmd"] {
        assert!(!users.contains(rule), "{rule} does not use kflow-train");
    }
}

#[test]
fn an_edit_in_a_rule_module_changes_it_and_the_rules_that_use_it() {
    let ws = copy_workspace();
    let before = rules(ws.path());
    append_space(&ws.path().join("rules/src/dataset.rs"));
    let after = rules(ws.path());
    let users = modules_where(&before, |m| m.modules.contains("dataset"));
    assert_eq!(changed(&before, &after), users);
    assert!(users.contains("dataset") && users.contains("train"));
    assert!(!users.contains("space") && !users.contains("cmd"));
}

#[test]
fn tests_docs_and_the_engine_change_no_fingerprint() {
    let ws = copy_workspace();
    let before = rules(ws.path());
    for file in [
        "rules/train/tests/training.rs",
        "rules/cm-firmware/README.md",
        "engine/src/scheduler.rs",
        "cache/src/store.rs",
    ] {
        append_space(&ws.path().join(file));
    }
    assert_eq!(changed(&before, &rules(ws.path())), BTreeSet::new());
}

#[test]
fn a_dependency_upgrade_changes_the_rules_that_link_it() {
    let ws = copy_workspace();
    let before = rules(ws.path());
    let lock = ws.path().join("Cargo.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    let at = text
        .find("name = \"candle-core\"\nversion = \"")
        .expect("candle-core is locked");
    let version_at = at + "name = \"candle-core\"\nversion = \"".len();
    let edited = format!("{}9{}", &text[..version_at], &text[version_at..]);
    std::fs::write(&lock, edited).unwrap();
    let after = rules(ws.path());
    let changed = changed(&before, &after);
    assert!(changed.contains("train") && changed.contains("evaluate"), "{changed:?}");
    assert!(!changed.contains("dataset") && !changed.contains("cmd"), "{changed:?}");
}
