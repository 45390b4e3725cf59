//! The protocol end to end: a host client against the serve loop over the
//! in-process, TCP and serial transports; fuzzed input; boards that drop
//! the connection, vanish or stay silent.

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use kflow_device::decoder::Decoded;
use kflow_device::frame::{Flags, Frame, Header, MessageType};
use kflow_device::message::{Digest, MAX_TENSOR_BYTES, Request, Response};
use kflow_device::transport::{Link, LinkTimeouts, TcpLink};
use kflow_device::{
    Board, Client, ClientError, DeviceError, DeviceInfo, DeviceUrl, ErrorCode, FlashProgress, ModelSummary,
    RetryPolicy, RunStatistics, ServeOptions, Server, StreamTransport, Transport, spawn_in_process,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serialport::SerialPort;

/// Answers each input with its bytes plus the model's first byte; counts
/// cycles as input length.
#[derive(Default)]
struct EchoBoard {
    model: Vec<u8>,
    input: Option<Vec<u8>>,
    output: Option<Vec<u8>>,
}

const CHUNK: u32 = 1024;

impl Board for EchoBoard {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            board: "echo".into(),
            accelerator: "none".into(),
            kernel_memory_bytes: 1 << 20,
            bias_memory_bytes: 2048,
            data_memory_bytes: 1 << 16,
            clock_hz: 100_000_000,
            firmware_version: "echo 1".into(),
            identity: "echo-0001".into(),
            max_model_bytes: 1 << 20,
            max_chunk_bytes: CHUNK,
        }
    }

    fn load_model(&mut self, model: &[u8]) -> Result<(), DeviceError> {
        self.model = model.to_vec();
        self.output = None;
        Ok(())
    }

    fn load_input(&mut self, input: &[u8]) -> Result<(), DeviceError> {
        self.input = Some(input.to_vec());
        Ok(())
    }

    fn run(&mut self) -> Result<RunStatistics, DeviceError> {
        let input = self
            .input
            .as_ref()
            .ok_or_else(|| DeviceError::new(ErrorCode::NoInput, "no input loaded"))?;
        let mut output = input.clone();
        output.extend(self.model.first());
        self.output = Some(output);
        Ok(RunStatistics {
            cycles: Some(input.len() as u64),
            time_us: Some(input.len() as u64 / 100),
            instructions: None,
        })
    }

    fn output(&self) -> Option<&[u8]> {
        self.output.as_deref()
    }

    fn reset(&mut self) {
        self.input = None;
        self.output = None;
    }
}

fn quick_server() -> Server<EchoBoard> {
    Server::with_options(
        EchoBoard::default(),
        ServeOptions {
            partial_frame_timeout: Duration::from_millis(5),
            idle_connection_timeout: None,
        },
    )
}

fn policy(attempts: u32, timeout_ms: u64) -> RetryPolicy {
    RetryPolicy {
        attempts,
        response_timeout: Duration::from_millis(timeout_ms),
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
    }
}

fn model_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// Listens on a free loopback port and serves one `Server` there for the
/// rest of the test process.
fn tcp_board() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || quick_server().serve_tcp(&listener, LinkTimeouts::default()));
    addr
}

fn tcp_url(addr: SocketAddr) -> DeviceUrl {
    DeviceUrl::Tcp {
        host: addr.ip().to_string(),
        port: addr.port(),
    }
}

fn connect(addr: SocketAddr) -> StreamTransport<TcpLink> {
    let url = tcp_url(addr);
    StreamTransport::new(TcpLink::connect(url.to_string(), "127.0.0.1", addr.port(), LinkTimeouts::default()).unwrap())
}

/// Flashes a model, checks the progress reports, runs one inference.
fn flash_and_infer<T: Transport>(client: &mut Client<T>) {
    let model = model_bytes(10_000);
    let mut reports = Vec::new();
    let summary = client.flash(&model, |p| reports.push(p)).unwrap();
    assert_eq!(summary.len, 10_000);
    assert_eq!(
        reports.first(),
        Some(&FlashProgress {
            sent_bytes: 0,
            total_bytes: 10_000
        })
    );
    assert_eq!(
        reports.last(),
        Some(&FlashProgress {
            sent_bytes: 10_000,
            total_bytes: 10_000
        })
    );
    assert_eq!(reports.len(), 1 + 10_000usize.div_ceil(CHUNK as usize));
    assert_eq!(client.verify().unwrap(), Some(summary));
    let inference = client.infer(b"window").unwrap();
    assert_eq!(inference.output, b"window\x03");
    assert_eq!(
        inference.statistics,
        RunStatistics {
            cycles: Some(6),
            time_us: Some(0),
            instructions: None,
        }
    );
    // Inputs and outputs larger than one message go in chunks.
    let large: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let large_inference = client.infer(&large).unwrap();
    assert_eq!(large_inference.output.len(), 150_001);
    assert_eq!(&large_inference.output[..150_000], &large[..]);
    assert_eq!(client.infer(b"").unwrap().output, b"\x03");
    client.infer(b"window").unwrap();
    assert_eq!(client.read_statistics().unwrap(), inference.statistics);
    assert_eq!(client.device_info().unwrap().identity, "echo-0001");
    client.ping().unwrap();
}

