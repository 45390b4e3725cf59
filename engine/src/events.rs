//! Build events: one JSON line per action under `kflow-out/.builds/`, the
//! live event stream for progress displays, and the `--build-report` summary.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::Digest;
use crate::keys::Params;
use crate::rule::Status;

/// Names with values, in name order; written as a JSON object. A vector
/// rather than a map because records are built for every action of every
/// build and most have one or two entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named<T>(pub Vec<(Arc<str>, T)>);

impl<T> Default for Named<T> {
    fn default() -> Named<T> {
        Named(Vec::new())
    }
}

impl<T> Named<T> {
    pub fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(n, _)| **n == *name).map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter().map(|(n, _)| n)
    }
}

impl<T: Serialize> Serialize for Named<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(n, v)| (&**n, v)))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<Arc<str>, T>::deserialize(d)?;
        Ok(Named(map.into_iter().collect()))
    }
}

/// What happened to one action. Cheap to build: names and params are shared
/// with the graph.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: Arc<str>,
    pub rule: Arc<str>,
    pub rule_version: u32,
    /// The start of the rule's code fingerprint (`Rule::code`), when it
    /// has one: `explain` says when the code changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_code: Option<Arc<str>>,
    /// Absent when the action never got as far as computing its key.
    pub key: Option<Digest>,
    pub status: Status,
    /// The result came from a cache (always for `cached`; for `rejected`,
    /// when the rejection was recorded by an earlier build).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_cache: bool,
    /// It ran because its rule was asked to run again (see
    /// `BuildOptions::rerun_rules`), whatever was known.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// It executed on the remote executor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
    pub duration_ms: u64,
    /// Input name to digest.
    #[serde(default)]
    pub inputs: Named<Digest>,
    /// Input name to the action that produced it (absent for source files
    /// and artifacts handed over by a parent).
    #[serde(default, skip_serializing_if = "Named::is_empty")]
    pub producers: Named<Arc<str>>,
    pub params: Params,
    /// Output name to digest.
    #[serde(default)]
    pub outputs: Named<Digest>,
    #[serde(default, skip_serializing_if = "Named::is_empty")]
    pub logs: Named<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The action that submitted this one, for children of dynamic
    /// sub-graphs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Arc<RawValue>>,
    /// The result was the one the workspace remembered for this identity
    /// and key. The build log then keeps only identity, key and status
    /// (params and inputs are those of the last full record with this key).
    #[serde(skip)]
    pub abridged: bool,
}

/// The build-log form of an abridged record.
#[derive(Serialize, Deserialize)]
struct Abridged<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    key: Option<Digest>,
    status: Status,
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

/// The `type` of a line. Lines are read in two steps (the tag, then the
/// record) because embedded raw JSON (params, metadata) cannot pass through
/// serde's buffering of internally tagged enums.
#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

