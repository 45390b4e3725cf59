//! The content-addressed store, the action cache and scratch space, all under
//! one directory that any number of kflow processes use at once:
//!
//! ```text
//! <dir>/lock          shared by open caches, exclusive for gc, verify, clean
//! <dir>/cas/ab/ab…    blobs, named by the hex digest of their content, mode 0o444
//! <dir>/ac/ab/ab…     action entries, one file per key (see FileIndex)
//! <dir>/tmp/<open>/   each open cache's half-written files and scratch
//!                     directories, with the `owner` file it holds locked
//! <dir>/epoch         identity and deletion count (see epoch.rs)
//! ```
//!
//! Every file appears whole under its final name (temp file, sync, rename),
//! so concurrent writers of one blob or one entry only race to write the
//! same bytes.

use std::fmt;
use std::fs::{self, File, FileTimes, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;

use crate::action_index::{ActionIndex, FileIndex};
use crate::atomic;
use crate::epoch::{Epoch, EpochFile};
use crate::error::io_at;
use crate::lock::FileLock;
use crate::{ActionEntry, BlobRef, CacheError, Digest};

/// Bumped whenever `ActionEntry` changes incompatibly; older entries then read as misses.
const ENTRY_FORMAT: u32 = 1;

/// A blob's access time is the gc's LRU clock. Refreshing it only when it is
/// this old keeps a no-op build from writing anything.
const ATIME_RESOLUTION: Duration = Duration::from_secs(3600);

const BLOB_MODE: u32 = 0o444;
const PRIVATE_COPY_MODE: u32 = 0o644;
const TEMP_MODE: u32 = 0o600;

/// The file an open cache holds locked in its own `tmp/` directory: whoever
/// can lock it knows the directory was abandoned.
const OWNER: &str = "owner";
/// A `tmp/` directory being set up; one older than this was abandoned.
const STAGING: &str = ".new-";
const STAGING_GRACE: Duration = Duration::from_secs(3600);

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u32,
    entry: &'a ActionEntry,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    v: u32,
    entry: ActionEntry,
}

/// A cache directory, opened by this process.
pub struct Cache {
    pub(crate) actions: Box<dyn ActionIndex>,
    pub(crate) epoch: EpochFile,
    dir: PathBuf,
    pub(crate) cas: PathBuf,
    /// This open cache's own directory under `tmp/`.
    tmp: PathBuf,
    // Dropped after `Drop::drop` removed `tmp`.
    _tmp_owner: FileLock,
    _lock: FileLock,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        remove_any(&self.tmp);
    }
}

impl Cache {
    /// Opens the cache at `dir` (creating it) beside every other process
    /// using it; waits only while a gc, verify or clean holds it, calling
    /// `on_wait` once before waiting.
    pub fn open(dir: &Path, on_wait: &mut dyn FnMut(&str)) -> Result<Cache, CacheError> {
        Cache::open_as(dir, false, on_wait)
    }

    /// Opens the cache at `dir` alone, for the passes that delete: waits
    /// until every other process has closed it.
    pub fn open_exclusive(dir: &Path, on_wait: &mut dyn FnMut(&str)) -> Result<Cache, CacheError> {
        Cache::open_as(dir, true, on_wait)
    }

