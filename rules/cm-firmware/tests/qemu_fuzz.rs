//! Thousands of random, damaged and out-of-order frames, pipelined on one
//! connection: every frame with an intact header is answered with its
//! sequence number and the code the protocol names for it, answers to
//! unreadable bytes carry sequence number 0, and afterwards the board
//! still flashes and runs.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use common::{Board, tools_or_skip};
use kflow_cm_firmware::Target;
use kflow_device::decoder::{Decoded, FrameDecoder};
use kflow_device::frame::{Flags, Frame, HEADER_LEN, Header, MessageType};
use kflow_device::message::{Digest, Request, Response};
use kflow_device::{ErrorCode, ModelSummary};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CASES: u32 = 1000;

const H: &str = "#include <stdint.h>\n#define KFLOW_INPUT_LEN 4\n#define KFLOW_OUTPUT_LEN 4\n#define KFLOW_OUTPUT_INT32 0\n#define KFLOW_WEIGHTS_BYTES 8\n#define KFLOW_MODEL_ID \"fuzz\"\nint kflow_check_weights(const void *w, uint32_t len);\nint kflow_infer(const void *w, const int8_t *in, void *out);\n";
const C: &str = "#include \"model.h\"\nint kflow_check_weights(const void *w, uint32_t len) { return len != 8 || ((const uint8_t *)w)[0] != 'W'; }\nint kflow_infer(const void *w, const int8_t *in, void *out) { int i; int8_t *o = out; for (i = 0; i < 4; i++) o[i] = (int8_t)(in[i] + ((const int8_t *)w)[i + 4]); return 0; }\n";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Error(ErrorCode),
    /// Its response or an error about the request (never about the frame).
    Answer(MessageType),
}

fn random_request(rng: &mut ChaCha8Rng) -> Request {
    let summary = |rng: &mut ChaCha8Rng| ModelSummary {
        len: rng.random_range(0..20),
        digest: Digest(std::array::from_fn(|_| rng.random())),
    };
    let data = |rng: &mut ChaCha8Rng| (0..rng.random_range(0..12)).map(|_| rng.random::<u8>()).collect();
    match rng.random_range(0..11) {
        0 => Request::Ping { nonce: rng.random() },
        1 => Request::GetInfo,
        2 => Request::LoadModelBegin(summary(rng)),
        3 => Request::LoadModelChunk {
            offset: rng.random_range(0..10),
            data: data(rng),
        },
        4 => Request::LoadModelEnd(summary(rng)),
        5 => Request::Verify,
        6 => Request::LoadInput {
            total_len: rng.random_range(0..8),
            offset: rng.random_range(0..6),
            data: data(rng),
        },
        7 => Request::Run,
        8 => Request::ReadOutput {
            offset: rng.random_range(0..6),
        },
        9 => Request::ReadStatistics,
        _ => Request::Reset,
    }
}

