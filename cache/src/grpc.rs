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
use bazel_remote_apis::google::bytestream;
use prost::Message as _;
use reapi::action_cache_client::ActionCacheClient;
use reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use sha2::{Digest as _, Sha256};
use tonic::transport::Channel;

use crate::digest::hex;
use crate::remote::{OffSwitch, RemoteError};
use crate::store::{decode_entry, encode_entry};
use crate::{ActionEntry, Cache, CacheError, Digest};

/// The output file of an ActionResult that holds kflow's entry.
const ENTRY_FILE: &str = "kflow-entry.json";
/// ByteStream chunks: well under gRPC's 4 MiB message limit.
const CHUNK: usize = 1 << 20;

/// A SHA-256 digest and size, as REAPI names a blob.
fn sha256(bytes: &[u8]) -> reapi::Digest {
    reapi::Digest {
        hash: hex(&Sha256::digest(bytes)),
        size_bytes: bytes.len() as i64,
    }
}

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
    channel: Channel,
    instance: String,
    url: String,
    /// `authorization: Bearer <token>`, sent with every call.
    auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    upload: bool,
    off: OffSwitch,
}

impl std::fmt::Debug for GrpcCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcCache")
            .field("url", &self.url)
            .field("instance", &self.instance)
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
        let bad = |why: &str| CacheError::RemoteConfig(format!("`{url}` {why}"));
        let rest = url
            .strip_prefix("grpc://")
            .ok_or_else(|| bad("is not a grpc://host:port[/instance] URL"))?;
        let (host, instance) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let auth = match token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
                CacheError::RemoteConfig(
                    "the remote cache token has characters that cannot be sent in a gRPC header".into(),
                )
            })?),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| CacheError::RemoteConfig(format!("cannot start the gRPC client: {e}")))?;
        let endpoint = Channel::from_shared(format!("http://{host}"))
            .map_err(|e| CacheError::RemoteConfig(format!("`{url}`: {e}")))?;
        let channel = {
            let _guard = runtime.enter();
            endpoint.connect_lazy()
        };
        Ok(GrpcCache {
            runtime,
            channel,
            instance: instance.trim_end_matches('/').to_owned(),
            url: url.to_owned(),
            auth,
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

    /// A call's request, with the token.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(auth) = &self.auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request
    }

    fn unavailable(&self, what: &str, status: &tonic::Status) -> RemoteError {
        match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => RemoteError::Refused(format!(
                "remote cache {} refused {what}: {}",
                self.url,
                status.message()
            )),
            _ => RemoteError::Unavailable(format!(
                "remote cache {} failed ({what}: {:?} {}); continuing with the local cache only",
                self.url,
                status.code(),
                status.message()
            )),
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
        let mut ac = ActionCacheClient::new(self.channel.clone());
        let result = match ac
            .get_action_result(self.request(reapi::GetActionResultRequest {
                instance_name: self.instance.clone(),
                action_digest: Some(sha256(&action)),
                ..Default::default()
            }))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(self.unavailable("GetActionResult", &s)),
        };
        let files: BTreeMap<&str, &reapi::Digest> = result
            .output_files
            .iter()
            .filter_map(|f| Some((f.path.as_str(), f.digest.as_ref()?)))
            .collect();
        let Some(entry_digest) = files.get(ENTRY_FILE) else {
            return Ok(None);
        };
        let Some(raw) = self.read_blob(entry_digest).await? else {
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
            let Some(bytes) = self.read_blob(digest).await? else {
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
        self.upload_missing(blobs).await?;
        let mut ac = ActionCacheClient::new(self.channel.clone());
        ac.update_action_result(self.request(reapi::UpdateActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(sha256(&action)),
            action_result: Some(reapi::ActionResult {
                output_files,
                exit_code: 0,
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .map_err(|s| self.unavailable("UpdateActionResult", &s))?;
        Ok(())
    }

    async fn upload_missing(&self, blobs: Vec<Vec<u8>>) -> Result<(), RemoteError> {
        let digests: Vec<reapi::Digest> = blobs.iter().map(|b| sha256(b)).collect();
        let mut cas = ContentAddressableStorageClient::new(self.channel.clone());
        let missing = cas
            .find_missing_blobs(self.request(reapi::FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: digests.clone(),
                ..Default::default()
            }))
            .await
            .map_err(|s| self.unavailable("FindMissingBlobs", &s))?
            .into_inner()
            .missing_blob_digests;
        for (bytes, digest) in blobs.iter().zip(&digests) {
            if missing.iter().any(|m| m.hash == digest.hash) {
                self.write_blob(digest, bytes).await?;
            }
        }
        Ok(())
    }

    fn resource(&self, tail: String) -> String {
        match self.instance.is_empty() {
            true => tail,
            false => format!("{}/{tail}", self.instance),
        }
    }

    async fn write_blob(&self, digest: &reapi::Digest, bytes: &[u8]) -> Result<(), RemoteError> {
        let name = self.resource(format!(
            "uploads/{}/blobs/{}/{}",
            upload_id(digest),
            digest.hash,
            digest.size_bytes
        ));
        let mut requests = Vec::new();
        let mut offset = 0;
        loop {
            let end = (offset + CHUNK).min(bytes.len());
            requests.push(bytestream::WriteRequest {
                resource_name: if offset == 0 { name.clone() } else { String::new() },
                write_offset: offset as i64,
                finish_write: end == bytes.len(),
                data: bytes[offset..end].to_vec(),
            });
            offset = end;
            if offset == bytes.len() {
                break;
            }
        }
        let mut client = bytestream::byte_stream_client::ByteStreamClient::new(self.channel.clone());
        client
            .write(self.request(tokio_stream::iter(requests)))
            .await
            .map_err(|s| self.unavailable("ByteStream.Write", &s))?;
        Ok(())
    }

    /// A blob by SHA-256, checked against it; `None` when the server lacks
    /// it or sends something else.
    async fn read_blob(&self, digest: &reapi::Digest) -> Result<Option<Vec<u8>>, RemoteError> {
        let name = self.resource(format!("blobs/{}/{}", digest.hash, digest.size_bytes));
        let mut client = bytestream::byte_stream_client::ByteStreamClient::new(self.channel.clone());
        let mut stream = match client
            .read(self.request(bytestream::ReadRequest {
                resource_name: name,
                ..Default::default()
            }))
            .await
        {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(self.unavailable("ByteStream.Read", &s)),
        };
        let limit = u64::try_from(digest.size_bytes).unwrap_or(0);
        let mut bytes = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    bytes.extend_from_slice(&chunk.data);
                    if bytes.len() as u64 > limit {
                        return Ok(None);
                    }
                }
                Ok(None) => break,
                Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
                Err(s) => return Err(self.unavailable("ByteStream.Read", &s)),
            }
        }
        Ok((sha256(&bytes) == *digest).then_some(bytes))
    }
}

/// A name for one upload: unique enough for one process's uploads of one
/// blob (the server only needs it to tell concurrent uploads apart).
fn upload_id(digest: &reapi::Digest) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{}:{}:{n}", std::process::id(), digest.hash);
    let h = hex(&Sha256::digest(seed.as_bytes()));
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}
