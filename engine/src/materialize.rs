//! Final outputs under `kflow-out/<package>/<target>/`, with the names the
//! target exposes. Files are hard links into the store where possible.
//!
//! What was placed is remembered in `kflow-out/.state/outputs.json` (name,
//! digest, and the file's device, inode, size and mtime), so that a no-op
//! build checks each output with a single `stat`, as ninja does, and never
//! lists directories to find stale files.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kflow_cache::{BlobRef, Cache, CacheError, Digest};
use serde::{Deserialize, Serialize};

use crate::label::Label;

/// The directory of a target's outputs.
pub fn target_out_dir(out_dir: &Path, label: &Label) -> PathBuf {
    let mut dir = out_dir.to_path_buf();
    if !label.package().is_empty() {
        dir.push(label.package());
    }
    dir.push(label.name());
    dir
}

/// One placed output file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub digest: Digest,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

impl Placed {
    fn of(digest: Digest, meta: &std::fs::Metadata) -> Placed {
        Placed {
            digest,
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
        }
    }
}

/// Placed outputs by target label and output name.
pub type Placement = BTreeMap<String, Placed>;

#[derive(Default, Serialize, Deserialize)]
pub struct OutputState {
    v: u32,
    pub targets: BTreeMap<String, Placement>,
}

const STATE_FORMAT: u32 = 1;

fn state_path(out_dir: &Path) -> PathBuf {
    out_dir.join(".state").join("outputs.json")
}

impl OutputState {
    /// The recorded state; empty when absent or unreadable (everything is
    /// then checked the slow way once).
    pub fn load(out_dir: &Path) -> OutputState {
        std::fs::read(state_path(out_dir))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<OutputState>(&bytes).ok())
            .filter(|s| s.v == STATE_FORMAT)
            .unwrap_or_default()
    }

    /// Writes the state atomically (a crash leaves the old state or the new
    /// one, and a stale state only costs a slower check).
    pub fn save(&mut self, out_dir: &Path) -> std::io::Result<()> {
        self.v = STATE_FORMAT;
        let path = state_path(out_dir);
        let dir = path.parent().unwrap_or(out_dir);
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("outputs.json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, &path)
    }
}

/// Places `outputs` in `dir`, trusting `previous` for files that are still
/// exactly as placed, and removes files `previous` placed that are no longer
/// outputs. Without a previous record, stale files are found by listing the
/// directory.
pub fn materialize(
    cache: &Cache,
    dir: &Path,
    outputs: &[(String, BlobRef)],
    previous: Option<&Placement>,
) -> Result<Placement, CacheError> {
    let mut placed = Placement::new();
    for (name, blob) in outputs {
        let dest = dir.join(name);
        let unchanged = previous
            .and_then(|p| p.get(name))
            .filter(|p| p.digest == blob.digest)
            .and_then(|p| {
                let meta = std::fs::symlink_metadata(&dest).ok()?;
                (Placed::of(blob.digest, &meta) == *p).then(|| p.clone())
            });
        let entry = match unchanged {
            Some(p) => p,
            None => {
                cache.materialize(blob, &dest)?;
                let meta = std::fs::symlink_metadata(&dest).map_err(|source| CacheError::Io {
                    path: dest.clone(),
                    source,
                })?;
                Placed::of(blob.digest, &meta)
            }
        };
        placed.insert(name.clone(), entry);
    }
    match previous {
        Some(previous) => {
            for name in previous.keys().filter(|n| !placed.contains_key(*n)) {
                remove_stale(&dir.join(name))?;
            }
        }
        None => remove_unlisted(dir, &placed)?,
    }
    Ok(placed)
}

fn remove_stale(path: &Path) -> Result<(), CacheError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CacheError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Removes files in `dir` that are not outputs (left by an earlier version
/// of the target). Directories are kept: a sub-package's outputs may live
/// there when a target and a package share a name.
fn remove_unlisted(dir: &Path, placed: &Placement) -> Result<(), CacheError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let listed = placed.keys().any(|p| p.split('/').next() == Some(name));
        if !listed && !entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_stale(&entry.path())?;
        }
    }
    Ok(())
}
