//! The firmware in QEMU with hand-written models: the protocol's answers,
//! refusals, and instruction counts that must be exact.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Board, tools_or_skip};
use kflow_cm_firmware::Target;
use kflow_device::frame::{Flags, Frame, MessageType};
use kflow_device::message::{ModelSummary, Request, Response};
use kflow_device::{ErrorCode, RunStatistics};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One dense layer: 16 int8 inputs, 4 int32 outputs; the blob is "KFW1",
/// 64 int8 weights, 4 little-endian int32 biases.
const DENSE_H: &str = r#"#ifndef KFLOW_MODEL_H
#define KFLOW_MODEL_H
#include <stdint.h>
#define KFLOW_INPUT_LEN 16
#define KFLOW_OUTPUT_LEN 4
#define KFLOW_OUTPUT_INT32 1
#define KFLOW_WEIGHTS_BYTES 84
#define KFLOW_MODEL_ID "00000000deadbeef"
int kflow_check_weights(const void *weights, uint32_t len);
int kflow_infer(const void *weights, const int8_t *input, void *output);
#endif
"#;

const DENSE_C: &str = r#"#include "model.h"
int kflow_check_weights(const void *weights, uint32_t len)
{
    const uint8_t *w = weights;
    return !(len == KFLOW_WEIGHTS_BYTES && w[0] == 'K' && w[1] == 'F' && w[2] == 'W' && w[3] == '1');
}
int kflow_infer(const void *weights, const int8_t *input, void *output)
{
    const int8_t *w = (const int8_t *)weights + 4;
    const int32_t *b = (const int32_t *)(const void *)((const uint8_t *)weights + 68);
    int32_t *out = output;
    int i, j;
    for (i = 0; i < 4; i++) {
        int32_t acc = b[i];
        for (j = 0; j < 16; j++)
            acc += w[i * 16 + j] * input[j];
        out[i] = acc;
    }
    return 0;
}
"#;

/// kflow_infer spins n times (n: the input's 4 bytes): exactly 2n + 3
/// instructions (load, n x (subs, bne), movs, bx).
const SPIN_H: &str = r#"#include <stdint.h>
#define KFLOW_INPUT_LEN 4
#define KFLOW_OUTPUT_LEN 1
#define KFLOW_OUTPUT_INT32 0
#define KFLOW_WEIGHTS_BYTES 4
#define KFLOW_MODEL_ID "spin"
int kflow_check_weights(const void *weights, uint32_t len);
int kflow_infer(const void *weights, const int8_t *input, void *output);
"#;

const SPIN_C: &str = r#"#include "model.h"
int kflow_check_weights(const void *weights, uint32_t len) { (void)weights; return len != 4; }
__asm__(
    ".syntax unified\n.thumb\n.text\n.global kflow_infer\n.type kflow_infer, %function\n.thumb_func\n"
    "kflow_infer:\n"
    "    ldr r3, [r1]\n"
    "1:  subs r3, r3, #1\n"
    "    bne 1b\n"
    "    movs r0, #0\n"
    "    bx lr\n");
"#;

fn dense_blob(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut blob = b"KFW1".to_vec();
    blob.extend((0..64).map(|_| rng.random::<u8>()));
    for _ in 0..4 {
        blob.extend(rng.random_range(-100_000i32..100_000).to_le_bytes());
    }
    blob
}

fn dense_reference(blob: &[u8], input: &[u8]) -> Vec<u8> {
    (0..4)
        .flat_map(|i| {
            let bias = i32::from_le_bytes(blob[68 + 4 * i..72 + 4 * i].try_into().unwrap());
            let acc = (0..16).fold(bias, |acc, j| {
                acc + i32::from(blob[4 + 16 * i + j] as i8) * i32::from(input[j] as i8)
            });
            acc.to_le_bytes()
        })
        .collect()
}

fn refused_code(error: &kflow_device::ClientError) -> ErrorCode {
    error
        .device_error()
        .map(|e| e.code)
        .unwrap_or_else(|| panic!("not a refusal: {error}"))
}

