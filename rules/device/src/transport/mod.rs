//! Moving frames between host and board.
//!
//! Every transport is a byte stream ([`Link`]: TCP, a serial port, or a
//! pair of in-process channels) under the same [`StreamTransport`], so all
//! of them decode, resynchronise and time out the same way.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::decoder::{Decoded, FrameDecoder, Rejected};
use crate::frame::{Frame, FrameError};
use crate::url::DeviceUrl;

pub mod in_process;
pub mod qemu;
pub mod serial;
pub mod tcp;

pub use in_process::ChannelLink;
pub use qemu::QemuLink;
pub use serial::SerialLink;
pub use tcp::TcpLink;

/// Why a frame could not be sent or received.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("no frame before the deadline")]
    TimedOut,
    #[error("connection closed by the other side")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("cannot send: {0}")]
    Encode(#[from] FrameError),
}

/// Sends and receives frames.
pub trait Transport: Send {
    /// Sends one frame.
    fn send(&mut self, frame: &Frame) -> Result<(), TransportError>;

    /// The next frame, or the next run of bytes that were not one, waiting
    /// at most until `deadline`.
    fn receive(&mut self, deadline: Instant) -> Result<Decoded, TransportError>;

    /// Gives up on a partly received frame (see
    /// [`FrameDecoder::give_up_partial`]).
    fn give_up_partial(&mut self) -> Option<Rejected>;

    /// Bytes received that are not yet a frame: when it grows, a frame is
    /// still arriving.
    fn pending(&self) -> usize;

    /// Opens the connection again after it failed, dropping anything
    /// half-received.
    fn reconnect(&mut self) -> Result<(), TransportError>;

    /// Where this transport leads, for messages (a device URL).
    fn endpoint(&self) -> &str;
}

/// A byte stream a [`StreamTransport`] can run on.
pub trait Link: Read + Write + Send {
    /// How long the next `read` may wait; when it expires `read` fails with
    /// `WouldBlock` or `TimedOut`.
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()>;

    /// Called before each frame is written: a link whose timeout is shared
    /// between reads and writes (a serial port) sets its write timeout
    /// here, so that a write does not inherit what was left of a read's.
    fn prepare_write(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Opens the stream again.
    fn reopen(&mut self) -> io::Result<()>;

    /// Where the stream leads, for messages.
    fn endpoint(&self) -> &str;
}

/// Reads per `read` call.
const READ_SIZE: usize = 16 * 1024;
/// Shortest read timeout (some links treat zero as "wait forever").
const MIN_WAIT: Duration = Duration::from_millis(1);

/// Frames over a byte stream.
pub struct StreamTransport<L> {
    link: L,
    decoder: FrameDecoder,
    read_buf: Box<[u8]>,
}

impl<L: Link> StreamTransport<L> {
    pub fn new(link: L) -> StreamTransport<L> {
        StreamTransport {
            link,
            decoder: FrameDecoder::new(),
            read_buf: vec![0; READ_SIZE].into_boxed_slice(),
        }
    }

    /// The underlying stream (tests write raw bytes to it).
    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }
}

impl<L: Link> Transport for StreamTransport<L> {
    fn send(&mut self, frame: &Frame) -> Result<(), TransportError> {
        let bytes = frame.encode()?;
        self.link.prepare_write()?;
        self.link.write_all(&bytes).map_err(closed_or_io)?;
        self.link.flush().map_err(closed_or_io)?;
        Ok(())
    }

    fn receive(&mut self, deadline: Instant) -> Result<Decoded, TransportError> {
        loop {
            if let Some(decoded) = self.decoder.decode_next() {
                return Ok(decoded);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TransportError::TimedOut);
            }
            self.link.set_read_timeout(left.max(MIN_WAIT))?;
            match self.link.read(&mut self.read_buf) {
                Ok(0) => return Err(TransportError::Closed),
                Ok(n) => self.decoder.push(&self.read_buf[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(closed_or_io(e)),
            }
        }
    }

    fn give_up_partial(&mut self) -> Option<Rejected> {
        self.decoder.give_up_partial()
    }

    fn pending(&self) -> usize {
        self.decoder.pending()
    }

    fn reconnect(&mut self) -> Result<(), TransportError> {
        self.decoder = FrameDecoder::new();
        self.link.reopen()?;
        Ok(())
    }

    fn endpoint(&self) -> &str {
        self.link.endpoint()
    }
}

fn closed_or_io(e: io::Error) -> TransportError {
    match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::UnexpectedEof => TransportError::Closed,
        _ => TransportError::Io(e),
    }
}

/// How long opening a connection and writing to it may take.
#[derive(Clone, Copy, Debug)]
pub struct LinkTimeouts {
    pub connect: Duration,
    pub write: Duration,
}

impl Default for LinkTimeouts {
    fn default() -> LinkTimeouts {
        LinkTimeouts {
            connect: Duration::from_secs(5),
            write: Duration::from_secs(10),
        }
    }
}

/// Why a device could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error("{url}: a simulated board runs in this process; attach one with `serve::spawn_in_process`")]
    InProcess { url: DeviceUrl },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: DeviceUrl, source: io::Error },
    #[error("{url} names no firmware to boot; `flash` builds one from the model's C code")]
    NoFirmware { url: DeviceUrl },
}

/// Opens a transport to a `tcp://`, `serial://` or `qemu://` board.
pub fn open(url: &DeviceUrl, timeouts: LinkTimeouts) -> Result<Box<dyn Transport>, OpenError> {
    let connect_error = |source| OpenError::Connect {
        url: url.clone(),
        source,
    };
    match url {
        DeviceUrl::Sim(_) => Err(OpenError::InProcess { url: url.clone() }),
        DeviceUrl::Tcp { host, port } => {
            let link = TcpLink::connect(url.to_string(), host, *port, timeouts).map_err(connect_error)?;
            Ok(Box::new(StreamTransport::new(link)))
        }
        DeviceUrl::Serial { path, baud } => {
            let link = SerialLink::open(url.to_string(), path, *baud, timeouts).map_err(connect_error)?;
            Ok(Box::new(StreamTransport::new(link)))
        }
        DeviceUrl::Qemu {
            machine,
            firmware: Some(firmware),
        } => {
            let link = QemuLink::start(url.to_string(), *machine, std::path::Path::new(firmware), timeouts)
                .map_err(connect_error)?;
            Ok(Box::new(StreamTransport::new(link)))
        }
        DeviceUrl::Qemu { firmware: None, .. } => Err(OpenError::NoFirmware { url: url.clone() }),
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn send(&mut self, frame: &Frame) -> Result<(), TransportError> {
        (**self).send(frame)
    }

    fn receive(&mut self, deadline: Instant) -> Result<Decoded, TransportError> {
        (**self).receive(deadline)
    }

    fn give_up_partial(&mut self) -> Option<Rejected> {
        (**self).give_up_partial()
    }

    fn pending(&self) -> usize {
        (**self).pending()
    }

    fn reconnect(&mut self) -> Result<(), TransportError> {
        (**self).reconnect()
    }

    fn endpoint(&self) -> &str {
        (**self).endpoint()
    }
}
