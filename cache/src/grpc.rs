//! The remote cache over the Remote Execution API (REAPI v2): its
//! ActionCache and CAS over gRPC, for teams whose Bazel or Buck2 cluster
//! (BuildGrid, Buildbarn, BuildBuddy, EngFlow, NativeLink) already runs
//! one: `--remote-cache grpc://host:port[/instance]`.
//!
//! REAPI names blobs by SHA-256; kflow's keys and blobs are blake3. The
//! mapping:
//! - a kflow action key `k` is the REAPI action whose `Command` is
//!   `["kflow-action", <hex of k>]` over an empty input root; its digest
//!   is the ActionCache key (the Action and Command are uploaded too, as
//!   servers may check that an entry's action exists);
//! - the ActionResult lists kflow's entry (`kflow-entry.json`, the JSON
//!   the HTTP cache stores) and each of its blobs (`blobs/<name>`) as output
//!   files, by SHA-256;
//! - a downloaded blob is checked against both digests before it enters
//!   the local store.

use std::collections::BTreeMap;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use prost::Message as _;
use reapi::action_cache_client::ActionCacheClient;

use crate::cas::{CallError, Cas, Endpoint, sha256};
use crate::remote::{OffSwitch, RemoteError};
use crate::store::{decode_entry, encode_entry};
use crate::{ActionEntry, Cache, CacheError, Digest};

/// The output file of an ActionResult that holds kflow's entry.
const ENTRY_FILE: &str = "kflow-entry.json";

/// The REAPI Action (and its Command) that stands for kflow action `key`.
fn action_of(key: &Digest) -> (Vec<u8>, Vec<u8>) {
    let command = reapi::Command {
        arguments: vec!["kflow-action".to_owned(), key.to_hex()],
        ..Default::default()
    }
    .encode_to_vec();
    let action = reapi::Action {
        command_digest: Some(sha256(&command)),
        input_root_digest: Some(sha256(&reapi::Directory::default().encode_to_vec())),
        ..Default::default()
    }
    .encode_to_vec();
    (action, command)
}

/// A REAPI server's ActionCache and CAS, used from kflow's worker threads.
pub struct GrpcCache {
    runtime: tokio::runtime::Runtime,
    cas: Cas,
    url: String,
    upload: bool,
    off: OffSwitch,
}

impl std::fmt::Debug for GrpcCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcCache")
            .field("url", &self.url)
            .field("cas", &self.cas)
            .field("upload", &self.upload)
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

