//! `kflow device-sim` under 10,000 random and damaged frames over TCP:
//! random bytes, valid frames with flipped bits, truncated frames, lengths
//! over the limit, wrong CRCs, intact frames around garbage payloads,
//! repeated and out-of-order sequence numbers, responses sent to the board,
//! uploads with wrong offsets and every message type, on one long
//! connection, on many short ones and on connections dropped mid-frame.
//!
//! What the protocol promises (`rules/device/src/frame.rs`, `serve.rs`):
//! every frame whose header is intact is answered with its sequence
//! number, by its response or by an `Error` whose code says what was wrong
//! (damaged → `CorruptFrame`, over a limit → `TooLarge`, unknown version,
//! type or flags or a response sent to the board → `Unsupported`); bytes
//! without an intact header are answered with sequence number 0; a good
//! frame after any of that is still found; the board keeps its upload
//! across connections and answers a `RETRY` of its last request from
//! memory. The test checks all of it, that everything the board sends is
//! an intact response frame, that the process never exits, and that
//! afterwards a real model flashes and runs as on the in-process board.

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::Rng;
use common::board::{model, start_tcp};
use kflow_ai8x_board::connect;
use kflow_device::decoder::{Decoded, FrameDecoder};
use kflow_device::frame::{Flags, Frame, FrameError, HEADER_LEN, Header, MessageType, VERSION};
use kflow_device::message::{Digest, MAX_DATA, MAX_MODEL_BYTES, MAX_TENSOR_BYTES, Request, Response};
use kflow_device::{
    Client, DeviceError, DeviceInfo, DeviceUrl, ErrorCode, LinkTimeouts, ModelSummary, RetryPolicy, RunStatistics,
    Transport,
};

const FRAMES: usize = 10_000;
const SEED: u64 = 0x6b66_6465_7669_6365;
/// The board answers in microseconds; this is for a machine busy with
/// other work.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn device_sim_answers_damaged_frames_as_the_protocol_says_and_keeps_serving() {
    let started = Instant::now();
    let (mut board, url) = start_tcp();
    let addr: SocketAddr = url.trim_start_matches("tcp://").parse().unwrap();
    let mut fuzz = Fuzz::new(SEED);
    let mut report = Report::default();
    let mut connections = 0;
    while report.frames < FRAMES {
        // One long connection first, then a mix.
        let plan = if connections == 0 {
            Plan::Long
        } else {
            match fuzz.rng.below(20) {
                0 | 1 => Plan::Upload,
                2..=5 => Plan::Dropped,
                _ => Plan::Short,
            }
        };
        match plan {
            Plan::Long => {
                let mut conn = Conn::open(addr);
                for i in 0..2000 {
                    fuzz.case(&mut conn);
                    if i % 100 == 99 {
                        fuzz.still_answers(&mut conn);
                    }
                }
                fuzz.still_answers(&mut conn);
                report.check(connections, conn.close());
            }
            Plan::Short => {
                let mut conn = Conn::open(addr);
                let n = 1 + fuzz.rng.below(60);
                for i in 0..n {
                    fuzz.case(&mut conn);
                    if i == n / 2 && fuzz.rng.below(3) == 0 {
                        fuzz.still_answers(&mut conn);
                    }
                }
                // Most end on a check that the board still answers; the
                // rest close with whatever is half-sent.
                if fuzz.rng.below(3) > 0 {
                    fuzz.still_answers(&mut conn);
                }
                report.check(connections, conn.close());
            }
            Plan::Dropped => {
                let mut conn = Conn::open(addr);
                for _ in 0..fuzz.rng.below(8) {
                    fuzz.case(&mut conn);
                }
                fuzz.half_frame(&mut conn);
                report.drop_mid_frame(conn);
            }
            Plan::Upload => fuzz.upload_with_wrong_offsets(addr, &mut report, connections),
        }
        assert!(
            board.0.try_wait().unwrap().is_none(),
            "kflow device-sim exited during connection {connections}"
        );
        connections += 1;
    }

    // A frame that stops arriving is answered once the board gives up on
    // it: with its sequence number when its header arrived, with 0 when
    // not even that.
    for cut in [HEADER_LEN + 3, HEADER_LEN - 5] {
        let mut conn = Conn::open(addr);
        let seq = fuzz.seq();
        let bytes = frame(
            MessageType::Ping,
            Flags::NONE,
            seq,
            &Request::Ping { nonce: 5 }.encode().unwrap(),
        );
        fuzz.send_cut(&mut conn, seq, &bytes, cut);
        conn.frames += 1;
        let expected_seq = if cut >= HEADER_LEN { seq } else { 0 };
        let answer = conn.wait_for(expected_seq);
        assert_eq!(error_code(&answer), Some(ErrorCode::CorruptFrame), "{answer:?}");
        fuzz.still_answers(&mut conn);
        report.check(connections, conn.close());
        connections += 1;
    }
    assert!(board.0.try_wait().unwrap().is_none(), "kflow device-sim exited");

    // And after all that, a real model.
    let (image, input_len) = model();
    let input: Vec<u8> = (0..input_len).map(|i| (i * 13 % 256) as u8).collect();
    let run = |mut client: Client<Box<dyn Transport>>| {
        client.flash(&image, |_| {}).unwrap();
        client.infer(&input).unwrap()
    };
    let over_tcp = run(connect(&url.parse().unwrap(), LinkTimeouts::default(), RetryPolicy::default()).unwrap());
    let in_process = run(connect(
        &DeviceUrl::Sim(kflow_device::SimBoard::Max78002),
        LinkTimeouts::default(),
        RetryPolicy::default(),
    )
    .unwrap());
    assert_eq!(over_tcp, in_process);
    assert!(board.0.try_wait().unwrap().is_none(), "kflow device-sim exited");

    println!(
        "{} frames on {connections} connections ({} dropped mid-frame) in {:.1} s; \
         {} answers checked against what the protocol says, {} not required \
         (after a frame cut off at the end of a connection), {} answers to unreadable bytes",
        report.frames,
        report.dropped,
        started.elapsed().as_secs_f64(),
        report.checked,
        report.not_required,
        report.unreadable
    );
    println!("cases: {:?}", fuzz.cases);
    assert!(
        report.failures.is_empty(),
        "{} wrong answers, the first:\n{}",
        report.failures.len(),
        report.failures[..report.failures.len().min(20)].join("\n")
    );
    // Most answers are checked, not waved through.
    assert!(report.checked > FRAMES / 2, "only {} answers checked", report.checked);
}

