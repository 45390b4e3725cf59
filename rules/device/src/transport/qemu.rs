//! QEMU: `qemu://mps2-an386?firmware=PATH`, a firmware running on an
//! emulated Cortex-M board, reached through its first UART.
//!
//! The transport owns the emulator: it listens on a loopback port, starts
//! `qemu-system-arm` with the UART connected to that port as a TCP client,
//! and kills the emulator when the link is dropped (the board keeps no
//! state worth a graceful shutdown: what it holds lives in RAM). Reopening
//! starts a fresh emulator, which is a board reset.
//!
//! The emulator counts instructions (`-icount`): virtual time advances by
//! exactly 2^[`ICOUNT_SHIFT`] ns per executed instruction, whatever the
//! host's speed, so that a firmware reading a timer measures instructions
//! exactly and the same inference always reports the same count.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Link, LinkTimeouts};
use crate::url::QemuMachine;

/// The emulator binary (Debian package `qemu-system-arm`).
pub const QEMU: &str = "qemu-system-arm";
/// log2 of the virtual nanoseconds one instruction takes. At 8 the boards'
/// 25 MHz timers move 6.4 ticks per instruction, enough to count single
/// instructions exactly.
pub const ICOUNT_SHIFT: u32 = 8;
/// `-icount`: instruction counting, and (`sleep=on`) virtual time that
/// follows real time while the core waits in `wfi`, so that a firmware's
/// timeouts between the bytes of a frame are real time.
/// How long the emulator may take to start and connect its UART.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Most bytes of the emulator's stderr kept for error messages.
const STDERR_KEPT: usize = 16 * 1024;

/// The arguments `qemu-system-arm` runs `firmware` on `machine` with, its
/// UART connected to `serial` (a QEMU character device, e.g.
/// `tcp:127.0.0.1:5000`).
pub fn qemu_args(machine: QemuMachine, firmware: &Path, serial: &str) -> Vec<String> {
    [
        "-machine",
        machine.name(),
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        serial,
        "-icount",
        &format!("shift={ICOUNT_SHIFT},align=off,sleep=on"),
        "-kernel",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([firmware.display().to_string()])
    .collect()
}

/// An emulator and the connection to its UART.
pub struct QemuLink {
    endpoint: String,
    machine: QemuMachine,
    firmware: PathBuf,
    timeouts: LinkTimeouts,
    emulator: Emulator,
}

struct Emulator {
    child: Child,
    stream: TcpStream,
}

impl QemuLink {
    /// Starts the emulator with `firmware` and waits until its UART is
    /// connected.
    pub fn start(
        endpoint: String,
        machine: QemuMachine,
        firmware: &Path,
        timeouts: LinkTimeouts,
    ) -> io::Result<QemuLink> {
        let emulator = Emulator::start(machine, firmware, timeouts)?;
        Ok(QemuLink {
            endpoint,
            machine,
            firmware: firmware.to_path_buf(),
            timeouts,
            emulator,
        })
    }
}

impl Emulator {
    fn start(machine: QemuMachine, firmware: &Path, timeouts: LinkTimeouts) -> io::Result<Emulator> {
        if !firmware.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no firmware at {}", firmware.display()),
            ));
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let mut child = Command::new(QEMU)
            // nodelay: the board answers a byte at a time, and with Nagle's
            // algorithm each answer would wait for a delayed ACK.
            .args(qemu_args(
                machine,
                firmware,
                &format!("tcp:127.0.0.1:{port},nodelay=on"),
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("`{QEMU}` is not installed; on Debian or Ubuntu: `apt-get install qemu-system-arm`"),
                ),
                _ => io::Error::new(e.kind(), format!("cannot start `{QEMU}`: {e}")),
            })?;
        let stderr = drain(&mut child);
        match accept(&listener, &mut child, &stderr) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_write_timeout(Some(timeouts.write.max(Duration::from_millis(1))))?;
                Ok(Emulator { child, stream })
            }
            Err(e) => {
                stop(&mut child);
                Err(e)
            }
        }
    }
}

/// Keeps the head of the emulator's stderr, read on a thread so that a
/// chatty emulator never blocks on a full pipe.
fn drain(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let kept = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut pipe) = child.stderr.take() {
        let kept = Arc::clone(&kept);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                if let Ok(mut kept) = kept.lock() {
                    let room = STDERR_KEPT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        });
    }
    kept
}

/// The emulator's UART connection, or why it never came: the emulator
/// exited (with its stderr) or took longer than [`START_TIMEOUT`].
fn accept(listener: &TcpListener, child: &mut Child, stderr: &Mutex<Vec<u8>>) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if let Some(status) = child.try_wait()? {
            // Let the reader thread take what the emulator said last.
            std::thread::sleep(Duration::from_millis(50));
            let said = stderr.lock().map(|s| String::from_utf8_lossy(&s).trim().to_owned());
            return Err(io::Error::other(format!(
                "`{QEMU}` exited ({status}) before connecting its UART: {}",
                said.unwrap_or_default()
            )));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("`{QEMU}` did not connect its UART within {START_TIMEOUT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stop(child: &mut Child) {
    // Already exited is fine; nothing else can fail that we could act on.
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Emulator {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Read for QemuLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.emulator.stream.read(buf)
    }
}

impl Write for QemuLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.emulator.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emulator.stream.flush()
    }
}

impl Link for QemuLink {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.emulator.stream.set_read_timeout(Some(timeout))
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.emulator = Emulator::start(self.machine, &self.firmware, self.timeouts)?;
        Ok(())
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }
}
