//! The stat cache: digests of source files, keyed by absolute path and trusted
//! while the file's size, mtime, inode and device are unchanged, so a no-op
//! build hashes nothing.

use std::fs::{self, File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use crate::action_index::ActionIndex;
use crate::error::io_at;
use crate::{BlobRef, CacheError, Digest};

/// Bumped if the record layout changes; records of another layout are ignored.
const RECORD_FORMAT: u8 = 1;
const RECORD_LEN: usize = 1 + 8 + 16 + 8 + 8 + 32;

/// Filesystems store mtimes with coarse granularity on some systems: a file
/// written twice within this window can keep its mtime and size while its
/// content changes. Digests of files this fresh are not remembered.
const RACY_WINDOW_NS: i128 = 2_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

fn encode(stamp: &Stamp, digest: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_LEN);
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&stamp.size.to_le_bytes());
    out.extend_from_slice(&stamp.mtime_ns.to_le_bytes());
    out.extend_from_slice(&stamp.ino.to_le_bytes());
    out.extend_from_slice(&stamp.dev.to_le_bytes());
    out.extend_from_slice(digest.as_bytes());
    out
}

/// None for anything that is not a record of the current layout, so a
/// damaged index only costs a rehash.
fn decode(raw: &[u8]) -> Option<(Stamp, Digest)> {
    if raw.len() != RECORD_LEN || raw[0] != RECORD_FORMAT {
        return None;
    }
    let rest = &raw[1..];
    let (size, rest) = rest.split_first_chunk::<8>()?;
    let (mtime_ns, rest) = rest.split_first_chunk::<16>()?;
    let (ino, rest) = rest.split_first_chunk::<8>()?;
    let (dev, rest) = rest.split_first_chunk::<8>()?;
    let digest: [u8; 32] = rest.try_into().ok()?;
    let stamp = Stamp {
        size: u64::from_le_bytes(*size),
        mtime_ns: i128::from_le_bytes(*mtime_ns),
        ino: u64::from_le_bytes(*ino),
        dev: u64::from_le_bytes(*dev),
    };
    Some((stamp, Digest(digest)))
}

fn is_racy(stamp: &Stamp) -> bool {
    let now_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
    // Also true for an mtime in the future, which says nothing reliable.
    now_ns - stamp.mtime_ns < RACY_WINDOW_NS
}

/// The digest of a file, served from `index` while the file's size, mtime,
/// inode and device are those recorded, else computed and recorded.
pub fn file_digest(index: &dyn ActionIndex, path: &Path) -> Result<BlobRef, CacheError> {
    let abs = std::path::absolute(path).map_err(io_at(path))?;
    let meta = fs::metadata(&abs).map_err(io_at(path))?;
    if !meta.is_file() {
        return Err(CacheError::NotAFile(path.to_path_buf()));
    }
    let key = abs.as_os_str().as_bytes();
    let stamp = Stamp::of(&meta);
    if let Some(raw) = index.get(key)?
        && let Some((recorded, digest)) = decode(&raw)
        && recorded == stamp
    {
        return Ok(BlobRef {
            digest,
            size: stamp.size,
        });
    }

    let file = File::open(&abs).map_err(io_at(path))?;
    let before = Stamp::of(&file.metadata().map_err(io_at(path))?);
    let (digest, size) = Digest::of_reader(&file).map_err(io_at(path))?;
    let after = Stamp::of(&file.metadata().map_err(io_at(path))?);
    // A file that changed while we read it gets a digest of some mix of
    // versions: fine to return (the next build sees a new stamp), not to keep.
    if before == after && after.size == size && !is_racy(&after) {
        index.insert(key, &encode(&after, &digest))?;
    }
    Ok(BlobRef { digest, size })
}

#[cfg(test)]
mod tests {
    use std::fs::FileTimes;
    use std::io::{Seek, SeekFrom, Write};
    use std::time::Duration;

    use super::*;
    use crate::MemoryIndex;