    fn open_as(dir: &Path, exclusive: bool, on_wait: &mut dyn FnMut(&str)) -> Result<Cache, CacheError> {
        let dir = std::path::absolute(dir).map_err(io_at(dir))?;
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let lock_path = dir.join("lock");
        let lock = match exclusive {
            true => FileLock::exclusive(&lock_path, "the builds using the cache", on_wait)?,
            false => FileLock::shared(&lock_path, "the cache, held alone by", on_wait)?,
        };

        let cas = dir.join("cas");
        let tmp_root = dir.join("tmp");
        fs::create_dir_all(&cas).map_err(io_at(&cas))?;
        fs::create_dir_all(&tmp_root).map_err(io_at(&tmp_root))?;
        let (tmp, tmp_owner) = own_tmp(&tmp_root)?;
        clear_abandoned(&tmp_root, &tmp);
        // A cache of an older kflow kept its action index in sled; its
        // entries are not this version's, and only a cache held alone may
        // delete what others could be reading.
        if exclusive {
            remove_any(&dir.join("index"));
        }

        let actions = FileIndex::open(&dir.join("ac"), &tmp)?;
        let epoch = EpochFile::open(&dir)?;
        Ok(Cache {
            actions: Box::new(actions),
            epoch,
            dir,
            cas,
            tmp,
            _tmp_owner: tmp_owner,
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Half-written files and scratch directories of this open cache.
    #[cfg(test)]
    pub(crate) fn temporaries(&self) -> usize {
        fs::read_dir(&self.tmp)
            .map(|d| d.flatten().filter(|e| e.file_name() != OWNER).count())
            .unwrap_or(0)
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.cas.join(&hex[..2]).join(hex)
    }

    pub fn has_blob(&self, blob: &BlobRef) -> bool {
        let path = self.blob_path(&blob.digest);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() == blob.size => {
                touch_if_stale(&path, &meta);
                true
            }
            _ => false,
        }
    }

    /// Like `has_blob` without refreshing the access time, for maintenance
    /// passes that must not disturb the LRU order.
    pub(crate) fn blob_present(&self, blob: &BlobRef) -> bool {
        fs::metadata(self.blob_path(&blob.digest)).is_ok_and(|m| m.is_file() && m.len() == blob.size)
    }

    pub fn put_bytes(&self, bytes: &[u8]) -> Result<BlobRef, CacheError> {
        let blob = BlobRef {
            digest: Digest::of_bytes(bytes),
            size: bytes.len() as u64,
        };
        if self.has_blob(&blob) {
            return Ok(blob);
        }
        let mut temp = self.store_temp_file()?;
        temp.write_all(bytes).map_err(io_at(temp.path()))?;
        self.install(temp, &blob.digest)?;
        Ok(blob)
    }

    pub fn put_file(&self, path: &Path) -> Result<BlobRef, CacheError> {
        let meta = fs::symlink_metadata(path).map_err(io_at(path))?;
        if !meta.file_type().is_file() {
            return Err(CacheError::NotAFile(path.to_path_buf()));
        }
        // Moving a file that has other names would let writes through those
        // names change a blob in place; such files are copied instead.
        if meta.nlink() > 1 {
            let blob = self.store_by_copy(path)?;
            fs::remove_file(path).map_err(io_at(path))?;
            return Ok(blob);
        }

        let file = File::open(path).map_err(io_at(path))?;
        let (digest, size) = Digest::of_reader(&file).map_err(io_at(path))?;
        let blob = BlobRef { digest, size };
        if self.has_blob(&blob) {
            drop(file);
            fs::remove_file(path).map_err(io_at(path))?;
            return Ok(blob);
        }
        finish_blob_file(&file, path)?;
        drop(file);

        let dest = self.blob_path(&digest);
        create_parent(&dest)?;
        match fs::rename(path, &dest) {
            Ok(()) => Ok(blob),
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                let blob = self.store_by_copy(path)?;
                fs::remove_file(path).map_err(io_at(path))?;
                Ok(blob)
            }
            Err(e) => Err(CacheError::io(path, e)),
        }
    }

    pub fn read_blob(&self, blob: &BlobRef) -> Result<Vec<u8>, CacheError> {
        let path = self.blob_path(&blob.digest);
        let mut file = open_blob(&path, &blob.digest)?;
        let meta = file.metadata().map_err(io_at(&path))?;
        // The length check comes before any allocation: the size may come
        // from an untrusted entry (a remote cache) and be absurd.
        if meta.len() != blob.size {
            return Err(CacheError::BlobMissing(blob.digest));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut bytes).map_err(io_at(&path))?;
        if bytes.len() as u64 != blob.size || Digest::of_bytes(&bytes) != blob.digest {
            self.discard(&path)?;
            return Err(CacheError::BlobCorrupt(blob.digest));
        }
        touch_if_stale(&path, &meta);
        Ok(bytes)
    }

    /// Places a read-only copy of a blob at `dest` (for `kflow-out/`): a
    /// copy, never a link, so that editing the placed file cannot change
    /// the store. On a filesystem with reflinks the copy shares the blob's
    /// blocks. What is placed is verified against the digest.
    pub fn materialize(&self, blob: &BlobRef, dest: &Path) -> Result<(), CacheError> {
        self.copy_verified(blob, dest, BLOB_MODE)
    }

    /// A private, writable copy of a blob at `dest` (for actions that need
    /// to modify their inputs), verified against the digest.
    pub fn copy_out(&self, blob: &BlobRef, dest: &Path) -> Result<(), CacheError> {
        self.copy_verified(blob, dest, PRIVATE_COPY_MODE)
    }

    fn copy_verified(&self, blob: &BlobRef, dest: &Path, mode: u32) -> Result<(), CacheError> {
        let src = self.blob_path(&blob.digest);
        let mut input = open_blob(&src, &blob.digest)?;
        let meta = input.metadata().map_err(io_at(&src))?;
        if meta.len() != blob.size {
            return Err(CacheError::BlobMissing(blob.digest));
        }
        create_parent(dest)?;
        let dir = dest.parent().unwrap_or(Path::new("."));
        let mut temp = atomic::temp_in(dir, TEMP_MODE).map_err(io_at(dir))?;
        // A reflink shares the blob's blocks; else the kernel copies
        // (copy_file_range). Either way, what was placed is then hashed.
        if rustix::fs::ioctl_ficlone(temp.as_file(), &input).is_err() {
            io::copy(&mut input, temp.as_file_mut()).map_err(io_at(temp.path()))?;
        }
        let placed = File::open(temp.path()).map_err(io_at(temp.path()))?;
        let (digest, _) = Digest::of_reader(placed).map_err(io_at(temp.path()))?;
        if digest != blob.digest {
            self.discard(&src)?;
            return Err(CacheError::BlobCorrupt(blob.digest));
        }
        touch_if_stale(&src, &meta);
        atomic::install(temp, dest, mode).map_err(io_at(dest))?;
        Ok(())
    }

    pub fn get_action(&self, key: &Digest) -> Result<Option<ActionEntry>, CacheError> {
        let Some(raw) = self.actions.get(key.as_bytes())? else {
            return Ok(None);
        };
        let Some(entry) = decode_entry(&raw) else {
            return Ok(None);
        };
        if entry.blobs.values().all(|b| self.has_blob(b)) {
            Ok(Some(entry))
        } else {
            Ok(None)
        }
    }

    pub fn put_action(&self, key: &Digest, entry: &ActionEntry) -> Result<(), CacheError> {
        if let Some(missing) = entry.blobs.values().find(|b| !self.has_blob(b)) {
            return Err(CacheError::MissingBlob { digest: missing.digest });
        }
        let raw = encode_entry(entry)
            .map_err(|e| CacheError::Index(format!("cannot encode the action entry for {key}: {e}")))?;
        self.actions.insert(key.as_bytes(), &raw)
    }

    pub fn remove_action(&self, key: &Digest) -> Result<(), CacheError> {
        self.actions.remove(key.as_bytes())
    }

    /// The current epoch; see [`crate::read_epoch`].
    pub fn epoch(&self) -> Epoch {
        self.epoch.current()
    }

    /// Deletes a damaged blob and records the deletion in the epoch.
    fn discard(&self, path: &Path) -> Result<(), CacheError> {
        match fs::remove_file(path) {
            Ok(()) => self.epoch.bump(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io(path, e)),
        }
    }

    pub fn scratch_dir(&self, prefix: &str) -> Result<ScratchDir, CacheError> {
        let prefix: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        loop {
            let path = self.tmp.join(unique_name(&prefix));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CacheError::io(&path, e)),
            }
        }
    }

    fn store_temp_file(&self) -> Result<NamedTempFile, CacheError> {
        atomic::temp_in(&self.tmp, TEMP_MODE).map_err(io_at(&self.tmp))
    }

    /// Moves a finished temp file to its name in the store, read-only and
    /// synced, so that a name that survives a crash has all its content.
    fn install(&self, temp: NamedTempFile, digest: &Digest) -> Result<(), CacheError> {
        let dest = self.blob_path(digest);
        create_parent(&dest)?;
        atomic::install(temp, &dest, BLOB_MODE).map_err(io_at(&dest))?;
        Ok(())
    }

    /// Stores a copy of `src`, hashing what is actually copied (the caller's
    /// file could change between a first hash and the copy).
    fn store_by_copy(&self, src: &Path) -> Result<BlobRef, CacheError> {
        let input = File::open(src).map_err(io_at(src))?;
        let mut temp = self.store_temp_file()?;
        let mut reader = HashingReader::new(input);
        io::copy(&mut reader, &mut temp).map_err(|e| CacheError::io(src, e))?;
        let size = reader.len;
        let blob = BlobRef {
            digest: reader.finish(),
            size,
        };
        if self.has_blob(&blob) {
            return Ok(blob);
        }
        self.install(temp, &blob.digest)?;
        Ok(blob)
    }
}