fn with_check(mut bytes: Vec<u8>) -> Vec<u8> {
    let check = crc32fast::hash(&bytes[..14]) as u16;
    bytes[14..16].copy_from_slice(&check.to_le_bytes());
    let end = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn random_and_damaged_frames_are_answered_as_the_protocol_says() {
    if !tools_or_skip("random_and_damaged_frames_are_answered_as_the_protocol_says") {
        return;
    }
    let firmware = kflow_cm_firmware::build(Target::Mps2An386, C, H).unwrap();
    let (board, client) = Board::start(Target::Mps2An386, &firmware.elf);
    drop(client);
    let stream = TcpStream::connect(("127.0.0.1", board.port)).unwrap();
    // Many small writes: without this, Nagle's algorithm waits for the
    // delayed ACK of each.
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let (tx, rx) = mpsc::channel();
    let reading = std::thread::spawn(move || {
        let mut decoder = FrameDecoder::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            decoder.push(&buf[..n]);
            while let Some(decoded) = decoder.decode_next() {
                if tx.send(decoded).is_err() {
                    return;
                }
            }
        }
    });
    let mut writer = stream;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut expected: HashMap<u32, Expect> = HashMap::new();
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for seq in 1..=CASES {
        let request = random_request(&mut rng);
        let good = Frame::new(request.kind(), seq, request.encode().unwrap())
            .encode()
            .unwrap();
        let (what, bytes, expect) = match rng.random_range(0..10) {
            0 => {
                // A flipped payload or CRC bit: corrupt, with its number.
                let mut bytes = good;
                let at = rng.random_range(HEADER_LEN..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
                ("damaged payload", bytes, Some(Expect::Error(ErrorCode::CorruptFrame)))
            }
            1 => {
                // A flipped header bit: not a header at all.
                let mut bytes = good;
                let at = rng.random_range(2..HEADER_LEN);
                bytes[at] ^= 1 << rng.random_range(0..8);
                ("damaged header", bytes, None)
            }
            2 => {
                let kind = [MessageType::LoadModelChunk, MessageType::Ping][rng.random_range(0..2)];
                let header = Header {
                    kind,
                    flags: Flags::NONE,
                    seq,
                    payload_len: kind.max_payload() + rng.random_range(1..1_000_000),
                };
                (
                    "oversized",
                    header.to_bytes().to_vec(),
                    Some(Expect::Error(ErrorCode::TooLarge)),
                )
            }
            3 => {
                let mut bytes = good;
                let (at, value) = match rng.random_range(0..4) {
                    0 => (2, 1),
                    1 => (3, 0x40 + rng.random_range(0..0x40)),
                    2 => (4, 2 << rng.random_range(0..7)),
                    _ => (5, 1 + rng.random_range(0..255)),
                };
                bytes[at] = value;
                (
                    "unsupported header",
                    with_check(bytes),
                    Some(Expect::Error(ErrorCode::Unsupported)),
                )
            }
            4 => {
                let kind = [MessageType::Pong, MessageType::Output, MessageType::Error][rng.random_range(0..3)];
                let bytes = Frame::new(kind, seq, vec![]).encode().unwrap();
                (
                    "response to the board",
                    bytes,
                    Some(Expect::Error(ErrorCode::Unsupported)),
                )
            }
            5 => {
                // Trailing bytes after the message.
                let mut payload = request.encode().unwrap();
                payload.push(rng.random());
                let bytes = Frame::new(request.kind(), seq, payload).encode().unwrap();
                ("trailing byte", bytes, Some(Expect::Error(ErrorCode::Malformed)))
            }
            6 => {
                // Garbage without a 'K' (which could start a header), then
                // the request.
                let mut bytes: Vec<u8> = (0..rng.random_range(1..40))
                    .map(|_| rng.random::<u8>())
                    .filter(|&b| b != b'K')
                    .collect();
                bytes.extend(good);
                ("garbage then request", bytes, Some(Expect::Answer(request.kind())))
            }
            _ => ("request", good, Some(Expect::Answer(request.kind()))),
        };
        *counts.entry(what).or_default() += 1;
        if let Some(expect) = expect {
            expected.insert(seq, expect);
        }
        writer.write_all(&bytes).unwrap();
    }
    // The last bytes may be a damaged header waiting for more: a ping
    // after the partial-frame timeout ends the run.
    std::thread::sleep(Duration::from_millis(700));
    let last = CASES + 1;
    let ping = Request::Ping { nonce: 42 };
    writer
        .write_all(&Frame::new(ping.kind(), last, ping.encode().unwrap()).encode().unwrap())
        .unwrap();
    let mut answered: HashMap<u32, Frame> = HashMap::new();
    let mut unreadable = 0;
    loop {
        match rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the board stopped answering")
        {
            Decoded::Frame(frame) if frame.seq == 0 => {
                unreadable += 1;
                assert_eq!(frame.kind, MessageType::Error);
            }
            Decoded::Frame(frame) => {
                let seq = frame.seq;
                assert!(answered.insert(seq, frame).is_none(), "two answers to {seq}");
                if seq == last {
                    break;
                }
            }
            Decoded::Rejected(r) => panic!("the board sent an unreadable frame: {r:?}"),
        }
    }
    let mut failures = Vec::new();
    for (seq, expect) in &expected {
        let Some(frame) = answered.get(seq) else {
            failures.push(format!("{seq}: no answer, expected {expect:?}"));
            continue;
        };
        let response = Response::decode(frame.kind, &frame.payload).unwrap();
        let ok = match (expect, &response) {
            (Expect::Error(code), Response::Error(e)) => e.code == *code,
            (Expect::Answer(_), Response::Error(e)) => !matches!(
                e.code,
                ErrorCode::CorruptFrame | ErrorCode::Internal | ErrorCode::Unsupported
            ),
            (Expect::Answer(kind), r) => r.kind().code() == kind.code() | 0x80,
            _ => false,
        };
        if !ok {
            failures.push(format!("{seq}: expected {expect:?}, got {response:?}"));
        }
    }
    for seq in answered.keys() {
        assert!(
            expected.contains_key(seq) || *seq == last,
            "answer to {seq}, whose header was damaged"
        );
    }
    println!(
        "{counts:?}; {} answers, {unreadable} to unreadable bytes",
        answered.len()
    );
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    // The reader holds a clone of the socket: end both directions.
    writer.shutdown(std::net::Shutdown::Both).unwrap();
    drop(rx);
    let _ = reading.join();

    // And the board still works.
    let mut client = board.connect();
    client.flash(b"Wxyz\x01\x02\x03\x04", |_| {}).unwrap();
    assert_eq!(client.infer(&[10, 20, 30, 40]).unwrap().output, vec![11, 22, 33, 44]);
}
