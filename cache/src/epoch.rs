//! The cache's epoch: an identity chosen when the cache is created, and a
//! generation bumped whenever a blob is deleted (gc, verify, a damaged blob
//! found on read). Whoever remembers facts about the store ("this blob is
//! present") may keep trusting them while the epoch is unchanged, without
//! opening the cache at all; that is what makes a no-op build cheap.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::CacheError;
use crate::error::io_at;
use crate::lock::FileLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epoch {
    pub id: [u8; 16],
    pub generation: u64,
}

const FILE: &str = "epoch";
const LOCK: &str = "epoch.lock";

/// The epoch of the cache at `dir`, read without taking its lock. `None` when
/// there is no cache there (or its epoch file is damaged).
pub fn read_epoch(dir: &Path) -> Option<Epoch> {
    parse(&fs::read_to_string(dir.join(FILE)).ok()?)
}

fn parse(text: &str) -> Option<Epoch> {
    let (hex, generation) = text.trim().split_once(' ')?;
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(Epoch {
        id,
        generation: generation.parse().ok()?,
    })
}

fn format(epoch: &Epoch) -> String {
    let hex = crate::digest::hex(&epoch.id);
    format!("{hex} {}\n", epoch.generation)
}

/// The epoch of an open cache. Every process that deletes blobs bumps the
/// one file, under its own short lock, so that no bump is lost.
#[derive(Debug)]
pub(crate) struct EpochFile {
    path: PathBuf,
    lock: PathBuf,
    id: [u8; 16],
    generation: AtomicU64,
}

impl EpochFile {
    /// Reads the epoch, creating one with a fresh identity for a new (or
    /// damaged) cache.
    pub(crate) fn open(dir: &Path) -> Result<EpochFile, CacheError> {
        let path = dir.join(FILE);
        let lock = dir.join(LOCK);
        let _held = FileLock::exclusive(&lock, "the cache's epoch", &mut |_| {})?;
        let epoch = match fs::read_to_string(&path).ok().as_deref().and_then(parse) {
            Some(e) => e,
            None => {
                let seed = format!("{}:{:?}:{:?}", std::process::id(), std::time::SystemTime::now(), dir);
                let mut id = [0u8; 16];
                id.copy_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..16]);
                let epoch = Epoch { id, generation: 0 };
                write(&path, &epoch)?;
                epoch
            }
        };
        Ok(EpochFile {
            path,
            lock,
            id: epoch.id,
            generation: AtomicU64::new(epoch.generation),
        })
    }

    pub(crate) fn current(&self) -> Epoch {
        Epoch {
            id: self.id,
            generation: self.generation.load(Ordering::SeqCst),
        }
    }

    /// Records that blobs were deleted: one past both the generation on
    /// disk (other processes may have bumped it) and ours. Failing to
    /// write only means that readers keep trusting an old epoch for blobs
    /// that are gone, which the store then reports as missing; so errors
    /// are returned, not hidden.
    pub(crate) fn bump(&self) -> Result<(), CacheError> {
        let _held = FileLock::exclusive(&self.lock, "the cache's epoch", &mut |_| {})?;
        let on_disk = fs::read_to_string(&self.path)
            .ok()
            .as_deref()
            .and_then(parse)
            .filter(|e| e.id == self.id)
            .map_or(0, |e| e.generation);
        let generation = on_disk.max(self.generation.load(Ordering::SeqCst)) + 1;
        write(
            &self.path,
            &Epoch {
                id: self.id,
                generation,
            },
        )?;
        self.generation.store(generation, Ordering::SeqCst);
        Ok(())
    }
}

fn write(path: &Path, epoch: &Epoch) -> Result<(), CacheError> {
    crate::atomic::write(path, format(epoch).as_bytes(), 0o644).map_err(io_at(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_text_round_trips() {
        let e = Epoch {
            id: [7; 16],
            generation: 42,
        };
        assert_eq!(parse(&format(&e)), Some(e));
        assert_eq!(parse("zz 1"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn a_new_cache_gets_an_epoch_and_bumps_are_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let f = EpochFile::open(dir.path()).unwrap();
        let first = f.current();
        assert_eq!(read_epoch(dir.path()), Some(first));
        f.bump().unwrap();
        assert_eq!(read_epoch(dir.path()).unwrap().generation, first.generation + 1);
        assert_eq!(EpochFile::open(dir.path()).unwrap().current().id, first.id);
    }

    #[test]
    fn bumps_by_two_openers_are_both_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            EpochFile::open(dir.path()).unwrap(),
            EpochFile::open(dir.path()).unwrap(),
        );
        let start = a.current().generation;
        a.bump().unwrap();
        b.bump().unwrap();
        assert_eq!(read_epoch(dir.path()).unwrap().generation, start + 2);
        assert_eq!(b.current().generation, start + 2);
    }
}