/// The stored form of an action entry, shared with the remote cache so kflow
/// processes can exchange entries through it.
pub(crate) fn encode_entry(entry: &ActionEntry) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&EnvelopeOut { v: ENTRY_FORMAT, entry })
}

pub(crate) fn decode_entry(raw: &[u8]) -> Option<ActionEntry> {
    let envelope: EnvelopeIn = serde_json::from_slice(raw).ok()?;
    (envelope.v == ENTRY_FORMAT).then_some(envelope.entry)
}

/// A fresh directory under the cache's `tmp/`, removed with everything in it
/// when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        remove_any(&self.path);
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: blake3::Hasher::new(),
            len: 0,
        }
    }

    fn finish(&self) -> Digest {
        self.hasher.finalize().into()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// A fresh directory under `tmp_root` for one open cache, and the lock on
/// its owner file. It is set up under a staging name and renamed, so that
/// a directory with its final name always has its owner file.
fn own_tmp(tmp_root: &Path) -> Result<(PathBuf, FileLock), CacheError> {
    loop {
        let staging = tmp_root.join(unique_name(STAGING));
        match fs::create_dir(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(CacheError::io(&staging, e)),
        }
        let owner = FileLock::exclusive(&staging.join(OWNER), "", &mut |_| {})?;
        let path = tmp_root.join(unique_name("open"));
        fs::rename(&staging, &path).map_err(io_at(&path))?;
        return Ok((path, owner));
    }
}

/// Removes what processes that died left in `tmp_root`: directories whose
/// owner file nobody holds (taken while removing, so that no one else
/// removes it at once), staging directories past their grace, and loose
/// files (only older kflow versions, which cannot run beside this one,
/// wrote any). Best effort: what is left is retried at the next open.
fn clear_abandoned(tmp_root: &Path, own: &Path) {
    let Ok(entries) = fs::read_dir(tmp_root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if path == own {
            continue;
        }
        if !meta.is_dir() {
            remove_any(&path);
        } else if entry.file_name().to_string_lossy().starts_with(STAGING) {
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > STAGING_GRACE);
            if old {
                remove_any(&path);
            }
        } else if !path.join(OWNER).exists() {
            remove_any(&path);
        } else if let Some(_dead) = FileLock::try_exclusive(&path.join(OWNER)) {
            remove_any(&path);
        }
    }
}