/// `Line` for writing, borrowing what it writes.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum LineRef<'a> {
    Build(&'a BuildHeader),
    Action(&'a ActionRecord),
    Remembered(Abridged<'a>),
    End(&'a BuildEnd),
}

/// The `--build-report` file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildReport {
    pub success: bool,
    pub counts: Counts,
    pub actions: Vec<ActionRecord>,
}

/// Live notifications for progress displays. Never part of any artifact.
pub enum BuildEvent<'a> {
    /// The static graph is known.
    Planned {
        total: usize,
    },
    /// A running action submitted children.
    Added {
        count: usize,
    },
    Started {
        id: &'a str,
    },
    Progress {
        id: &'a str,
        message: &'a str,
    },
    Finished {
        record: &'a ActionRecord,
    },
    /// Something the user should know that does not fail the build (a
    /// remote cache that cannot be reached).
    Warning {
        message: &'a str,
    },
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
            file: Mutex::new(BufWriter::with_capacity(1 << 16, File::create(&path)?)),
            path,
        };
        log.write(&LineRef::Build(&header));
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&self, record: &ActionRecord) {
        if record.abridged {
            self.write(&LineRef::Remembered(Abridged {
                id: std::borrow::Cow::Borrowed(&record.id),
                key: record.key,
                status: record.status,
            }));
        } else {
            self.write(&LineRef::Action(record));
        }
    }

    pub fn finish(&self, end: BuildEnd) -> std::io::Result<()> {
        self.write(&LineRef::End(&end));
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.flush()
    }

    fn write(&self, line: &LineRef<'_>) {
        // Encoded outside the lock, so that workers only queue for the copy.
        let Ok(mut bytes) = serde_json::to_vec(line) else {
            return;
        };
        bytes.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // The log is a record for `explain`, not part of the build's result:
        // a full disk must not fail the build, so write errors are dropped.
        let _ = f.write_all(&bytes);
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
#[derive(Debug, Default)]
pub struct RecordedBuild {
    pub header: Option<BuildHeader>,
    pub actions: Vec<ActionRecord>,
    pub end: Option<BuildEnd>,
}

pub fn read_build(path: &Path) -> std::io::Result<RecordedBuild> {
    let mut out = RecordedBuild::default();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        let Ok(tag) = serde_json::from_str::<Tag>(&line) else {
            continue;
        };
        match &*tag.kind {
            "build" => out.header = serde_json::from_str(&line).ok(),
            "action" => out.actions.extend(serde_json::from_str(&line).ok()),
            "remembered" => out
                .actions
                .extend(serde_json::from_str::<Abridged>(&line).ok().map(|a| ActionRecord {
                    id: Arc::from(&*a.id),
                    rule: Arc::from(""),
                    rule_version: 0,
                    rule_code: None,
                    key: a.key,
                    status: a.status,
                    from_cache: true,
                    forced: false,
                    remote: false,
                    duration_ms: 0,
                    inputs: Named::default(),
                    producers: Named::default(),
                    params: Params::new(&serde_json::Value::Null),
                    outputs: Named::default(),
                    logs: Named::default(),
                    reason: None,
                    parent: None,
                    metadata: None,
                    abridged: true,
                })),
            "end" => out.end = serde_json::from_str(&line).ok(),
            _ => {}
        }
    }
    Ok(out)
}

/// An executed `cmd` action, for tests of what reads records.
#[cfg(test)]
pub(crate) fn record_for_tests(id: &str) -> ActionRecord {
    ActionRecord {
        id: id.into(),
        rule: "cmd".into(),
        rule_version: 1,
        rule_code: None,
        key: Some(Digest::of_bytes(b"k")),
        status: Status::Executed,
        from_cache: false,
        forced: false,
        remote: false,
        duration_ms: 3,
        inputs: Named(vec![(Arc::from("in.txt"), Digest::of_bytes(b"i"))]),
        producers: Named::default(),
        params: Params::new(&serde_json::json!({"cmd": "true"})),
        outputs: Named::default(),
        logs: Named::default(),
        reason: None,
        parent: None,
        metadata: None,
        abridged: false,
    }
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

    use super::record_for_tests as record;

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
        assert_eq!(back.actions.len(), 1);
        let (got, want) = (&back.actions[0], record("target//a:b"));
        assert_eq!((&got.id, got.key, &got.inputs), (&want.id, want.key, &want.inputs));
        assert_eq!(got.params, want.params);
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
        let last = builds
            .last()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(last.starts_with(&format!("{:08}", KEEP_BUILDS + 3)), "{last}");
    }

    #[test]
    fn abridged_records_keep_identity_key_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let log = BuildLog::create(dir.path(), header()).unwrap();
        let mut r = record("target//a:b");
        r.status = Status::Cached;
        r.abridged = true;
        log.record(&r);
        log.finish(BuildEnd {
            success: true,
            counts: Counts::default(),
            duration_ms: 1,
        })
        .unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(!text.contains("in.txt"), "abridged lines leave out inputs: {text}");
        let back = read_build(log.path()).unwrap();
        let got = &back.actions[0];
        assert!(got.abridged);
        assert_eq!((&got.id, got.key, got.status), (&r.id, r.key, Status::Cached));
    }

    #[test]
    fn status_serializes_in_kebab_case() {
        assert_eq!(
            serde_json::to_string(&Status::RemoteCached).unwrap(),
            "\"remote-cached\""
        );
    }
}
