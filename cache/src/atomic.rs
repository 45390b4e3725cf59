//! Files written whole or not at all, for every writer in kflow: a
//! temporary file in a directory of the same filesystem, synced, then
//! renamed over its name. A reader (another process too) sees the old
//! content or the new, and a crash leaves at worst a stray temporary file,
//! which is removed with its directory or by the next writer's cleanup.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tempfile::NamedTempFile;

/// A temporary file in `dir` with `mode`, removed when dropped unless
/// [`install`]ed.
pub fn temp_in(dir: &Path, mode: u32) -> io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".kflow-")
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
}

/// Gives `temp` its final `mode` (the umask may have narrowed the one it
/// was created with), syncs its data and renames it to `dest`, replacing
/// what is there.
pub fn install(temp: NamedTempFile, dest: &Path, mode: u32) -> io::Result<File> {
    temp.as_file().set_permissions(Permissions::from_mode(mode))?;
    temp.as_file().sync_data()?;
    temp.persist(dest).map_err(|e| e.error)
}

/// Writes `bytes` to `dest` atomically, with a temporary file beside it.
pub fn write(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = temp_in(dir, mode)?;
    temp.write_all(bytes)?;
    install(temp, dest, mode).map(drop)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write(&path, b"old", 0o644).unwrap();
        write(&path, b"new", 0o444).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o444);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_temporary_file_that_is_not_installed_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let temp = temp_in(dir.path(), 0o600).unwrap();
        let path = temp.path().to_path_buf();
        assert!(path.exists());
        drop(temp);
        assert!(!path.exists());
    }
}