#[test]
fn flash_and_infer_in_process() {
    let (transport, board) = spawn_in_process(quick_server(), "sim://max78002");
    let mut client = Client::new(transport, policy(3, 2000));
    assert_eq!(client.device(), "sim://max78002");
    flash_and_infer(&mut client);
    drop(client);
    // Dropping the host's end stops the board's loop.
    assert_eq!(board.join().unwrap().board().model, model_bytes(10_000));
}

#[test]
fn flash_and_infer_over_tcp() {
    let addr = tcp_board();
    let url = tcp_url(addr);
    let mut client = Client::connect(&url, LinkTimeouts::default(), policy(3, 2000)).unwrap();
    assert_eq!(client.device(), url.to_string());
    flash_and_infer(&mut client);
}

#[test]
fn flash_and_infer_over_a_serial_pseudo_terminal() {
    let (master, slave) = serialport::TTYPort::pair().unwrap();
    let path = slave.name().unwrap();
    thread::spawn(move || {
        let link = kflow_device::transport::SerialLink::from_port("board".into(), Box::new(master));
        let _ = quick_server().serve(&mut StreamTransport::new(link));
    });
    let url: DeviceUrl = format!("serial://{path}?baud=921600").parse().unwrap();
    let transport = kflow_device::open(&url, LinkTimeouts::default()).unwrap();
    let mut client = Client::new(transport, policy(3, 2000));
    flash_and_infer(&mut client);
    drop(slave);
}

/// One fuzz input: random bytes, or a valid frame damaged in one of the
/// ways a line or a buggy host damages frames.
fn fuzz_input(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let random_bytes = |rng: &mut ChaCha8Rng, max: usize| {
        let len = rng.random_range(1..=max);
        (0..len).map(|_| rng.random::<u8>()).collect::<Vec<u8>>()
    };
    let kind = MessageType::ALL[rng.random_range(0..MessageType::ALL.len())];
    let seq = rng.random_range(1..1_000_000u32);
    let payload = random_bytes(rng, 300);
    let valid = Frame::new(kind, seq, payload.clone()).encode().unwrap();
    match rng.random_range(0..7) {
        0 => random_bytes(rng, 200),
        1 => {
            let mut bytes = valid;
            for _ in 0..rng.random_range(1..=4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            bytes
        }
        2 => {
            let cut = rng.random_range(1..valid.len());
            valid[..cut].to_vec()
        }
        3 => {
            // An intact header announcing anything: unknown types, flags,
            // lengths far over the limit.
            let mut bytes = Header {
                kind,
                flags: Flags::NONE,
                seq,
                payload_len: rng.random(),
            }
            .to_bytes();
            bytes[3] = rng.random();
            bytes[4] = rng.random_range(0..4);
            let check = crc32fast::hash(&bytes[..14]) as u16;
            bytes[14..16].copy_from_slice(&check.to_le_bytes());
            bytes.to_vec()
        }
        4 => {
            let mut bytes = random_bytes(rng, 50);
            bytes.extend(valid);
            bytes.extend(random_bytes(rng, 50));
            bytes
        }
        5 => {
            // A valid request frame whose payload is random: the message
            // decoder's turn.
            valid
        }
        _ => {
            // A well-formed request with random fields.
            let (kind, payload) = match rng.random_range(0..4) {
                0 => (
                    MessageType::LoadModelChunk,
                    postcard::to_stdvec(&(rng.random::<u32>(), payload)).unwrap(),
                ),
                1 => {
                    let fields = (rng.random_range(0..1000u32), rng.random_range(0..1000u32), payload);
                    (MessageType::LoadInput, postcard::to_stdvec(&fields).unwrap())
                }
                2 => {
                    let model = ModelSummary {
                        len: rng.random(),
                        digest: Digest([0; 32]),
                    };
                    (MessageType::LoadModelBegin, postcard::to_stdvec(&model).unwrap())
                }
                _ => (MessageType::Run, Vec::new()),
            };
            let mut frame = Frame::new(kind, seq, payload);
            if rng.random() {
                frame.flags = Flags::RETRY;
            }
            frame.encode().unwrap()
        }
    }
}

/// Sends 10,000 fuzz inputs, each followed by a ping: every input must be
/// answered before the ping's pong, and every pong must come.
fn fuzz_then_use<L: Link>(mut transport: StreamTransport<L>, seed: u64) -> StreamTransport<L> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut codes = HashSet::new();
    for case in 0..10_000u32 {
        let input = fuzz_input(&mut rng);
        transport.link_mut().write_all(&input).unwrap();
        let probe_seq = 2_000_000 + case;
        let ping = Request::Ping { nonce: case.into() };
        transport
            .send(&Frame::new(ping.kind(), probe_seq, ping.encode().unwrap()))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut answers = 0;
        loop {
            match transport.receive(deadline) {
                Ok(Decoded::Frame(frame)) if frame.seq == probe_seq => {
                    assert_eq!(
                        Response::decode(frame.kind, &frame.payload).unwrap(),
                        Response::Pong { nonce: case.into() },
                        "case {case}"
                    );
                    break;
                }
                Ok(Decoded::Frame(frame)) => {
                    assert!(frame.kind.is_response(), "case {case}: the board sent {:?}", frame.kind);
                    if let Response::Error(error) = Response::decode(frame.kind, &frame.payload).unwrap() {
                        codes.insert(error.code);
                    }
                    answers += 1;
                }
                Ok(Decoded::Rejected(rejected)) => {
                    panic!("case {case}: the board sent bytes that are not a frame: {rejected:?}")
                }
                Err(e) => panic!("case {case}: no pong: {e} (input {input:02x?})"),
            }
        }
        assert!(answers >= 1, "case {case}: input not answered: {input:02x?}");
    }
    // The inputs reached every kind of refusal.
    for code in [
        ErrorCode::CorruptFrame,
        ErrorCode::Malformed,
        ErrorCode::Unsupported,
        ErrorCode::TooLarge,
        ErrorCode::OutOfOrder,
        ErrorCode::NoModel,
    ] {
        assert!(codes.contains(&code), "no input was answered with {code}: {codes:?}");
    }
    transport
}

