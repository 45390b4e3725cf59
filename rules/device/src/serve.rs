//! The board side: a loop that reads requests, drives a [`Board`] and
//! answers, whatever arrives.
//!
//! Every frame gets an answer: a request its response, anything unreadable
//! (garbage, a failed check, an oversized or unknown header, a frame that
//! stopped arriving) an `Error` frame, after which the loop keeps serving.
//! Nothing a peer sends can make it panic; a panic inside the board is
//! caught and answered as an internal error.
//!
//! The [`Server`] keeps its state (an upload in progress, the loaded
//! model, the last answer) across connections, so a host that lost its
//! connection mid-upload reconnects and resumes at the offset the board
//! reports, and a request resent with the `RETRY` flag after a lost answer
//! is answered again from memory instead of being done twice.

use std::io;
use std::net::TcpListener;
use std::panic::{self, AssertUnwindSafe};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::decoder::{Decoded, Rejected};
use crate::frame::{Flags, Frame, FrameError};
use crate::message::{
    DeviceError, DeviceInfo, ErrorCode, MAX_DATA, MAX_MODEL_BYTES, ModelSummary, Request, Response, RunStatistics,
};
use crate::transport::in_process::{ChannelLink, channel_pair};
use crate::transport::{LinkTimeouts, StreamTransport, TcpLink, Transport, TransportError};

/// What a board does; the serve loop handles the protocol around it.
pub trait Board {
    /// What the board says about itself.
    fn info(&self) -> DeviceInfo;

    /// Loads a complete, digest-checked model image. A board refuses one
    /// that does not fit its memories or that it cannot run, saying why.
    fn load_model(&mut self, model: &[u8]) -> Result<(), DeviceError>;

    /// Replaces the input of the next run.
    fn load_input(&mut self, input: &[u8]) -> Result<(), DeviceError>;

    /// Runs one inference on the loaded model and input.
    fn run(&mut self) -> Result<RunStatistics, DeviceError>;

    /// The output of the last run, if there was one since the last load.
    fn output(&self) -> Option<&[u8]>;

    /// Clears input and output. The model stays loaded, as it stays in a
    /// real board's flash.
    fn reset(&mut self);
}

/// Tuning of the serve loop.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// A frame that stops arriving for this long is answered as truncated
    /// and dropped.
    pub partial_frame_timeout: Duration,
    /// A connection on which nothing arrives for this long is ended, so
    /// that a host that vanished without closing its TCP connection does
    /// not keep the board from the next one. `None` (the default) waits
    /// for ever, as a board on a serial line must.
    pub idle_connection_timeout: Option<Duration>,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            partial_frame_timeout: Duration::from_millis(500),
            idle_connection_timeout: None,
        }
    }
}

/// An input arriving in chunks.
struct Staged {
    total: u32,
    bytes: Vec<u8>,
}

struct Upload {
    model: ModelSummary,
    bytes: Vec<u8>,
}

struct LastAnswer {
    seq: u32,
    request: Frame,
    answer: Frame,
}

/// A board and the protocol state around it.
pub struct Server<B> {
    board: B,
    options: ServeOptions,
    upload: Option<Upload>,
    input: Option<Staged>,
    loaded: Option<ModelSummary>,
    statistics: Option<RunStatistics>,
    last: Option<LastAnswer>,
}

impl<B: Board> Server<B> {
    pub fn new(board: B) -> Server<B> {
        Server::with_options(board, ServeOptions::default())
    }

    pub fn with_options(board: B, options: ServeOptions) -> Server<B> {
        Server {
            board,
            options,
            upload: None,
            input: None,
            loaded: None,
            statistics: None,
            last: None,
        }
    }

    pub fn board(&self) -> &B {
        &self.board
    }

    pub fn into_board(self) -> B {
        self.board
    }