#[test]
fn dense_model_runs_refuses_other_blobs_and_counts_identically() {
    if !tools_or_skip("dense_model_runs_refuses_other_blobs_and_counts_identically") {
        return;
    }
    for (target, name) in [(Target::Mps2An386, "kflow-cm4"), (Target::Mps2An500, "kflow-cm7")] {
        dense_model_on(target, name);
    }
}

fn dense_model_on(target: Target, name: &str) {
    let firmware = kflow_cm_firmware::build(target, DENSE_C, DENSE_H).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let blob = dense_blob(&mut rng);
    let started = Instant::now();
    let (board, mut client) = Board::start(target, &firmware.elf);
    let info = client.device_info().unwrap();
    println!("{}: boot to first answer: {:?}", target.machine(), started.elapsed());
    assert_eq!(info.board, target.machine());
    assert_eq!(info.firmware_version, firmware.version);
    assert_eq!(
        info.firmware_version,
        format!("{name} {} model 00000000deadbeef", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(info.identity, format!("qemu-{}", target.machine()));
    assert_eq!(info.clock_hz, 25_000_000);
    assert_eq!(info.max_model_bytes, kflow_cm_firmware::MAX_MODEL_BYTES);

    // Nothing runs before a model is loaded.
    let err = client.infer(&[0; 16]).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::NoModel);

    // A blob for another model is refused, and leaves no model.
    let mut other = blob.clone();
    other[3] = b'2';
    let err = client.flash(&other, |_| {}).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::Refused, "{err}");
    assert!(err.to_string().contains("00000000deadbeef"), "{err}");
    let err = client.flash(&blob[..80], |_| {}).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::Refused, "{err}");
    assert_eq!(client.verify().unwrap(), None);

    let started = Instant::now();
    let summary = client.flash(&blob, |_| {}).unwrap();
    println!("flash of {} bytes: {:?}", blob.len(), started.elapsed());
    assert_eq!(client.verify().unwrap(), Some(summary));

    // The wrong input size is refused.
    let err = client.load_input(&[0; 15]).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::Refused, "{err}");

    let mut counts = Vec::new();
    let started = Instant::now();
    for _ in 0..20 {
        let input: Vec<u8> = (0..16).map(|_| rng.random::<u8>()).collect();
        let inference = client.infer(&input).unwrap();
        assert_eq!(inference.output, dense_reference(&blob, &input));
        let again = client.infer(&input).unwrap();
        assert_eq!(again, inference);
        assert_eq!(inference.statistics.cycles, None);
        assert_eq!(inference.statistics.time_us, None);
        counts.push(inference.statistics.instructions.expect("an instruction count"));
    }
    println!("40 inferences: {:?}; instructions {counts:?}", started.elapsed());
    // No branch depends on the data: every input costs the same.
    assert!(counts.iter().all(|&c| c == counts[0]), "{counts:?}");
    drop(client);
    drop(board);

    // Another QEMU run counts the same.
    let (_board, mut client) = Board::start(target, &firmware.elf);
    client.flash(&blob, |_| {}).unwrap();
    let stats = client.infer(&[1; 16]).unwrap().statistics;
    assert_eq!(stats.instructions, Some(counts[0]));
}

#[test]
fn a_loop_of_known_length_counts_exactly() {
    if !tools_or_skip("a_loop_of_known_length_counts_exactly") {
        return;
    }
    for target in Target::ALL {
        let firmware = kflow_cm_firmware::build(target, SPIN_C, SPIN_H).unwrap();
        let (_board, mut client) = Board::start(target, &firmware.elf);
        client.flash(&[0; 4], |_| {}).unwrap();
        for n in [1u32, 2, 3, 10, 1000, 65_537, 1_234_567, 20_000_000] {
            let stats: RunStatistics = client.infer(&n.to_le_bytes()).unwrap().statistics;
            assert_eq!(stats.instructions, Some(2 * u64::from(n) + 3), "{target:?}, n = {n}");
        }
    }
    // Without -icount the timer runs on the host's clock: no count.
    let firmware = kflow_cm_firmware::build(Target::Mps2An386, SPIN_C, SPIN_H).unwrap();
    let (_board, mut client) = Board::start_with(Target::Mps2An386, &firmware.elf, false);
    client.flash(&[0; 4], |_| {}).unwrap();
    let stats = client.infer(&1000u32.to_le_bytes()).unwrap().statistics;
    assert_eq!(stats.instructions, None);
}

