//! `--watch`: waits for edits under the workspace and reports which files
//! changed, so the caller can refresh the configuration database and build
//! again.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

/// Editors write files in bursts (temp file, rename, chmod); changes closer
/// than this are one edit.
const SETTLE: Duration = Duration::from_millis(150);
/// A burst that never pauses (a generator rewriting files in a loop) is cut
/// after this long, so the rebuild is not postponed forever.
const MAX_SETTLE: Duration = Duration::from_secs(2);

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
        while changed.is_empty() {
            let event = self.events.recv().ok()?;
            self.collect(event, &mut changed);
        }
        // Only relevant changes extend the burst: reads, and writes under
        // ignored directories (kflow's own outputs, a log being tailed),
        // must not postpone the rebuild.
        let started = Instant::now();
        let mut last_change = started;
        loop {
            let deadline = (last_change + SETTLE).min(started + MAX_SETTLE);
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    let before = changed.len();
                    self.collect(event, &mut changed);
                    if changed.len() > before {
                        last_change = Instant::now();
                    }
                }
                Err(_) => break,
            }
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
