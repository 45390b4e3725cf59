//! Advisory file locks (`flock`): closing the file releases them, also when
//! the process is killed, so a crash never leaves anything locked.
//!
//! The cache directory's lock is shared by every process that builds with
//! it, so that builds in different workspaces run side by side, and taken
//! exclusively by the passes that delete (gc, verify, clean), which then
//! wait for the builds to finish. A workspace's build lock is exclusive:
//! two builds of one workspace would race on its state and `kflow-out/`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::CacheError;
use crate::error::io_at;

/// Holds a lock until dropped.
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Blocks until the exclusive lock at `path` is ours, then records our
    /// pid in it. Calls `on_wait` once, before blocking, if someone else
    /// holds it; `what` names the lock in that message.
    pub fn exclusive(path: &Path, what: &str, on_wait: &mut dyn FnMut(&str)) -> Result<FileLock, CacheError> {
        let mut lock = FileLock::take(path, true, what, on_wait)?;
        write_pid(&mut lock.file).map_err(io_at(path))?;
        Ok(lock)
    }

    /// Blocks until a shared lock at `path` is ours (only an exclusive
    /// holder makes it wait).
    pub fn shared(path: &Path, what: &str, on_wait: &mut dyn FnMut(&str)) -> Result<FileLock, CacheError> {
        FileLock::take(path, false, what, on_wait)
    }

    fn take(path: &Path, exclusive: bool, what: &str, on_wait: &mut dyn FnMut(&str)) -> Result<FileLock, CacheError> {
        let mut file = open(path)?;
        let tried = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match tried {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                on_wait(&wait_message(path, what, &mut file));
                let locked = if exclusive { file.lock() } else { file.lock_shared() };
                locked.map_err(io_at(path))?;
            }
            Err(TryLockError::Error(e)) => return Err(CacheError::io(path, e)),
        }
        Ok(FileLock { file })
    }

    /// The exclusive lock at `path` if nobody holds the file locked.
    pub(crate) fn try_exclusive(path: &Path) -> Option<FileLock> {
        let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
        file.try_lock().ok()?;
        Some(FileLock { file })
    }
}

fn open(path: &Path) -> Result<File, CacheError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_at(path))
}

/// The holder's pid when an exclusive holder wrote one. The lock is
/// advisory, so the file can be read while someone holds it; shared holders
/// write nothing, so an old pid may be left: it is only a hint.
fn wait_message(path: &Path, what: &str, file: &mut File) -> String {
    let mut contents = String::new();
    let holder = match file.read_to_string(&mut contents) {
        Ok(_) => match contents.trim().parse::<u32>() {
            Ok(pid) => format!("last taken by process {pid}"),
            Err(_) => "held by another process".to_string(),
        },
        Err(_) => "held by another process".to_string(),
    };
    format!("waiting for {what} {} ({holder})", path.display())
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exclusive_lock_file_holds_our_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        std::fs::write(&path, "999999999 and some stale junk that is long\n").unwrap();
        let _lock = FileLock::exclusive(&path, "the lock", &mut |_| panic!("nobody holds it")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn shared_locks_coexist_and_keep_the_exclusive_one_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let a = FileLock::shared(&path, "the lock", &mut |_| panic!("shared locks coexist")).unwrap();
        let b = FileLock::shared(&path, "the lock", &mut |_| panic!("shared locks coexist")).unwrap();
        assert!(FileLock::try_exclusive(&path).is_none());
        drop((a, b));
        assert!(FileLock::try_exclusive(&path).is_some());
    }

    #[test]
    fn wait_message_names_the_lock_and_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _held = FileLock::exclusive(&path, "the lock", &mut |_| {}).unwrap();
        let mut f = File::open(&path).unwrap();
        let msg = wait_message(&path, "the cache lock", &mut f);
        assert!(msg.starts_with("waiting for the cache lock"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("process {}", std::process::id())), "{msg}");
    }
}
