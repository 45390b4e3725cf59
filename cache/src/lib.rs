//! kflow's cache: a content-addressed store of blobs named by their blake3
//! digest, an action cache mapping action keys to the blobs an action
//! produced, a stat cache of file digests (over any index), and the
//! maintenance commands (stats, garbage collection, verification).
//!
//! The cache knows only bytes and digests: what an action is, or what its
//! outputs mean, is the engine's business. Everything here is safe against
//! `kill -9` at any moment: blobs are written to a temporary file, synced and
//! renamed; an action entry is written only after all of its blobs are in the
//! store; an entry whose blobs are missing or damaged reads as a miss.

mod action_index;
pub mod atomic;
pub mod cas;
mod digest;
mod epoch;
mod error;
mod file_digests;
mod grpc;
mod lock;
mod maintenance;
mod remote;
mod remote_cache;
mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use action_index::{ActionIndex, FileIndex, MemoryIndex};
pub use digest::{Digest, DigestParseError};
pub use epoch::{Epoch, read_epoch};
pub use error::CacheError;
pub use file_digests::file_digest;
pub use grpc::GrpcCache;
pub use lock::FileLock;
pub use maintenance::{GcReport, Stats, VerifyReport};
pub use remote::{HttpCache, RemoteError};
pub use remote_cache::RemoteCache;
pub use store::{Cache, ScratchDir};

/// A blob in the content-addressed store: its digest and length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
}

/// What the action cache stores for one action key: the blobs the action
/// produced, by name, and opaque metadata owned by the engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionEntry {
    pub blobs: BTreeMap<String, BlobRef>,
    #[serde(default)]
    pub metadata: serde_json::Value,
}
