//! A client of one Remote Execution API (REAPI v2) instance's blob
//! services: the CAS and ByteStream, with the instance name and bearer
//! token every call carries. Shared by the gRPC remote cache, the remote
//! executor and the worker; async, so each caller picks its runtime.
//!
//! Blobs are named by SHA-256 (the only digest function BuildGrid and most
//! servers accept); whatever reads a blob gets it checked against its
//! digest or not at all.

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::bytestream;
use reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use sha2::{Digest as _, Sha256};
use tonic::transport::Channel;

use crate::digest::hex;

/// ByteStream chunks: well under gRPC's 4 MiB message limit.
const CHUNK: usize = 1 << 20;
/// The payload of one batch call, with room for the message around it.
const BATCH: usize = 3 << 20;

/// A SHA-256 digest and size, as REAPI names a blob.
pub fn sha256(bytes: &[u8]) -> reapi::Digest {
    reapi::Digest {
        hash: hex(&Sha256::digest(bytes)),
        size_bytes: bytes.len() as i64,
    }
}

/// The SHA-256 digest of a file, read in pieces.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<reapi::Digest> {
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(reapi::Digest {
        hash: hex(&hasher.finalize()),
        size_bytes: size as i64,
    })
}

/// A failed call: which one, and the server's (or transport's) status.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {:?} {}", status.code(), status.message())]
pub struct CallError {
    pub call: &'static str,
    pub status: tonic::Status,
}

impl CallError {
    pub fn new(call: &'static str, status: tonic::Status) -> CallError {
        CallError { call, status }
    }

    /// Whether the server refused the caller rather than failed.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self.status.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        )
    }
}

/// The environment variable naming a PEM file of extra certificate
/// authorities for `grpcs://` servers (a team's own CA).
pub const CA_ENV: &str = "KFLOW_REMOTE_CA";

/// `grpc://host:port[/instance]` (or `grpcs://` for TLS), as users write a
/// REAPI endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub instance: String,
    pub tls: bool,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let url = url.trim();
        let (rest, tls) = match (url.strip_prefix("grpc://"), url.strip_prefix("grpcs://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(format!("`{url}` is not a grpc:// or grpcs://host:port[/instance] URL")),
        };
        let (host, instance) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        Ok(Endpoint {
            host: host.to_owned(),
            instance: instance.trim_end_matches('/').to_owned(),
            tls,
        })
    }

    /// Whether `url` names a REAPI endpoint (rather than an HTTP cache).
    pub fn is_grpc(url: &str) -> bool {
        let url = url.trim();
        url.starts_with("grpc://") || url.starts_with("grpcs://")
    }
}

/// One instance of a REAPI server: the channel, instance name and token.
#[derive(Clone)]
pub struct Cas {
    pub channel: Channel,
    pub instance: String,
    auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for Cas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("Cas")
            .field("instance", &self.instance)
            .field("token", &self.auth.is_some())
            .finish()
    }
}

