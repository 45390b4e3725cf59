//! The exclusive process lock on a cache directory.
//!
//! sled refuses outright to open a database another process has open; taking
//! our own lock first lets a second kflow wait politely instead of failing.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::CacheError;
use crate::error::io_at;

/// Holds the lock until dropped (closing the file releases it, also when the
/// process is killed, so a crash never leaves the cache locked).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Blocks until the lock at `path` is ours. Calls `on_wait` once, before
    /// blocking, if someone else holds it.
    pub(crate) fn acquire(path: &Path, on_wait: &mut dyn FnMut(&str)) -> Result<DirLock, CacheError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_at(path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                on_wait(&wait_message(path, &mut file));
                file.lock().map_err(io_at(path))?;
            }
            Err(TryLockError::Error(e)) => return Err(CacheError::io(path, e)),
        }
        write_pid(&mut file).map_err(io_at(path))?;
        Ok(DirLock { _file: file })
    }
}

fn wait_message(path: &Path, file: &mut File) -> String {
    // The lock is advisory, so the holder's pid can be read while it holds it.
    let mut contents = String::new();
    let holder = match file.read_to_string(&mut contents) {
        Ok(_) => match contents.trim().parse::<u32>() {
            Ok(pid) => format!("process {pid}"),
            Err(_) => "another process".to_string(),
        },
        Err(_) => "another process".to_string(),
    };
    format!("waiting for the cache lock {} (held by {holder})", path.display())
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
    fn lock_file_holds_our_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        std::fs::write(&path, "999999999 and some stale junk that is long\n").unwrap();
        let _lock = DirLock::acquire(&path, &mut |_| panic!("nobody holds it")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn wait_message_names_file_and_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _held = DirLock::acquire(&path, &mut |_| {}).unwrap();
        let mut f = File::open(&path).unwrap();
        let msg = wait_message(&path, &mut f);
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("process {}", std::process::id())), "{msg}");
    }
}
