//! In-process: a pair of channels carrying bytes, for `sim://` boards that
//! run on a thread of the host process. It carries bytes rather than
//! frames so that a simulated board reads exactly what it would read from
//! a wire, corrupt frames included.

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use super::Link;

/// One end of an in-process byte stream. Dropping it closes the stream for
/// the other end.
pub struct ChannelLink {
    endpoint: String,
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    pending: Vec<u8>,
    read_at: usize,
    timeout: Duration,
}

/// Two connected ends; both name `endpoint` in messages.
pub fn channel_pair(endpoint: &str) -> (ChannelLink, ChannelLink) {
    let (a_tx, b_rx) = mpsc::channel();
    let (b_tx, a_rx) = mpsc::channel();
    let end = |tx, rx| ChannelLink {
        endpoint: endpoint.to_string(),
        tx,
        rx,
        pending: Vec::new(),
        read_at: 0,
        timeout: Duration::from_secs(1),
    };
    (end(a_tx, a_rx), end(b_tx, b_rx))
}

impl Read for ChannelLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read_at == self.pending.len() {
            self.pending = match self.rx.recv_timeout(self.timeout) {
                Ok(bytes) => bytes,
                Err(RecvTimeoutError::Timeout) => return Err(io::ErrorKind::TimedOut.into()),
                Err(RecvTimeoutError::Disconnected) => return Ok(0),
            };
            self.read_at = 0;
        }
        let n = buf.len().min(self.pending.len() - self.read_at);
        buf[..n].copy_from_slice(&self.pending[self.read_at..self.read_at + n]);
        self.read_at += n;
        Ok(n)
    }
}

impl Write for ChannelLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .send(buf.to_vec())
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Link for ChannelLink {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.timeout = timeout;
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "an in-process board cannot be reconnected",
        ))
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::decoder::Decoded;
    use crate::frame::{Frame, MessageType};
    use crate::transport::{StreamTransport, Transport, TransportError};

    #[test]
    fn frames_cross_and_a_dropped_end_reads_as_closed() {
        let (a, b) = channel_pair("sim://max78002");
        let (mut a, mut b) = (StreamTransport::new(a), StreamTransport::new(b));
        let frame = Frame::new(MessageType::Ping, 1, vec![5]);
        a.send(&frame).unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        assert_eq!(b.receive(deadline).unwrap(), Decoded::Frame(frame));
        drop(a);
        assert!(matches!(b.receive(deadline), Err(TransportError::Closed)));
        assert!(matches!(
            b.send(&Frame::new(MessageType::Pong, 1, vec![5])),
            Err(TransportError::Closed)
        ));
    }

    #[test]
    fn receive_times_out_at_the_deadline() {
        let (_a, b) = channel_pair("sim://max78002");
        let mut b = StreamTransport::new(b);
        let start = Instant::now();
        let result = b.receive(start + Duration::from_millis(50));
        assert!(matches!(result, Err(TransportError::TimedOut)));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