enum Plan {
    Long,
    Short,
    Dropped,
    Upload,
}

/// What the board must answer a frame with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// An error frame with this code.
    Error(ErrorCode),
    /// A request that reached the message layer: its own response, or an
    /// error about what it asked (never about the frame, never internal).
    Answer(MessageType),
    Pong(u64),
}

/// A frame with an intact header, as sent.
struct Sent {
    what: &'static str,
    seq: u32,
    expect: Expect,
    /// Offsets in the connection's stream of its first byte and of the byte
    /// after the last one sent.
    start: usize,
    end: usize,
    /// Bytes its header announces that were never sent (a truncated frame).
    missing: usize,
}

/// One connection to the board; a thread decodes everything the board
/// sends, so that the board never blocks on a full socket.
struct Conn {
    stream: TcpStream,
    answers: Receiver<Decoded>,
    reader: JoinHandle<()>,
    received: Vec<Decoded>,
    sent: Vec<Sent>,
    written: usize,
    frames: usize,
}

/// What a connection sent and got, once closed.
struct Closed {
    sent: Vec<Sent>,
    written: usize,
    received: Vec<Decoded>,
    frames: usize,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut from_board = stream.try_clone().unwrap();
        let (tx, answers) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut decoder = FrameDecoder::new();
            let mut buf = vec![0; 64 * 1024];
            loop {
                match from_board.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => decoder.push(&buf[..n]),
                }
                while let Some(decoded) = decoder.decode_next() {
                    if tx.send(decoded).is_err() {
                        return;
                    }
                }
            }
        });
        Conn {
            stream,
            answers,
            reader,
            received: Vec::new(),
            sent: Vec::new(),
            written: 0,
            frames: 0,
        }
    }

    /// Bytes without an intact header (or not meant as a frame).
    fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.written += bytes.len();
    }

    fn send(&mut self, what: &'static str, seq: u32, bytes: &[u8], expect: Expect) {
        self.send_part(what, seq, bytes, 0, expect);
    }

    fn send_part(&mut self, what: &'static str, seq: u32, bytes: &[u8], missing: usize, expect: Expect) {
        let start = self.written;
        self.write(bytes);
        self.sent.push(Sent {
            what,
            seq,
            expect,
            start,
            end: self.written,
            missing,
        });
    }

    /// Bytes that a truncated frame sent earlier still waits for.
    fn awaited(&self) -> usize {
        self.sent
            .iter()
            .map(|s| s.missing.saturating_sub(self.written - s.end))
            .max()
            .unwrap_or(0)
    }

    /// Sends zeros until no truncated frame waits for more, so that what
    /// follows is decoded at once.
    fn complete_truncated(&mut self) {
        let n = self.awaited();
        self.write(&vec![0; n]);
    }

    /// The next frame from the board with this sequence number.
    fn wait_for(&mut self, seq: u32) -> Frame {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let decoded = match self.answers.recv_timeout(left) {
                Ok(decoded) => decoded,
                Err(RecvTimeoutError::Timeout) => panic!("no answer with sequence number {seq} in {ANSWER_TIMEOUT:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("the board closed the connection"),
            };
            self.received.push(decoded.clone());
            if let Decoded::Frame(frame) = decoded
                && frame.seq == seq
            {
                return frame;
            }
        }
    }

    /// Sends a request and waits for its answer.
    fn ask(&mut self, seq: u32, flags: Flags, request: &Request) -> Frame {
        let bytes = frame(request.kind(), flags, seq, &request.encode().unwrap());
        self.send("request", seq, &bytes, Expect::Answer(request.kind()));
        self.frames += 1;
        self.wait_for(seq)
    }

    /// Ends the connection cleanly and collects every answer.
    fn close(mut self) -> Closed {
        self.stream.shutdown(Shutdown::Write).unwrap();
        loop {
            match self.answers.recv_timeout(ANSWER_TIMEOUT) {
                Ok(decoded) => self.received.push(decoded),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("the board did not end a connection the host closed"),
            }
        }
        self.reader.join().unwrap();
        Closed {
            sent: self.sent,
            written: self.written,
            received: self.received,
            frames: self.frames,
        }
    }
}