#[test]
fn fuzzed_frames_in_process_are_all_answered_and_the_board_keeps_serving() {
    let (transport, _board) = spawn_in_process(quick_server(), "sim://max78002");
    let transport = fuzz_then_use(transport, 1);
    flash_and_infer(&mut Client::new(transport, policy(3, 2000)));
}

#[test]
fn fuzzed_frames_over_tcp_are_all_answered_and_the_board_keeps_serving() {
    let addr = tcp_board();
    let transport = fuzz_then_use(connect(addr), 2);
    flash_and_infer(&mut Client::new(transport, policy(3, 2000)));
    // A new connection to the same board works too.
    flash_and_infer(&mut Client::new(connect(addr), policy(3, 2000)));
}

/// Serves a first connection until the chunk at `drop_at` arrives, then
/// closes it without answering (after taking the chunk, if `take_it`);
/// then, if `come_back`, serves on.
fn dropping_board(drop_at: u32, take_it: bool, come_back: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let mut server = quick_server();
        let (stream, _) = listener.accept().unwrap();
        let mut transport = StreamTransport::new(TcpLink::accepted(stream, LinkTimeouts::default()).unwrap());
        loop {
            let Ok(Decoded::Frame(frame)) = transport.receive(Instant::now() + Duration::from_secs(10)) else {
                panic!("the client went away first");
            };
            if let Ok(Request::LoadModelChunk { offset, .. }) = Request::decode(frame.kind, &frame.payload)
                && offset == drop_at
            {
                if take_it {
                    server.answer(&frame);
                }
                break;
            }
            transport.send(&server.answer(&frame)).unwrap();
        }
        if come_back {
            drop(transport);
            let _ = server.serve_tcp(&listener, LinkTimeouts::default());
        } else {
            // Gone for good: nothing listens any more.
            drop(listener);
            drop(transport);
        }
    });
    addr
}

#[test]
fn flash_resumes_by_offset_after_the_connection_drops_mid_upload() {
    let addr = dropping_board(4096, false, true);
    let mut client = Client::new(connect(addr), policy(3, 2000));
    flash_and_infer(&mut client);
}

#[test]
fn flash_survives_an_answer_lost_with_the_connection() {
    // The board took the chunk; the resent one is answered from memory.
    let addr = dropping_board(4096, true, true);
    let mut client = Client::new(connect(addr), policy(3, 2000));
    flash_and_infer(&mut client);
}

#[test]
fn flash_to_a_board_that_stays_gone_fails_naming_device_step_and_tries() {
    let addr = dropping_board(4096, false, false);
    let mut client = Client::new(connect(addr), policy(3, 2000));
    let err = client.flash(&model_bytes(10_000), |_| {}).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ClientError::NoAnswer { attempts: 3, .. }), "{message}");
    let expected = format!("device tcp://{addr}: load model chunk at offset 4096: no answer after 3 tries (last: ");
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.contains("refused"), "{message}");
}