/// Raw frames on a TCP connection, for what the client never sends.
struct Raw(TcpStream);

impl Raw {
    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }

    /// The next answer to a request (skipping answers to garbage, seq 0).
    fn frame(&mut self) -> Frame {
        loop {
            let frame = self.any_frame();
            if frame.seq != 0 {
                return frame;
            }
        }
    }

    fn any_frame(&mut self) -> Frame {
        let mut head = [0u8; 16];
        self.0.read_exact(&mut head).unwrap();
        let len = u32::from_le_bytes(head[10..14].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; len + 4];
        self.0.read_exact(&mut rest).unwrap();
        let mut bytes = head.to_vec();
        bytes.extend(rest);
        Frame::decode(&bytes).unwrap().0
    }

    fn ask(&mut self, seq: u32, request: &Request) -> (u32, Response) {
        let frame = Frame::new(request.kind(), seq, request.encode().unwrap());
        self.send(&frame.encode().unwrap());
        let answer = self.frame();
        (answer.seq, Response::decode(answer.kind, &answer.payload).unwrap())
    }
}

fn error_of(response: Response) -> ErrorCode {
    match response {
        Response::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn damaged_and_out_of_order_frames_are_answered_and_the_board_keeps_serving() {
    if !tools_or_skip("damaged_and_out_of_order_frames_are_answered_and_the_board_keeps_serving") {
        return;
    }
    let firmware = kflow_cm_firmware::build(Target::Mps2An386, SPIN_C, SPIN_H).unwrap();
    let (board, client) = Board::start(Target::Mps2An386, &firmware.elf);
    drop(client);
    let stream = TcpStream::connect(("127.0.0.1", board.port)).unwrap();
    // Many small writes: without this, Nagle's algorithm waits for the
    // delayed ACK of each.
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut raw = Raw(stream);

    // Garbage, then a frame: one error for the garbage, then the answer.
    raw.send(b"noise KF more noise K");
    let ping = Request::Ping { nonce: 77 };
    raw.send(&Frame::new(ping.kind(), 3, ping.encode().unwrap()).encode().unwrap());
    let garbage = raw.any_frame();
    assert_eq!((garbage.kind, garbage.seq), (MessageType::Error, 0));
    assert_eq!(raw.frame().seq, 3);

    // A damaged payload: corrupt, with its sequence number.
    let mut bytes = Frame::new(ping.kind(), 4, ping.encode().unwrap()).encode().unwrap();
    bytes[16] ^= 1;
    raw.send(&bytes);
    let answer = raw.frame();
    assert_eq!(answer.seq, 4);
    assert_eq!(
        error_of(Response::decode(answer.kind, &answer.payload).unwrap()),
        ErrorCode::CorruptFrame
    );

    // An oversized header is refused from the header alone.
    let header = kflow_device::frame::Header {
        kind: MessageType::LoadModelChunk,
        flags: Flags::NONE,
        seq: 5,
        payload_len: u32::MAX,
    };
    raw.send(&header.to_bytes());
    let answer = raw.frame();
    assert_eq!(answer.seq, 5);
    assert_eq!(
        error_of(Response::decode(answer.kind, &answer.payload).unwrap()),
        ErrorCode::TooLarge
    );

    // A frame that stops arriving is answered as truncated after the timeout.
    let bytes = Frame::new(ping.kind(), 6, ping.encode().unwrap()).encode().unwrap();
    raw.send(&bytes[..20]);
    let started = Instant::now();
    let answer = raw.frame();
    assert_eq!(answer.seq, 6);
    assert_eq!(
        error_of(Response::decode(answer.kind, &answer.payload).unwrap()),
        ErrorCode::CorruptFrame
    );
    println!("truncated frame answered after {:?}", started.elapsed());

    // Out of order, malformed and unsupported requests.
    let chunk = Request::LoadModelChunk {
        offset: 0,
        data: vec![1],
    };
    assert_eq!(error_of(raw.ask(7, &chunk).1), ErrorCode::OutOfOrder);
    let end = Request::LoadModelEnd(ModelSummary::of(b"abcd").unwrap());
    assert_eq!(error_of(raw.ask(8, &end).1), ErrorCode::OutOfOrder);
    raw.send(&Frame::new(MessageType::Run, 9, vec![0]).encode().unwrap());
    let answer = raw.frame();
    assert_eq!(
        error_of(Response::decode(answer.kind, &answer.payload).unwrap()),
        ErrorCode::Malformed
    );
    raw.send(
        &Frame::new(MessageType::LoadModelChunk, 10, vec![0, 0xff, 0xff, 0xff, 0xff, 0x7f])
            .encode()
            .unwrap(),
    );
    let answer = raw.frame();
    assert_eq!(
        error_of(Response::decode(answer.kind, &answer.payload).unwrap()),
        ErrorCode::Malformed
    );
    raw.send(&Frame::new(MessageType::Pong, 11, vec![]).encode().unwrap());
    let answer = raw.frame();
    assert_eq!(
        error_of(Response::decode(answer.kind, &answer.payload).unwrap()),
        ErrorCode::Unsupported
    );
    assert_eq!(error_of(raw.ask(12, &Request::ReadStatistics).1), ErrorCode::OutOfOrder);
    assert_eq!(
        error_of(raw.ask(13, &Request::ReadOutput { offset: 0 }).1),
        ErrorCode::OutOfOrder
    );

    // An upload in chunks, with a resent chunk, a wrong resend and a gap.
    let model = ModelSummary::of(&[5, 6, 7, 8]).unwrap();
    assert_eq!(raw.ask(14, &Request::LoadModelBegin(model)).1, Response::UploadStarted);
    let chunk = |offset: u32, data: &[u8]| Request::LoadModelChunk {
        offset,
        data: data.to_vec(),
    };
    assert_eq!(
        raw.ask(15, &chunk(0, &[5, 6])).1,
        Response::ChunkAccepted { next_offset: 2 }
    );
    assert_eq!(
        raw.ask(16, &chunk(0, &[5, 6])).1,
        Response::ChunkAccepted { next_offset: 2 }
    );
    assert_eq!(error_of(raw.ask(17, &chunk(0, &[9])).1), ErrorCode::OutOfOrder);
    assert_eq!(error_of(raw.ask(18, &chunk(3, &[8])).1), ErrorCode::OutOfOrder);
    assert_eq!(error_of(raw.ask(19, &chunk(2, &[7, 8, 9])).1), ErrorCode::TooLarge);
    assert_eq!(
        error_of(raw.ask(20, &Request::LoadModelEnd(model)).1),
        ErrorCode::OutOfOrder
    );
    assert_eq!(
        raw.ask(21, &chunk(1, &[6, 7, 8])).1,
        Response::ChunkAccepted { next_offset: 4 }
    );
    assert_eq!(
        raw.ask(22, &Request::LoadModelEnd(model)).1,
        Response::ModelLoaded(model)
    );
    // The end again, its answer lost: the same answer.
    assert_eq!(
        raw.ask(23, &Request::LoadModelEnd(model)).1,
        Response::ModelLoaded(model)
    );

    // A RETRY of the last request is answered from memory: the run is not
    // done again (the same answer, even after the input changed under it
    // would be impossible to tell; the sequence number tells).
    let input = Request::LoadInput {
        total_len: 4,
        offset: 0,
        data: 5u32.to_le_bytes().to_vec(),
    };
    assert_eq!(raw.ask(24, &input).1, Response::InputLoaded { received: 4 });
    let run = Frame::new(MessageType::Run, 25, vec![]);
    raw.send(&run.encode().unwrap());
    let first = raw.frame();
    let mut retry = run.clone();
    retry.flags = Flags::RETRY;
    raw.send(&retry.encode().unwrap());
    assert_eq!(raw.frame(), first);
    let Response::RunComplete {
        output_len: 1,
        statistics,
    } = Response::decode(first.kind, &first.payload).unwrap()
    else {
        panic!()
    };
    assert_eq!(statistics.instructions, Some(13));
    assert_eq!(
        raw.ask(26, &Request::ReadOutput { offset: 1 }).1,
        Response::Output {
            total_len: 1,
            data: vec![]
        }
    );
    assert_eq!(
        error_of(raw.ask(27, &Request::ReadOutput { offset: 2 }).1),
        ErrorCode::OutOfOrder
    );
    // Input chunks: offset 0 restarts, a chunk of another total is out of order.
    let part = |total_len: u32, offset: u32, data: &[u8]| Request::LoadInput {
        total_len,
        offset,
        data: data.to_vec(),
    };
    assert_eq!(
        raw.ask(28, &part(4, 0, &[1, 0])).1,
        Response::InputLoaded { received: 2 }
    );
    assert_eq!(error_of(raw.ask(29, &part(5, 2, &[0, 0])).1), ErrorCode::OutOfOrder);
    assert_eq!(raw.ask(30, &part(4, 0, &[2])).1, Response::InputLoaded { received: 1 });
    assert_eq!(
        raw.ask(31, &part(4, 1, &[0, 0, 0])).1,
        Response::InputLoaded { received: 4 }
    );
    let Response::RunComplete { statistics, .. } = raw.ask(32, &Request::Run).1 else {
        panic!()
    };
    assert_eq!(statistics.instructions, Some(7));
    assert_eq!(
        raw.ask(33, &Request::ReadStatistics).1,
        Response::Statistics(statistics)
    );
    assert_eq!(raw.ask(34, &Request::Reset).1, Response::ResetDone);
    assert_eq!(error_of(raw.ask(35, &Request::Run).1), ErrorCode::NoInput);
    assert_eq!(raw.ask(36, &Request::Verify).1, Response::Verified(Some(model)));
    // A model over the board's limit is refused at the beginning.
    let big = ModelSummary {
        len: kflow_cm_firmware::MAX_MODEL_BYTES + 1,
        digest: model.digest,
    };
    assert_eq!(
        error_of(raw.ask(37, &Request::LoadModelBegin(big)).1),
        ErrorCode::TooLarge
    );
    assert_eq!(
        raw.ask(38, &Request::Ping { nonce: u64::MAX }).1,
        Response::Pong { nonce: u64::MAX }
    );
}

/// kflow_infer faults (an undefined instruction) when the input is 1.
const FAULT_H: &str = r#"#include <stdint.h>
#define KFLOW_INPUT_LEN 1
#define KFLOW_OUTPUT_LEN 1
#define KFLOW_OUTPUT_INT32 0
#define KFLOW_WEIGHTS_BYTES 1
#define KFLOW_MODEL_ID "fault"
int kflow_check_weights(const void *weights, uint32_t len);
int kflow_infer(const void *weights, const int8_t *input, void *output);
"#;

const FAULT_C: &str = r#"#include "model.h"
int kflow_check_weights(const void *weights, uint32_t len) { (void)weights; return len != 1; }
int kflow_infer(const void *weights, const int8_t *input, void *output)
{
    (void)weights;
    if (input[0] == 1)
        __asm__ volatile("udf #0");
    *(int8_t *)output = input[0];
    return 0;
}
"#;

#[test]
fn a_fault_restarts_the_board_without_its_model() {
    if !tools_or_skip("a_fault_restarts_the_board_without_its_model") {
        return;
    }
    let firmware = kflow_cm_firmware::build(Target::Mps2An386, FAULT_C, FAULT_H).unwrap();
    let (board, client) = Board::start(Target::Mps2An386, &firmware.elf);
    drop(client);
    let transport = kflow_device::open(&board.url(), kflow_device::LinkTimeouts::default()).unwrap();
    let mut client = kflow_device::Client::new(
        transport,
        kflow_device::RetryPolicy {
            attempts: 2,
            response_timeout: Duration::from_secs(2),
            ..common::policy()
        },
    );
    client.flash(&[0], |_| {}).unwrap();
    assert_eq!(client.infer(&[5]).unwrap().output, vec![5]);
    // The run that faults gets no answer; its retry finds a restarted
    // board that holds no model.
    let err = client.infer(&[1]).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::NoModel, "{err}");
    assert_eq!(client.verify().unwrap(), None);
    client.flash(&[0], |_| {}).unwrap();
    assert_eq!(client.infer(&[7]).unwrap().output, vec![7]);
}
