//! `kflow worker` against a real BuildGrid with execution (PostgreSQL
//! scheduler): actions sent by a small REAPI client in this file run on
//! the worker, and their outputs, stdout, stderr and exit codes come back
//! through the server. One cluster serves every check (starting one takes
//! several seconds).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::longrunning::operation;
use kflow_cache::cas::{self, Cas, Endpoint};
use prost::Message as _;
use reapi::execution_client::ExecutionClient;

/// Files of an input root by path (`/`-separated), with executability.
type Files = BTreeMap<&'static str, (&'static [u8], bool)>;

/// A REAPI client: uploads, Execute, and reading blobs back.
struct Remote {
    runtime: tokio::runtime::Runtime,
    cas: Cas,
}

/// One action to send.
#[derive(Default, Clone)]
struct Job {
    args: Vec<String>,
    files: Files,
    env: Vec<(&'static str, &'static str)>,
    output_files: Vec<&'static str>,
    output_directories: Vec<&'static str>,
    output_paths: Vec<&'static str>,
    timeout: Option<Duration>,
    /// Relative to the input root.
    workdir: &'static str,
    /// Makes otherwise equal actions distinct (the server merges equal ones).
    salt: String,
}

fn job(args: &[&str]) -> Job {
    Job {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        ..Job::default()
    }
}

impl Remote {
    fn new(url: &str) -> Remote {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cas = runtime.block_on(async { Cas::connect(&Endpoint::parse(url).unwrap(), None).unwrap() });
        Remote { runtime, cas }
    }

    fn run(&self, job: &Job) -> reapi::ExecuteResponse {
        self.runtime.block_on(execute(self.cas.clone(), job.clone()))
    }

    /// Runs the jobs at once.
    fn run_all(&self, jobs: &[Job]) -> Vec<reapi::ExecuteResponse> {
        self.runtime.block_on(async {
            let tasks: Vec<_> = jobs
                .iter()
                .map(|j| tokio::spawn(execute(self.cas.clone(), j.clone())))
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        })
    }

    fn blob(&self, digest: Option<&reapi::Digest>) -> Vec<u8> {
        let digest = digest.expect("a digest");
        self.runtime
            .block_on(self.cas.read_blob(digest))
            .unwrap()
            .unwrap_or_else(|| panic!("blob {digest:?} is not in the CAS"))
    }

    fn text(&self, digest: Option<&reapi::Digest>) -> String {
        String::from_utf8(self.blob(digest)).unwrap()
    }
}

