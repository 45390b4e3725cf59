//! `kflow cache stats|gc|verify`: whole-store passes over the blobs and the
//! action cache.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::io_at;
use crate::store::{decode_entry, remove_any};
use crate::{Cache, CacheError, Digest};

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub dir: PathBuf,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub actions: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub removed_blobs: u64,
    pub removed_bytes: u64,
    pub removed_actions: u64,
    pub remaining_blobs: u64,
    pub remaining_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub blobs_checked: u64,
    /// The hex digest of each damaged blob, or for a file that has no business
    /// in the store (not named by a digest), its path relative to the cache directory.
    pub bad_blobs: Vec<String>,
    pub actions_checked: u64,
    pub bad_actions: u64,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.bad_blobs.is_empty() && self.bad_actions == 0
    }
}

struct StoredBlob {
    path: PathBuf,
    digest: Digest,
    size: u64,
    atime_ns: i128,
}

/// What is in `cas/`: blobs where their name says, and everything else.
struct CasScan {
    blobs: Vec<StoredBlob>,
    strays: Vec<PathBuf>,
}

fn is_shard_name(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The digest a file at `cas/<shard>/<name>` stands for, if it is a legal blob name.
fn blob_name(shard: &str, name: &str) -> Option<Digest> {
    let digest = Digest::from_hex(name).ok()?;
    // Only the canonical spelling, in its own shard, is ever looked up.
    (digest.to_hex() == name && name.starts_with(shard)).then_some(digest)
}

fn read_dir_or_empty(dir: &Path) -> Result<Vec<fs::DirEntry>, CacheError> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.collect::<io::Result<Vec<_>>>().map_err(io_at(dir)),
        // Removed under us (another thread's gc); nothing to list.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(CacheError::io(dir, e)),
    }
}