/// Names that do not collide between threads (counter) or processes (pid).
/// A stale file from a dead process with a reused pid is possible, so
/// creators still use create_new and retry.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}.{}.{n}.{nanos:x}", std::process::id())
}

/// The read-only mode goes on before the rename so a blob is never visible
/// writable, and the data is synced so a rename that survives a crash never
/// names a file with missing content.
fn finish_blob_file(file: &File, path: &Path) -> Result<(), CacheError> {
    file.set_permissions(Permissions::from_mode(BLOB_MODE))
        .map_err(io_at(path))?;
    file.sync_data().map_err(io_at(path))
}

fn open_blob(path: &Path, digest: &Digest) -> Result<File, CacheError> {
    File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => CacheError::BlobMissing(*digest),
        _ => CacheError::io(path, e),
    })
}

/// Removes a damaged blob. Failing to remove it is not worth an error of its
/// own: the caller already reports the damage, and verify will retry.
fn create_parent(path: &Path) -> Result<(), CacheError> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(io_at(parent)),
        None => Ok(()),
    }
}

/// Best effort: an access time that cannot be updated only makes the gc's
/// LRU order slightly less accurate.
fn touch_if_stale(path: &Path, meta: &fs::Metadata) {
    let now = SystemTime::now();
    let stale = meta
        .accessed()
        .map_or(true, |t| now.duration_since(t).is_ok_and(|age| age > ATIME_RESOLUTION));
    if stale && let Ok(file) = File::open(path) {
        let _ = file.set_times(FileTimes::new().set_accessed(now));
    }
}

/// Removes a file or a whole tree, also one a user command made read-only.
/// Best effort: leftovers under `tmp/` are harmless, and they are retried at
/// the next open.
pub(crate) fn remove_any(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        let _ = fs::remove_file(path);
        return;
    }
    if fs::remove_dir_all(path).is_ok() {
        return;
    }
    make_dirs_writable(path);
    let _ = fs::remove_dir_all(path);
}

