//! TCP: `tcp://HOST:PORT`, a `kflow device-sim` or a bridge to a board.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::{Link, LinkTimeouts};

/// A TCP stream. One made by [`TcpLink::connect`] can reconnect; one
/// accepted by a listener cannot.
pub struct TcpLink {
    endpoint: String,
    peer: Option<(String, u16)>,
    timeouts: LinkTimeouts,
    stream: TcpStream,
}

impl TcpLink {
    /// Connects to `host:port`, trying each address the name resolves to.
    pub fn connect(endpoint: String, host: &str, port: u16, timeouts: LinkTimeouts) -> io::Result<TcpLink> {
        let stream = connect_stream(host, port, timeouts)?;
        Ok(TcpLink {
            endpoint,
            peer: Some((host.to_string(), port)),
            timeouts,
            stream,
        })
    }

    /// The board side of an accepted connection.
    pub fn accepted(stream: TcpStream, timeouts: LinkTimeouts) -> io::Result<TcpLink> {
        configure(&stream, timeouts)?;
        let endpoint = match stream.peer_addr() {
            Ok(addr) => format!("tcp://{addr}"),
            Err(_) => "tcp://(peer)".to_string(),
        };
        Ok(TcpLink {
            endpoint,
            peer: None,
            timeouts,
            stream,
        })
    }
}

fn configure(stream: &TcpStream, timeouts: LinkTimeouts) -> io::Result<()> {
    // Requests and answers are small and alternate: wait for nothing.
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(timeouts.write.max(Duration::from_millis(1))))
}

fn connect_stream(host: &str, port: u16, timeouts: LinkTimeouts) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("`{host}` resolves to no address"));
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeouts.connect.max(Duration::from_millis(1))) {
            Ok(stream) => {
                configure(&stream, timeouts)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Read for TcpLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for TcpLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Link for TcpLink {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))
    }

    fn reopen(&mut self) -> io::Result<()> {
        let Some((host, port)) = &self.peer else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "an accepted connection cannot be reopened",
            ));
        };
        self.stream = connect_stream(host, *port, self.timeouts)?;
        Ok(())
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }
}