/// The frame's bytes; the payload may be anything up to the type's limit.
fn frame(kind: MessageType, flags: Flags, seq: u32, payload: &[u8]) -> Vec<u8> {
    Frame {
        kind,
        flags,
        seq,
        payload: payload.to_vec(),
    }
    .encode()
    .unwrap()
}

fn decoded(frame: &Frame) -> Response {
    Response::decode(frame.kind, &frame.payload).unwrap()
}

fn error_code(frame: &Frame) -> Option<ErrorCode> {
    match Response::decode(frame.kind, &frame.payload) {
        Ok(Response::Error(e)) => Some(e.code),
        _ => None,
    }
}

/// The code the protocol answers an unreadable frame with (`ErrorCode`'s
/// documentation).
fn code_for(error: &FrameError) -> ErrorCode {
    match error {
        FrameError::Garbage { .. }
        | FrameError::HeaderCheck
        | FrameError::Crc { .. }
        | FrameError::Truncated { .. } => ErrorCode::CorruptFrame,
        FrameError::Oversized { .. } => ErrorCode::TooLarge,
        FrameError::Version(_) | FrameError::UnknownType(_) | FrameError::UnknownFlags(_) | FrameError::Reserved(_) => {
            ErrorCode::Unsupported
        }
    }
}

/// What an intact frame of this type is answered with.
fn expect_intact(kind: MessageType) -> Expect {
    if kind.is_response() {
        Expect::Error(ErrorCode::Unsupported)
    } else {
        Expect::Answer(kind)
    }
}

const REQUESTS: [MessageType; 11] = [
    MessageType::Ping,
    MessageType::GetInfo,
    MessageType::LoadModelBegin,
    MessageType::LoadModelChunk,
    MessageType::LoadModelEnd,
    MessageType::Verify,
    MessageType::LoadInput,
    MessageType::Run,
    MessageType::ReadOutput,
    MessageType::ReadStatistics,
    MessageType::Reset,
];

enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        match self {
            Message::Request(request) => request.encode().unwrap(),
            Message::Response(response) => response.encode().unwrap(),
        }
    }
}

/// The generator of frames, on one seeded stream.
struct Fuzz {
    rng: Rng,
    next_seq: u32,
    /// Sequence numbers of complete frames, to send again.
    used: Vec<u32>,
    /// The next type of the round over every type.
    round: usize,
    cases: BTreeMap<&'static str, usize>,
}

impl Fuzz {
    fn new(seed: u64) -> Fuzz {
        Fuzz {
            rng: Rng::new(seed),
            next_seq: 1,
            used: Vec::new(),
            round: 0,
            cases: BTreeMap::new(),
        }
    }

