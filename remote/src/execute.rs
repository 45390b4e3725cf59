//! The engine's executor on a REAPI Execution service
//! (`--remote-executor grpc://host:port[/instance]`).
//!
//! An [`ExecRequest`] becomes a REAPI `Action`: its input root holds the
//! request's files and, as `kflow` (executable), this very kflow binary, so
//! a worker runs exactly the code whose fingerprint the action's key
//! holds; its `Command` is `./kflow <arguments>` with the request's output
//! directory declared. Everything sent is named by SHA-256; the kflow
//! store keeps its blake3 names, and every file that comes back is checked
//! against the SHA-256 the result names before it enters the store.
//!
//! The server's action cache may answer an Execute from an earlier
//! identical run (same binary, same spec, same inputs), which is correct
//! because that run was deterministic.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::longrunning::operation;
use kflow_cache::cas::{CallError, Cas, Endpoint, sha256};
use kflow_cache::{BlobRef, Cache, Digest};
use kflow_engine::{ExecError, ExecRequest, Executor};
use prost::Message as _;
use reapi::execution_client::ExecutionClient;

use crate::tree::{self, InputTree};

/// The name of the kflow binary in every input root.
const TOOL: &str = "kflow";

/// A REAPI Execution service, used from the build's threads.
pub struct RemoteExecutor {
    runtime: tokio::runtime::Runtime,
    cas: Cas,
    url: String,
    tool: PathBuf,
    /// The binary's digest, computed on first use.
    tool_digest: tokio::sync::OnceCell<reapi::Digest>,
    /// The binary is in the server's CAS (checked once per process).
    tool_uploaded: tokio::sync::OnceCell<()>,
    /// SHA-256 of store blobs already hashed.
    sha: Mutex<HashMap<Digest, reapi::Digest>>,
}

