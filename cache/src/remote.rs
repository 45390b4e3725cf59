//! A client for a shared remote cache speaking the Bazel HTTP cache protocol
//! (`GET`/`PUT`/`HEAD` on `<url>/ac/<key>` and `<url>/cas/<digest>`), so nginx
//! with WebDAV or bazel-remote can serve as the CI cache.
//!
//! The remote side is never trusted: an action entry read from it is only
//! accepted once every blob it names is in the local store, and a blob enters
//! the local store only after its length and digest were checked. A server
//! that fails at the transport level switches the client off for the rest of
//! the process, so a dead server costs one timeout per build.

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ureq::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use ureq::http::{HeaderValue, Response, StatusCode, Uri};
use ureq::{Agent, Body, RequestBuilder, SendBody};

use crate::error::io_at;
use crate::store::{decode_entry, encode_entry};
use crate::{ActionEntry, BlobRef, Cache, CacheError, Digest};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Whole-request limit for action entries and existence checks.
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Blobs may be large: rather than a total limit, a transfer fails when it
/// makes no progress for this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Action entries are small JSON documents; anything bigger is not one of ours.
const ENTRY_LIMIT: u64 = 16 << 20;
const COPY_BUFFER: usize = 256 * 1024;

/// Why a remote cache operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server could not be used (transport error, timeout, 5xx); the
    /// remote cache is now off for this process.
    #[error("{0}")]
    Unavailable(String),
    /// The server answered but refused (401/403, or another 4xx on an upload).
    #[error("{0}")]
    Refused(String),
    /// Local store trouble while importing or uploading.
    #[error("remote cache: {0}")]
    Local(#[from] CacheError),
}

/// A remote cache over the Bazel HTTP protocol, shared by all worker
/// threads of a build.
pub struct HttpCache {
    agent: Agent,
    url: String,
    auth: Option<HeaderValue>,
    upload: bool,
    off: OffSwitch,
}

impl fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token stays out of logs.
        f.debug_struct("HttpCache")
            .field("url", &self.url)
            .field("token", &self.auth.is_some())
            .field("upload", &self.upload)
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

/// A remote cache's health, shared by every client kind: the first failure
/// to reach the server switches the remote off for the rest of the process,
/// so a dead server costs one timeout per build.
#[derive(Debug, Default)]
pub(crate) struct OffSwitch {
    off: AtomicBool,
}

impl OffSwitch {
    pub(crate) fn is_on(&self) -> bool {
        !self.off.load(Ordering::Acquire)
    }

    /// Turns the first transport failure into the error the caller reports,
    /// and every later one (from other threads racing it) into a quiet skip.
    pub(crate) fn settle<T: Default>(&self, result: Result<T, RemoteError>) -> Result<T, RemoteError> {
        match result {
            Err(RemoteError::Unavailable(msg)) => {
                if self.off.swap(true, Ordering::AcqRel) {
                    Ok(T::default())
                } else {
                    Err(RemoteError::Unavailable(msg))
                }
            }
            other => other,
        }
    }
}

/// What a status code says about the thing asked for.
enum Found {
    Yes,
    No,
}

impl HttpCache {
    /// `url` is http:// or https:// (trailing slash allowed); anything else is
    /// an error naming the URL. `token` is sent as `Authorization: Bearer
    /// <token>`; an empty token counts as none. `upload` says whether
    /// [`HttpCache::store_action`] may write.
    pub fn new(url: &str, token: Option<String>, upload: bool) -> Result<HttpCache, CacheError> {
        let base = url.trim().trim_end_matches('/');
        let bad = |why: String| CacheError::RemoteConfig(format!("`{url}` {why}"));
        let lower = base.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix("http://").or_else(|| lower.strip_prefix("https://")) else {
            return Err(bad(
                "is not an http:// or https:// URL; give the remote cache as http://host[:port][/path]".into(),
            ));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("has no host name".into()));
        }
        if base.contains(['?', '#']) {
            return Err(bad(
                "has a query or fragment; give the base URL the cache lives under".into()
            ));
        }
        // Everything the client will ask for must parse, so check one such URL now.
        let probe = format!("{base}/cas/{}", Digest([0; 32]).to_hex());
        probe
            .parse::<Uri>()
            .map_err(|e| bad(format!("is not a valid URL ({e})")))?;