    /// Serves one connection until the peer closes it (or it stays idle
    /// past [`ServeOptions::idle_connection_timeout`]). Returns `Ok` then,
    /// the transport's error when it failed otherwise.
    pub fn serve(&mut self, transport: &mut dyn Transport) -> Result<(), TransportError> {
        let mut last_heard = Instant::now();
        // What was pending at the last timeout: a frame on a slow line
        // takes as long as it takes, as long as its bytes keep coming.
        let mut pending_before = 0;
        loop {
            let deadline = Instant::now() + self.options.partial_frame_timeout;
            let received = transport.receive(deadline);
            if !matches!(received, Err(TransportError::TimedOut)) {
                last_heard = Instant::now();
                pending_before = 0;
            }
            let answer = match received {
                Ok(Decoded::Frame(frame)) => self.answer(&frame),
                Ok(Decoded::Rejected(rejected)) => answer_rejected(&rejected),
                Err(TransportError::TimedOut) if transport.pending() > pending_before => {
                    pending_before = transport.pending();
                    last_heard = Instant::now();
                    continue;
                }
                Err(TransportError::TimedOut) => {
                    pending_before = 0;
                    match transport.give_up_partial() {
                        Some(rejected) => answer_rejected(&rejected),
                        None if self
                            .options
                            .idle_connection_timeout
                            .is_some_and(|idle| last_heard.elapsed() >= idle) =>
                        {
                            return Ok(());
                        }
                        None => continue,
                    }
                }
                Err(TransportError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            };
            match transport.send(&answer) {
                Ok(()) => {}
                Err(TransportError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Serves the connections of `listener` one after the other, for ever.
    pub fn serve_tcp(&mut self, listener: &TcpListener, timeouts: LinkTimeouts) -> io::Result<()> {
        for stream in listener.incoming() {
            let link = match stream.and_then(|stream| TcpLink::accepted(stream, timeouts)) {
                Ok(link) => link,
                // A connection that failed before it was served (reset
                // during accept, too many open files): wait, take the next.
                Err(_) => {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            // A connection that fails ends; the board's state stays for the
            // next one.
            let _ = self.serve(&mut StreamTransport::new(link));
        }
        Ok(())
    }

    /// The answer to one intact frame.
    pub fn answer(&mut self, frame: &Frame) -> Frame {
        if frame.flags.contains(Flags::RETRY)
            && let Some(last) = &self.last
            && last.seq == frame.seq
            && last.request.kind == frame.kind
            && last.request.payload == frame.payload
        {
            return last.answer.clone();
        }
        let response = match Request::decode(frame.kind, &frame.payload) {
            Ok(request) => {
                match panic::catch_unwind(AssertUnwindSafe(|| self.respond(request))) {
                    Ok(response) => response,
                    Err(_) => {
                        // The board's state may be half-changed: forget the
                        // model so that nothing runs on it unverified.
                        self.upload = None;
                        self.input = None;
                        self.loaded = None;
                        Err(DeviceError::new(
                            ErrorCode::Internal,
                            format!("the board failed on {:?}", frame.kind),
                        ))
                    }
                }
            }
            Err(e) => Err(DeviceError::new(e.code(), format!("{:?} request: {e}", frame.kind))),
        };
        let answer = response_frame(frame.seq, response.unwrap_or_else(Response::Error));
        self.last = Some(LastAnswer {
            seq: frame.seq,
            request: frame.clone(),
            answer: answer.clone(),
        });
        answer
    }

    fn respond(&mut self, request: Request) -> Result<Response, DeviceError> {
        match request {
            Request::Ping { nonce } => Ok(Response::Pong { nonce }),
            Request::GetInfo => Ok(Response::Info(self.board.info())),
            Request::LoadModelBegin(model) => self.begin_upload(model),
            Request::LoadModelChunk { offset, data } => self.take_chunk(offset, &data),
            Request::LoadModelEnd(model) => self.end_upload(model),
            Request::Verify => Ok(Response::Verified(self.loaded)),
            Request::LoadInput {
                total_len,
                offset,
                data,
            } => self.take_input_chunk(total_len, offset, &data),
            Request::Run => {
                if self.loaded.is_none() {
                    return Err(DeviceError::new(ErrorCode::NoModel, "flash a model first"));
                }
                let statistics = self.board.run()?;
                self.statistics = Some(statistics);
                let output_len = self.board.output().map_or(0, |o| o.len() as u32);
                Ok(Response::RunComplete { output_len, statistics })
            }
            Request::ReadOutput { offset } => self.read_output(offset),
            Request::ReadStatistics => self
                .statistics
                .map(Response::Statistics)
                .ok_or_else(|| DeviceError::new(ErrorCode::OutOfOrder, "no statistics: nothing has run yet")),
            Request::Reset => {
                self.board.reset();
                self.upload = None;
                self.input = None;
                self.statistics = None;
                Ok(Response::ResetDone)
            }
        }
    }

    fn begin_upload(&mut self, model: ModelSummary) -> Result<Response, DeviceError> {
        let limit = self.board.info().max_model_bytes.min(MAX_MODEL_BYTES);
        if model.len > limit {
            return Err(DeviceError::new(
                ErrorCode::TooLarge,
                format!(
                    "a model of {} bytes does not fit: this board takes at most {limit}",
                    model.len
                ),
            ));
        }
        // Grown chunk by chunk, never reserved from the announced size.
        self.upload = Some(Upload {
            model,
            bytes: Vec::new(),
        });
        Ok(Response::UploadStarted)
    }

    fn take_chunk(&mut self, offset: u32, data: &[u8]) -> Result<Response, DeviceError> {
        let Some(upload) = &mut self.upload else {
            return Err(DeviceError::new(
                ErrorCode::OutOfOrder,
                format!("chunk at offset {offset} without an upload in progress (begin one first)"),
            ));
        };
        append_chunk(&mut upload.bytes, upload.model.len, offset, data, "model")?;
        Ok(Response::ChunkAccepted {
            next_offset: upload.bytes.len() as u32,
        })
    }

    fn take_input_chunk(&mut self, total_len: u32, offset: u32, data: &[u8]) -> Result<Response, DeviceError> {
        if offset == 0 {
            self.input = Some(Staged {
                total: total_len,
                bytes: Vec::new(),
            });
        }
        let Some(input) = self.input.as_mut().filter(|input| input.total == total_len) else {
            return Err(DeviceError::new(
                ErrorCode::OutOfOrder,
                format!("input chunk at offset {offset} of {total_len} bytes without an input begun at offset 0"),
            ));
        };
        append_chunk(&mut input.bytes, total_len, offset, data, "input")?;
        let received = input.bytes.len() as u32;
        if received == total_len {
            let input = std::mem::take(&mut input.bytes);
            self.input = None;
            self.board.load_input(&input)?;
        }
        Ok(Response::InputLoaded { received })
    }

    fn read_output(&self, offset: u32) -> Result<Response, DeviceError> {
        let Some(output) = self.board.output() else {
            return Err(DeviceError::new(
                ErrorCode::OutOfOrder,
                "no output: nothing has run since the last load",
            ));
        };
        let Some(rest) = output.get(offset as usize..) else {
            return Err(DeviceError::new(
                ErrorCode::OutOfOrder,
                format!("output read at offset {offset}; the output is {} bytes", output.len()),
            ));
        };
        let total_len = u32::try_from(output.len())
            .map_err(|_| DeviceError::new(ErrorCode::TooLarge, "output larger than 4 GiB"))?;
        Ok(Response::Output {
            total_len,
            data: rest[..rest.len().min(MAX_DATA)].to_vec(),
        })
    }

    fn end_upload(&mut self, model: ModelSummary) -> Result<Response, DeviceError> {
        let Some(upload) = self.upload.take() else {
            if self.loaded == Some(model) {
                // The answer to this end was lost and the host asks again.
                return Ok(Response::ModelLoaded(model));
            }
            return Err(DeviceError::new(
                ErrorCode::OutOfOrder,
                "end of an upload that was not begun",
            ));
        };
        if upload.model != model {
            let begun = upload.model;
            self.upload = Some(upload);
            return Err(DeviceError::new(
                ErrorCode::OutOfOrder,
                format!(
                    "upload end names {} bytes with digest {}; it began with {} bytes, digest {}",
                    model.len, model.digest, begun.len, begun.digest
                ),
            ));
        }
        if upload.bytes.len() < model.len as usize {
            let received = upload.bytes.len();
            self.upload = Some(upload);
            return Err(DeviceError::new(
                ErrorCode::OutOfOrder,
                format!("upload ended after {received} of {} bytes", model.len),
            ));
        }
        let Some(received) = ModelSummary::of(&upload.bytes) else {
            return Err(DeviceError::new(ErrorCode::TooLarge, "upload larger than 4 GiB"));
        };
        if received.digest != model.digest {
            return Err(DeviceError::new(
                ErrorCode::DigestMismatch,
                format!(
                    "the {} bytes received hash to {}; the upload announced {}",
                    model.len, received.digest, model.digest
                ),
            ));
        }
        self.loaded = None;
        self.statistics = None;
        self.board.load_model(&upload.bytes)?;
        self.loaded = Some(model);
        Ok(Response::ModelLoaded(model))
    }
}

/// Appends a chunk at `offset` to bytes arriving in order, of `total` in
/// all. A resent chunk may overlap what arrived, but must agree with it.
fn append_chunk(bytes: &mut Vec<u8>, total: u32, offset: u32, data: &[u8], what: &str) -> Result<(), DeviceError> {
    let start = offset as usize;
    let end = start + data.len();
    let received = bytes.len();
    if end > total as usize {
        return Err(DeviceError::new(
            ErrorCode::TooLarge,
            format!("{what} chunk at offset {offset} ends at {end}, past the announced {total} bytes"),
        ));
    }
    if start > received {
        return Err(DeviceError::new(
            ErrorCode::OutOfOrder,
            format!("{what} chunk at offset {offset}; the board has {received} bytes and expects offset {received}"),
        ));
    }
    let overlap = end.min(received);
    if bytes[start..overlap] != data[..overlap - start] {
        return Err(DeviceError::new(
            ErrorCode::OutOfOrder,
            format!("{what} chunk at offset {offset} differs from the bytes already received there"),
        ));
    }
    bytes.extend_from_slice(&data[overlap - start..]);
    Ok(())
}

fn response_frame(seq: u32, response: Response) -> Frame {
    let kind = response.kind();
    match response.encode() {
        Ok(payload) => Frame::new(kind, seq, payload),
        Err(e) => error_frame(
            seq,
            DeviceError::new(ErrorCode::Internal, format!("cannot answer {kind:?}: {e}")),
        ),
    }
}

fn error_frame(seq: u32, error: DeviceError) -> Frame {
    let response = Response::Error(error);
    // An error whose message `DeviceError::new` has cut always encodes;
    // should it not, an empty payload still tells the host "error".
    Frame::new(response.kind(), seq, response.encode().unwrap_or_default())
}

fn answer_rejected(rejected: &Rejected) -> Frame {
    let code = match rejected.error {
        FrameError::Garbage { .. }
        | FrameError::HeaderCheck
        | FrameError::Crc { .. }
        | FrameError::Truncated { .. } => ErrorCode::CorruptFrame,
        FrameError::Oversized { .. } => ErrorCode::TooLarge,
        FrameError::Version(_) | FrameError::UnknownType(_) | FrameError::UnknownFlags(_) | FrameError::Reserved(_) => {
            ErrorCode::Unsupported
        }
    };
    // Sequence number 0 is never used by a client: it marks an answer to
    // bytes whose header could not be read.
    error_frame(
        rejected.seq.unwrap_or(0),
        DeviceError::new(code, rejected.error.to_string()),
    )
}

/// Runs `server` on a thread behind an in-process byte stream and returns
/// the host's end; the thread ends (returning the server) when that end
/// is dropped. `endpoint` names the board in messages (`sim://max78002`).
pub fn spawn_in_process<B: Board + Send + 'static>(
    mut server: Server<B>,
    endpoint: &str,
) -> (StreamTransport<ChannelLink>, JoinHandle<Server<B>>) {
    let (host, board) = channel_pair(endpoint);
    let handle = thread::spawn(move || {
        let mut transport = StreamTransport::new(board);
        // The host's end is the only peer; when it is gone, so is the loop.
        let _ = server.serve(&mut transport);
        server
    });
    (StreamTransport::new(host), handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MessageType;
    use crate::message::{Digest, MAX_TEXT};

    /// Echoes its input reversed; panics on an input starting with `!`.
    #[derive(Default)]
    struct ReverseBoard {
        model: Vec<u8>,
        input: Option<Vec<u8>>,
        output: Option<Vec<u8>>,
    }

    impl Board for ReverseBoard {
        fn info(&self) -> DeviceInfo {
            DeviceInfo {
                board: "test".into(),
                accelerator: "none".into(),
                kernel_memory_bytes: 0,
                bias_memory_bytes: 0,
                data_memory_bytes: 0,
                clock_hz: 1_000_000,
                firmware_version: "test".into(),
                identity: "x".repeat(MAX_TEXT),
                max_model_bytes: 1000,
                max_chunk_bytes: 100,
            }
        }

        fn load_model(&mut self, model: &[u8]) -> Result<(), DeviceError> {
            if model.first() == Some(&0) {
                return Err(DeviceError::new(ErrorCode::Refused, "models may not start with 0"));
            }
            self.model = model.to_vec();
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
                .ok_or_else(|| DeviceError::new(ErrorCode::NoInput, "no input"))?;
            assert!(input.first() != Some(&b'!'), "test board told to panic");
            self.output = Some(input.iter().rev().copied().collect());
            Ok(RunStatistics {
                cycles: Some(input.len() as u64),
                time_us: Some(1),
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

    fn ask(server: &mut Server<ReverseBoard>, seq: u32, request: Request) -> Response {
        let answer = server.answer(&Frame::new(request.kind(), seq, request.encode().unwrap()));
        assert_eq!(answer.seq, seq);
        Response::decode(answer.kind, &answer.payload).unwrap()
    }

    fn error_code(response: Response) -> ErrorCode {
        match response {
            Response::Error(e) => e.code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn input(data: &[u8]) -> Request {
        Request::LoadInput {
            total_len: data.len() as u32,
            offset: 0,
            data: data.to_vec(),
        }
    }

    fn input_chunk(total_len: u32, offset: u32, data: &[u8]) -> Request {
        Request::LoadInput {
            total_len,
            offset,
            data: data.to_vec(),
        }
    }

    fn loaded_server() -> Server<ReverseBoard> {
        let mut server = Server::new(ReverseBoard::default());
        let model = ModelSummary::of(b"m").unwrap();
        ask(&mut server, 1, Request::LoadModelBegin(model));
        ask(&mut server, 2, chunk(0, b"m"));
        ask(&mut server, 3, Request::LoadModelEnd(model));
        server
    }

    #[test]
    fn input_in_chunks_is_loaded_when_complete_and_output_is_read_by_offset() {
        let mut server = loaded_server();
        assert_eq!(
            ask(&mut server, 4, input_chunk(5, 0, b"ab")),
            Response::InputLoaded { received: 2 }
        );
        assert_eq!(error_code(ask(&mut server, 5, Request::Run)), ErrorCode::NoInput);
        assert_eq!(
            error_code(ask(&mut server, 6, input_chunk(5, 3, b"de"))),
            ErrorCode::OutOfOrder
        );
        assert_eq!(
            error_code(ask(&mut server, 7, input_chunk(6, 2, b"cde"))),
            ErrorCode::OutOfOrder
        );
        assert_eq!(
            error_code(ask(&mut server, 8, input_chunk(5, 2, b"cdef"))),
            ErrorCode::TooLarge
        );
        assert_eq!(
            ask(&mut server, 9, input_chunk(5, 2, b"cde")),
            Response::InputLoaded { received: 5 }
        );
        assert!(matches!(
            ask(&mut server, 10, Request::Run),
            Response::RunComplete { output_len: 5, .. }
        ));
        assert_eq!(
            ask(&mut server, 11, Request::ReadOutput { offset: 2 }),
            Response::Output {
                total_len: 5,
                data: b"cba".to_vec()
            }
        );
        assert_eq!(
            ask(&mut server, 12, Request::ReadOutput { offset: 5 }),
            Response::Output {
                total_len: 5,
                data: vec![]
            }
        );
        assert_eq!(
            error_code(ask(&mut server, 13, Request::ReadOutput { offset: 6 })),
            ErrorCode::OutOfOrder
        );
        // A chunk not at offset 0 without an input begun.
        assert_eq!(
            error_code(ask(&mut server, 14, input_chunk(5, 2, b"cde"))),
            ErrorCode::OutOfOrder
        );
    }

    fn chunk(offset: u32, data: &[u8]) -> Request {
        Request::LoadModelChunk {
            offset,
            data: data.to_vec(),
        }
    }

    #[test]
    fn upload_in_chunks_loads_and_verifies() {
        let mut server = Server::new(ReverseBoard::default());
        let model = ModelSummary::of(b"abcdef").unwrap();
        assert_eq!(
            ask(&mut server, 1, Request::LoadModelBegin(model)),
            Response::UploadStarted
        );
        assert_eq!(
            ask(&mut server, 2, chunk(0, b"abc")),
            Response::ChunkAccepted { next_offset: 3 }
        );
        assert_eq!(
            ask(&mut server, 3, chunk(3, b"def")),
            Response::ChunkAccepted { next_offset: 6 }
        );
        assert_eq!(
            ask(&mut server, 4, Request::LoadModelEnd(model)),
            Response::ModelLoaded(model)
        );
        assert_eq!(ask(&mut server, 5, Request::Verify), Response::Verified(Some(model)));
        assert_eq!(server.board().model, b"abcdef");
        // The end sent again (its answer lost) is answered the same.
        assert_eq!(
            ask(&mut server, 6, Request::LoadModelEnd(model)),
            Response::ModelLoaded(model)
        );
    }

    #[test]
    fn resent_chunk_is_accepted_and_a_gap_or_a_different_resend_is_out_of_order() {
        let mut server = Server::new(ReverseBoard::default());
        ask(
            &mut server,
            1,
            Request::LoadModelBegin(ModelSummary::of(b"abcdef").unwrap()),
        );
        ask(&mut server, 2, chunk(0, b"abc"));
        assert_eq!(
            ask(&mut server, 3, chunk(0, b"abc")),
            Response::ChunkAccepted { next_offset: 3 }
        );
        assert_eq!(
            ask(&mut server, 4, chunk(2, b"cde")),
            Response::ChunkAccepted { next_offset: 5 }
        );
        assert_eq!(error_code(ask(&mut server, 5, chunk(6, b"x"))), ErrorCode::TooLarge);
        assert_eq!(error_code(ask(&mut server, 6, chunk(0, b"xyz"))), ErrorCode::OutOfOrder);
        let mut other = Server::new(ReverseBoard::default());
        ask(
            &mut other,
            1,
            Request::LoadModelBegin(ModelSummary::of(b"abcdef").unwrap()),
        );
        assert_eq!(error_code(ask(&mut other, 2, chunk(3, b"def"))), ErrorCode::OutOfOrder);
    }

    #[test]
    fn chunk_without_upload_and_early_end_are_out_of_order() {
        let mut server = Server::new(ReverseBoard::default());
        assert_eq!(error_code(ask(&mut server, 1, chunk(0, b"a"))), ErrorCode::OutOfOrder);
        let model = ModelSummary::of(b"ab").unwrap();
        assert_eq!(
            error_code(ask(&mut server, 2, Request::LoadModelEnd(model))),
            ErrorCode::OutOfOrder
        );
        ask(&mut server, 3, Request::LoadModelBegin(model));
        ask(&mut server, 4, chunk(0, b"a"));
        assert_eq!(
            error_code(ask(&mut server, 5, Request::LoadModelEnd(model))),
            ErrorCode::OutOfOrder
        );
        // The upload survives the early end.
        ask(&mut server, 6, chunk(1, b"b"));
        assert_eq!(
            ask(&mut server, 7, Request::LoadModelEnd(model)),
            Response::ModelLoaded(model)
        );
    }

    #[test]
    fn digest_mismatch_and_a_refusing_board_leave_no_model() {
        let mut server = Server::new(ReverseBoard::default());
        let wrong = ModelSummary {
            len: 2,
            digest: Digest([0; 32]),
        };
        ask(&mut server, 1, Request::LoadModelBegin(wrong));
        ask(&mut server, 2, chunk(0, b"ab"));
        assert_eq!(
            error_code(ask(&mut server, 3, Request::LoadModelEnd(wrong))),
            ErrorCode::DigestMismatch
        );
        let zero = ModelSummary::of(&[0, 1]).unwrap();
        ask(&mut server, 4, Request::LoadModelBegin(zero));
        ask(&mut server, 5, chunk(0, &[0, 1]));
        assert_eq!(
            error_code(ask(&mut server, 6, Request::LoadModelEnd(zero))),
            ErrorCode::Refused
        );
        assert_eq!(ask(&mut server, 7, Request::Verify), Response::Verified(None));
        assert_eq!(error_code(ask(&mut server, 8, Request::Run)), ErrorCode::NoModel);
    }

    #[test]
    fn model_over_the_board_limit_is_refused_at_begin() {
        let mut server = Server::new(ReverseBoard::default());
        let big = ModelSummary {
            len: 1001,
            digest: Digest([0; 32]),
        };
        assert_eq!(
            error_code(ask(&mut server, 1, Request::LoadModelBegin(big))),
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn run_reads_output_and_statistics() {
        let mut server = Server::new(ReverseBoard::default());
        let model = ModelSummary::of(b"m").unwrap();
        ask(&mut server, 1, Request::LoadModelBegin(model));
        ask(&mut server, 2, chunk(0, b"m"));
        ask(&mut server, 3, Request::LoadModelEnd(model));
        assert_eq!(
            error_code(ask(&mut server, 4, Request::ReadStatistics)),
            ErrorCode::OutOfOrder
        );
        assert_eq!(error_code(ask(&mut server, 5, Request::Run)), ErrorCode::NoInput);
        ask(&mut server, 6, input(b"abc"));
        let statistics = RunStatistics {
            cycles: Some(3),
            time_us: Some(1),
            instructions: None,
        };
        assert_eq!(
            ask(&mut server, 7, Request::Run),
            Response::RunComplete {
                output_len: 3,
                statistics
            }
        );
        assert_eq!(
            ask(&mut server, 8, Request::ReadOutput { offset: 0 }),
            Response::Output {
                total_len: 3,
                data: b"cba".to_vec()
            }
        );
        assert_eq!(
            ask(&mut server, 9, Request::ReadStatistics),
            Response::Statistics(statistics)
        );
        assert_eq!(ask(&mut server, 10, Request::Reset), Response::ResetDone);
        assert_eq!(
            error_code(ask(&mut server, 11, Request::ReadOutput { offset: 0 })),
            ErrorCode::OutOfOrder
        );
        assert_eq!(ask(&mut server, 12, Request::Verify), Response::Verified(Some(model)));
    }

    #[test]
    fn a_retried_request_is_answered_from_memory() {
        let mut server = Server::new(ReverseBoard::default());
        let model = ModelSummary::of(b"m").unwrap();
        ask(&mut server, 1, Request::LoadModelBegin(model));
        let chunk = chunk(0, b"m");
        let mut frame = Frame::new(chunk.kind(), 2, chunk.encode().unwrap());
        let first = server.answer(&frame);
        frame.flags = Flags::RETRY;
        assert_eq!(server.answer(&frame), first);
        // Without the flag the same frame is a new request (here: still fine).
        frame.flags = Flags::NONE;
        assert_eq!(server.answer(&frame), first);
    }

    #[test]
    fn a_response_sent_to_the_board_is_unsupported() {
        let mut server = Server::new(ReverseBoard::default());
        let answer = server.answer(&Frame::new(MessageType::Pong, 1, vec![]));
        let Ok(Response::Error(error)) = Response::decode(answer.kind, &answer.payload) else {
            panic!()
        };
        assert_eq!(error.code, ErrorCode::Unsupported);
    }

    #[test]
    fn a_panicking_board_is_answered_as_internal_and_the_loop_goes_on() {
        let mut server = Server::new(ReverseBoard::default());
        let model = ModelSummary::of(b"m").unwrap();
        ask(&mut server, 1, Request::LoadModelBegin(model));
        ask(&mut server, 2, chunk(0, b"m"));
        ask(&mut server, 3, Request::LoadModelEnd(model));
        ask(&mut server, 4, input(b"!boom"));
        let hook = panic::take_hook();
        panic::set_hook(Box::new(|_| {}));
        let response = ask(&mut server, 5, Request::Run);
        panic::set_hook(hook);
        assert_eq!(error_code(response), ErrorCode::Internal);
        assert_eq!(
            ask(&mut server, 6, Request::Ping { nonce: 9 }),
            Response::Pong { nonce: 9 }
        );
        assert_eq!(ask(&mut server, 7, Request::Verify), Response::Verified(None));
    }

    #[test]
    fn unreadable_bytes_are_answered_by_kind() {
        let cases = [
            (FrameError::Garbage { len: 3 }, ErrorCode::CorruptFrame, 0),
            (FrameError::Crc { computed: 1, stated: 2 }, ErrorCode::CorruptFrame, 7),
            (
                FrameError::Oversized {
                    kind: MessageType::Ping,
                    len: 9999,
                    max: 2048,
                },
                ErrorCode::TooLarge,
                7,
            ),
            (FrameError::UnknownType(0x40), ErrorCode::Unsupported, 7),
        ];
        for (error, code, seq) in cases {
            let frame = answer_rejected(&Rejected {
                seq: (seq != 0).then_some(seq),
                error,
            });
            assert_eq!(frame.seq, seq);
            let Ok(Response::Error(answer)) = Response::decode(frame.kind, &frame.payload) else {
                panic!()
            };
            assert_eq!(answer.code, code);
        }
    }
}