fn make_dirs_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_dirs_writable(&entry.path());
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::mpsc;

    use super::*;

    pub(crate) fn new_cache() -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache"), &mut |m| panic!("unexpected wait: {m}")).unwrap();
        (dir, cache)
    }

    pub(crate) fn entry_of(blobs: &[(&str, BlobRef)]) -> ActionEntry {
        ActionEntry {
            blobs: blobs
                .iter()
                .map(|(n, b)| (n.to_string(), *b))
                .collect::<BTreeMap<_, _>>(),
            metadata: serde_json::json!({ "duration_ms": 5 }),
        }
    }

    /// Blobs are read-only; tests that simulate damage make them writable first.
    pub(crate) fn overwrite_blob(cache: &Cache, blob: &BlobRef, bytes: &[u8]) {
        let path = cache.blob_path(&blob.digest);
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, bytes).unwrap();
    }

    #[test]
    fn cache_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Cache>();
        assert_send_sync::<ScratchDir>();
    }

    #[test]
    fn blob_path_is_sharded_by_first_two_hex_digits() {
        let (_d, cache) = new_cache();
        let digest = Digest::of_bytes(b"a");
        let hex = digest.to_hex();
        assert_eq!(
            cache.blob_path(&digest),
            cache.dir().join("cas").join(&hex[..2]).join(&hex)
        );
    }

    #[test]
    fn put_bytes_round_trip_and_dedupe() {
        let (_d, cache) = new_cache();
        let blob = cache.put_bytes(b"hello world").unwrap();
        assert_eq!(
            blob,
            BlobRef {
                digest: Digest::of_bytes(b"hello world"),
                size: 11
            }
        );
        assert_eq!(cache.read_blob(&blob).unwrap(), b"hello world");
        let path = cache.blob_path(&blob.digest);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o444);
        let ino = fs::metadata(&path).unwrap().ino();
        assert_eq!(cache.put_bytes(b"hello world").unwrap(), blob);
        assert_eq!(
            fs::metadata(&path).unwrap().ino(),
            ino,
            "an existing blob is not rewritten"
        );
        assert_eq!(cache.temporaries(), 0);
    }

    #[test]
    fn concurrent_puts_of_the_same_bytes_agree() {
        let (_d, cache) = new_cache();
        let data = vec![7u8; 300_000];
        let blobs: Vec<BlobRef> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| cache.put_bytes(&data).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(blobs.iter().all(|b| *b == blobs[0]));
        assert_eq!(cache.read_blob(&blobs[0]).unwrap(), data);
        assert_eq!(cache.temporaries(), 0);
    }

    #[test]
    fn put_bytes_stores_empty_blob() {
        let (_d, cache) = new_cache();
        let blob = cache.put_bytes(b"").unwrap();
        assert_eq!(blob.size, 0);
        assert!(cache.has_blob(&blob));
        assert_eq!(cache.read_blob(&blob).unwrap(), b"");
    }

    #[test]
    fn put_file_moves_file_into_store_and_dedupes() {
        let (_d, cache) = new_cache();
        let scratch = cache.scratch_dir("out").unwrap();
        let first = scratch.path().join("a.bin");
        fs::write(&first, b"payload").unwrap();
        let ino = fs::metadata(&first).unwrap().ino();
        let blob = cache.put_file(&first).unwrap();
        assert_eq!(
            blob,
            BlobRef {
                digest: Digest::of_bytes(b"payload"),
                size: 7
            }
        );
        assert!(!first.exists(), "the caller's file is consumed");
        let stored = fs::metadata(cache.blob_path(&blob.digest)).unwrap();
        assert_eq!(stored.ino(), ino, "moved, not copied");
        assert_eq!(stored.permissions().mode() & 0o777, 0o444);

        let second = scratch.path().join("b.bin");
        fs::write(&second, b"payload").unwrap();
        assert_eq!(cache.put_file(&second).unwrap(), blob);
        assert!(!second.exists());
        assert_eq!(fs::metadata(cache.blob_path(&blob.digest)).unwrap().ino(), ino);
        assert_eq!(cache.read_blob(&blob).unwrap(), b"payload");
    }

    #[test]
    fn put_file_copies_a_file_with_other_links() {
        let (_d, cache) = new_cache();
        let scratch = cache.scratch_dir("out").unwrap();
        let file = scratch.path().join("f");
        let other = scratch.path().join("other-name");
        fs::write(&file, b"shared").unwrap();
        fs::hard_link(&file, &other).unwrap();
        let blob = cache.put_file(&file).unwrap();
        assert!(!file.exists());
        assert_ne!(
            fs::metadata(&other).unwrap().ino(),
            fs::metadata(cache.blob_path(&blob.digest)).unwrap().ino()
        );
        fs::write(&other, b"SHARED").unwrap();
        assert_eq!(cache.read_blob(&blob).unwrap(), b"shared");
    }

    #[test]
    fn put_file_copies_across_filesystems() {
        let (_d, cache) = new_cache();
        // Needs a second filesystem; /dev/shm is one on Linux machines that have it.
        let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        if fs::metadata(other.path()).unwrap().dev() == fs::metadata(cache.dir()).unwrap().dev() {
            return;
        }
        let file = other.path().join("elsewhere");
        fs::write(&file, b"far away").unwrap();
        let blob = cache.put_file(&file).unwrap();
        assert!(!file.exists());
        assert_eq!(cache.read_blob(&blob).unwrap(), b"far away");
        let meta = fs::metadata(cache.blob_path(&blob.digest)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        assert_eq!(cache.temporaries(), 0);
    }

    #[test]
    fn put_file_rejects_directory_and_symlink() {
        let (d, cache) = new_cache();
        let sub = d.path().join("sub");
        fs::create_dir(&sub).unwrap();
        assert!(matches!(cache.put_file(&sub), Err(CacheError::NotAFile(p)) if p == sub));
        let link = d.path().join("link");
        fs::write(d.path().join("target"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path().join("target"), &link).unwrap();
        let err = cache.put_file(&link).unwrap_err();
        assert!(matches!(err, CacheError::NotAFile(_)));
        assert!(err.to_string().contains("is not a regular file"), "{err}");
    }

    #[test]
    fn put_file_error_names_missing_path() {
        let (d, cache) = new_cache();
        let missing = d.path().join("nope");
        let err = cache.put_file(&missing).unwrap_err();
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn has_blob_false_for_wrong_length_or_absent() {
        let (_d, cache) = new_cache();
        let blob = cache.put_bytes(b"12345").unwrap();
        assert!(cache.has_blob(&blob));
        assert!(!cache.has_blob(&BlobRef { size: 4, ..blob }));
        assert!(!cache.has_blob(&BlobRef {
            digest: Digest::of_bytes(b"other"),
            size: 5
        }));
    }

    #[test]
    fn has_blob_refreshes_only_an_old_access_time() {
        let (_d, cache) = new_cache();
        let blob = cache.put_bytes(b"clock").unwrap();
        let path = cache.blob_path(&blob.digest);
        let set_atime = |t: SystemTime| {
            File::open(&path)
                .unwrap()
                .set_times(FileTimes::new().set_accessed(t))
                .unwrap()
        };
        let atime = || fs::metadata(&path).unwrap().accessed().unwrap();

        let recent = SystemTime::now() - Duration::from_secs(600);
        set_atime(recent);
        assert!(cache.has_blob(&blob));
        assert_eq!(atime(), recent, "a recent access time is left alone");

        let old = SystemTime::now() - Duration::from_secs(2 * 3600);
        set_atime(old);
        assert!(cache.has_blob(&blob));
        assert!(atime() > recent, "an old access time is refreshed");
    }

    #[test]
    fn read_blob_detects_corruption_and_removes_blob() {
        let (_d, cache) = new_cache();
        let blob = cache.put_bytes(b"original").unwrap();
        overwrite_blob(&cache, &blob, b"tampered");
        assert!(matches!(cache.read_blob(&blob), Err(CacheError::BlobCorrupt(d)) if d == blob.digest));
        assert!(!cache.blob_path(&blob.digest).exists());
        assert!(matches!(cache.read_blob(&blob), Err(CacheError::BlobMissing(_))));
    }

    #[test]
    fn read_blob_with_absurd_size_is_missing() {
        let (_d, cache) = new_cache();
        let blob = cache.put_bytes(b"tiny").unwrap();
        let wrong = BlobRef { size: u64::MAX, ..blob };
        assert!(matches!(cache.read_blob(&wrong), Err(CacheError::BlobMissing(_))));
        assert!(cache.has_blob(&blob), "a right blob asked for with a wrong size stays");
    }

    #[test]
    fn get_action_round_trip() {
        let (_d, cache) = new_cache();
        let a = cache.put_bytes(b"a").unwrap();
        let b = cache.put_bytes(b"bb").unwrap();
        let entry = entry_of(&[("out/a", a), ("log", b)]);
        let key = Digest::of_bytes(b"action");
        assert_eq!(cache.get_action(&key).unwrap(), None);
        cache.put_action(&key, &entry).unwrap();
        assert_eq!(cache.get_action(&key).unwrap(), Some(entry));
        cache.remove_action(&key).unwrap();
        assert_eq!(cache.get_action(&key).unwrap(), None);
    }

    #[test]
    fn action_entry_is_stored_in_versioned_envelope() {
        let (_d, cache) = new_cache();
        let a = cache.put_bytes(b"a").unwrap();
        let key = Digest::of_bytes(b"action");
        cache.put_action(&key, &entry_of(&[("a", a)])).unwrap();
        let raw = cache.actions.get(key.as_bytes()).unwrap().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["entry"]["blobs"]["a"]["digest"], a.digest.to_hex());
    }

    #[test]
    fn get_action_is_none_when_a_blob_was_deleted() {
        let (_d, cache) = new_cache();
        let a = cache.put_bytes(b"a").unwrap();
        let b = cache.put_bytes(b"b").unwrap();
        let key = Digest::of_bytes(b"action");
        cache.put_action(&key, &entry_of(&[("a", a), ("b", b)])).unwrap();
        fs::remove_file(cache.blob_path(&b.digest)).unwrap();
        assert_eq!(cache.get_action(&key).unwrap(), None);
    }

    #[test]
    fn get_action_is_none_when_a_blob_has_wrong_length() {
        let (_d, cache) = new_cache();
        let a = cache.put_bytes(b"abc").unwrap();
        let key = Digest::of_bytes(b"action");
        cache.put_action(&key, &entry_of(&[("a", a)])).unwrap();
        overwrite_blob(&cache, &a, b"abcd");
        assert_eq!(cache.get_action(&key).unwrap(), None);
    }

    #[test]
    fn get_action_is_none_for_undecodable_or_other_version_entry() {
        let (_d, cache) = new_cache();
        let key = Digest::of_bytes(b"action");
        cache.actions.insert(key.as_bytes(), b"\xff not json").unwrap();
        assert_eq!(cache.get_action(&key).unwrap(), None);
        cache
            .actions
            .insert(key.as_bytes(), br#"{"v":2,"entry":{"blobs":{},"metadata":null}}"#)
            .unwrap();
        assert_eq!(cache.get_action(&key).unwrap(), None);
        cache
            .actions
            .insert(key.as_bytes(), br#"{"v":1,"entry":{"blobs":{}}}"#)
            .unwrap();
        assert!(cache.get_action(&key).unwrap().is_some());
    }

    #[test]
    fn put_action_refuses_a_missing_blob() {
        let (_d, cache) = new_cache();
        let a = cache.put_bytes(b"a").unwrap();
        let absent = BlobRef {
            digest: Digest::of_bytes(b"never stored"),
            size: 12,
        };
        let key = Digest::of_bytes(b"action");
        let err = cache
            .put_action(&key, &entry_of(&[("a", a), ("z", absent)]))
            .unwrap_err();
        assert!(matches!(err, CacheError::MissingBlob { digest } if digest == absent.digest));
        assert_eq!(cache.actions.get(key.as_bytes()).unwrap(), None);
    }

    #[test]
    fn materialize_places_a_read_only_copy_that_cannot_reach_the_store() {
        let (d, cache) = new_cache();
        let blob = cache.put_bytes(b"output").unwrap();
        let dest = d.path().join("ws/out/file.txt");
        cache.materialize(&blob, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"output");
        let placed = fs::metadata(&dest).unwrap();
        assert_ne!(placed.ino(), fs::metadata(cache.blob_path(&blob.digest)).unwrap().ino());
        assert_eq!(placed.permissions().mode() & 0o777, 0o444);

        // An edit of the placed file, same length, through a writable mode
        // (as root needs none): the store keeps its bytes.
        fs::set_permissions(&dest, Permissions::from_mode(0o644)).unwrap();
        fs::write(&dest, b"OUTPUT").unwrap();
        assert_eq!(cache.read_blob(&blob).unwrap(), b"output");
        cache.materialize(&blob, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"output");
        assert_eq!(
            fs::read_dir(dest.parent().unwrap()).unwrap().count(),
            1,
            "no temp files left"
        );
    }

    #[test]
    fn materialize_replaces_a_different_file() {
        let (d, cache) = new_cache();
        let blob = cache.put_bytes(b"new").unwrap();
        let dest = d.path().join("out.txt");
        fs::write(&dest, b"old content").unwrap();
        cache.materialize(&blob, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
    }

    #[test]
    fn materialize_rejects_and_removes_a_corrupt_blob() {
        let (d, cache) = new_cache();
        let blob = cache.put_bytes(b"good").unwrap();
        overwrite_blob(&cache, &blob, b"evil");
        let dest = d.path().join("out.txt");
        assert!(matches!(
            cache.materialize(&blob, &dest),
            Err(CacheError::BlobCorrupt(_))
        ));
        assert!(!dest.exists());
        assert!(!cache.blob_path(&blob.digest).exists());
        assert!(matches!(
            cache.materialize(&blob, &dest),
            Err(CacheError::BlobMissing(_))
        ));
    }

    #[test]
    fn copy_out_makes_a_private_writable_copy() {
        let (d, cache) = new_cache();
        let blob = cache.put_bytes(b"input").unwrap();
        let dest = d.path().join("sandbox/in.txt");
        cache.materialize(&blob, &dest).unwrap();
        cache.copy_out(&blob, &dest).unwrap();
        let meta = fs::metadata(&dest).unwrap();
        assert_ne!(meta.ino(), fs::metadata(cache.blob_path(&blob.digest)).unwrap().ino());
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        fs::write(&dest, b"changed by a user command").unwrap();
        assert_eq!(cache.read_blob(&blob).unwrap(), b"input");
    }

    #[test]
    fn copy_out_rejects_a_corrupt_blob() {
        let (d, cache) = new_cache();
        let blob = cache.put_bytes(b"good").unwrap();
        overwrite_blob(&cache, &blob, b"evil");
        let dest = d.path().join("in.txt");
        assert!(matches!(cache.copy_out(&blob, &dest), Err(CacheError::BlobCorrupt(_))));
        assert!(!dest.exists());
        assert_eq!(
            fs::read_dir(d.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path() != cache.dir())
                .count(),
            0
        );
    }

    #[test]
    fn scratch_dir_is_under_tmp_and_removed_on_drop() {
        let (_d, cache) = new_cache();
        let scratch = cache.scratch_dir("run/../x").unwrap();
        let path = scratch.path().to_path_buf();
        assert_eq!(path.parent().unwrap().parent().unwrap(), cache.dir().join("tmp"));
        fs::create_dir_all(path.join("deep/er")).unwrap();
        fs::write(path.join("deep/er/f"), b"x").unwrap();
        fs::set_permissions(path.join("deep"), Permissions::from_mode(0o500)).unwrap();
        drop(scratch);
        assert!(!path.exists());
    }

    #[test]
    fn open_clears_what_dead_processes_left_in_tmp_but_not_what_live_ones_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        fs::create_dir_all(cache_dir.join("tmp/half-scratch/sub")).unwrap();
        fs::write(cache_dir.join("tmp/blob.123.0.0"), b"half a blob").unwrap();
        fs::create_dir_all(cache_dir.join("tmp/open.dead")).unwrap();
        fs::write(cache_dir.join("tmp/open.dead").join(OWNER), b"1\n").unwrap();
        let live = Cache::open(&cache_dir, &mut |_| {}).unwrap();
        let scratch = live.scratch_dir("busy").unwrap();
        let names = |dir: &Path| -> Vec<String> {
            fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(&cache_dir.join("tmp")),
            [live.tmp.file_name().unwrap().to_string_lossy()]
        );

        let second = Cache::open(&cache_dir, &mut |_| panic!("two builds share the cache")).unwrap();
        assert!(scratch.path().exists(), "a live cache's scratch survives another open");
        assert_eq!(names(&cache_dir.join("tmp")).len(), 2);
        drop((scratch, live, second));
        assert!(
            names(&cache_dir.join("tmp")).is_empty(),
            "each open cache removes its own"
        );
    }

    #[test]
    fn reopen_keeps_blobs_and_actions() {
        let dir = tempfile::tempdir().unwrap();
        let key = Digest::of_bytes(b"k");
        let entry = {
            let cache = Cache::open(dir.path(), &mut |_| {}).unwrap();
            let blob = cache.put_bytes(b"kept").unwrap();
            let entry = entry_of(&[("o", blob)]);
            cache.put_action(&key, &entry).unwrap();
            entry
        };
        let cache = Cache::open(dir.path(), &mut |_| {}).unwrap();
        assert_eq!(cache.get_action(&key).unwrap(), Some(entry));
    }

    #[test]
    fn opens_share_the_cache_and_an_exclusive_open_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let first = Cache::open(dir.path(), &mut |_| panic!("nobody holds it alone")).unwrap();
        let second = Cache::open(dir.path(), &mut |_| panic!("opens share the cache")).unwrap();
        let blob = first.put_bytes(b"from the first").unwrap();
        let key = Digest::of_bytes(b"k");
        first.put_action(&key, &entry_of(&[("o", blob)])).unwrap();
        assert!(second.get_action(&key).unwrap().is_some(), "seen by the other at once");

        let (tx, rx) = mpsc::channel();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let mut calls = 0;
            let cache = Cache::open_exclusive(&path, &mut |msg| {
                calls += 1;
                tx.send(msg.to_string()).unwrap();
            })
            .unwrap();
            (calls, cache.get_action(&key).unwrap())
        });
        let msg = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(msg.contains(&dir.path().join("lock").display().to_string()), "{msg}");
        assert!(msg.contains("the builds using the cache"), "{msg}");
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "gc must wait while the cache is in use");
        drop(first);
        assert!(!waiter.is_finished(), "and for every user");
        drop(second);
        let (calls, found) = waiter.join().unwrap();
        assert_eq!(calls, 1);
        assert!(found.is_some());
    }
}