    fn set_mtime(path: &Path, t: SystemTime) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_times(FileTimes::new().set_modified(t))
            .unwrap();
    }

    /// Rewrites the content in place (same inode, same size) and puts the old mtime back.
    fn rewrite_keeping_stamp(path: &Path, content: &[u8]) {
        let mtime = fs::metadata(path).unwrap().modified().unwrap();
        let mut f = File::options().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(content).unwrap();
        f.set_times(FileTimes::new().set_modified(mtime)).unwrap();
    }

    #[test]
    fn record_round_trips_and_rejects_other_layouts() {
        let stamp = Stamp {
            size: 7,
            mtime_ns: -5,
            ino: 9,
            dev: 11,
        };
        let digest = Digest::of_bytes(b"x");
        let raw = encode(&stamp, &digest);
        assert_eq!(raw.len(), RECORD_LEN);
        assert_eq!(decode(&raw), Some((stamp, digest)));
        assert_eq!(decode(&raw[1..]), None);
        let mut other = raw.clone();
        other[0] = 2;
        assert_eq!(decode(&other), None);
    }

    #[test]
    fn file_digest_is_served_from_stat_cache() {
        let d = tempfile::tempdir().unwrap();
        let index = MemoryIndex::default();
        let path = d.path().join("src.txt");
        fs::write(&path, b"version one").unwrap();
        set_mtime(&path, SystemTime::now() - Duration::from_secs(86400));
        let first = file_digest(&index, &path).unwrap();
        assert_eq!(
            first,
            BlobRef {
                digest: Digest::of_bytes(b"version one"),
                size: 11
            }
        );

        rewrite_keeping_stamp(&path, b"version two");
        assert_eq!(
            file_digest(&index, &path).unwrap(),
            first,
            "unchanged stamp: the recorded digest is trusted"
        );
    }

    #[test]
    fn file_digest_notices_a_new_mtime() {
        let d = tempfile::tempdir().unwrap();
        let index = MemoryIndex::default();
        let path = d.path().join("src.txt");
        fs::write(&path, b"version one").unwrap();
        set_mtime(&path, SystemTime::now() - Duration::from_secs(86400));
        file_digest(&index, &path).unwrap();

        rewrite_keeping_stamp(&path, b"version two");
        set_mtime(&path, SystemTime::now() - Duration::from_secs(3600));
        assert_eq!(
            file_digest(&index, &path).unwrap().digest,
            Digest::of_bytes(b"version two")
        );
    }

    #[test]
    fn file_digest_notices_a_new_size() {
        let d = tempfile::tempdir().unwrap();
        let index = MemoryIndex::default();
        let path = d.path().join("src.txt");
        fs::write(&path, b"short").unwrap();
        let old = SystemTime::now() - Duration::from_secs(86400);
        set_mtime(&path, old);
        file_digest(&index, &path).unwrap();

        fs::write(&path, b"much longer").unwrap();
        set_mtime(&path, old);
        assert_eq!(
            file_digest(&index, &path).unwrap(),
            BlobRef {
                digest: Digest::of_bytes(b"much longer"),
                size: 11
            }
        );
    }

    #[test]
    fn file_digest_does_not_record_a_fresh_mtime() {
        let d = tempfile::tempdir().unwrap();
        let index = MemoryIndex::default();
        let path = d.path().join("src.txt");
        fs::write(&path, b"just written").unwrap();
        assert_eq!(
            file_digest(&index, &path).unwrap().digest,
            Digest::of_bytes(b"just written")
        );
        assert!(index.is_empty());

        rewrite_keeping_stamp(&path, b"JUST WRITTEN");
        assert_eq!(
            file_digest(&index, &path).unwrap().digest,
            Digest::of_bytes(b"JUST WRITTEN")
        );
    }

    #[test]
    fn file_digest_errors_name_the_path() {
        let d = tempfile::tempdir().unwrap();
        let index = MemoryIndex::default();
        let missing = d.path().join("missing.txt");
        let err = file_digest(&index, &missing).unwrap_err();
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
        assert!(matches!(file_digest(&index, d.path()), Err(CacheError::NotAFile(_))));
    }
}