impl Cas {
    /// A lazily connected channel; must be called inside a tokio runtime.
    /// An empty token counts as none.
    pub fn connect(endpoint: &Endpoint, token: Option<&str>) -> Result<Cas, String> {
        let auth = match token.map(str::trim) {
            None | Some("") => None,
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| "the token has characters that cannot be sent in a gRPC header".to_owned())?,
            ),
        };
        let scheme = if endpoint.tls { "https" } else { "http" };
        let mut channel = Channel::from_shared(format!("{scheme}://{}", endpoint.host))
            .map_err(|e| format!("{}: {e}", endpoint.host))?
            .connect_timeout(std::time::Duration::from_secs(10))
            .tcp_keepalive(Some(std::time::Duration::from_secs(30)));
        if endpoint.tls {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
            if let Some(path) = std::env::var_os(CA_ENV) {
                let pem = std::fs::read(&path)
                    .map_err(|e| format!("{CA_ENV}={}: {e}", std::path::Path::new(&path).display()))?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            channel = channel.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
        }
        let channel = channel.connect_lazy();
        Ok(Cas {
            channel,
            instance: endpoint.instance.clone(),
            auth,
        })
    }

    /// A call's request, with the token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(auth) = &self.auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request
    }

    /// A ByteStream resource name under the instance.
    fn resource(&self, tail: String) -> String {
        match self.instance.is_empty() {
            true => tail,
            false => format!("{}/{tail}", self.instance),
        }
    }

    /// The digests of `digests` the server lacks.
    pub async fn find_missing(&self, digests: Vec<reapi::Digest>) -> Result<Vec<reapi::Digest>, CallError> {
        let mut cas = ContentAddressableStorageClient::new(self.channel.clone());
        Ok(cas
            .find_missing_blobs(self.request(reapi::FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: digests,
                ..Default::default()
            }))
            .await
            .map_err(|s| CallError::new("FindMissingBlobs", s))?
            .into_inner()
            .missing_blob_digests)
    }

    /// Uploads the blobs the server lacks. Each is given with its digest.
    /// Small ones go together in BatchUpdateBlobs calls (one round trip
    /// instead of one per blob), the rest over ByteStream.
    pub async fn upload_missing(&self, blobs: &[(&reapi::Digest, &[u8])]) -> Result<(), CallError> {
        let missing = self
            .find_missing(blobs.iter().map(|(d, _)| (*d).clone()).collect())
            .await?;
        let mut sent = std::collections::BTreeSet::new();
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for (digest, bytes) in blobs {
            if !missing.iter().any(|m| m.hash == digest.hash) || !sent.insert(digest.hash.as_str()) {
                continue;
            }
            if bytes.len() > CHUNK {
                self.write_blob(digest, bytes).await?;
                continue;
            }
            if batch_bytes + bytes.len() > BATCH {
                self.write_batch(std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += bytes.len();
            batch.push(reapi::batch_update_blobs_request::Request {
                digest: Some((*digest).clone()),
                data: bytes.to_vec(),
                ..Default::default()
            });
        }
        if !batch.is_empty() {
            self.write_batch(batch).await?;
        }
        Ok(())
    }

    async fn write_batch(&self, requests: Vec<reapi::batch_update_blobs_request::Request>) -> Result<(), CallError> {
        let mut cas = ContentAddressableStorageClient::new(self.channel.clone());
        let responses = cas
            .batch_update_blobs(self.request(reapi::BatchUpdateBlobsRequest {
                instance_name: self.instance.clone(),
                requests,
                ..Default::default()
            }))
            .await
            .map_err(|s| CallError::new("BatchUpdateBlobs", s))?
            .into_inner()
            .responses;
        match responses.into_iter().find_map(|r| r.status.filter(|s| s.code != 0)) {
            Some(status) => Err(CallError::new(
                "BatchUpdateBlobs",
                tonic::Status::new(tonic::Code::from(status.code), status.message),
            )),
            None => Ok(()),
        }
    }

    /// Several blobs at once, each checked against its digest; a blob the
    /// server lacks or sends damaged is left out. Small ones come in
    /// BatchReadBlobs calls, the rest over ByteStream.
    pub async fn read_blobs(&self, digests: &[reapi::Digest]) -> Result<Vec<(reapi::Digest, Vec<u8>)>, CallError> {
        let size = |d: &reapi::Digest| usize::try_from(d.size_bytes).unwrap_or(usize::MAX);
        let (small, large): (Vec<&reapi::Digest>, Vec<&reapi::Digest>) = digests.iter().partition(|d| size(d) <= CHUNK);
        let mut out = Vec::new();
        let mut cas = ContentAddressableStorageClient::new(self.channel.clone());
        let mut rest = small.as_slice();
        while !rest.is_empty() {
            let mut n = 1;
            let mut bytes = size(rest[0]);
            while n < rest.len() && bytes + size(rest[n]) <= BATCH {
                bytes += size(rest[n]);
                n += 1;
            }
            let (now, later) = rest.split_at(n);
            rest = later;
            let responses = cas
                .batch_read_blobs(self.request(reapi::BatchReadBlobsRequest {
                    instance_name: self.instance.clone(),
                    digests: now.iter().map(|d| (*d).clone()).collect(),
                    ..Default::default()
                }))
                .await
                .map_err(|s| CallError::new("BatchReadBlobs", s))?
                .into_inner()
                .responses;
            for r in responses {
                let ok = r.status.as_ref().is_none_or(|s| s.code == 0);
                if let Some(digest) = r.digest.filter(|d| ok && sha256(&r.data) == *d) {
                    out.push((digest, r.data));
                }
            }
        }
        for digest in large {
            if let Some(bytes) = self.read_blob(digest).await? {
                out.push((digest.clone(), bytes));
            }
        }
        Ok(out)
    }

    /// Uploads one blob over ByteStream, in chunks.
    pub async fn write_blob(&self, digest: &reapi::Digest, bytes: &[u8]) -> Result<(), CallError> {
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
            .map_err(|s| CallError::new("ByteStream.Write", s))?;
        Ok(())
    }

    /// A blob by SHA-256, checked against it; `None` when the server lacks
    /// it or sends something else.
    pub async fn read_blob(&self, digest: &reapi::Digest) -> Result<Option<Vec<u8>>, CallError> {
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
            Err(s) => return Err(CallError::new("ByteStream.Read", s)),
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
                Err(s) => return Err(CallError::new("ByteStream.Read", s)),
            }
        }
        Ok((sha256(&bytes) == *digest).then_some(bytes))
    }

    /// A blob that must exist (a message another party says it wrote).
    pub async fn read_required(&self, digest: &reapi::Digest, what: &str) -> Result<Vec<u8>, CallError> {
        self.read_blob(digest).await?.ok_or_else(|| {
            CallError::new(
                "ByteStream.Read",
                tonic::Status::not_found(format!(
                    "{what} {}/{} is missing or damaged",
                    digest.hash, digest.size_bytes
                )),
            )
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_host_and_instance() {
        let e = Endpoint::parse("grpc://127.0.0.1:8980/main/").unwrap();
        assert_eq!((e.host.as_str(), e.instance.as_str()), ("127.0.0.1:8980", "main"));
        assert_eq!(Endpoint::parse("grpc://h:1").unwrap().instance, "");
        assert!(Endpoint::parse("grpcs://h:1/i").unwrap().tls);
        assert!(!Endpoint::parse("grpc://h:1").unwrap().tls);
        assert!(Endpoint::parse("http://h:1").unwrap_err().contains("grpcs://host:port"));
        assert!(Endpoint::parse("grpc:///x").unwrap_err().contains("no host"));
    }
}