impl RemoteExecutor {
    /// `tool` is the kflow binary workers run (this process's own).
    pub fn new(url: &str, token: Option<&str>, tool: PathBuf) -> Result<RemoteExecutor, String> {
        let endpoint = Endpoint::parse(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the gRPC client: {e}"))?;
        let cas = {
            let _guard = runtime.enter();
            Cas::connect(&endpoint, token).map_err(|e| format!("remote executor {url}: {e}"))?
        };
        Ok(RemoteExecutor {
            runtime,
            cas,
            url: url.trim().to_owned(),
            tool,
            tool_digest: tokio::sync::OnceCell::new(),
            tool_uploaded: tokio::sync::OnceCell::new(),
            sha: Mutex::new(HashMap::new()),
        })
    }

    async fn tool_digest(&self) -> Result<reapi::Digest, Fail> {
        self.tool_digest
            .get_or_try_init(|| async {
                let path = self.tool.clone();
                tokio::task::spawn_blocking(move || kflow_cache::cas::sha256_file(&path))
                    .await
                    .map_err(|e| Fail::Final(ExecError::Broken(e.to_string())))?
                    .map_err(|e| {
                        Fail::Final(ExecError::Broken(format!(
                            "cannot read the kflow binary {}: {e}",
                            self.tool.display()
                        )))
                    })
            })
            .await
            .cloned()
    }

    /// Puts the binary into the server's CAS unless it is there.
    async fn upload_tool(&self, digest: &reapi::Digest) -> Result<(), Fail> {
        self.tool_uploaded
            .get_or_try_init(|| async {
                let missing = self.cas.find_missing(vec![digest.clone()]).await.map_err(classify)?;
                if !missing.is_empty() {
                    let bytes = tokio::fs::read(&self.tool).await.map_err(|e| {
                        ExecError::Broken(format!("cannot read the kflow binary {}: {e}", self.tool.display()))
                    })?;
                    if sha256(&bytes) != *digest {
                        return Err(Fail::Final(ExecError::Broken(format!(
                            "the kflow binary {} changed while the build ran",
                            self.tool.display()
                        ))));
                    }
                    self.cas.write_blob(digest, &bytes).await.map_err(broken)?;
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    async fn execute(&self, request: &ExecRequest<'_>, cache: &Cache) -> Result<BTreeMap<String, BlobRef>, Fail> {
        let tool = self.tool_digest().await?;
        self.upload_tool(&tool).await?;
        let mut root = InputTree::default();
        let mut blobs: Vec<(reapi::Digest, Vec<u8>)> = Vec::new();
        root.add(TOOL, tool, true);
        for (path, blob) in &request.files {
            let bytes = cache
                .read_blob(blob)
                .map_err(|e| ExecError::Broken(format!("input {path}: {e}")))?;
            let digest = self.sha256_of(blob, &bytes);
            root.add(path, digest.clone(), false);
            blobs.push((digest, bytes));
        }
        for (path, bytes) in &request.generated {
            let digest = sha256(bytes);
            root.add(path, digest.clone(), false);
            blobs.push((digest, bytes.clone()));
        }
        let (root_digest, directories) = root.encode();
        blobs.extend(directories);
        let platform = reapi::Platform {
            properties: vec![reapi::platform::Property {
                name: "OSFamily".to_owned(),
                value: "linux".to_owned(),
            }],
        };
        let mut arguments = vec![format!("./{TOOL}")];
        arguments.extend(request.arguments.iter().cloned());
        #[allow(deprecated)]
        let command = reapi::Command {
            arguments,
            output_directories: vec![request.output_dir.to_owned()],
            output_paths: vec![request.output_dir.to_owned()],
            platform: Some(platform.clone()),
            ..Default::default()
        }
        .encode_to_vec();
        let command_digest = sha256(&command);
        let action = reapi::Action {
            command_digest: Some(command_digest.clone()),
            input_root_digest: Some(root_digest),
            platform: Some(platform),
            ..Default::default()
        }
        .encode_to_vec();
        let action_digest = sha256(&action);
        blobs.push((command_digest, command));
        blobs.push((action_digest.clone(), action));
        let pairs: Vec<(&reapi::Digest, &[u8])> = blobs.iter().map(|(d, b)| (d, b.as_slice())).collect();
        self.cas.upload_missing(&pairs).await.map_err(classify)?;

        let result = self.wait_for(action_digest).await?;
        if result.exit_code != 0 {
            return Err(Fail::Final(ExecError::Failed {
                exit_code: result.exit_code,
                stderr: self.stderr_of(&result).await,
            }));
        }
        self.collect(&result, request.output_dir, cache).await
    }

    /// Sends the action and follows its operation to the end.
    async fn wait_for(&self, action_digest: reapi::Digest) -> Result<reapi::ActionResult, Fail> {
        let mut client = ExecutionClient::new(self.cas.channel.clone());
        let mut stream = client
            .execute(self.cas.request(reapi::ExecuteRequest {
                instance_name: self.cas.instance.clone(),
                action_digest: Some(action_digest),
                skip_cache_lookup: false,
                ..Default::default()
            }))
            .await
            .map_err(|s| classify(CallError::new("Execute", s)))?
            .into_inner();
        let mut name = String::new();
        loop {
            match stream.message().await {
                Ok(Some(op)) => {
                    name = op.name.clone();
                    if op.done {
                        return self.response(op.result);
                    }
                }
                // The server may end a stream before the operation ends
                // (a restart, a proxy's idle timeout): ask again by name.
                Ok(None) | Err(_) if !name.is_empty() => {
                    stream = client
                        .wait_execution(self.cas.request(reapi::WaitExecutionRequest { name: name.clone() }))
                        .await
                        .map_err(|s| broken(CallError::new("WaitExecution", s)))?
                        .into_inner();
                }
                Ok(None) => return Err(ExecError::Broken("Execute ended without an operation".to_owned()).into()),
                Err(s) => return Err(broken(CallError::new("Execute", s))),
            }
        }
    }

    fn response(&self, result: Option<operation::Result>) -> Result<reapi::ActionResult, Fail> {
        let any = match result {
            Some(operation::Result::Response(any)) => any,
            Some(operation::Result::Error(status)) => {
                let why = format!("the operation failed: code {} {}", status.code, status.message);
                return Err(match busy(status.code) {
                    true => Fail::Busy(why),
                    false => Fail::Final(ExecError::Broken(why)),
                });
            }
            None => return Err(ExecError::Broken("the operation ended without a result".to_owned()).into()),
        };
        let response = reapi::ExecuteResponse::decode(any.value.as_slice())
            .map_err(|e| ExecError::Broken(format!("unreadable ExecuteResponse: {e}")))?;
        if let Some(status) = response.status.filter(|s| s.code != 0) {
            // A worker that could not fetch its inputs from a busy server
            // reports UNAVAILABLE; the server gave up retrying it.
            let transient = busy(status.code) || tonic::Code::from(status.code) == tonic::Code::Unavailable;
            let why = format!(
                "the server could not run the action: code {} {}{}",
                status.code,
                status.message,
                if response.message.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", response.message)
                }
            );
            return Err(match transient {
                true => Fail::Busy(why),
                false => Fail::Final(ExecError::Broken(why)),
            });
        }
        Ok(response
            .result
            .ok_or_else(|| ExecError::Broken("the ExecuteResponse has no result".to_owned()))?)
    }

    async fn stderr_of(&self, result: &reapi::ActionResult) -> String {
        let bytes = match &result.stderr_digest {
            Some(d) if result.stderr_raw.is_empty() && d.size_bytes > 0 => {
                self.cas.read_blob(d).await.ok().flatten().unwrap_or_default()
            }
            _ => result.stderr_raw.clone(),
        };
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The files of the output directory, into the local store.
    async fn collect(
        &self,
        result: &reapi::ActionResult,
        dir: &str,
        cache: &Cache,
    ) -> Result<BTreeMap<String, BlobRef>, Fail> {
        let mut files: Vec<(String, reapi::Digest)> = Vec::new();
        for output in result.output_directories.iter().filter(|o| o.path == dir) {
            let digest = output
                .tree_digest
                .as_ref()
                .ok_or_else(|| ExecError::Broken(format!("output directory `{dir}` has no tree")))?;
            let bytes = self.cas.read_required(digest, "output tree").await.map_err(broken)?;
            let tree = reapi::Tree::decode(bytes.as_slice())
                .map_err(|e| ExecError::Broken(format!("unreadable output tree: {e}")))?;
            files.extend(tree::files_of(&tree).map_err(ExecError::Broken)?);
        }
        let prefix = format!("{dir}/");
        for file in &result.output_files {
            if let (Some(name), Some(digest)) = (file.path.strip_prefix(&prefix), &file.digest) {
                files.push((name.to_owned(), digest.clone()));
            }
        }
        let digests: Vec<reapi::Digest> = files.iter().map(|(_, d)| d.clone()).collect();
        let fetched: HashMap<String, Vec<u8>> = self
            .cas
            .read_blobs(&digests)
            .await
            .map_err(broken)?
            .into_iter()
            .map(|(d, bytes)| (d.hash, bytes))
            .collect();
        let mut out = BTreeMap::new();
        for (name, digest) in files {
            let bytes = fetched.get(&digest.hash).ok_or_else(|| {
                ExecError::Broken(format!("output file `{name}` ({}) is missing or damaged", digest.hash))
            })?;
            let blob = cache
                .put_bytes(bytes)
                .map_err(|e| ExecError::Broken(format!("cannot store output {name}: {e}")))?;
            out.insert(name, blob);
        }
        Ok(out)
    }

    fn sha256_of(&self, blob: &BlobRef, bytes: &[u8]) -> reapi::Digest {
        let mut known = self.sha.lock().unwrap_or_else(|e| e.into_inner());
        known.entry(blob.digest).or_insert_with(|| sha256(bytes)).clone()
    }
}

impl Executor for RemoteExecutor {
    fn name(&self) -> &str {
        &self.url
    }

    fn run(&self, request: &ExecRequest<'_>, cache: &Cache) -> Result<BTreeMap<String, BlobRef>, ExecError> {
        self.runtime.block_on(async {
            let mut pause = Duration::from_millis(200);
            for _ in 1..RETRIES {
                match self.execute(request, cache).await {
                    Err(Fail::Busy(_)) => {
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                    other => return other.map_err(Fail::into_error),
                }
            }
            self.execute(request, cache).await.map_err(Fail::into_error)
        })
    }
}

/// Attempts at an action the server was too busy for.
const RETRIES: usize = 6;

/// Why one attempt failed.
enum Fail {
    /// The server (or a worker) was out of capacity: worth another try.
    Busy(String),
    Final(ExecError),
}

impl Fail {
    fn into_error(self) -> ExecError {
        match self {
            Fail::Busy(why) => ExecError::Broken(format!("the server stayed too busy: {why}")),
            Fail::Final(e) => e,
        }
    }
}

impl From<ExecError> for Fail {
    fn from(e: ExecError) -> Fail {
        Fail::Final(e)
    }
}

/// gRPC codes that say "not now" rather than "no".
fn busy(code: i32) -> bool {
    matches!(
        tonic::Code::from(code),
        tonic::Code::ResourceExhausted | tonic::Code::Aborted
    )
}

/// A failure before the action was accepted: an executor that cannot be
/// reached or does not know the instance is not usable at all.
fn classify(e: CallError) -> Fail {
    match e.status.code() {
        code if busy(code as i32) => Fail::Busy(e.to_string()),
        tonic::Code::Unavailable
        | tonic::Code::Unimplemented
        | tonic::Code::InvalidArgument
        | tonic::Code::Unauthenticated
        | tonic::Code::PermissionDenied => Fail::Final(ExecError::Unreachable(e.to_string())),
        _ => Fail::Final(ExecError::Broken(e.to_string())),
    }
}

fn broken(e: CallError) -> Fail {
    match busy(e.status.code() as i32) {
        true => Fail::Busy(e.to_string()),
        false => Fail::Final(ExecError::Broken(e.to_string())),
    }
}
