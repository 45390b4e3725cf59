//! `--watch`: waits for edits under the workspace and reports which files
//! changed, so the caller can refresh the configuration database and build
//! again.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

/// Editors write files in bursts (temp file, rename, chmod); events closer
/// than this are one change.
const SETTLE: Duration = Duration::from_millis(150);

pub struct Watcher {
    _watcher: RecommendedWatcher,
    events: Receiver<notify::Result<notify::Event>>,
    ignore: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    path: String,
    source: notify::Error,
}

impl Watcher {
    /// Watches `root` recursively, ignoring changes below any of `ignore`
    /// (kflow's own outputs and cache).
    pub fn new(root: &Path, ignore: Vec<PathBuf>) -> Result<Watcher, WatchError> {
        let (tx, events) = channel();
        let mut watcher = notify::recommended_watcher(move |e| {
            let _ = tx.send(e);
        })
        .map_err(|source| WatchError {
            path: root.display().to_string(),
            source,
        })?;
        watcher
            .watch(root, RecursiveMode::Recursive)
            .map_err(|source| WatchError {
                path: root.display().to_string(),
                source,
            })?;
        Ok(Watcher {
            _watcher: watcher,
            events,
            ignore,
        })
    }

    /// Blocks until something relevant changes; returns the changed paths,
    /// sorted and deduplicated. `None` when the watcher stopped.
    pub fn wait(&self) -> Option<Vec<PathBuf>> {
        let mut changed = Vec::new();
        loop {
            let event = self.events.recv().ok()?;
            self.collect(event, &mut changed);
            if !changed.is_empty() {
                break;
            }
        }
        while let Ok(event) = self.events.recv_timeout(SETTLE) {
            self.collect(event, &mut changed);
        }
        changed.sort();
        changed.dedup();
        Some(changed)
    }

    fn collect(&self, event: notify::Result<notify::Event>, out: &mut Vec<PathBuf>) {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        out.extend(
            event
                .paths
                .into_iter()
                .filter(|p| !self.ignore.iter().any(|i| p.starts_with(i))),
        );
    }
}
