use std::path::{Path, PathBuf};

use crate::Digest;

/// Everything that can go wrong in the cache. A missing or damaged entry in
/// the action cache is not an error (it reads as a miss); these are.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot access {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cache index: {0}")]
    Index(String),
    #[error("blob {0} is not in the cache")]
    BlobMissing(Digest),
    #[error("blob {0} in the cache is damaged (its content does not match its digest); it was removed")]
    BlobCorrupt(Digest),
    #[error("cannot record an action result: blob {digest} is not in the cache store")]
    MissingBlob { digest: Digest },
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    /// A blob whose content no longer matches its digest, found where the
    /// cache cannot remove it itself (while uploading it to a remote cache).
    #[error(
        "blob {0} in the cache is damaged (its content does not match its digest); run `kflow cache verify` to remove it"
    )]
    BlobDamaged(Digest),
    /// A remote cache setting that cannot work (a URL that is not http(s), a token that cannot be sent).
    #[error("remote cache: {0}")]
    RemoteConfig(String),
    /// An earlier attempt to open the cache failed (for callers that open it
    /// lazily and report the failure more than once).
    #[error("the cache is unavailable: {0}")]
    Unavailable(String),
}

impl CacheError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> CacheError {
        CacheError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// `.map_err(io_at(path))`, so every I/O error names the file it concerns.
pub(crate) fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::io(path, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_message_names_the_path() {
        let e = CacheError::io("/x/y", std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        let msg = e.to_string();
        assert!(msg.starts_with("cannot access /x/y: "), "{msg}");
        assert!(msg.to_lowercase().contains("permission denied"), "{msg}");
    }
}
