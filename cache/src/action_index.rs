//! The key-value index behind the action cache and the stat cache. It is a
//! trait so that sled (unmaintained since 2021) can be replaced, e.g. by redb,
//! without touching the store.

use crate::CacheError;
use crate::error::index_err;

pub trait ActionIndex: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CacheError>;
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), CacheError>;
    fn remove(&self, key: &[u8]) -> Result<(), CacheError>;
    fn keys(&self) -> Result<Vec<Vec<u8>>, CacheError>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn flush(&self) -> Result<(), CacheError>;
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

    fn flush(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

/// One named tree of a sled database.
#[derive(Clone)]
pub struct SledIndex {
    tree: sled::Tree,
}

impl SledIndex {
    pub fn open(db: &sled::Db, tree_name: &str) -> Result<SledIndex, CacheError> {
        let tree = db.open_tree(tree_name).map_err(index_err)?;
        Ok(SledIndex { tree })
    }
}

impl ActionIndex for SledIndex {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.tree.get(key).map_err(index_err)?.map(|v| v.to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), CacheError> {
        self.tree.insert(key, value).map_err(index_err)?;
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<(), CacheError> {
        self.tree.remove(key).map_err(index_err)?;
        Ok(())
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>, CacheError> {
        self.tree
            .iter()
            .keys()
            .map(|k| k.map(|k| k.to_vec()).map_err(index_err))
            .collect()
    }

    fn len(&self) -> usize {
        self.tree.len()
    }

    fn flush(&self) -> Result<(), CacheError> {
        self.tree.flush().map_err(index_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_index_insert_get_remove_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
        let idx = SledIndex::open(&db, "t").unwrap();
        assert!(idx.is_empty());
        idx.insert(b"a", b"1").unwrap();
        idx.insert(b"b", b"2").unwrap();
        assert_eq!(idx.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(idx.keys().unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        idx.remove(b"a").unwrap();
        assert_eq!(idx.get(b"a").unwrap(), None);
        assert_eq!(idx.len(), 1);
        idx.flush().unwrap();
    }
}