    fn seq(&mut self) -> u32 {
        self.next_seq += 1;
        self.next_seq
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.rng.next_u64() as u8).collect()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.below(items.len())]
    }

    /// Mostly short, now and then up to `max`.
    fn len(&mut self, max: usize) -> usize {
        match self.rng.below(40) {
            0 => max,
            1 => self.rng.below(max + 1),
            _ => self.rng.below(max.min(300) + 1),
        }
    }

    fn offset(&mut self) -> u32 {
        match self.rng.below(3) {
            0 => 0,
            1 => self.rng.below(100_000) as u32,
            _ => self.rng.next_u64() as u32,
        }
    }

    fn summary(&mut self) -> ModelSummary {
        let digest: [u8; 32] = self.bytes(32).try_into().unwrap();
        ModelSummary {
            len: self.rng.below(MAX_MODEL_BYTES as usize + 1) as u32,
            digest: Digest(digest),
        }
    }

    fn request(&mut self, kind: MessageType) -> Request {
        match kind {
            MessageType::Ping => Request::Ping {
                nonce: self.rng.next_u64(),
            },
            MessageType::GetInfo => Request::GetInfo,
            MessageType::LoadModelBegin => Request::LoadModelBegin(self.summary()),
            MessageType::LoadModelChunk => Request::LoadModelChunk {
                offset: self.offset(),
                data: {
                    let n = self.len(MAX_DATA);
                    self.bytes(n)
                },
            },
            MessageType::LoadModelEnd => Request::LoadModelEnd(self.summary()),
            MessageType::Verify => Request::Verify,
            MessageType::LoadInput => Request::LoadInput {
                total_len: self.rng.below(MAX_TENSOR_BYTES as usize + 1) as u32,
                offset: self.offset(),
                data: {
                    let n = self.len(MAX_DATA);
                    self.bytes(n)
                },
            },
            MessageType::Run => Request::Run,
            MessageType::ReadOutput => Request::ReadOutput { offset: self.offset() },
            MessageType::ReadStatistics => Request::ReadStatistics,
            MessageType::Reset => Request::Reset,
            other => panic!("{other:?} is not a request"),
        }
    }

    fn response(&mut self, kind: MessageType) -> Response {
        let mut maybe = || (self.rng.below(2) == 0).then(|| self.rng.next_u64());
        let statistics = RunStatistics {
            cycles: maybe(),
            time_us: maybe(),
            instructions: maybe(),
        };
        match kind {
            MessageType::Pong => Response::Pong {
                nonce: self.rng.next_u64(),
            },
            MessageType::Info => Response::Info(DeviceInfo {
                board: "max78002".into(),
                accelerator: "MAX78002 CNN".into(),
                kernel_memory_bytes: 1,
                bias_memory_bytes: 2,
                data_memory_bytes: 3,
                clock_hz: 4,
                firmware_version: "fuzz".into(),
                identity: "fuzz".into(),
                max_model_bytes: 5,
                max_chunk_bytes: 6,
            }),
            MessageType::UploadStarted => Response::UploadStarted,
            MessageType::ChunkAccepted => Response::ChunkAccepted {
                next_offset: self.offset(),
            },
            MessageType::ModelLoaded => Response::ModelLoaded(self.summary()),
            MessageType::Verified => Response::Verified(Some(self.summary())),
            MessageType::InputLoaded => Response::InputLoaded {
                received: self.offset(),
            },
            MessageType::RunComplete => Response::RunComplete {
                output_len: self.offset(),
                statistics,
            },
            MessageType::Output => Response::Output {
                total_len: self.offset(),
                data: {
                    let n = self.len(MAX_DATA);
                    self.bytes(n)
                },
            },
            MessageType::Statistics => Response::Statistics(statistics),
            MessageType::ResetDone => Response::ResetDone,
            MessageType::Error => Response::Error(DeviceError::new(
                ErrorCode::from(self.rng.below(12) as u16),
                "sent to the board",
            )),
            other => panic!("{other:?} is not a response"),
        }
    }

    fn message(&mut self, kind: MessageType) -> Message {
        if kind.is_response() {
            Message::Response(self.response(kind))
        } else {
            Message::Request(self.request(kind))
        }
    }

    /// A valid frame: mostly a request, sometimes a response.
    fn valid_frame(&mut self) -> (MessageType, u32, Vec<u8>) {
        let kind = if self.rng.below(5) == 0 {
            self.pick(MessageType::ALL)
        } else {
            self.pick(&REQUESTS)
        };
        let seq = self.seq();
        let payload = self.message(kind).encode();
        (kind, seq, frame(kind, Flags::NONE, seq, &payload))
    }

    fn count(&mut self, what: &'static str, conn: &mut Conn) {
        *self.cases.entry(what).or_default() += 1;
        conn.frames += 1;
    }

    /// One random or damaged frame.
    fn case(&mut self, conn: &mut Conn) {
        match self.rng.below(100) {
            0..15 => self.random_bytes(conn),
            15..30 => self.flipped_bits(conn),
            30..38 => self.truncated(conn),
            38..46 => self.oversized(conn),
            46..54 => self.wrong_crc(conn),
            54..68 => self.garbage_payload(conn),
            68..76 => self.sequence_games(conn),
            76..92 => self.every_type(conn),
            _ => self.bad_header_field(conn),
        }
    }

    fn random_bytes(&mut self, conn: &mut Conn) {
        self.count("random bytes", conn);
        let n = 1 + self.len(70_000);
        let bytes = self.bytes(n);
        conn.write(&bytes);
    }

    fn flipped_bits(&mut self, conn: &mut Conn) {
        self.count("flipped bits", conn);
        let (_, _, mut bytes) = self.valid_frame();
        for _ in 0..1 + self.rng.below(3) {
            let bit = self.rng.below(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        // Where the flips fell decides: a header that still passes its
        // check keeps its sequence number; one that does not is noise.
        match Frame::decode(&bytes) {
            Err((None, _)) => conn.write(&bytes),
            Err((Some(seq), FrameError::Truncated { have, need })) => {
                let expect = Expect::Error(ErrorCode::CorruptFrame);
                conn.send_part("flipped bits", seq, &bytes, need - have, expect);
            }
            Err((Some(seq), error)) => conn.send("flipped bits", seq, &bytes, Expect::Error(code_for(&error))),
            Ok((frame, _)) => conn.send("flipped bits", frame.seq, &bytes, expect_intact(frame.kind)),
        }
    }

    fn truncated(&mut self, conn: &mut Conn) {
        self.count("truncated", conn);
        let (_, seq, bytes) = self.valid_frame();
        let cut = 1 + self.rng.below(bytes.len() - 1);
        self.send_cut(conn, seq, &bytes, cut);
    }

    fn send_cut(&mut self, conn: &mut Conn, seq: u32, bytes: &[u8], cut: usize) {
        if cut >= HEADER_LEN {
            let expect = Expect::Error(ErrorCode::CorruptFrame);
            conn.send_part("truncated", seq, &bytes[..cut], bytes.len() - cut, expect);
        } else {
            conn.write(&bytes[..cut]);
        }
    }

    /// A valid frame cut anywhere, for the end of a dropped connection.
    fn half_frame(&mut self, conn: &mut Conn) {
        self.count("cut by a dropped connection", conn);
        let (_, seq, bytes) = self.valid_frame();
        let cut = 1 + self.rng.below(bytes.len() - 1);
        self.send_cut(conn, seq, &bytes, cut);
    }

    fn oversized(&mut self, conn: &mut Conn) {
        self.count("length over the limit", conn);
        let kind = self.pick(MessageType::ALL);
        let max = kind.max_payload();
        let payload_len = match self.rng.below(3) {
            0 => max + 1,
            1 => u32::MAX,
            _ => max + 1 + (self.rng.next_u64() as u32) % (u32::MAX - max - 1),
        };
        let seq = self.seq();
        let flags = self.pick(&[Flags::NONE, Flags::RETRY]);
        let header = Header {
            kind,
            flags,
            seq,
            payload_len,
        }
        .to_bytes();
        conn.send(
            "length over the limit",
            seq,
            &header,
            Expect::Error(ErrorCode::TooLarge),
        );
        // What the sender meant as the start of its payload.
        if self.rng.below(2) == 0 {
            let n = self.len(5000);
            let bytes = self.bytes(n);
            conn.write(&bytes);
        }
    }

    fn wrong_crc(&mut self, conn: &mut Conn) {
        self.count("wrong CRC", conn);
        let (_, seq, mut bytes) = self.valid_frame();
        let at = bytes.len() - 4 + self.rng.below(4);
        bytes[at] ^= 1 + self.rng.below(255) as u8;
        conn.send("wrong CRC", seq, &bytes, Expect::Error(ErrorCode::CorruptFrame));
    }

    /// An intact frame whose payload is random, so that it reaches the
    /// message layer.
    fn garbage_payload(&mut self, conn: &mut Conn) {
        self.count("garbage payload", conn);
        let kind = if self.rng.below(5) == 0 {
            self.pick(MessageType::ALL)
        } else {
            self.pick(&REQUESTS)
        };
        let n = self.len(kind.max_payload() as usize);
        let payload = self.bytes(n);
        let seq = self.seq();
        conn.send(
            "garbage payload",
            seq,
            &frame(kind, Flags::NONE, seq, &payload),
            expect_intact(kind),
        );
    }

    /// Sequence numbers a client would not send: repeated, going
    /// backwards, 0, the largest, a `RETRY` of something never sent.
    fn sequence_games(&mut self, conn: &mut Conn) {
        self.count("sequence numbers", conn);
        let nonce = self.rng.next_u64();
        let payload = Request::Ping { nonce }.encode().unwrap();
        let (seq, flags) = match self.rng.below(5) {
            0 if !self.used.is_empty() => (self.used[self.rng.below(self.used.len())], Flags::NONE),
            1 if !self.used.is_empty() => (self.used[self.rng.below(self.used.len())], Flags::RETRY),
            2 => (self.next_seq.saturating_sub(1 + self.rng.below(50) as u32), Flags::NONE),
            3 => (u32::MAX, self.pick(&[Flags::NONE, Flags::RETRY])),
            _ => (0, Flags::NONE),
        };
        let bytes = frame(MessageType::Ping, flags, seq, &payload);
        if seq == 0 {
            // Answers to unreadable bytes carry 0 too: no answer can be
            // told apart as this one's.
            conn.write(&bytes);
        } else {
            conn.send("sequence numbers", seq, &bytes, Expect::Pong(nonce));
        }
    }

    /// Valid messages of every type in turn, requests and responses.
    fn every_type(&mut self, conn: &mut Conn) {
        self.count("every type", conn);
        let kind = MessageType::ALL[self.round % MessageType::ALL.len()];
        self.round += 1;
        let seq = self.seq();
        let (payload, expect) = match self.message(kind) {
            Message::Request(Request::Ping { nonce }) => {
                (Request::Ping { nonce }.encode().unwrap(), Expect::Pong(nonce))
            }
            message => (message.encode(), expect_intact(kind)),
        };
        conn.send("every type", seq, &frame(kind, Flags::NONE, seq, &payload), expect);
        self.used.push(seq);
    }

    /// An intact header with a version, type, flag bit or reserved byte
    /// this side does not know.
    fn bad_header_field(&mut self, conn: &mut Conn) {
        self.count("unknown header field", conn);
        let kind = self.pick(MessageType::ALL);
        let seq = self.seq();
        let payload_len = self.rng.below(200) as u32;
        let mut header = Header {
            kind,
            flags: Flags::NONE,
            seq,
            payload_len,
        }
        .to_bytes();
        match self.rng.below(4) {
            0 => header[2] = self.pick(&[0, VERSION - 1, VERSION + 1, 0x7f, 0xff]),
            1 => {
                let code = loop {
                    let code = self.rng.next_u64() as u8;
                    if MessageType::from_code(code).is_none() {
                        break code;
                    }
                };
                header[3] = code;
            }
            2 => header[4] = 2 << self.rng.below(7) | self.rng.below(2) as u8,
            _ => header[5] = 1 + self.rng.below(255) as u8,
        }
        let check = crc32fast::hash(&header[..14]) as u16;
        header[14..16].copy_from_slice(&check.to_le_bytes());
        let rest = self.bytes(payload_len as usize + 4);
        conn.send(
            "unknown header field",
            seq,
            &[&header[..], &rest].concat(),
            Expect::Error(ErrorCode::Unsupported),
        );
    }

    /// Completes any truncated frame, then requires a `Pong`: a good
    /// frame after anything is still found and answered.
    fn still_answers(&mut self, conn: &mut Conn) {
        conn.complete_truncated();
        let nonce = self.rng.next_u64();
        let seq = self.seq();
        let bytes = frame(
            MessageType::Ping,
            Flags::NONE,
            seq,
            &Request::Ping { nonce }.encode().unwrap(),
        );
        conn.send("ping", seq, &bytes, Expect::Pong(nonce));
        let answer = conn.wait_for(seq);
        assert_eq!(decoded(&answer), Response::Pong { nonce });
    }

    /// An upload with chunks at wrong offsets, dropped mid-chunk and
    /// finished on a second connection: the board refuses each wrong
    /// chunk with the code the protocol names, keeps what it accepted
    /// across connections, and answers a resent end from memory.
    fn upload_with_wrong_offsets(&mut self, addr: SocketAddr, report: &mut Report, conn_no: usize) {
        *self.cases.entry("upload").or_default() += 1;
        let len = 3 + self.rng.below(150_000);
        let model = self.bytes(len);
        let wrong_digest = self.rng.below(3) == 0;
        let announced = ModelSummary {
            len: len as u32,
            digest: if wrong_digest {
                Digest([0x5a; 32])
            } else {
                Digest::of(&model)
            },
        };
        let chunk = |offset: usize, data: &[u8]| Request::LoadModelChunk {
            offset: offset as u32,
            data: data.to_vec(),
        };
        let ask = |fuzz: &mut Fuzz, conn: &mut Conn, request: &Request| {
            let seq = fuzz.seq();
            conn.ask(seq, Flags::NONE, request)
        };
        let mut conn = Conn::open(addr);
        let answer = ask(self, &mut conn, &Request::LoadModelBegin(announced));
        assert_eq!(decoded(&answer), Response::UploadStarted);
        let first = 1 + self.rng.below((len - 2).min(MAX_DATA));
        let answer = ask(self, &mut conn, &chunk(0, &model[..first]));
        assert_eq!(
            decoded(&answer),
            Response::ChunkAccepted {
                next_offset: first as u32
            }
        );

        // A gap after the bytes the board holds.
        let gap = first + 1 + self.rng.below(len - first - 1);
        let gap_end = (gap + 1 + self.rng.below(100)).min(len);
        let answer = ask(self, &mut conn, &chunk(gap, &model[gap..gap_end]));
        assert_eq!(error_code(&answer), Some(ErrorCode::OutOfOrder), "gap at {gap}");
        // Past the announced end.
        let start = len - self.rng.below(len.min(50) + 1);
        let over = 1 + self.rng.below(10);
        let data = self.bytes(len - start + over);
        let answer = ask(self, &mut conn, &chunk(start, &data));
        assert_eq!(
            error_code(&answer),
            Some(ErrorCode::TooLarge),
            "past the end at {start}"
        );
        // A resent chunk that differs from what arrived.
        let mut changed = model[..first].to_vec();
        changed[self.rng.below(first)] ^= 1 + self.rng.below(255) as u8;
        let answer = ask(self, &mut conn, &chunk(0, &changed));
        assert_eq!(error_code(&answer), Some(ErrorCode::OutOfOrder), "differing resend");
        // An overlapping chunk that agrees, and its resend from memory.
        let from = self.rng.below(first + 1);
        let to = (from + 1 + self.rng.below(MAX_DATA)).min(len);
        let overlap = chunk(from, &model[from..to]);
        let seq = self.seq();
        let answer = conn.ask(seq, Flags::NONE, &overlap);
        let mut received = first.max(to);
        assert_eq!(
            decoded(&answer),
            Response::ChunkAccepted {
                next_offset: received as u32
            }
        );
        assert_eq!(conn.ask(seq, Flags::RETRY, &overlap), answer);
        if received < len {
            let answer = ask(self, &mut conn, &Request::LoadModelEnd(announced));
            assert_eq!(error_code(&answer), Some(ErrorCode::OutOfOrder), "early end");
        }
        report.check(conn_no, conn.close());

        // A connection that drops in the middle of a chunk's frame.
        let mut conn = Conn::open(addr);
        let rest = (received + MAX_DATA).min(len);
        let seq = self.seq();
        let bytes = frame(
            MessageType::LoadModelChunk,
            Flags::NONE,
            seq,
            &chunk(received, &model[received..rest]).encode().unwrap(),
        );
        let cut = 1 + self.rng.below(bytes.len() - 1);
        conn.write(&bytes[..cut]);
        conn.frames += 1;
        report.drop_mid_frame(conn);

        // The next connection continues where the board says it is.
        let mut conn = Conn::open(addr);
        while received < len {
            let to = (received + 1 + self.rng.below(MAX_DATA)).min(len);
            let answer = ask(self, &mut conn, &chunk(received, &model[received..to]));
            assert_eq!(decoded(&answer), Response::ChunkAccepted { next_offset: to as u32 });
            received = to;
        }
        let other = ModelSummary {
            len: announced.len,
            digest: Digest::of(b"another model"),
        };
        let answer = ask(self, &mut conn, &Request::LoadModelEnd(other));
        assert_eq!(error_code(&answer), Some(ErrorCode::OutOfOrder), "end of another model");
        // Random bytes are no model image: the board refuses them, or
        // the digest they were announced with.
        let end = Request::LoadModelEnd(announced);
        let seq = self.seq();
        let answer = conn.ask(seq, Flags::NONE, &end);
        let refusal = if wrong_digest {
            ErrorCode::DigestMismatch
        } else {
            ErrorCode::Refused
        };
        assert_eq!(error_code(&answer), Some(refusal));
        // Done again, the end would be out of order (the upload is gone);
        // resent, it is answered from memory.
        assert_eq!(conn.ask(seq, Flags::RETRY, &end), answer);
        let answer = ask(self, &mut conn, &end);
        assert_eq!(error_code(&answer), Some(ErrorCode::OutOfOrder), "end after the end");
        let answer = ask(self, &mut conn, &Request::Verify);
        assert_eq!(decoded(&answer), Response::Verified(None));
        report.check(conn_no, conn.close());
    }
}

/// What the connections sent and got.
#[derive(Default)]
struct Report {
    frames: usize,
    dropped: usize,
    checked: usize,
    not_required: usize,
    unreadable: usize,
    failures: Vec<String>,
}

impl Report {
    /// Drops a connection at once, whatever was half-sent or unread.
    fn drop_mid_frame(&mut self, conn: Conn) {
        let _ = conn.stream.shutdown(Shutdown::Both);
        drop(conn.stream);
        conn.reader.join().unwrap();
        self.frames += conn.frames;
        self.dropped += 1;
    }

    /// Matches a closed connection's answers to what it sent: the answers
    /// with one sequence number come in the order their frames were sent.
    fn check(&mut self, conn_no: usize, closed: Closed) {
        self.frames += closed.frames;
        let mut fail = |what: String| {
            let mut what = format!("connection {conn_no}: {what}");
            what.truncate(400);
            self.failures.push(what);
        };
        let mut by_seq: HashMap<u32, VecDeque<Frame>> = HashMap::new();
        for decoded in closed.received {
            let frame = match decoded {
                Decoded::Frame(frame) => frame,
                Decoded::Rejected(rejected) => {
                    fail(format!("the board sent bytes that are not a frame: {rejected:?}"));
                    continue;
                }
            };
            let response = match Response::decode(frame.kind, &frame.payload) {
                Ok(response) => response,
                Err(e) => {
                    fail(format!(
                        "the board sent a {:?} frame that is no response: {e}",
                        frame.kind
                    ));
                    continue;
                }
            };
            if frame.seq == 0 {
                self.unreadable += 1;
                if !matches!(
                    response,
                    Response::Error(DeviceError {
                        code: ErrorCode::CorruptFrame,
                        ..
                    }) | Response::Pong { .. }
                ) {
                    fail(format!("answer with sequence number 0: {response:?}"));
                }
                continue;
            }
            by_seq.entry(frame.seq).or_default().push_back(frame);
        }
        // A truncated frame that the bytes after it never completed holds
        // back everything after it until the connection ends, unanswered.
        let unresolved = |s: &Sent| s.missing > closed.written - s.end;
        let held_from = closed.sent.iter().filter(|s| unresolved(s)).map(|s| s.end).min();
        for sent in &closed.sent {
            let required = !unresolved(sent) && held_from.is_none_or(|from| sent.start < from);
            let Some(frame) = by_seq.get_mut(&sent.seq).and_then(VecDeque::pop_front) else {
                if required {
                    fail(format!("{} (seq {}): no answer", sent.what, sent.seq));
                } else {
                    self.not_required += 1;
                }
                continue;
            };
            let response = decoded(&frame);
            let ok = match (sent.expect, &response) {
                (Expect::Error(code), Response::Error(e)) => e.code == code,
                (Expect::Pong(nonce), Response::Pong { nonce: back }) => *back == nonce,
                (Expect::Answer(_), Response::Error(e)) => !matches!(
                    e.code,
                    ErrorCode::CorruptFrame | ErrorCode::Unsupported | ErrorCode::Internal
                ),
                (Expect::Answer(kind), response) => response.kind().code() == kind.code() | 0x80,
                _ => false,
            };
            if ok {
                self.checked += 1;
            } else {
                fail(format!(
                    "{} (seq {}): expected {:?}, got {response:?}",
                    sent.what, sent.seq, sent.expect
                ));
            }
        }
        for (seq, left) in by_seq {
            if !left.is_empty() {
                fail(format!("{} answers with sequence number {seq}, never sent", left.len()));
            }
        }
    }
}
