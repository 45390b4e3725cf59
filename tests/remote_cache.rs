//! The remote cache against a real server: nginx with WebDAV, as a CI cache
//! would be set up (SPEC.md §6). `scripts/test.sh` installs nginx.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Ws;

/// An nginx serving a WebDAV store on a free local port, stopped on drop.
struct Nginx {
    child: Child,
    url: String,
    store: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is needed for the remote cache tests: run scripts/test.sh, or `apt-get install nginx`")
}

fn start_nginx() -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let temp = dir.path().join("body");
    for d in [&store, &temp] {
        std::fs::create_dir_all(d).unwrap();
        // nginx's workers run as an unprivileged user when the master is
        // root; they must be able to write here.
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {temp};\n  proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      root {store};\n\
             dav_methods PUT DELETE;\n      create_full_put_path on;\n      dav_access user:rw group:rw all:rw;\n\
             client_max_body_size 0;\n    }}\n  }}\n}}\n",
            dir = dir.path().display(),
            temp = temp.display(),
            store = store.display(),
        ),
    )
    .unwrap();
    let child = Command::new(nginx_binary())
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nginx");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx {
        child,
        url: format!("http://127.0.0.1:{port}/cache"),
        store,
        _dir: dir,
    }
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

fn graph(ws: &Ws) {
    ws.file("graphs/p/seed.txt", "seed\n").package(
        "p",
        r#"
[[cmd]]
name = "a"
srcs = ["seed.txt"]
outs = ["a.txt"]
cmd = "cat $SRCS > $OUT; echo a >> $OUT"

[[cmd]]
name = "b"
srcs = [":a"]
outs = ["b.txt"]
cmd = "cksum a.txt > $OUT"
"#,
    );
}

#[test]
fn a_second_machine_gets_results_from_the_remote_cache() {
    let server = start_nginx();
    let first = Ws::new();
    graph(&first);
    let report = first.build_ok(&["target//p:b", "--remote-cache", &server.url]);
    assert_eq!(report.0["counts"]["executed"], 2);
    assert!(
        files_under(&server.store) >= 4,
        "two action entries and their blobs were uploaded"
    );

    // Another workspace with its own empty cache: everything comes from the
    // server, verified, and gives the same bytes.
    let second = Ws::new();
    graph(&second);
    let report = second.build_ok(&["target//p:b", "--remote-cache", &server.url]);
    assert_eq!(report.0["counts"]["remote_cached"], 2, "{}", report.0);
    assert_eq!(report.0["counts"]["executed"], 0);
    assert_eq!(
        second.read_output("p", "b", "b.txt"),
        first.read_output("p", "b", "b.txt")
    );

    // And they are now in its local cache: no server needed.
    drop(server);
    let third = second.build_ok(&["target//p:b"]);
    assert_eq!(third.0["counts"]["executed"], 0);
}

#[test]
fn a_dead_remote_cache_degrades_to_local_with_one_warning() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ws = Ws::new();
    graph(&ws);
    let url = format!("http://127.0.0.1:{port}/cache");
    let b = ws.build(&["target//p:b", "--remote-cache", &url]);
    assert_eq!(b.run.code, 0, "{}", b.run.stderr);
    assert_eq!(b.report.unwrap().0["counts"]["executed"], 2);
    assert_eq!(b.run.stderr.matches("warning:").count(), 1, "{}", b.run.stderr);
    assert!(b.run.stderr.contains("unreachable"), "{}", b.run.stderr);
}

#[test]
fn no_remote_upload_reads_but_never_writes() {
    let server = start_nginx();
    let ws = Ws::new();
    graph(&ws);
    let report = ws.build_ok(&["target//p:b", "--remote-cache", &server.url, "--no-remote-upload"]);
    assert_eq!(report.0["counts"]["executed"], 2);
    assert_eq!(files_under(&server.store), 0);
}

#[test]
fn a_malformed_remote_url_is_a_usage_error() {
    let ws = Ws::new();
    graph(&ws);
    let b = ws.build(&["target//p:b", "--remote-cache", "ftp://example.org/cache"]);
    assert_eq!(b.run.code, 2, "{}", b.run.stderr);
    assert!(b.run.stderr.contains("ftp://example.org/cache"), "{}", b.run.stderr);
}
