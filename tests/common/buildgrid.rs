//! A BuildGrid server (the Remote Execution API) on a free loopback port,
//! as a cache only (CAS, ByteStream, ActionCache; no database), stopped
//! when dropped. `bgd` comes from `KFLOW_BUILDGRID_BGD`, which
//! scripts/test.sh sets after scripts/install-buildgrid.sh.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct BuildGrid {
    child: Child,
    _dir: tempfile::TempDir,
    pub url: String,
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server, or `None` (with a line saying so) when BuildGrid is not
/// installed and `KFLOW_REQUIRE_BUILDGRID` is not set.
pub fn start() -> Option<BuildGrid> {
    let Some(bgd) = std::env::var_os("KFLOW_BUILDGRID_BGD").filter(|b| std::path::Path::new(b).exists()) else {
        assert!(
            std::env::var_os("KFLOW_REQUIRE_BUILDGRID").is_none(),
            "BuildGrid is missing (KFLOW_BUILDGRID_BGD) and KFLOW_REQUIRE_BUILDGRID is set"
        );
        println!("BuildGrid is not installed (scripts/install-buildgrid.sh): skipped");
        return None;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = format!(
        "server:\n  - !channel {{ address: \"127.0.0.1:{port}\", insecure-mode: true }}\n\
         storages:\n  - !lru-storage &cas {{ size: 512MB }}\n\
         caches:\n  - !lru-action-cache &ac {{ storage: *cas, max-cached-refs: 100000, allow-updates: true, cache-failed-actions: false }}\n\
         instances:\n  - name: \"\"\n    services: [ !cas {{ storage: *cas }}, !bytestream {{ storage: *cas }}, !action-cache {{ cache: *ac }} ]\n"
    );
    std::fs::write(dir.path().join("bgd.yml"), config).expect("bgd.yml");
    let child = Command::new(bgd)
        .args(["server", "start", "bgd.yml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bgd");
    let server = BuildGrid {
        child,
        _dir: dir,
        url: format!("grpc://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "BuildGrid did not start in 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(server)
}