impl GrpcCache {
    /// `url` is `grpc://host:port`, with the REAPI instance name as its
    /// path when the server wants one (`grpc://host:port/main`); `token`
    /// is sent as a bearer token; `upload` says whether
    /// [`GrpcCache::store_action`] may write.
    pub fn new(url: &str, token: Option<String>, upload: bool) -> Result<GrpcCache, CacheError> {
        let endpoint = Endpoint::parse(url).map_err(CacheError::RemoteConfig)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| CacheError::RemoteConfig(format!("cannot start the gRPC client: {e}")))?;
        let cas = {
            let _guard = runtime.enter();
            Cas::connect(&endpoint, token.as_deref())
                .map_err(|e| CacheError::RemoteConfig(format!("remote cache {url}: {e}")))?
        };
        Ok(GrpcCache {
            runtime,
            cas,
            url: url.trim().to_owned(),
            upload,
            off: OffSwitch::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_healthy(&self) -> bool {
        self.off.is_on()
    }

    fn unavailable(&self, e: CallError) -> RemoteError {
        if e.is_refusal() {
            RemoteError::Refused(format!("remote cache {} refused {e}", self.url))
        } else {
            RemoteError::Unavailable(format!(
                "remote cache {} failed ({e}); continuing with the local cache only",
                self.url
            ))
        }
    }

    /// Looks `key` up; on a hit every blob is in `local`, verified.
    pub fn fetch_action(&self, key: &Digest, local: &Cache) -> Result<Option<ActionEntry>, RemoteError> {
        if !self.is_healthy() {
            return Ok(None);
        }
        self.off.settle(self.runtime.block_on(self.fetch(key, local)))
    }

    /// Uploads an action result: the blobs the server lacks, then the entry.
    pub fn store_action(&self, key: &Digest, entry: &ActionEntry, local: &Cache) -> Result<(), RemoteError> {
        if !self.upload || !self.is_healthy() {
            return Ok(());
        }
        self.off.settle(self.runtime.block_on(self.store(key, entry, local)))
    }

    async fn fetch(&self, key: &Digest, local: &Cache) -> Result<Option<ActionEntry>, RemoteError> {
        let (action, _) = action_of(key);
        let mut ac = ActionCacheClient::new(self.cas.channel.clone());
        let result = match ac
            .get_action_result(self.cas.request(reapi::GetActionResultRequest {
                instance_name: self.cas.instance.clone(),
                action_digest: Some(sha256(&action)),
                ..Default::default()
            }))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(self.unavailable(CallError::new("GetActionResult", s))),
        };
        let files: BTreeMap<&str, &reapi::Digest> = result
            .output_files
            .iter()
            .filter_map(|f| Some((f.path.as_str(), f.digest.as_ref()?)))
            .collect();
        let Some(entry_digest) = files.get(ENTRY_FILE) else {
            return Ok(None);
        };
        let Some(raw) = self
            .cas
            .read_blob(entry_digest)
            .await
            .map_err(|e| self.unavailable(e))?
        else {
            return Ok(None);
        };
        let Some(entry) = decode_entry(&raw) else {
            return Ok(None);
        };
        for (name, blob) in &entry.blobs {
            if local.has_blob(blob) {
                continue;
            }
            let Some(digest) = files.get(format!("blobs/{name}").as_str()) else {
                return Ok(None);
            };
            let Some(bytes) = self.cas.read_blob(digest).await.map_err(|e| self.unavailable(e))? else {
                return Ok(None);
            };
            // The SHA-256 was checked on reading; the blake3 decides here.
            if Digest::of_bytes(&bytes) != blob.digest || bytes.len() as u64 != blob.size {
                return Ok(None);
            }
            local.put_bytes(&bytes)?;
        }
        match local.put_action(key, &entry) {
            Ok(()) => Ok(Some(entry)),
            Err(CacheError::MissingBlob { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn store(&self, key: &Digest, entry: &ActionEntry, local: &Cache) -> Result<(), RemoteError> {
        let (action, command) = action_of(key);
        let raw = encode_entry(entry)
            .map_err(|e| CacheError::Index(format!("cannot encode the action entry for {key}: {e}")))?;
        let mut blobs: Vec<Vec<u8>> = vec![action.clone(), command, raw.clone()];
        let mut output_files = vec![reapi::OutputFile {
            path: ENTRY_FILE.to_owned(),
            digest: Some(sha256(&raw)),
            ..Default::default()
        }];
        for (name, blob) in &entry.blobs {
            let bytes = local.read_blob(blob)?;
            output_files.push(reapi::OutputFile {
                path: format!("blobs/{name}"),
                digest: Some(sha256(&bytes)),
                ..Default::default()
            });
            blobs.push(bytes);
        }
        let digests: Vec<reapi::Digest> = blobs.iter().map(|b| sha256(b)).collect();
        let pairs: Vec<(&reapi::Digest, &[u8])> = digests.iter().zip(&blobs).map(|(d, b)| (d, b.as_slice())).collect();
        self.cas.upload_missing(&pairs).await.map_err(|e| self.unavailable(e))?;
        let mut ac = ActionCacheClient::new(self.cas.channel.clone());
        ac.update_action_result(self.cas.request(reapi::UpdateActionResultRequest {
            instance_name: self.cas.instance.clone(),
            action_digest: Some(sha256(&action)),
            action_result: Some(reapi::ActionResult {
                output_files,
                exit_code: 0,
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .map_err(|s| self.unavailable(CallError::new("UpdateActionResult", s)))?;
        Ok(())
    }
}
