//! Starting the firmware in QEMU and connecting kflow's device client to it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kflow_cm_firmware::{QEMU, Target};
use kflow_device::transport::qemu::qemu_args;
use kflow_device::{Client, DeviceUrl, LinkTimeouts, QemuMachine, RetryPolicy, Transport};

/// Whether QEMU tests may be skipped: only when a tool is missing and
/// `KFLOW_REQUIRE_QEMU` is unset (CI sets it).
pub fn tools_or_skip(test: &str) -> bool {
    let have = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = [QEMU, kflow_cm_firmware::COMPILER]
        .into_iter()
        .filter(|p| !have(p))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("KFLOW_REQUIRE_QEMU").is_some() {
        panic!("{test}: {} missing and KFLOW_REQUIRE_QEMU is set", missing.join(", "));
    }
    println!("{test}: skipped, {} not installed", missing.join(", "));
    false
}

/// A board in QEMU; killed when dropped.
pub struct Board {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub fn policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        response_timeout: Duration::from_secs(20),
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    }
}

impl Board {
    /// Boots `elf` and returns the board and a client connected to it
    /// (QEMU starts the board only once the client is connected).
    pub fn start(target: Target, elf: &[u8]) -> (Board, Client<Box<dyn Transport>>) {
        Board::start_with(target, elf, true)
    }

    /// [`Board::start`], optionally without `-icount` (QEMU's free-running
    /// clock: no instruction counts).
    pub fn start_with(target: Target, elf: &[u8], icount: bool) -> (Board, Client<Box<dyn Transport>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("firmware.elf");
        std::fs::write(&path, elf).unwrap();
        let port = free_port();
        // QEMU listens (unlike kflow's `qemu://` transport, which owns one
        // emulator per connection), so that a test can reconnect to the
        // same board; it starts the board once the first client is there.
        let serial = format!("tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on");
        let machine: QemuMachine = target.machine().parse().unwrap();
        let mut args = qemu_args(machine, &path, &serial);
        if !icount {
            let at = args.iter().position(|a| a == "-icount").unwrap();
            args.drain(at..at + 2);
        }
        let child = Command::new(QEMU)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu");
        let board = Board { child, port, _dir: dir };
        let client = board.connect();
        (board, client)
    }

    pub fn url(&self) -> DeviceUrl {
        format!("tcp://127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// A client, retrying until QEMU listens.
    pub fn connect(&self) -> Client<Box<dyn Transport>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match kflow_device::open(&self.url(), LinkTimeouts::default()) {
                Ok(transport) => return Client::new(transport, policy()),
                Err(e) if Instant::now() > deadline => panic!("qemu does not listen: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}
