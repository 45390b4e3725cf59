//! The shared remote cache a build uses, whichever protocol its URL names:
//! the Bazel HTTP cache protocol (`http://`, `https://`) or the Remote
//! Execution API's ActionCache and CAS over gRPC (`grpc://`, `grpcs://`).

use crate::grpc::GrpcCache;
use crate::remote::{HttpCache, RemoteError};
use crate::{ActionEntry, Cache, CacheError, Digest};

#[derive(Debug)]
pub enum RemoteCache {
    Http(HttpCache),
    Grpc(GrpcCache),
}

impl RemoteCache {
    /// The cache at `url`; `token` is sent as a bearer token; `upload`
    /// says whether results may be written.
    pub fn new(url: &str, token: Option<String>, upload: bool) -> Result<RemoteCache, CacheError> {
        if crate::cas::Endpoint::is_grpc(url) {
            return Ok(RemoteCache::Grpc(GrpcCache::new(url.trim(), token, upload)?));
        }
        Ok(RemoteCache::Http(HttpCache::new(url, token, upload)?))
    }

    pub fn url(&self) -> &str {
        match self {
            RemoteCache::Http(c) => c.url(),
            RemoteCache::Grpc(c) => c.url(),
        }
    }

    pub fn is_healthy(&self) -> bool {
        match self {
            RemoteCache::Http(c) => c.is_healthy(),
            RemoteCache::Grpc(c) => c.is_healthy(),
        }
    }

    pub fn fetch_action(&self, key: &Digest, local: &Cache) -> Result<Option<ActionEntry>, RemoteError> {
        match self {
            RemoteCache::Http(c) => c.fetch_action(key, local),
            RemoteCache::Grpc(c) => c.fetch_action(key, local),
        }
    }

    pub fn store_action(&self, key: &Digest, entry: &ActionEntry, local: &Cache) -> Result<(), RemoteError> {
        match self {
            RemoteCache::Http(c) => c.store_action(key, entry, local),
            RemoteCache::Grpc(c) => c.store_action(key, entry, local),
        }
    }
}
