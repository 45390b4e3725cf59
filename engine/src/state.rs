//! The workspace's memory of its last builds, in `kflow-out/.state/`, in the
//! manner of ninja's `.ninja_log`: for every action identity the key it last
//! had and what it produced, the stat cache of source files, and what was
//! materialized where. With it, a build whose inputs did not change needs
//! neither the action cache nor any hashing, only `stat`s.
//!
//! It is a cache of the cache: its results are trusted only while the cache
//! it was filled from has the same epoch (no blob was deleted since), and
//! deleting it costs time, never correctness.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kflow_cache::{ActionIndex, BlobRef, CacheError, Epoch, MemoryIndex};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::materialize::{Placed, Placement};
use crate::packing::{StringTable, Strings};

const FORMAT: u32 = 3;

/// Named blobs, sorted by name; shared between the state and the results
/// that come from it.
pub type NamedBlobs = Arc<[(Arc<str>, BlobRef)]>;

/// What an action last produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Remembered {
    pub key: Digest,
    pub outputs: NamedBlobs,
    /// Declared outputs the action left out on purpose.
    pub absent: Arc<[Arc<str>]>,
    pub logs: NamedBlobs,
    /// Why it was rejected, if it was.
    pub rejected: Option<String>,
    /// JSON metadata, if any.
    pub metadata: Option<String>,
}

#[derive(Default)]
struct Stored {
    /// The cache the remembered results are in, and its epoch then.
    cache: Option<(PathBuf, Epoch)>,
    actions: FxHashMap<Arc<str>, Remembered>,
    sources: Vec<(Vec<u8>, Vec<u8>)>,
    placed: FxHashMap<Arc<str>, Placement>,
}

/// `Stored` on disk, every string once (see `packing.rs`).
#[derive(Serialize, Deserialize)]
struct Packed<'a> {
    format: u32,
    cache: Option<(PathBuf, Epoch)>,
    #[serde(borrow)]
    strings: Vec<&'a str>,
    actions: Vec<(u32, PackedRemembered)>,
    sources: Vec<(Vec<u8>, Vec<u8>)>,
    placed: Vec<(u32, Vec<(u32, Placed)>)>,
}

#[derive(Serialize, Deserialize)]
struct PackedRemembered {
    key: Digest,
    outputs: Vec<(u32, BlobRef)>,
    absent: Vec<u32>,
    logs: Vec<(u32, BlobRef)>,
    rejected: Option<String>,
    metadata: Option<String>,
}

impl Stored {
    fn pack(&self) -> Packed<'_> {
        fn blobs<'a>(strings: &mut StringTable<'a>, list: &'a [(Arc<str>, BlobRef)]) -> Vec<(u32, BlobRef)> {
            list.iter().map(|(n, b)| (strings.intern(n), *b)).collect()
        }
        let mut strings = StringTable::default();
        let actions = self
            .actions
            .iter()
            .map(|(id, r)| {
                let packed = PackedRemembered {
                    key: r.key,
                    outputs: blobs(&mut strings, &r.outputs),
                    absent: r.absent.iter().map(|a| strings.intern(a)).collect(),
                    logs: blobs(&mut strings, &r.logs),
                    rejected: r.rejected.clone(),
                    metadata: r.metadata.clone(),
                };
                (strings.intern(id), packed)
            })
            .collect();
        let placed = self
            .placed
            .iter()
            .map(|(label, p)| {
                let p = p
                    .iter()
                    .map(|(n, placed)| (strings.intern(n), placed.clone()))
                    .collect();
                (strings.intern(label), p)
            })
            .collect();
        Packed {
            format: FORMAT,
            cache: self.cache.clone(),
            strings: strings.into_strings(),
            actions,
            sources: self.sources.clone(),
            placed,
        }
    }

    /// `None` for a damaged or older file.
    fn unpack(packed: Packed<'_>) -> Option<Stored> {
        if packed.format != FORMAT {
            return None;
        }
        let strings = Strings::new(&packed.strings);
        let blobs = |list: Vec<(u32, BlobRef)>| -> Option<NamedBlobs> {
            list.into_iter()
                .map(|(n, b)| Some((strings.get(n)?.clone(), b)))
                .collect()
        };
        let mut actions = FxHashMap::with_capacity_and_hasher(packed.actions.len(), Default::default());
        for (id, r) in packed.actions {
            let remembered = Remembered {
                key: r.key,
                outputs: blobs(r.outputs)?,
                absent: r
                    .absent
                    .into_iter()
                    .map(|a| strings.get(a).cloned())
                    .collect::<Option<_>>()?,
                logs: blobs(r.logs)?,
                rejected: r.rejected,
                metadata: r.metadata,
            };
            actions.insert(strings.get(id)?.clone(), remembered);
        }
        let mut placed = FxHashMap::with_capacity_and_hasher(packed.placed.len(), Default::default());
        for (label, p) in packed.placed {
            let p = p
                .into_iter()
                .map(|(n, placed)| Some((strings.get(n)?.clone(), placed)))
                .collect::<Option<Placement>>()?;
            placed.insert(strings.get(label)?.clone(), p);
        }
        Some(Stored {
            cache: packed.cache,
            actions,
            sources: packed.sources,
            placed,
        })
    }
}

pub struct BuildState {
    path: PathBuf,
    stored: Stored,
    sources: StatIndex,
    dirty: bool,
}

