//! Final outputs under `kflow-out/<package>/<target>/`, with the names the
//! target exposes. Files are hard links into the store where possible.
//!
//! What was placed is remembered in the build state (name, digest, and the
//! file's device, inode, size and mtime), so that a no-op build checks each
//! output with a single `stat` (relative to an open `kflow-out/`, so the
//! kernel resolves three path components rather than the whole path), as
//! ninja does, and never lists directories to find stale files.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kflow_cache::{BlobRef, Cache, CacheError, Digest};
use rustix::fs::{AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::label::Label;

/// The directory of a target's outputs, relative to `kflow-out/`.
pub fn target_rel_dir(label: &Label) -> PathBuf {
    let mut dir = PathBuf::from(label.package());
    dir.push(label.name());
    dir
}

/// The directory of a target's outputs.
pub fn target_out_dir(out_dir: &Path, label: &Label) -> PathBuf {
    out_dir.join(target_rel_dir(label))
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

/// Placed outputs of one target, in output order.
pub type Placement = Vec<(Arc<str>, Placed)>;

/// `kflow-out/`, open.
pub struct OutDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl OutDir {
    pub fn open(path: &Path) -> Result<OutDir, CacheError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CacheError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(OutDir {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// What is at `rel` now, as a placement of `digest`.
    fn stat(&self, rel: &Path, digest: Digest) -> std::io::Result<Placed> {
        let st = rustix::fs::statat(&self.fd, rel, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(Placed {
            digest,
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: (st.st_mtime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as i64),
        })
    }
}

/// Places `outputs` in the directory `rel` of `out`, trusting `previous`
/// for files that are still exactly as placed, and removes files `previous`
/// placed that are no longer outputs. Without a previous record, stale files
/// are found by listing the directory. Returns `None` when everything was
/// already in place.
pub fn materialize<'c>(
    cache: &(dyn Fn() -> Result<&'c Cache, CacheError> + Sync),
    out: &OutDir,
    rel: &Path,
    outputs: &[(&Arc<str>, BlobRef)],
    previous: Option<&Placement>,
) -> Result<Option<Placement>, CacheError> {
    let still_placed = |name: &str, blob: &BlobRef, p: &Placed| {
        p.digest == blob.digest && out.stat(&rel.join(name), blob.digest).is_ok_and(|now| now == *p)
    };
    if let Some(previous) = previous
        && previous.len() == outputs.len()
        && outputs
            .iter()
            .zip(previous)
            .all(|((name, blob), (pname, p))| *name == pname && still_placed(name, blob, p))
    {
        return Ok(None);
    }
    let dir = out.path.join(rel);
    let mut placed = Placement::with_capacity(outputs.len());
    for (name, blob) in outputs {
        let kept = previous
            .and_then(|prev| prev.iter().find(|(n, _)| n == *name))
            .filter(|(_, p)| still_placed(name, blob, p))
            .map(|(_, p)| p.clone());
        let entry = match kept {
            Some(p) => p,
            None => {
                let dest = dir.join(&***name);
                cache()?.materialize(blob, &dest)?;
                out.stat(&rel.join(&***name), blob.digest)
                    .map_err(|source| CacheError::Io { path: dest, source })?
            }
        };
        placed.push(((*name).clone(), entry));
    }
    match previous {
        Some(previous) => {
            for (name, _) in previous.iter().filter(|(n, _)| !placed.iter().any(|(p, _)| p == n)) {
                remove_stale(&dir.join(&**name))?;
            }
        }
        None => remove_unlisted(&dir, &placed)?,
    }
    Ok(Some(placed))
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
        let listed = placed.iter().any(|(p, _)| p.split('/').next() == Some(name));
        if !listed && !entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_stale(&entry.path())?;
        }
    }
    Ok(())
}