        let auth = match token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    CacheError::RemoteConfig(
                        "the remote cache token has characters that cannot be sent in an HTTP header \
                         (a line break?); check the token environment variable"
                            .into(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };

        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(IDLE_TIMEOUT))
            .timeout_per_write(Some(IDLE_TIMEOUT))
            .user_agent(concat!("kflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(HttpCache {
            agent,
            url: base.to_string(),
            auth,
            upload,
            off: OffSwitch::default(),
        })
    }

    /// The base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// False once the server has failed at the transport level (connection
    /// refused, timeout, 5xx): from then on every call returns at once without
    /// network traffic. The failure that tripped it was returned once as
    /// [`RemoteError::Unavailable`].
    pub fn is_healthy(&self) -> bool {
        self.off.is_on()
    }

    /// Looks `key` up. A miss (no entry, an entry naming a blob the server
    /// lacks, a blob that fails verification) is `Ok(None)`. On a hit every
    /// blob is in `local`, verified, and the entry is in its action cache.
    pub fn fetch_action(&self, key: &Digest, local: &Cache) -> Result<Option<ActionEntry>, RemoteError> {
        if !self.is_healthy() {
            return Ok(None);
        }
        self.off.settle(self.fetch(key, local))
    }

    /// Uploads an action result: the blobs the server lacks, then the entry.
    /// Does nothing when uploads are off.
    pub fn store_action(&self, key: &Digest, entry: &ActionEntry, local: &Cache) -> Result<(), RemoteError> {
        if !self.upload || !self.is_healthy() {
            return Ok(());
        }
        self.off.settle(self.store(key, entry, local))
    }

    fn fetch(&self, key: &Digest, local: &Cache) -> Result<Option<ActionEntry>, RemoteError> {
        let Some(raw) = self.get_entry(&format!("ac/{}", key.to_hex()))? else {
            return Ok(None);
        };
        let Some(entry) = decode_entry(&raw) else {
            return Ok(None);
        };
        let mut seen = HashSet::new();
        let wanted: Vec<&BlobRef> = entry
            .blobs
            .values()
            .filter(|b| seen.insert(b.digest) && !local.has_blob(b))
            .collect();
        if !wanted.is_empty() {
            // Removed, with any half-downloaded blob, when this returns.
            let scratch = local.scratch_dir("remote")?;
            for blob in wanted {
                if !self.is_healthy() || !self.download(blob, scratch.path(), local)? {
                    return Ok(None);
                }
            }
        }
        match local.put_action(key, &entry) {
            Ok(()) => Ok(Some(entry)),
            // A blob went away locally in between: just a miss.
            Err(CacheError::MissingBlob { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn store(&self, key: &Digest, entry: &ActionEntry, local: &Cache) -> Result<(), RemoteError> {
        let mut seen = HashSet::new();
        for blob in entry.blobs.values() {
            if !seen.insert(blob.digest) {
                continue;
            }
            if !self.is_healthy() {
                return Ok(());
            }
            let path = format!("cas/{}", blob.digest.to_hex());
            if !self.server_has(&path, blob.size)? {
                self.upload_blob(&path, blob, local)?;
            }
        }
        if !self.is_healthy() {
            return Ok(());
        }
        let raw = encode_entry(entry)
            .map_err(|e| CacheError::Index(format!("cannot encode the action entry for {key}: {e}")))?;
        let path = format!("ac/{}", key.to_hex());
        let what = format!("PUT {path}");
        let response = self
            .small(self.authorized(self.agent.put(self.full(&path))))
            .header(CONTENT_TYPE, "application/json")
            .send(&raw[..])
            .map_err(|e| self.transport(&what, &e))?;
        self.check_upload(&response, &what)
    }

    /// GET of an action entry: `None` when the server has none.
    fn get_entry(&self, path: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let what = format!("GET {path}");
        let mut response = self
            .small(self.authorized(self.agent.get(self.full(path))))
            .call()
            .map_err(|e| self.transport(&what, &e))?;
        if let Found::No = self.check_lookup(&response, &what)? {
            return Ok(None);
        }
        match response.body_mut().with_config().limit(ENTRY_LIMIT).read_to_vec() {
            Ok(raw) => Ok(Some(raw)),
            Err(ureq::Error::BodyExceedsLimit(_)) => Ok(None),
            Err(e) => Err(self.transport(&what, &e)),
        }
    }

    /// HEAD of a blob; one of the wrong length, or of a length the server
    /// does not say, counts as absent, so the upload replaces it.
    fn server_has(&self, path: &str, size: u64) -> Result<bool, RemoteError> {
        let what = format!("HEAD {path}");
        let response = self
            .small(self.authorized(self.agent.head(self.full(path))))
            .call()
            .map_err(|e| self.transport(&what, &e))?;
        if let Found::No = self.check_lookup(&response, &what)? {
            return Ok(false);
        }
        let length = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        Ok(length == Some(size))
    }

    /// Downloads one blob into `dir`, verifies it and moves it into the local
    /// store. False when the server lacks it or sends something else.
    fn download(&self, blob: &BlobRef, dir: &Path, local: &Cache) -> Result<bool, RemoteError> {
        let hex = blob.digest.to_hex();
        let path = format!("cas/{hex}");
        let what = format!("GET {path}");
        let mut response = self
            .authorized(self.agent.get(self.full(&path)))
            .call()
            .map_err(|e| self.transport(&what, &e))?;
        if let Found::No = self.check_lookup(&response, &what)? {
            return Ok(false);
        }
        if response.body().content_length().is_some_and(|n| n != blob.size) {
            return Ok(false);
        }

        let temp = dir.join(&hex);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io_at(&temp))?;
        let mut body = response.body_mut().as_reader();
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut len = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.transport_io(&what, &e)),
            };
            len += n as u64;
            if len > blob.size {
                return Ok(false);
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(io_at(&temp))?;
        }
        if len != blob.size || Digest::from(hasher.finalize()) != blob.digest {
            return Ok(false);
        }
        drop(file);
        // put_file hashes what it moves into the store, so what lands there
        // is what was verified, whatever happened to the file in between.
        let stored = local.put_file(&temp)?;
        Ok(stored == *blob)
    }

    fn upload_blob(&self, path: &str, blob: &BlobRef, local: &Cache) -> Result<(), RemoteError> {
        let what = format!("PUT {path}");
        let src = local.blob_path(&blob.digest);
        let file = File::open(&src).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => CacheError::BlobMissing(blob.digest),
            _ => CacheError::io(&src, e),
        })?;
        let length = file.metadata().map_err(io_at(&src))?.len();
        if length != blob.size {
            return Err(CacheError::BlobDamaged(blob.digest).into());
        }
        let mut reader = VerifyingReader::new(file, *blob, src);
        let result = self
            .authorized(self.agent.put(self.full(path)))
            .header(CONTENT_LENGTH, HeaderValue::from(blob.size))
            .header(CONTENT_TYPE, "application/octet-stream")
            .send(SendBody::from_reader(&mut reader));
        // A local problem aborts the request before its last byte, so the
        // server never gets a complete body for the digest; report it as ours.
        if let Some(e) = reader.failure.take() {
            return Err(e.into());
        }
        let response = result.map_err(|e| self.transport(&what, &e))?;
        self.check_upload(&response, &what)
    }

    fn full(&self, path: &str) -> String {
        format!("{}/{path}", self.url)
    }

    fn authorized<B>(&self, request: RequestBuilder<B>) -> RequestBuilder<B> {
        match &self.auth {
            Some(value) => request.header(AUTHORIZATION, value.clone()),
            None => request,
        }
    }

    /// Small requests get a total time limit on top of the agent's ones.
    fn small<B>(&self, request: RequestBuilder<B>) -> RequestBuilder<B> {
        request.config().timeout_global(Some(SMALL_REQUEST_TIMEOUT)).build()
    }

    fn check_lookup(&self, response: &Response<Body>, what: &str) -> Result<Found, RemoteError> {
        let status = response.status();
        if status.is_success() {
            return Ok(Found::Yes);
        }
        self.check_refused(status, what)?;
        // Any other answer (404, or a 4xx from a server that does not know
        // the object) is a miss.
        Ok(Found::No)
    }

    fn check_upload(&self, response: &Response<Body>, what: &str) -> Result<(), RemoteError> {
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        self.check_refused(status, what)?;
        let hint = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "raise the server's upload size limit (nginx: client_max_body_size)"
        } else {
            "check that the server accepts uploads (nginx: `dav_methods PUT; create_full_put_path on;`), \
             or turn uploads off with --no-remote-upload"
        };
        Err(RemoteError::Refused(format!(
            "remote cache {} refused {what} ({}); {hint}",
            self.url,
            status_text(status)
        )))
    }

    /// The answers every request treats alike: 401/403 and 5xx.
    fn check_refused(&self, status: StatusCode, what: &str) -> Result<(), RemoteError> {
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let hint = if self.auth.is_some() {
                "the server did not accept the bearer token; check the remote cache token environment variable"
            } else {
                "the server wants a bearer token; set the remote cache token environment variable"
            };
            return Err(RemoteError::Refused(format!(
                "remote cache {} refused {what} ({}): {hint}",
                self.url,
                status_text(status)
            )));
        }
        if status.is_server_error() {
            return Err(RemoteError::Unavailable(format!(
                "remote cache {} failed ({what}: {}); continuing with the local cache only",
                self.url,
                status_text(status)
            )));
        }
        Ok(())
    }

    fn transport(&self, what: &str, e: &ureq::Error) -> RemoteError {
        let reason = match e {
            ureq::Error::Io(io) => io_reason(io),
            ureq::Error::Timeout(_) => format!("timed out: {e}"),
            ureq::Error::HostNotFound => "host not found".to_string(),
            ureq::Error::ConnectionFailed => "connection failed".to_string(),
            _ => e.to_string(),
        };
        self.unreachable(what, &reason)
    }

    fn transport_io(&self, what: &str, e: &io::Error) -> RemoteError {
        self.unreachable(what, &io_reason(e))
    }

    fn unreachable(&self, what: &str, reason: &str) -> RemoteError {
        RemoteError::Unavailable(format!(
            "remote cache {} unreachable ({reason}, during {what}); continuing with the local cache only",
            self.url
        ))
    }
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::TimedOut => "timed out".to_string(),
        _ => e.to_string(),
    }
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Reads a blob file for upload, checking as it goes that it still has the
/// content its digest names. The check happens before the last bytes are
/// handed out, so a damaged blob never reaches the server complete.
struct VerifyingReader {
    file: File,
    blob: BlobRef,
    path: PathBuf,
    hasher: blake3::Hasher,
    len: u64,
    failure: Option<CacheError>,
}