/// Uploads the job's input root, Command and Action, then executes it and
/// waits for the result.
async fn execute(cas: Cas, job: Job) -> reapi::ExecuteResponse {
    let mut blobs = Vec::new();
    let root = directory_of(&job.files, "", &mut blobs);
    #[allow(deprecated)]
    let command = reapi::Command {
        arguments: job.args.clone(),
        environment_variables: job
            .env
            .iter()
            .map(|(name, value)| reapi::command::EnvironmentVariable {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
        output_files: job.output_files.iter().map(|p| (*p).to_owned()).collect(),
        output_directories: job.output_directories.iter().map(|p| (*p).to_owned()).collect(),
        output_paths: job.output_paths.iter().map(|p| (*p).to_owned()).collect(),
        working_directory: job.workdir.to_owned(),
        ..Default::default()
    };
    let command_digest = add(&mut blobs, command.encode_to_vec());
    let action = reapi::Action {
        command_digest: Some(command_digest),
        input_root_digest: Some(root),
        timeout: job.timeout.map(|t| bazel_remote_apis::google::protobuf::Duration {
            seconds: t.as_secs() as i64,
            nanos: t.subsec_nanos() as i32,
        }),
        do_not_cache: true,
        salt: job.salt.into_bytes(),
        ..Default::default()
    };
    let action_digest = add(&mut blobs, action.encode_to_vec());
    let refs: Vec<(&reapi::Digest, &[u8])> = blobs.iter().map(|(d, b)| (d, b.as_slice())).collect();
    cas.upload_missing(&refs).await.unwrap();

    let mut client = ExecutionClient::new(cas.channel.clone());
    let mut stream = client
        .execute(reapi::ExecuteRequest {
            action_digest: Some(action_digest),
            skip_cache_lookup: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(op) = stream.message().await.unwrap() {
        let done = op.done;
        last = Some(op);
        if done {
            break;
        }
    }
    let op = last.expect("an operation");
    assert!(op.done, "the stream ended before the operation: {op:?}");
    match op.result {
        Some(operation::Result::Response(any)) => reapi::ExecuteResponse::decode(any.value.as_slice()).unwrap(),
        other => panic!("the operation failed: {other:?}"),
    }
}

fn add(blobs: &mut Vec<(reapi::Digest, Vec<u8>)>, bytes: Vec<u8>) -> reapi::Digest {
    let digest = cas::sha256(&bytes);
    blobs.push((digest.clone(), bytes));
    digest
}

/// The Directory at `prefix` of `files` (and everything below it, into
/// `blobs`), names sorted as REAPI requires.
fn directory_of(files: &Files, prefix: &str, blobs: &mut Vec<(reapi::Digest, Vec<u8>)>) -> reapi::Digest {
    let mut dir = reapi::Directory::default();
    let mut subdirs = std::collections::BTreeSet::new();
    for (path, (bytes, executable)) in files {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        match rest.split_once('/') {
            Some((sub, _)) => {
                subdirs.insert(sub.to_owned());
            }
            None => dir.files.push(reapi::FileNode {
                name: rest.to_owned(),
                digest: Some(add(blobs, bytes.to_vec())),
                is_executable: *executable,
                ..Default::default()
            }),
        }
    }
    for sub in subdirs {
        let digest = directory_of(files, &format!("{prefix}{sub}/"), blobs);
        dir.directories.push(reapi::DirectoryNode {
            name: sub,
            digest: Some(digest),
        });
    }
    add(blobs, dir.encode_to_vec())
}

/// Every file of an output Tree, by path, with executability.
fn tree_files(remote: &Remote, tree: &reapi::Tree) -> BTreeMap<String, (String, bool)> {
    let children: BTreeMap<String, &reapi::Directory> = tree
        .children
        .iter()
        .map(|d| (cas::sha256(&d.encode_to_vec()).hash, d))
        .collect();
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), tree.root.as_ref().expect("a root"))];
    while let Some((prefix, dir)) = stack.pop() {
        for f in &dir.files {
            out.insert(
                format!("{prefix}{}", f.name),
                (remote.text(f.digest.as_ref()), f.is_executable),
            );
        }
        for d in &dir.directories {
            let hash = &d.digest.as_ref().expect("a digest").hash;
            stack.push((format!("{prefix}{}/", d.name), children[hash]));
        }
    }
    out
}

fn output_tree(remote: &Remote, response: &reapi::ExecuteResponse, path: &str) -> BTreeMap<String, (String, bool)> {
    let result = response.result.as_ref().expect("a result");
    let dir = result
        .output_directories
        .iter()
        .find(|d| d.path == path)
        .unwrap_or_else(|| panic!("no output directory {path}: {result:?}"));
    let tree = reapi::Tree::decode(remote.blob(dir.tree_digest.as_ref()).as_slice()).unwrap();
    tree_files(remote, &tree)
}

fn output_file(remote: &Remote, response: &reapi::ExecuteResponse, path: &str) -> (String, bool) {
    let result = response.result.as_ref().expect("a result");
    let file = result
        .output_files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no output file {path}: {result:?}"));
    (remote.text(file.digest.as_ref()), file.is_executable)
}

const SCRIPT: &[u8] = b"#!/bin/sh
echo \"args: $1 $GREETING manifest=${CARGO_MANIFEST_DIR:-unset}\"
echo 'a warning' >&2
cat data/in.txt data/deep/more.txt > out/result.txt
mkdir -p gen/sub
echo one > gen/a.txt
echo two > gen/sub/b.txt
printf '#!/bin/sh\\n' > gen/tool.sh
chmod +x gen/tool.sh
";

fn script_job() -> Job {
    let mut files = Files::new();
    files.insert("run.sh", (SCRIPT, true));
    files.insert("data/in.txt", (b"in\n", false));
    files.insert("data/deep/more.txt", (b"more\n", false));
    Job {
        files,
        env: vec![("GREETING", "hi")],
        output_files: vec!["out/result.txt", "never/made.txt"],
        output_directories: vec!["gen"],
        ..job(&["./run.sh", "first"])
    }
}

fn status_code(response: &reapi::ExecuteResponse) -> i32 {
    response.status.as_ref().map_or(0, |s| s.code)
}

#[test]
fn a_worker_runs_actions_from_buildgrid() {
    let Some(mut cluster) = common::buildgrid::Cluster::start() else {
        return;
    };
    let w = cluster.add_worker(2);
    let remote = Remote::new(&cluster.url);
    let log = |cluster: &common::buildgrid::Cluster| format!("worker log:\n{}", cluster.worker_log(w));

    // Inputs in nested directories, an executable script, outputs as a
    // file (its directory made by the worker) and a directory; the
    // environment is the worker's PATH plus the command's own.
    let response = remote.run(&script_job());
    assert_eq!(status_code(&response), 0, "{response:?}\n{}", log(&cluster));
    let result = response.result.as_ref().unwrap();
    assert_eq!(result.exit_code, 0, "{}", remote.text(result.stderr_digest.as_ref()));
    assert_eq!(
        remote.text(result.stdout_digest.as_ref()),
        "args: first hi manifest=unset\n"
    );
    assert_eq!(remote.text(result.stderr_digest.as_ref()), "a warning\n");
    assert_eq!(
        output_file(&remote, &response, "out/result.txt"),
        ("in\nmore\n".to_owned(), false)
    );
    assert_eq!(result.output_files.len(), 1, "a missing output is left out");
    let gen_files = output_tree(&remote, &response, "gen");
    let expected: BTreeMap<String, (String, bool)> = [
        ("a.txt", "one\n", false),
        ("sub/b.txt", "two\n", false),
        ("tool.sh", "#!/bin/sh\n", true),
    ]
    .into_iter()
    .map(|(p, c, x)| (p.to_owned(), (c.to_owned(), x)))
    .collect();
    assert_eq!(gen_files, expected);

    // v2.1 output_paths: a file and a directory, in a working directory.
    let mut files = Files::new();
    files.insert("sub/keep", (b"", false));
    let response = remote.run(&Job {
        files,
        output_paths: vec!["both/file.txt", "both/dir"],
        workdir: "sub",
        ..job(&[
            "sh",
            "-c",
            "pwd | grep -q '/sub$' && echo f > both/file.txt && mkdir both/dir && echo d > both/dir/x",
        ])
    });
    let result = response.result.as_ref().unwrap();
    assert_eq!(result.exit_code, 0, "{}", remote.text(result.stderr_digest.as_ref()));
    assert_eq!(
        output_file(&remote, &response, "both/file.txt"),
        ("f\n".to_owned(), false)
    );
    assert_eq!(
        output_tree(&remote, &response, "both/dir")
            .into_keys()
            .collect::<Vec<_>>(),
        ["x"]
    );

    // A failing command: its exit code and stderr come back.
    let response = remote.run(&job(&["sh", "-c", "echo bad >&2; exit 3"]));
    let result = response.result.as_ref().unwrap();
    assert_eq!((status_code(&response), result.exit_code), (0, 3));
    assert_eq!(remote.text(result.stderr_digest.as_ref()), "bad\n");

    // A program that is not there: exit code 127 and why, on stderr.
    let response = remote.run(&job(&["kflow-no-such-program"]));
    let result = response.result.as_ref().unwrap();
    assert_eq!(result.exit_code, 127);
    assert!(
        remote
            .text(result.stderr_digest.as_ref())
            .contains("cannot run `kflow-no-such-program`")
    );

    // Over its timeout: killed, DEADLINE_EXCEEDED, with what it printed.
    let started = Instant::now();
    let response = remote.run(&Job {
        timeout: Some(Duration::from_secs(1)),
        ..job(&["sh", "-c", "echo before; sleep 30"])
    });
    assert_eq!(
        status_code(&response),
        tonic::Code::DeadlineExceeded as i32,
        "{response:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let result = response.result.as_ref().unwrap();
    assert_eq!(remote.text(result.stdout_digest.as_ref()), "before\n");

    // Capacity 2: two 2-second sleeps at once.
    let started = Instant::now();
    let sleeps = [job(&["sleep", "2"]), job(&["sh", "-c", "sleep 2"])];
    for response in remote.run_all(&sleeps) {
        assert_eq!(response.result.unwrap().exit_code, 0);
    }
    let both = started.elapsed();
    assert!(
        both < Duration::from_millis(3500),
        "two sleeps took {both:?}\n{}",
        log(&cluster)
    );

    // Serial trivial actions: each must come back far sooner than the
    // server's long poll (8 s), i.e. a finished lease is reported at once.
    let n = 20;
    let started = Instant::now();
    for i in 0..n {
        let response = remote.run(&Job {
            salt: format!("latency {i}"),
            ..job(&["true"])
        });
        assert_eq!(response.result.unwrap().exit_code, 0);
    }
    let each = started.elapsed() / n;
    println!("{n} serial trivial actions: {each:?} each");
    // Without prompt reporting this is the long poll's 8 s; the margin is
    // for a loaded machine.
    assert!(each < Duration::from_secs(2), "{each:?} per action\n{}", log(&cluster));

    // A burst over two workers: leases finish during long polls and new
    // ones arrive with completions; every one comes back, once. Each runs
    // an executable of its input root, written while other leases fork
    // (the worker's unit tests provoke the "Text file busy" this can
    // cause).
    let w2 = cluster.add_worker(1);
    let tool: &'static [u8] = Vec::leak([&b"#!/bin/sh\necho $1\nexit 0\n"[..], &vec![b'#'; 512 << 10]].concat());
    let burst: Vec<Job> = (0..24)
        .map(|i| Job {
            args: vec!["./tool".into(), i.to_string()],
            files: Files::from([("tool", (tool, true))]),
            ..Job::default()
        })
        .collect();
    let started = Instant::now();
    for (i, response) in remote.run_all(&burst).into_iter().enumerate() {
        let result = response.result.unwrap();
        assert_eq!(result.exit_code, 0);
        assert_eq!(remote.text(result.stdout_digest.as_ref()), format!("{i}\n"));
    }
    println!("24 actions at once on 3 slots: {:?}", started.elapsed());
    assert!(!cluster.worker_log(w2).contains("panicked"));

    // The server restarts (same database): the workers carry on.
    cluster.restart_server();
    let remote = Remote::new(&cluster.url);
    let response = remote.run(&Job {
        salt: "after the restart".into(),
        ..job(&["true"])
    });
    assert_eq!(response.result.unwrap().exit_code, 0, "{}", log(&cluster));

    let text = cluster.worker_log(w);
    assert!(text.contains("starting ./run.sh"), "{text}");
    assert!(text.contains("./run.sh exited 0"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}