impl Cache {
    fn scan_cas(&self) -> Result<CasScan, CacheError> {
        let mut scan = CasScan {
            blobs: Vec::new(),
            strays: Vec::new(),
        };
        for shard in read_dir_or_empty(&self.cas)? {
            let shard_path = shard.path();
            let shard_name = shard.file_name().to_string_lossy().into_owned();
            let is_dir = shard.file_type().map_err(io_at(&shard_path))?.is_dir();
            if !is_dir || !is_shard_name(&shard_name) {
                scan.strays.push(shard_path);
                continue;
            }
            for file in read_dir_or_empty(&shard_path)? {
                let path = file.path();
                let meta = match fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(CacheError::io(&path, e)),
                };
                let name = file.file_name().to_string_lossy().into_owned();
                match blob_name(&shard_name, &name) {
                    Some(digest) if meta.file_type().is_file() => scan.blobs.push(StoredBlob {
                        path,
                        digest,
                        size: meta.len(),
                        atime_ns: i128::from(meta.atime()) * 1_000_000_000 + i128::from(meta.atime_nsec()),
                    }),
                    _ => scan.strays.push(path),
                }
            }
        }
        Ok(scan)
    }

    pub fn stats(&self) -> Result<Stats, CacheError> {
        let scan = self.scan_cas()?;
        Ok(Stats {
            dir: self.dir().to_path_buf(),
            blobs: scan.blobs.len() as u64,
            blob_bytes: scan.blobs.iter().map(|b| b.size).sum(),
            actions: self.actions.len() as u64,
        })
    }

    pub fn gc(&self, max_bytes: u64) -> Result<GcReport, CacheError> {
        let mut blobs = self.scan_cas()?.blobs;
        blobs.sort_by(|a, b| a.atime_ns.cmp(&b.atime_ns).then(a.digest.cmp(&b.digest)));
        let mut remaining_bytes: u64 = blobs.iter().map(|b| b.size).sum();
        let mut remaining_blobs = blobs.len() as u64;
        let mut removed = HashSet::new();
        let mut removed_bytes = 0;
        for blob in &blobs {
            if remaining_bytes <= max_bytes {
                break;
            }
            match fs::remove_file(&blob.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(CacheError::io(&blob.path, e)),
            }
            removed.insert(blob.digest);
            removed_bytes += blob.size;
            remaining_bytes -= blob.size;
            remaining_blobs -= 1;
        }

        // Blobs go first: a crash between the two steps leaves entries whose
        // blobs are gone, which read as misses.
        let mut removed_actions = 0;
        if !removed.is_empty() {
            self.epoch.bump()?;
            for key in self.actions.keys()? {
                let Some(raw) = self.actions.get(&key)? else {
                    continue;
                };
                let Some(entry) = decode_entry(&raw) else {
                    continue;
                };
                if entry.blobs.values().any(|b| removed.contains(&b.digest)) {
                    self.actions.remove(&key)?;
                    removed_actions += 1;
                }
            }
        }
        Ok(GcReport {
            removed_blobs: removed.len() as u64,
            removed_bytes,
            removed_actions,
            remaining_blobs,
            remaining_bytes,
        })
    }

    /// Rehashes the blobs on the current rayon pool, so that the caller
    /// chooses how many threads.
    pub fn verify(&self) -> Result<VerifyReport, CacheError> {
        let scan = self.scan_cas()?;
        let mut bad_blobs = Vec::new();
        for stray in &scan.strays {
            remove_any(stray);
            let shown = stray.strip_prefix(self.dir()).unwrap_or(stray);
            bad_blobs.push(shown.display().to_string());
        }

        let damaged = scan
            .blobs
            .par_iter()
            .map(|blob| match fs::File::open(&blob.path) {
                Ok(file) => {
                    let (digest, _) = Digest::of_reader(file).map_err(io_at(&blob.path))?;
                    Ok((digest != blob.digest).then_some(blob))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(CacheError::io(&blob.path, e)),
            })
            .collect::<Result<Vec<Option<&StoredBlob>>, CacheError>>()?;
        for blob in damaged.into_iter().flatten() {
            match fs::remove_file(&blob.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(CacheError::io(&blob.path, e)),
            }
            bad_blobs.push(blob.digest.to_hex());
        }
        if !bad_blobs.is_empty() {
            self.epoch.bump()?;
        }

        let mut actions_checked = 0;
        let mut bad_actions = 0;
        for key in self.actions.keys()? {
            let Some(raw) = self.actions.get(&key)? else {
                continue;
            };
            actions_checked += 1;
            let good = key.len() == 32
                && decode_entry(&raw).is_some_and(|entry| entry.blobs.values().all(|b| self.blob_present(b)));
            if !good {
                self.actions.remove(&key)?;
                bad_actions += 1;
            }
        }

        Ok(VerifyReport {
            blobs_checked: (scan.blobs.len() + scan.strays.len()) as u64,
            bad_blobs,
            actions_checked,
            bad_actions,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{File, FileTimes};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::BlobRef;
    use crate::store::tests::{entry_of, new_cache, overwrite_blob};

    fn set_atime(cache: &Cache, blob: &BlobRef, t: SystemTime) {
        let file = File::open(cache.blob_path(&blob.digest)).unwrap();
        file.set_times(FileTimes::new().set_accessed(t)).unwrap();
    }

    #[test]
    fn stats_counts_blobs_and_actions() {
        let (_d, cache) = new_cache();
        let a = cache.put_bytes(b"aaa").unwrap();
        cache.put_bytes(b"bbbbb").unwrap();
        cache
            .put_action(&Digest::of_bytes(b"k"), &entry_of(&[("a", a)]))
            .unwrap();
        let stats = cache.stats().unwrap();
        assert_eq!(stats.dir, cache.dir());
        assert_eq!((stats.blobs, stats.blob_bytes, stats.actions), (2, 8, 1));
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["blob_bytes"], 8);
    }

    #[test]
    fn gc_removes_least_recently_used_first_and_drops_their_entries() {
        let (_d, cache) = new_cache();
        let now = SystemTime::now();
        let oldest = cache.put_bytes(&[1; 100]).unwrap();
        let middle = cache.put_bytes(&[2; 100]).unwrap();
        let newest = cache.put_bytes(&[3; 100]).unwrap();
        set_atime(&cache, &oldest, now - Duration::from_secs(3000));
        set_atime(&cache, &middle, now - Duration::from_secs(2000));
        set_atime(&cache, &newest, now - Duration::from_secs(1000));
        let k_old = Digest::of_bytes(b"uses oldest");
        let k_new = Digest::of_bytes(b"uses newest");
        cache
            .put_action(&k_old, &entry_of(&[("o", oldest), ("n", newest)]))
            .unwrap();
        cache.put_action(&k_new, &entry_of(&[("n", newest)])).unwrap();

        let report = cache.gc(250).unwrap();
        assert_eq!(
            (
                report.removed_blobs,
                report.removed_bytes,
                report.remaining_blobs,
                report.remaining_bytes
            ),
            (1, 100, 2, 200)
        );
        assert_eq!(report.removed_actions, 1);
        assert!(!cache.blob_path(&oldest.digest).exists());
        assert!(cache.has_blob(&middle) && cache.has_blob(&newest));
        assert_eq!(cache.actions.get(k_old.as_bytes()).unwrap(), None);
        assert!(cache.get_action(&k_new).unwrap().is_some());

        let report = cache.gc(100).unwrap();
        assert_eq!((report.removed_blobs, report.remaining_bytes), (1, 100));
        assert!(!cache.blob_path(&middle.digest).exists());
        assert!(cache.has_blob(&newest));
    }

    #[test]
    fn gc_under_the_limit_removes_nothing() {
        let (_d, cache) = new_cache();
        cache.put_bytes(b"small").unwrap();
        let report = cache.gc(1000).unwrap();
        assert_eq!(
            (report.removed_blobs, report.removed_actions, report.remaining_blobs),
            (0, 0, 1)
        );
    }

    #[test]
    fn verify_finds_and_removes_a_corrupt_blob_and_its_entry() {
        let (_d, cache) = new_cache();
        let good = cache.put_bytes(b"good").unwrap();
        let bad = cache.put_bytes(b"fine").unwrap();
        let k_good = Digest::of_bytes(b"good action");
        let k_bad = Digest::of_bytes(b"bad action");
        cache.put_action(&k_good, &entry_of(&[("g", good)])).unwrap();
        cache.put_action(&k_bad, &entry_of(&[("g", good), ("b", bad)])).unwrap();
        overwrite_blob(&cache, &bad, b"evil");

        let report = cache.verify().unwrap();
        assert_eq!(report.blobs_checked, 2);
        assert_eq!(report.bad_blobs, vec![bad.digest.to_hex()]);
        assert_eq!((report.actions_checked, report.bad_actions), (2, 1));
        assert!(!report.is_clean());
        assert!(!cache.blob_path(&bad.digest).exists());
        assert_eq!(cache.actions.get(k_bad.as_bytes()).unwrap(), None);
        assert!(cache.get_action(&k_good).unwrap().is_some());

        let again = cache.verify().unwrap();
        assert!(again.is_clean(), "{again:?}");
    }

    #[test]
    fn verify_removes_strays_and_undecodable_entries() {
        let (_d, cache) = new_cache();
        let blob = cache.put_bytes(b"x").unwrap();
        let shard = cache.blob_path(&blob.digest).parent().unwrap().to_path_buf();
        fs::write(shard.join("not-a-digest"), b"junk").unwrap();
        fs::write(cache.cas.join("README"), b"junk").unwrap();
        cache
            .actions
            .insert(Digest::of_bytes(b"k").as_bytes(), b"garbage")
            .unwrap();
        cache
            .actions
            .insert(b"short key", br#"{"v":1,"entry":{"blobs":{}}}"#)
            .unwrap();

        let report = cache.verify().unwrap();
        let mut bad = report.bad_blobs.clone();
        bad.sort();
        let shard_name = shard.file_name().unwrap().to_string_lossy();
        let mut expected = vec!["cas/README".to_string(), format!("cas/{shard_name}/not-a-digest")];
        expected.sort();
        assert_eq!(bad, expected);
        assert_eq!((report.actions_checked, report.bad_actions), (2, 2));
        assert!(cache.has_blob(&blob));
        assert!(cache.actions.is_empty());
    }
}