impl VerifyingReader {
    fn new(file: File, blob: BlobRef, path: PathBuf) -> Self {
        VerifyingReader {
            file,
            blob,
            path,
            hasher: blake3::Hasher::new(),
            len: 0,
            failure: None,
        }
    }

    fn fail(&mut self, e: CacheError) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.failure = Some(e);
        err
    }
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failure.is_some() {
            return Err(io::Error::other("the blob could not be read"));
        }
        let n = match self.file.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let e = CacheError::io(&self.path, e);
                return Err(self.fail(e));
            }
        };
        self.len += n as u64;
        let end = self.len >= self.blob.size;
        if self.len > self.blob.size || (n == 0 && !end) {
            return Err(self.fail(CacheError::BlobDamaged(self.blob.digest)));
        }
        self.hasher.update(&buf[..n]);
        if end && Digest::from(self.hasher.finalize()) != self.blob.digest {
            return Err(self.fail(CacheError::BlobDamaged(self.blob.digest)));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs::{self, Permissions};
    use std::net::TcpListener;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::Instant;

    use super::*;
    use crate::store::tests::{entry_of, new_cache};

    type Store = Arc<Mutex<HashMap<String, Vec<u8>>>>;

    /// A Bazel-style HTTP cache in memory: GET/PUT/HEAD on /ac/ and /cas/.
    struct TestServer {
        server: Arc<tiny_http::Server>,
        thread: Option<JoinHandle<()>>,
        url: String,
        store: Store,
        /// "METHOD /path" of every request, and whether a PUT carried a Content-Length.
        log: Arc<Mutex<Vec<(String, bool)>>>,
        /// Status to answer everything with, instead of serving.
        fail_with: Arc<Mutex<Option<u16>>>,
        /// Answer a HEAD that finds its key without a Content-Length.
        head_without_length: Arc<std::sync::atomic::AtomicBool>,
    }

    impl TestServer {
        fn start(token: Option<&str>) -> TestServer {
            let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
            let port = server.server_addr().to_ip().unwrap().port();
            let store: Store = Arc::default();
            let log: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
            let fail_with: Arc<Mutex<Option<u16>>> = Arc::default();
            let head_without_length: Arc<std::sync::atomic::AtomicBool> = Arc::default();
            let expected_auth = token.map(|t| format!("Bearer {t}"));
            let thread = {
                let (server, store, log, fail_with, head_without_length) = (
                    server.clone(),
                    store.clone(),
                    log.clone(),
                    fail_with.clone(),
                    head_without_length.clone(),
                );
                std::thread::spawn(move || {
                    for mut request in server.incoming_requests() {
                        let method = request.method().clone();
                        let url = request.url().to_string();
                        log.lock()
                            .unwrap()
                            .push((format!("{method} {url}"), request.body_length().is_some()));
                        let respond = |request: tiny_http::Request, code: u16| {
                            let _ = request.respond(tiny_http::Response::empty(code));
                        };
                        if let Some(code) = *fail_with.lock().unwrap() {
                            respond(request, code);
                            continue;
                        }
                        if let Some(expected) = &expected_auth {
                            let ok = request
                                .headers()
                                .iter()
                                .any(|h| h.field.equiv("Authorization") && h.value.as_str() == expected);
                            if !ok {
                                respond(request, 401);
                                continue;
                            }
                        }
                        let key = url.trim_start_matches('/').to_string();
                        if !key.starts_with("ac/") && !key.starts_with("cas/") {
                            respond(request, 400);
                            continue;
                        }
                        match method {
                            tiny_http::Method::Get | tiny_http::Method::Head => {
                                let found = store.lock().unwrap().get(&key).cloned();
                                let unsized_head = method == tiny_http::Method::Head
                                    && head_without_length.load(std::sync::atomic::Ordering::SeqCst);
                                match found {
                                    Some(bytes) if unsized_head => {
                                        let response =
                                            tiny_http::Response::new(200.into(), Vec::new(), &bytes[..], None, None);
                                        let _ = request.respond(response);
                                    }
                                    Some(bytes) => {
                                        let _ = request.respond(tiny_http::Response::from_data(bytes));
                                    }
                                    None => respond(request, 404),
                                }
                            }
                            tiny_http::Method::Put => {
                                let mut body = Vec::new();
                                request.as_reader().read_to_end(&mut body).unwrap();
                                store.lock().unwrap().insert(key, body);
                                respond(request, 201);
                            }
                            _ => respond(request, 405),
                        }
                    }
                })
            };
            TestServer {
                server,
                thread: Some(thread),
                url: format!("http://127.0.0.1:{port}/"),
                store,
                log,
                fail_with,
                head_without_length,
            }
        }

        fn requests(&self) -> Vec<String> {
            self.log.lock().unwrap().iter().map(|(r, _)| r.clone()).collect()
        }

        fn clear_log(&self) {
            self.log.lock().unwrap().clear();
        }

        fn keys(&self) -> Vec<String> {
            let mut keys: Vec<String> = self.store.lock().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.server.unblock();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn tmp_is_empty(cache: &Cache) -> bool {
        cache.temporaries() == 0
    }

    /// An action with two outputs in `cache`, under a key derived from `name`.
    fn action(cache: &Cache, name: &str) -> (Digest, ActionEntry) {
        let a = cache.put_bytes(format!("{name}: first output").as_bytes()).unwrap();
        let b = cache.put_bytes(format!("{name}: the log").as_bytes()).unwrap();
        let entry = entry_of(&[("out/a", a), ("log", b)]);
        let key = Digest::of_bytes(name.as_bytes());
        cache.put_action(&key, &entry).unwrap();
        (key, entry)
    }

    #[test]
    fn remote_cache_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<HttpCache>();
    }

    #[test]
    fn new_checks_the_url() {
        let remote = HttpCache::new("http://cache.example:8080/kflow/", None, true).unwrap();
        assert_eq!(remote.url(), "http://cache.example:8080/kflow");
        assert!(HttpCache::new("HTTPS://cache.example", Some("t".into()), false).is_ok());
        for bad in [
            "ftp://cache.example",
            "cache.example:8080",
            "",
            "http://",
            "http:///x",
            "http://h/?q=1",
        ] {
            let err = HttpCache::new(bad, None, true).unwrap_err();
            assert!(matches!(err, CacheError::RemoteConfig(_)), "{bad}: {err}");
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        let err = HttpCache::new("http://h", Some("abc\ndef".into()), true).unwrap_err();
        assert!(!err.to_string().contains("abc"), "the token is not shown: {err}");
    }

    #[test]
    fn round_trip_between_two_local_caches() {
        let server = TestServer::start(None);
        let remote = HttpCache::new(&server.url, None, true).unwrap();
        let (_d1, first) = new_cache();
        let (key, entry) = action(&first, "train");
        remote.store_action(&key, &entry, &first).unwrap();
        assert_eq!(server.keys().len(), 3, "two blobs and the entry: {:?}", server.keys());
        let log = server.log.lock().unwrap().clone();
        assert!(
            log.iter()
                .filter(|(r, _)| r.starts_with("PUT /cas/"))
                .all(|(_, cl)| *cl),
            "blob uploads carry a Content-Length: {log:?}"
        );

        // Storing again only checks that the blobs are there.
        server.clear_log();
        remote.store_action(&key, &entry, &first).unwrap();
        assert!(
            !server.requests().iter().any(|r| r.starts_with("PUT /cas/")),
            "{:?}",
            server.requests()
        );

        let (_d2, second) = new_cache();
        assert_eq!(second.get_action(&key).unwrap(), None);
        let fetched = remote.fetch_action(&key, &second).unwrap();
        assert_eq!(fetched.as_ref(), Some(&entry));
        for blob in entry.blobs.values() {
            assert_eq!(second.read_blob(blob).unwrap(), first.read_blob(blob).unwrap());
        }
        assert_eq!(second.get_action(&key).unwrap(), Some(entry.clone()));
        assert!(tmp_is_empty(&second));

        // With the blobs local, a second fetch downloads only the entry.
        server.clear_log();
        assert_eq!(remote.fetch_action(&key, &second).unwrap(), Some(entry));
        assert_eq!(server.requests(), vec![format!("GET /ac/{}", key.to_hex())]);
        assert!(remote.is_healthy());
    }

    #[test]
    fn a_large_blob_is_streamed_both_ways() {
        let server = TestServer::start(None);
        let remote = HttpCache::new(&server.url, None, true).unwrap();
        let (_d1, first) = new_cache();
        // Above ureq's default 10 MB body limit.
        let data: Vec<u8> = (0..11_000_000u32).map(|i| (i % 253) as u8).collect();
        let blob = first.put_bytes(&data).unwrap();
        let entry = entry_of(&[("weights", blob)]);
        let key = Digest::of_bytes(b"big");
        first.put_action(&key, &entry).unwrap();
        remote.store_action(&key, &entry, &first).unwrap();

        let (_d2, second) = new_cache();
        assert_eq!(remote.fetch_action(&key, &second).unwrap(), Some(entry));
        assert!(second.has_blob(&blob));
        assert_eq!(second.read_blob(&blob).unwrap().len(), data.len());
    }

    #[test]
    fn unknown_key_is_a_miss() {
        let server = TestServer::start(None);
        let remote = HttpCache::new(&server.url, None, true).unwrap();
        let (_d, local) = new_cache();
        let key = Digest::of_bytes(b"never stored");
        assert_eq!(remote.fetch_action(&key, &local).unwrap(), None);
        assert_eq!(local.get_action(&key).unwrap(), None);
        assert!(remote.is_healthy());
    }

    #[test]
    fn undecodable_entry_is_a_miss() {
        let server = TestServer::start(None);
        let remote = HttpCache::new(&server.url, None, true).unwrap();
        let (_d, local) = new_cache();
        let key = Digest::of_bytes(b"k");
        let path = format!("ac/{}", key.to_hex());
        for body in [&b"not json"[..], br#"{"v":2,"entry":{"blobs":{}}}"#] {
            server.store.lock().unwrap().insert(path.clone(), body.to_vec());
            assert_eq!(remote.fetch_action(&key, &local).unwrap(), None);
        }
    }

    #[test]
    fn tampered_blob_is_a_miss_and_never_enters_the_store() {
        let server = TestServer::start(None);
        let remote = HttpCache::new(&server.url, None, true).unwrap();
        let (_d1, first) = new_cache();
        let (key, entry) = action(&first, "quantize");
        remote.store_action(&key, &entry, &first).unwrap();

        let log = entry.blobs["log"];
        let cas_key = format!("cas/{}", log.digest.to_hex());
        {
            let mut store = server.store.lock().unwrap();
            let bytes = store.get_mut(&cas_key).unwrap();
            bytes[0] ^= 1; // same length, other content
        }
        let (_d2, second) = new_cache();
        assert_eq!(remote.fetch_action(&key, &second).unwrap(), None);
        assert!(!second.has_blob(&log));
        assert!(!second.blob_path(&log.digest).exists());
        assert_eq!(second.get_action(&key).unwrap(), None);
        assert!(tmp_is_empty(&second));

        // Longer and shorter bodies are refused as well.
        for bytes in [b"x".repeat(log.size as usize + 5), b"x".to_vec()] {
            server.store.lock().unwrap().insert(cas_key.clone(), bytes);
            assert_eq!(remote.fetch_action(&key, &second).unwrap(), None);
            assert!(!second.blob_path(&log.digest).exists());
        }
        assert!(remote.is_healthy(), "bad content is a miss, not a dead server");
    }

    #[test]
    fn entry_whose_blob_is_gone_from_the_server_is_a_miss() {
        let server = TestServer::start(None);
        let remote = HttpCache::new(&server.url, None, true).unwrap();
        let (_d1, first) = new_cache();
        let (key, entry) = action(&first, "prune");
        remote.store_action(&key, &entry, &first).unwrap();
        let gone = entry.blobs["out/a"];
        server
            .store
            .lock()
            .unwrap()
            .remove(&format!("cas/{}", gone.digest.to_hex()));

        let (_d2, second) = new_cache();
        assert_eq!(remote.fetch_action(&key, &second).unwrap(), None);
        assert_eq!(second.get_action(&key).unwrap(), None);
        assert!(!second.has_blob(&gone));
        assert!(tmp_is_empty(&second));
    }

    #[test]
    fn a_blob_whose_length_the_server_does_not_say_is_uploaded() {
        let server = TestServer::start(None);
        let remote = HttpCache::new(&server.url, None, true).unwrap();
        let (_d, cache) = new_cache();
        let (key, entry) = action(&cache, "train");
        // A damaged copy on the server, and a HEAD that hides its length.
        let blob = entry.blobs.values().next().unwrap();
        server
            .store
            .lock()
            .unwrap()
            .insert(format!("cas/{}", blob.digest.to_hex()), b"x".to_vec());
        server
            .head_without_length
            .store(true, std::sync::atomic::Ordering::SeqCst);
        remote.store_action(&key, &entry, &cache).unwrap();
        let stored = server.store.lock().unwrap()[&format!("cas/{}", blob.digest.to_hex())].clone();
        assert_eq!(stored, cache.read_blob(blob).unwrap(), "{:?}", server.requests());
    }

    #[test]
    fn upload_off_writes_nothing() {
        let server = TestServer::start(None);
        let remote = HttpCache::new(&server.url, None, false).unwrap();
        let (_d, local) = new_cache();
        let (key, entry) = action(&local, "check");
        remote.store_action(&key, &entry, &local).unwrap();
        assert!(server.keys().is_empty());
        assert!(server.requests().is_empty(), "{:?}", server.requests());
        // Reading still works.
        assert_eq!(remote.fetch_action(&key, &local).unwrap(), None);
    }

    #[test]
    fn damaged_local_blob_is_not_uploaded() {
        let server = TestServer::start(None);
        let remote = HttpCache::new(&server.url, None, true).unwrap();
        let (_d, local) = new_cache();
        let (key, entry) = action(&local, "dataset");
        let blob = entry.blobs["out/a"];
        let path = local.blob_path(&blob.digest);
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();

        let err = remote.store_action(&key, &entry, &local).unwrap_err();
        assert!(
            matches!(err, RemoteError::Local(CacheError::BlobDamaged(d)) if d == blob.digest),
            "{err}"
        );
        assert!(err.to_string().contains("kflow cache verify"), "{err}");
        let keys = server.keys();
        assert!(!keys.contains(&format!("cas/{}", blob.digest.to_hex())), "{keys:?}");
        assert!(!keys.iter().any(|k| k.starts_with("ac/")), "{keys:?}");
        assert!(remote.is_healthy(), "local damage does not switch the remote off");
    }

    #[test]
    fn dead_server_is_reported_once_then_skipped() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let remote = HttpCache::new(&url, None, true).unwrap();
        let (_d, local) = new_cache();
        let (key, entry) = action(&local, "generate");

        let err = remote.fetch_action(&key, &local).unwrap_err();
        let RemoteError::Unavailable(msg) = &err else {
            panic!("expected Unavailable, got {err:?}");
        };
        assert!(msg.contains(&url) && msg.contains("connection refused"), "{msg}");
        assert!(msg.contains("continuing with the local cache only"), "{msg}");
        assert!(!remote.is_healthy());

        let start = Instant::now();
        assert_eq!(remote.fetch_action(&key, &local).unwrap(), None);
        remote.store_action(&key, &entry, &local).unwrap();
        assert!(start.elapsed() < Duration::from_millis(20), "{:?}", start.elapsed());
    }

    #[test]
    fn concurrent_failures_are_reported_once() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let remote = HttpCache::new(&format!("http://127.0.0.1:{port}"), None, true).unwrap();
        let (_d, local) = new_cache();
        let key = Digest::of_bytes(b"k");
        let errors = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| remote.fetch_action(&key, &local))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|r| r.is_err())
                .count()
        });
        assert_eq!(errors, 1);
    }

    #[test]
    fn server_error_switches_the_remote_off() {
        let server = TestServer::start(None);
        *server.fail_with.lock().unwrap() = Some(503);
        let remote = HttpCache::new(&server.url, None, true).unwrap();
        let (_d, local) = new_cache();
        let (key, entry) = action(&local, "synthesize");
        let err = remote.store_action(&key, &entry, &local).unwrap_err();
        assert!(
            matches!(&err, RemoteError::Unavailable(m) if m.contains("503")),
            "{err}"
        );
        server.clear_log();
        assert_eq!(remote.fetch_action(&key, &local).unwrap(), None);
        remote.store_action(&key, &entry, &local).unwrap();
        assert!(server.requests().is_empty(), "{:?}", server.requests());
    }

    #[test]
    fn rejected_upload_is_refused_with_a_hint() {
        let server = TestServer::start(None);
        let remote = HttpCache::new(&server.url, None, true).unwrap();
        let (_d, local) = new_cache();
        let (key, entry) = action(&local, "space");
        *server.fail_with.lock().unwrap() = Some(405);
        let err = remote.store_action(&key, &entry, &local).unwrap_err();
        assert!(
            matches!(&err, RemoteError::Refused(m) if m.contains("405") && m.contains("dav_methods")),
            "{err}"
        );
        assert!(remote.is_healthy());
    }

    #[test]
    fn bearer_token_is_sent_and_a_wrong_one_is_refused() {
        let server = TestServer::start(Some("s3cret"));
        let (_d1, first) = new_cache();
        let (key, entry) = action(&first, "evaluate");

        for token in [None, Some("wrong".to_string())] {
            let remote = HttpCache::new(&server.url, token.clone(), true).unwrap();
            let err = remote.store_action(&key, &entry, &first).unwrap_err();
            let RemoteError::Refused(msg) = &err else {
                panic!("expected Refused, got {err:?}");
            };
            assert!(msg.contains("401") && msg.contains("token"), "{msg}");
            assert!(!msg.contains("wrong"), "the token is not shown: {msg}");
            let err = remote.fetch_action(&key, &first).unwrap_err();
            assert!(matches!(err, RemoteError::Refused(_)), "{err}");
            assert!(remote.is_healthy(), "a refusal does not switch the remote off");
        }
        assert!(server.keys().is_empty());

        let remote = HttpCache::new(&server.url, Some("s3cret".into()), true).unwrap();
        remote.store_action(&key, &entry, &first).unwrap();
        let (_d2, second) = new_cache();
        assert_eq!(remote.fetch_action(&key, &second).unwrap(), Some(entry));
        assert!(!format!("{remote:?}").contains("s3cret"));
    }
    /// A server that answers each request with the right response (from
    /// `store`), damaged by the next of `edits`, then closes the connection.
    fn damaging_server(store: HashMap<String, Vec<u8>>, edits: Vec<Vec<(usize, u8, u8)>>) -> (String, JoinHandle<()>) {
        use std::io::{BufRead, BufReader, Write as _};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let thread = std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    head.push_str(&line);
                    line.clear();
                }
                let mut words = head.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                if method == "QUIT" {
                    return;
                }
                let found = store.get(path.trim_start_matches('/'));
                let mut response = match found {
                    Some(body) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        if method != "HEAD" {
                            r.extend_from_slice(body);
                        }
                        r
                    }
                    None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                };
                for &(at, kind, byte) in edits.get(n % edits.len().max(1)).into_iter().flatten() {
                    if response.is_empty() {
                        break;
                    }
                    let at = at % response.len();
                    match kind % 4 {
                        0 => response[at] ^= 1 << (byte % 8),
                        1 => response[at] = byte,
                        2 => response.truncate(at),
                        _ => response.insert(at, byte),
                    }
                }
                let _ = stream.write_all(&response);
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        (url, thread)
    }

    /// Damaged responses to every request of a lookup: the client never
    /// panics, and whatever it returns as a hit is in the local store,
    /// verified.
    #[test]
    fn damaged_responses_are_misses_or_errors_never_unverified_hits() {
        use proptest::prelude::*;
        let (_d, origin) = new_cache();
        let (key, entry) = action(&origin, "train");
        let mut store: HashMap<String, Vec<u8>> = HashMap::new();
        store.insert(
            format!("ac/{}", key.to_hex()),
            crate::store::encode_entry(&entry).unwrap(),
        );
        for blob in entry.blobs.values() {
            store.insert(format!("cas/{}", blob.digest.to_hex()), origin.read_blob(blob).unwrap());
        }
        let cases = std::env::var("KFLOW_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(256)
            / 4;
        let config = proptest::test_runner::Config {
            cases: cases.max(16),
            failure_persistence: None,
            ..Default::default()
        };
        let edits = prop::collection::vec(
            prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..4),
            1..5,
        );
        let (hits, misses) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        proptest::test_runner::TestRunner::new(config)
            .run(&edits, |edits| {
                let (url, server) = damaging_server(store.clone(), edits);
                let remote = HttpCache::new(&url, None, false).unwrap();
                let (_d, local) = new_cache();
                let fetched = remote.fetch_action(&key, &local);
                let _ = std::net::TcpStream::connect(url.trim_start_matches("http://").trim_end_matches('/'))
                    .and_then(|mut s| std::io::Write::write_all(&mut s, b"QUIT / HTTP/1.1\r\n\r\n"));
                let _ = server.join();
                if let Ok(Some(got)) = fetched {
                    for blob in got.blobs.values() {
                        prop_assert!(local.read_blob(blob).is_ok(), "an unverified blob: {got:?}");
                    }
                    prop_assert_eq!(local.get_action(&key).unwrap(), Some(got));
                    hits.set(hits.get() + 1);
                } else {
                    misses.set(misses.get() + 1);
                }
                Ok(())
            })
            .unwrap();
        let (hits, misses) = (hits.get(), misses.get());
        assert!(hits > 0 && misses > 0, "{hits} hits, {misses} misses");
    }
}
