//! Serial ports: `serial:///dev/ttyUSB0?baud=115200`, a physical board (or
//! one end of a pseudo-terminal pair in tests).
//!
//! The `serialport` crate is built without its `libudev` feature: that only
//! enumerates ports, and leaving it out keeps a plain `cargo build` free of
//! system libraries.

use std::io::{self, Read, Write};
use std::time::Duration;

use serialport::SerialPort;

use super::{Link, LinkTimeouts};

/// An open serial port, 8N1 without flow control.
pub struct SerialLink {
    endpoint: String,
    path: Option<(String, u32)>,
    write_timeout: Duration,
    port: Box<dyn SerialPort>,
}

impl SerialLink {
    /// Opens the port at `path`. `timeouts.write` bounds the writing of
    /// one frame (64 KiB take 5.7 s at 115200 baud).
    pub fn open(endpoint: String, path: &str, baud: u32, timeouts: LinkTimeouts) -> io::Result<SerialLink> {
        let port = open_port(path, baud)?;
        Ok(SerialLink {
            endpoint,
            path: Some((path.to_string(), baud)),
            write_timeout: timeouts.write,
            port,
        })
    }

    /// A port opened elsewhere (e.g. one end of `serialport::TTYPort::pair`);
    /// it cannot be reopened.
    pub fn from_port(endpoint: String, port: Box<dyn SerialPort>) -> SerialLink {
        SerialLink {
            endpoint,
            path: None,
            write_timeout: LinkTimeouts::default().write,
            port,
        }
    }
}

fn open_port(path: &str, baud: u32) -> io::Result<Box<dyn SerialPort>> {
    serialport::new(path, baud)
        .data_bits(serialport::DataBits::Eight)
        .parity(serialport::Parity::None)
        .stop_bits(serialport::StopBits::One)
        .flow_control(serialport::FlowControl::None)
        .timeout(Duration::from_millis(100))
        .open()
        .map_err(io::Error::from)
}

impl Read for SerialLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.port.read(buf)
    }
}

impl Write for SerialLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.port.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.port.flush()
    }
}

impl Link for SerialLink {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.port.set_timeout(timeout).map_err(io::Error::from)
    }

    fn prepare_write(&mut self) -> io::Result<()> {
        self.port.set_timeout(self.write_timeout).map_err(io::Error::from)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let Some((path, baud)) = &self.path else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this serial port cannot be reopened",
            ));
        };
        self.port = open_port(path, *baud)?;
        Ok(())
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }
}
