//! The key-value index behind the action cache and the stat cache: one
//! file per entry for the shared action cache (many processes read and
//! write it at once), or a map in memory for what one process owns and
//! persists itself.

use std::io;
use std::path::{Path, PathBuf};

use crate::CacheError;
use crate::error::io_at;

pub trait ActionIndex: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CacheError>;
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), CacheError>;
    fn remove(&self, key: &[u8]) -> Result<(), CacheError>;
    fn keys(&self) -> Result<Vec<Vec<u8>>, CacheError>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An index held in memory, for callers that persist it themselves (the
/// engine keeps its stat cache of source files this way, beside the
/// workspace's other build state).
#[derive(Default)]
pub struct MemoryIndex {
    map: std::sync::Mutex<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryIndex {
    pub fn from_entries(entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> MemoryIndex {
        MemoryIndex {
            map: std::sync::Mutex::new(entries.into_iter().collect()),
        }
    }

    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
        // The map holds plain bytes: a panic elsewhere cannot leave it
        // half-updated.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ActionIndex for MemoryIndex {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.lock().get(key).cloned())
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), CacheError> {
        self.lock().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<(), CacheError> {
        self.lock().remove(key);
        Ok(())
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>, CacheError> {
        Ok(self.lock().keys().cloned().collect())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// One file per entry, `<dir>/<first two hex digits>/<hex of the key>`,
/// each written whole by temp-file-and-rename (as Bazel's disk cache
/// does): any number of processes may read and write at once, a reader
/// sees an entry whole or not at all, and the last writer of a key wins
/// (every writer of a key writes the same result).
pub struct FileIndex {
    dir: PathBuf,
    tmp: PathBuf,
}

const ENTRY_MODE: u32 = 0o644;

impl FileIndex {
    /// The index in `dir`, writing its temporary files in `tmp` (which
    /// must be on the same filesystem).
    pub fn open(dir: &Path, tmp: &Path) -> Result<FileIndex, CacheError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        Ok(FileIndex {
            dir: dir.to_path_buf(),
            tmp: tmp.to_path_buf(),
        })
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        let hex = crate::digest::hex(key);
        self.dir.join(hex.get(..2).unwrap_or("__")).join(hex)
    }

    fn entries(&self) -> Result<Vec<PathBuf>, CacheError> {
        let mut paths = Vec::new();
        for shard in read_dir_or_empty(&self.dir)? {
            if shard.is_dir() {
                paths.extend(read_dir_or_empty(&shard)?.into_iter().filter(|p| !p.is_dir()));
            }
        }
        Ok(paths)
    }
}

fn read_dir_or_empty(dir: &Path) -> Result<Vec<PathBuf>, CacheError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.flatten().map(|e| e.path()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(CacheError::io(dir, e)),
    }
}

fn key_of(path: &Path) -> Option<Vec<u8>> {
    let name = path.file_name()?.to_str()?;
    if name.len() % 2 != 0 {
        return None;
    }
    (0..name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(name.get(i..i + 2)?, 16).ok())
        .collect()
}

impl ActionIndex for FileIndex {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.path(key);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CacheError::io(&path, e)),
        }
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), CacheError> {
        use std::io::Write;
        let path = self.path(key);
        if let Some(shard) = path.parent() {
            std::fs::create_dir_all(shard).map_err(io_at(shard))?;
        }
        let mut temp = crate::atomic::temp_in(&self.tmp, ENTRY_MODE).map_err(io_at(&self.tmp))?;
        temp.write_all(value).map_err(io_at(&self.tmp))?;
        crate::atomic::install(temp, &path, ENTRY_MODE).map_err(io_at(&path))?;
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<(), CacheError> {
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CacheError::io(&path, e)),
            _ => Ok(()),
        }
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>, CacheError> {
        let mut keys: Vec<Vec<u8>> = self.entries()?.iter().filter_map(|p| key_of(p)).collect();
        keys.sort();
        Ok(keys)
    }

    fn len(&self) -> usize {
        self.entries().map_or(0, |e| e.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_index_insert_get_remove_keys() {
        let dir = tempfile::tempdir().unwrap();
        let idx = FileIndex::open(&dir.path().join("ac"), dir.path()).unwrap();
        assert!(idx.is_empty());
        idx.insert(b"a", b"1").unwrap();
        idx.insert(b"b", b"2").unwrap();
        idx.insert(b"b", b"3").unwrap();
        assert_eq!(idx.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(idx.get(b"b").unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(idx.keys().unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        idx.remove(b"a").unwrap();
        idx.remove(b"a").unwrap();
        assert_eq!(idx.get(b"a").unwrap(), None);
        assert_eq!(idx.len(), 1);
        let strays: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .collect();
        assert!(strays.is_empty(), "no temporary file is left: {strays:?}");
    }

    #[test]
    fn two_indexes_on_one_directory_see_each_others_entries() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileIndex::open(&dir.path().join("ac"), dir.path()).unwrap();
        let b = FileIndex::open(&dir.path().join("ac"), dir.path()).unwrap();
        a.insert(&[0xab; 32], b"entry").unwrap();
        assert_eq!(b.get(&[0xab; 32]).unwrap().as_deref(), Some(&b"entry"[..]));
    }
}