impl BuildState {
    /// The state of the workspace whose outputs live in `out_dir`; empty if
    /// there is none or it cannot be read.
    pub fn load(out_dir: &Path) -> BuildState {
        let path = out_dir.join(".state").join("actions.bin");
        let stored = std::fs::read(&path)
            .ok()
            .and_then(|bytes| Stored::unpack(postcard::from_bytes::<Packed>(&bytes).ok()?))
            .unwrap_or_default();
        let sources = StatIndex {
            index: MemoryIndex::from_entries(stored.sources.iter().cloned()),
            changed: AtomicBool::new(false),
        };
        BuildState {
            path,
            stored,
            sources,
            dirty: false,
        }
    }

    /// Whether remembered results may be used with the cache at `dir`,
    /// whose current epoch is `epoch`.
    pub fn trusted_with(&self, dir: &Path, epoch: Option<Epoch>) -> bool {
        match (&self.stored.cache, epoch) {
            (Some((d, e)), Some(now)) => d == dir && *e == now,
            _ => false,
        }
    }

    /// Drops every remembered result (they were filled from a cache whose
    /// blobs may since have been deleted).
    pub fn forget_actions(&mut self) {
        if !self.stored.actions.is_empty() {
            self.stored.actions.clear();
            self.dirty = true;
        }
    }

    pub fn action(&self, id: &str) -> Option<&Remembered> {
        self.stored.actions.get(id)
    }

    /// The stat cache of source files.
    pub fn sources(&self) -> &dyn ActionIndex {
        &self.sources
    }

    pub fn placed(&self, label: &str) -> Option<&Placement> {
        self.stored.placed.get(label)
    }

    /// Records results of this build, and the cache epoch they are valid
    /// for.
    pub fn remember(&mut self, cache: (PathBuf, Epoch), results: impl IntoIterator<Item = (Arc<str>, Remembered)>) {
        if self.stored.cache.as_ref() != Some(&cache) {
            self.stored.cache = Some(cache);
            self.dirty = true;
        }
        for (id, r) in results {
            if self.stored.actions.get(&id) != Some(&r) {
                self.stored.actions.insert(id, r);
                self.dirty = true;
            }
        }
    }

    pub fn set_placed(&mut self, label: Arc<str>, placement: Placement) {
        if self.stored.placed.get(&label) != Some(&placement) {
            self.stored.placed.insert(label, placement);
            self.dirty = true;
        }
    }

    /// Writes the state if anything changed: to a temporary file, then
    /// renamed, so a crash leaves the old state or the new one.
    pub fn save(&mut self) -> std::io::Result<()> {
        if !self.dirty && !self.sources.changed.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.stored.sources = self.sources.index.entries();
        let bytes = postcard::to_stdvec(&self.stored.pack()).map_err(std::io::Error::other)?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        kflow_cache::atomic::write(&self.path, &bytes, 0o644)?;
        self.dirty = false;
        Ok(())
    }
}

/// The in-memory stat cache, noting whether it changed so that a no-op build
/// writes nothing.
struct StatIndex {
    index: MemoryIndex,
    changed: AtomicBool,
}

impl ActionIndex for StatIndex {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CacheError> {
        self.index.get(key)
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), CacheError> {
        self.changed.store(true, Ordering::Relaxed);
        self.index.insert(key, value)
    }

    fn remove(&self, key: &[u8]) -> Result<(), CacheError> {
        self.changed.store(true, Ordering::Relaxed);
        self.index.remove(key)
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>, CacheError> {
        self.index.keys()
    }

    fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(n: u8) -> Remembered {
        Remembered {
            key: Digest::of_bytes(&[n]),
            outputs: Arc::new([(
                Arc::from("o.txt"),
                BlobRef {
                    digest: Digest::of_bytes(b"o"),
                    size: 1,
                },
            )]),
            absent: Arc::new([Arc::from("maybe.txt")]),
            logs: Arc::new([]),
            rejected: None,
            metadata: Some("{\"f1\":0.5}".to_owned()),
        }
    }

    fn epoch(generation: u64) -> Epoch {
        Epoch {
            id: [1; 16],
            generation,
        }
    }

    #[test]
    fn state_round_trips_and_is_trusted_only_at_the_same_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let mut s = BuildState::load(dir.path());
        assert!(!s.trusted_with(&cache, Some(epoch(0))));
        s.remember((cache.clone(), epoch(0)), [(Arc::from("t//a:b"), remembered(1))]);
        s.save().unwrap();
        let back = BuildState::load(dir.path());
        assert_eq!(back.action("t//a:b"), Some(&remembered(1)));
        assert!(back.trusted_with(&cache, Some(epoch(0))));
        assert!(!back.trusted_with(&cache, Some(epoch(1))));
        assert!(!back.trusted_with(&dir.path().join("other"), Some(epoch(0))));
        assert!(!back.trusted_with(&cache, None));
    }

    #[test]
    fn unchanged_state_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = BuildState::load(dir.path());
        s.remember((dir.path().to_path_buf(), epoch(0)), [(Arc::from("x"), remembered(1))]);
        s.save().unwrap();
        let path = dir.path().join(".state/actions.bin");
        std::fs::remove_file(&path).unwrap();
        let mut s = BuildState::load(dir.path());
        s.save().unwrap();
        assert!(!path.exists(), "an empty, unchanged state writes nothing");
    }

    #[test]
    fn damaged_state_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".state")).unwrap();
        std::fs::write(dir.path().join(".state/actions.bin"), b"garbage").unwrap();
        assert!(BuildState::load(dir.path()).action("x").is_none());
    }
}
