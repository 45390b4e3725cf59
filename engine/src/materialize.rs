//! Final outputs under `kflow-out/<package>/<target>/`, with the names the
//! target exposes. Files are read-only copies of the store's blobs (reflinks
//! where the filesystem has them), so that editing one cannot change what
//! later actions read from the store.
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

/// The directory of a target's outputs, relative to `kflow-out/`:
/// `<package>/<name>` in the workspace's default cell, `@<cell>/<package>/<name>`
/// in another, so that `a//p:t` and `b//p:t` do not share one (a package
/// path cannot hold `@`, so the two forms never meet).
pub fn target_rel_dir(label: &Label, default_cell: &str) -> PathBuf {
    let mut dir = PathBuf::new();
    if label.cell() != default_cell {
        dir.push(format!("@{}", label.cell()));
    }
    dir.push(label.package());
    dir.push(label.name());
    dir
}

/// The directory of a target's outputs.
pub fn target_out_dir(out_dir: &Path, label: &Label, default_cell: &str) -> PathBuf {
    out_dir.join(target_rel_dir(label, default_cell))
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

/// `kflow-out/`, open, with the cell whose targets go at its top.
pub struct OutDir {
    path: PathBuf,
    fd: OwnedFd,
    default_cell: String,
}

impl OutDir {
    pub fn open(path: &Path, default_cell: &str) -> Result<OutDir, CacheError> {
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
            default_cell: default_cell.to_owned(),
        })
    }

    /// Where `label`'s outputs go, relative to `kflow-out/`.
    pub fn target_rel_dir(&self, label: &Label) -> PathBuf {
        target_rel_dir(label, &self.default_cell)
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
                // Whatever is there is not what was placed (an edit by
                // hand, or an older build's file): it is replaced whole.
                remove_stale(&dest)?;
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    struct Setup {
        _dirs: (tempfile::TempDir, tempfile::TempDir),
        cache: Cache,
        out: OutDir,
    }

    fn setup() -> Setup {
        let out_dir = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(cache_dir.path(), &mut |_| {}).unwrap();
        let out = OutDir::open(out_dir.path(), "target").unwrap();
        Setup {
            _dirs: (out_dir, cache_dir),
            cache,
            out,
        }
    }

    fn place(s: &Setup, outputs: &[(&Arc<str>, BlobRef)], previous: Option<&Placement>) -> Option<Placement> {
        let open = || Ok(&s.cache);
        materialize(&open, &s.out, Path::new("pkg/t"), outputs, previous).unwrap()
    }

    #[test]
    fn unchanged_outputs_are_left_alone_and_a_replaced_file_is_restored() {
        let s = setup();
        let blob = s.cache.put_bytes(b"hello").unwrap();
        let name: Arc<str> = Arc::from("a.txt");
        let first = place(&s, &[(&name, blob)], None).expect("placed the first time");
        assert_eq!(place(&s, &[(&name, blob)], Some(&first)), None, "nothing to do");

        let file = s.out.path.join("pkg/t/a.txt");
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, b"edited by hand").unwrap();
        let again = place(&s, &[(&name, blob)], Some(&first)).expect("placed again");
        assert_eq!(std::fs::read(&file).unwrap(), b"hello");
        assert_eq!(place(&s, &[(&name, blob)], Some(&again)), None);
    }

    #[test]
    fn an_output_edited_in_place_is_replaced_and_the_store_keeps_its_bytes() {
        let s = setup();
        let blob = s.cache.put_bytes(b"hello").unwrap();
        let name: Arc<str> = Arc::from("a.txt");
        let first = place(&s, &[(&name, blob)], None).unwrap();
        let file = s.out.path.join("pkg/t/a.txt");
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .write_all(b"HELLO")
            .unwrap();
        assert_eq!(
            s.cache.read_blob(&blob).unwrap(),
            b"hello",
            "the store is not reachable from kflow-out"
        );
        let again = place(&s, &[(&name, blob)], Some(&first)).expect("placed again");
        assert_eq!(std::fs::read(&file).unwrap(), b"hello");
        assert_eq!(place(&s, &[(&name, blob)], Some(&again)), None);
    }

    #[test]
    fn outputs_a_target_no_longer_has_are_removed() {
        let s = setup();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a.txt"), Arc::from("b.txt"));
        let blob = s.cache.put_bytes(b"x").unwrap();
        let first = place(&s, &[(&a, blob), (&b, blob)], None).unwrap();
        place(&s, &[(&a, blob)], Some(&first)).unwrap();
        assert!(s.out.path.join("pkg/t/a.txt").exists());
        assert!(!s.out.path.join("pkg/t/b.txt").exists());
    }

    #[test]
    fn without_a_record_stray_files_are_found_by_listing() {
        let s = setup();
        std::fs::create_dir_all(s.out.path.join("pkg/t/sub")).unwrap();
        std::fs::write(s.out.path.join("pkg/t/stray.txt"), b"old").unwrap();
        let a: Arc<str> = Arc::from("a.txt");
        place(&s, &[(&a, s.cache.put_bytes(b"x").unwrap())], None).unwrap();
        assert!(!s.out.path.join("pkg/t/stray.txt").exists());
        assert!(
            s.out.path.join("pkg/t/sub").is_dir(),
            "directories may hold sub-packages' outputs"
        );
    }
}