#[test]
fn silent_board_times_out_after_every_try() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        // Reads everything, answers nothing.
        let (mut stream, _) = listener.accept().unwrap();
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).is_ok_and(|n| n > 0) {}
    });
    let mut client = Client::new(connect(addr), policy(2, 100));
    let start = Instant::now();
    let err = client.ping().unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(
        err.to_string(),
        format!("device tcp://{addr}: ping: no answer after 2 tries (last: no answer within 100 ms)")
    );
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn corrupted_request_is_retried_and_answered() {
    // A link that flips a payload bit of the first frame it sends: the
    // board answers "corrupt frame" with the sequence number and the
    // client sends again.
    let (transport, _board) = spawn_in_process(quick_server(), "sim://max78002");
    let mut client = Client::new(
        CorruptFirst {
            inner: transport,
            done: false,
        },
        policy(3, 2000),
    );
    client.ping().unwrap();
    assert_eq!(client.device_info().unwrap().board, "echo");
}

struct CorruptFirst<T> {
    inner: T,
    done: bool,
}

impl<L: Link> Transport for CorruptFirst<StreamTransport<L>> {
    fn send(&mut self, frame: &Frame) -> Result<(), kflow_device::TransportError> {
        if self.done {
            return self.inner.send(frame);
        }
        self.done = true;
        let mut bytes = frame.encode()?;
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        self.inner.link_mut().write_all(&bytes)?;
        Ok(())
    }

    fn receive(&mut self, deadline: Instant) -> Result<Decoded, kflow_device::TransportError> {
        self.inner.receive(deadline)
    }

    fn give_up_partial(&mut self) -> Option<kflow_device::decoder::Rejected> {
        self.inner.give_up_partial()
    }

    fn pending(&self) -> usize {
        self.inner.pending()
    }

    fn reconnect(&mut self) -> Result<(), kflow_device::TransportError> {
        self.inner.reconnect()
    }

    fn endpoint(&self) -> &str {
        self.inner.endpoint()
    }
}

#[test]
fn board_refusal_is_not_retried_and_names_the_step() {
    let (transport, _board) = spawn_in_process(quick_server(), "sim://max78000");
    let mut client = Client::new(transport, policy(3, 2000));
    let err = client.run().unwrap_err();
    assert_eq!(err.device_error().map(|e| e.code), Some(ErrorCode::NoModel));
    assert_eq!(
        err.to_string(),
        "device sim://max78000: run: the board refused: no model loaded: flash a model first"
    );
    let too_big = vec![0; MAX_TENSOR_BYTES as usize + 1];
    let message = client.load_input(&too_big).unwrap_err().to_string();
    assert_eq!(
        message,
        "device sim://max78000: load input (4194305 bytes): an input has at most 4194304 bytes"
    );
}

#[test]
fn an_idle_connection_is_ended_and_the_board_serves_the_next() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let options = ServeOptions {
            partial_frame_timeout: Duration::from_millis(5),
            idle_connection_timeout: Some(Duration::from_millis(100)),
        };
        Server::with_options(EchoBoard::default(), options).serve_tcp(&listener, LinkTimeouts::default())
    });
    // A host that connects and says nothing would hold the board for ever.
    let mut silent = connect(addr);
    let mut client = Client::new(connect(addr), policy(1, 2000));
    client.ping().unwrap();
    assert!(matches!(
        silent.receive(Instant::now() + Duration::from_secs(2)),
        Err(kflow_device::TransportError::Closed)
    ));
}

/// A frame on a slow line (every piece well within the partial-frame
/// timeout, the whole frame far beyond it) is a frame, not a truncation.
#[test]
fn a_frame_whose_bytes_keep_coming_slowly_is_answered() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServeOptions {
        partial_frame_timeout: Duration::from_millis(150),
        idle_connection_timeout: None,
    };
    thread::spawn(move || {
        Server::with_options(EchoBoard::default(), options).serve_tcp(&listener, LinkTimeouts::default())
    });
    let mut transport = connect(addr);
    let ping = Request::Ping { nonce: 77 };
    let bytes = Frame::new(ping.kind(), 9, ping.encode().unwrap()).encode().unwrap();
    let start = Instant::now();
    for piece in bytes.chunks(bytes.len().div_ceil(12)) {
        std::io::Write::write_all(transport.link_mut(), piece).unwrap();
        thread::sleep(Duration::from_millis(40));
    }
    assert!(start.elapsed() > Duration::from_millis(400));
    match transport.receive(Instant::now() + Duration::from_secs(5)) {
        Ok(Decoded::Frame(frame)) => {
            assert_eq!(frame.seq, 9);
            assert_eq!(
                Response::decode(frame.kind, &frame.payload).unwrap(),
                Response::Pong { nonce: 77 }
            );
        }
        other => panic!("expected the pong, got {other:?}"),
    }
}
