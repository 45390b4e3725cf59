//! Build events: one JSON line per action under `kflow-out/.builds/`, the
//! live event stream for progress displays, and the `--build-report` summary.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::rule::Status;

/// What happened to one action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: String,
    pub rule: String,
    pub rule_version: u32,
    /// Empty when the action never got as far as computing its key.
    pub key: String,
    pub status: Status,
    /// The result came from a cache (always for `cached`; for `rejected`,
    /// when the rejection was recorded by an earlier build).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_cache: bool,
    pub duration_ms: u64,
    /// Input name to digest.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Input name to the action that produced it (absent for source files
    /// and artifacts handed over by a parent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub producers: BTreeMap<String, String>,
    #[serde(default)]
    pub params: serde_json::Value,
    /// Output name to digest.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub logs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The action that submitted this one, for children of dynamic
    /// sub-graphs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub executed: u64,
    pub cached: u64,
    pub remote_cached: u64,
    pub failed: u64,
    pub rejected: u64,
    pub skipped: u64,
}

impl Counts {
    pub fn add(&mut self, status: Status) {
        match status {
            Status::Executed => self.executed += 1,
            Status::Cached => self.cached += 1,
            Status::RemoteCached => self.remote_cached += 1,
            Status::Failed => self.failed += 1,
            Status::Rejected => self.rejected += 1,
            Status::Skipped => self.skipped += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.executed + self.cached + self.remote_cached + self.failed + self.rejected + self.skipped
    }
}

/// The first line of a build's event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildHeader {
    pub build: String,
    pub started_unix_ms: u64,
    pub targets: Vec<String>,
    pub jobs: usize,
    pub kflow_version: String,
    /// Packages the configuration layer parsed for this build (all of them
    /// on a cold start, only edited ones in `--watch`).
    pub parsed_packages: Vec<String>,
}

/// The last line of a build's event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildEnd {
    pub success: bool,
    pub counts: Counts,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Build(BuildHeader),
    Action(ActionRecord),
    End(BuildEnd),
}

/// The `--build-report` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildReport {
    pub success: bool,
    pub counts: Counts,
    pub actions: Vec<ActionRecord>,
}

/// Live notifications for progress displays. Never part of any artifact.
pub enum BuildEvent<'a> {
    /// The static graph is known.
    Planned { total: usize },
    /// A running action submitted children.
    Added { count: usize },
    Started { id: &'a str },
    Progress { id: &'a str, message: &'a str },
    Finished { record: &'a ActionRecord },
}

pub trait Observer: Sync {
    fn event(&self, event: BuildEvent<'_>);
}

/// An observer that ignores everything (`--quiet`, tests).
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _: BuildEvent<'_>) {}
}

/// Where builds are recorded.
pub fn builds_dir(out_dir: &Path) -> PathBuf {
    out_dir.join(".builds")
}

/// How many build logs to keep.
const KEEP_BUILDS: usize = 50;

/// The JSON-lines log of the current build.
pub struct BuildLog {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

impl BuildLog {
    pub fn create(out_dir: &Path, mut header: BuildHeader) -> std::io::Result<BuildLog> {
        let dir = builds_dir(out_dir);
        std::fs::create_dir_all(&dir)?;
        let existing = list_builds(out_dir);
        let next = existing
            .last()
            .and_then(|p| p.file_stem()?.to_str()?.split('-').next()?.parse::<u64>().ok())
            .map_or(1, |n| n + 1);
        for old in existing.iter().take((existing.len() + 1).saturating_sub(KEEP_BUILDS)) {
            let _ = std::fs::remove_file(old);
        }
        header.build = format!("{next:08}");
        let path = dir.join(format!("{next:08}-{}.jsonl", header.started_unix_ms));
        let log = BuildLog {
            file: Mutex::new(BufWriter::new(File::create(&path)?)),
            path,
        };
        log.write(&Line::Build(header));
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&self, record: &ActionRecord) {
        self.write(&Line::Action(record.clone()));
    }

    pub fn finish(&self, end: BuildEnd) -> std::io::Result<()> {
        self.write(&Line::End(end));
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.flush()
    }

    fn write(&self, line: &Line) {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // The log is a record for `explain`, not part of the build's result:
        // a full disk must not fail the build, so write errors are dropped.
        if serde_json::to_writer(&mut *f, line).is_ok() {
            let _ = f.write_all(b"\n");
        }
    }
}

/// Build logs, oldest first.
pub fn list_builds(out_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(builds_dir(out_dir))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    out.sort();
    out
}

/// A build log read back. Lines cut short by a crash are skipped.
#[derive(Clone, Debug, Default)]
pub struct RecordedBuild {
    pub header: Option<BuildHeader>,
    pub actions: Vec<ActionRecord>,
    pub end: Option<BuildEnd>,
}

pub fn read_build(path: &Path) -> std::io::Result<RecordedBuild> {
    let mut out = RecordedBuild::default();
    for line in BufReader::new(File::open(path)?).lines() {
        let Ok(line) = serde_json::from_str::<Line>(&line?) else {
            continue;
        };
        match line {
            Line::Build(h) => out.header = Some(h),
            Line::Action(a) => out.actions.push(a),
            Line::End(e) => out.end = Some(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BuildHeader {
        BuildHeader {
            build: String::new(),
            started_unix_ms: 5,
            targets: vec!["target//a:b".into()],
            jobs: 2,
            kflow_version: "0".into(),
            parsed_packages: vec![],
        }
    }

    fn record(id: &str) -> ActionRecord {
        ActionRecord {
            id: id.into(),
            rule: "cmd".into(),
            rule_version: 1,
            key: "k".into(),
            status: Status::Executed,
            from_cache: false,
            duration_ms: 3,
            inputs: BTreeMap::new(),
            producers: BTreeMap::new(),
            params: serde_json::json!({"cmd": "true"}),
            outputs: BTreeMap::new(),
            logs: BTreeMap::new(),
            reason: None,
            parent: None,
            metadata: serde_json::Value::Null,
        }
    }

    #[test]
    fn log_round_trips_and_skips_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = BuildLog::create(dir.path(), header()).unwrap();
        log.record(&record("target//a:b"));
        log.finish(BuildEnd {
            success: true,
            counts: Counts::default(),
            duration_ms: 1,
        })
        .unwrap();
        let path = log.path().to_path_buf();
        drop(log);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"type\":\"action\",\"id\":\"trunc").unwrap();
        let back = read_build(&path).unwrap();
        assert_eq!(back.header.unwrap().build, "00000001");
        assert_eq!(back.actions, vec![record("target//a:b")]);
        assert!(back.end.unwrap().success);
    }

    #[test]
    fn builds_are_numbered_in_order_and_old_ones_pruned() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..KEEP_BUILDS + 3 {
            BuildLog::create(dir.path(), header()).unwrap();
        }
        let builds = list_builds(dir.path());
        assert_eq!(builds.len(), KEEP_BUILDS);
        let last = builds.last().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        assert!(last.starts_with(&format!("{:08}", KEEP_BUILDS + 3)), "{last}");
    }

    #[test]
    fn status_serializes_in_kebab_case() {
        assert_eq!(serde_json::to_string(&Status::RemoteCached).unwrap(), "\"remote-cached\"");
    }
}
