//! Typed requests (host → board) and responses (board → host).
//!
//! A frame's type says which message it holds; its payload is the
//! message's fields in postcard (a unit message has an empty payload).
//! Every variable-length field has a limit, checked when a message is
//! encoded and again when it is decoded; a payload must be used entirely.
//!
//! Model images, inputs and outputs larger than one message travel in
//! chunks named by their offset.
//!
//! Every request is idempotent, so that the host may resend any of them
//! after a lost answer: a chunk names its offset (and a resent chunk must
//! agree with what arrived), the end of an upload repeats the size and
//! digest it announced, an input chunk at offset 0 starts the input again,
//! and running twice on the same input gives the same output.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};
use thiserror::Error;

use crate::frame::MessageType;

/// Longest name, version or identity string, in bytes.
pub const MAX_TEXT: usize = 128;
/// Longest error message, in bytes.
pub const MAX_ERROR_TEXT: usize = 1024;
/// Most bytes of model, input or output data in one message.
pub const MAX_DATA: usize = 60 * 1024;
/// The largest input or output of one run (the MAX78002's data memory is
/// 1.3 MB).
pub const MAX_TENSOR_BYTES: u32 = 4 * 1024 * 1024;
/// The largest model any board may accept (a board announces its own limit
/// in [`DeviceInfo::max_model_bytes`]).
pub const MAX_MODEL_BYTES: u32 = 16 * 1024 * 1024;

/// A blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Size and digest of a model image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelSummary {
    pub len: u32,
    pub digest: Digest,
}

impl ModelSummary {
    pub fn of(bytes: &[u8]) -> Option<ModelSummary> {
        Some(ModelSummary {
            len: u32::try_from(bytes.len()).ok()?,
            digest: Digest::of(bytes),
        })
    }
}

/// What a board says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// `max78002`, `max78000`, ...
    pub board: String,
    /// The accelerator, e.g. `MAX78002 CNN`.
    pub accelerator: String,
    pub kernel_memory_bytes: u32,
    pub bias_memory_bytes: u32,
    pub data_memory_bytes: u32,
    /// The accelerator's clock, in Hz.
    pub clock_hz: u64,
    pub firmware_version: String,
    /// Stays the same for the same physical (or simulated) board across
    /// resets, so that results measured on it can be keyed by it.
    pub identity: String,
    /// The largest model image the board accepts (at most [`MAX_MODEL_BYTES`]).
    pub max_model_bytes: u32,
    /// The largest chunk the board accepts (at most [`MAX_DATA`]).
    pub max_chunk_bytes: u32,
}

/// What one inference cost, as far as the board can tell: an accelerator
/// counts its cycles, an emulated core its executed instructions (cycles
/// are then the host's estimate, not the board's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatistics {
    /// Cycles the board counted or models exactly.
    pub cycles: Option<u64>,
    /// Time at the board's clock, in microseconds.
    pub time_us: Option<u64>,
    /// Instructions the core executed.
    pub instructions: Option<u64>,
}

/// Why a board did not do what it was asked. The numbers are part of the
/// wire format; a code this side does not know stays `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
pub enum ErrorCode {
    /// The frame arrived damaged (CRC, header check, truncated, garbage):
    /// sending it again may work.
    CorruptFrame,
    /// The frame was intact but its payload is not a valid message.
    Malformed,
    /// Unknown type, flags or version, or a response sent to the board.
    Unsupported,
    /// A length over a limit.
    TooLarge,
    /// A request out of sequence: a chunk at the wrong offset, an upload's
    /// end before all its bytes, a stale sequence number.
    OutOfOrder,
    NoModel,
    NoInput,
    DigestMismatch,
    /// The board cannot take what it was sent (it does not fit its memory,
    /// or it is not a model it can run).
    Refused,
    Internal,
    Other(u16),
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::CorruptFrame => 1,
            ErrorCode::Malformed => 2,
            ErrorCode::Unsupported => 3,
            ErrorCode::TooLarge => 4,
            ErrorCode::OutOfOrder => 5,
            ErrorCode::NoModel => 6,
            ErrorCode::NoInput => 7,
            ErrorCode::DigestMismatch => 8,
            ErrorCode::Refused => 9,
            ErrorCode::Internal => 10,
            ErrorCode::Other(code) => code,
        }
    }
}

impl From<u16> for ErrorCode {
    fn from(code: u16) -> ErrorCode {
        [
            ErrorCode::CorruptFrame,
            ErrorCode::Malformed,
            ErrorCode::Unsupported,
            ErrorCode::TooLarge,
            ErrorCode::OutOfOrder,
            ErrorCode::NoModel,
            ErrorCode::NoInput,
            ErrorCode::DigestMismatch,
            ErrorCode::Refused,
            ErrorCode::Internal,
        ]
        .into_iter()
        .find(|known| known.code() == code)
        .unwrap_or(ErrorCode::Other(code))
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.code()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::CorruptFrame => f.write_str("corrupt frame"),
            ErrorCode::Malformed => f.write_str("malformed message"),
            ErrorCode::Unsupported => f.write_str("unsupported"),
            ErrorCode::TooLarge => f.write_str("too large"),
            ErrorCode::OutOfOrder => f.write_str("out of order"),
            ErrorCode::NoModel => f.write_str("no model loaded"),
            ErrorCode::NoInput => f.write_str("no input loaded"),
            ErrorCode::DigestMismatch => f.write_str("digest mismatch"),
            ErrorCode::Refused => f.write_str("refused"),
            ErrorCode::Internal => f.write_str("internal error"),
            ErrorCode::Other(code) => write!(f, "error {code}"),
        }
    }
}

/// An error answer: a code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Error)]
#[error("{code}: {message}")]
pub struct DeviceError {
    pub code: ErrorCode,
    pub message: String,
}

impl DeviceError {
    /// An error whose message is cut (at a character boundary) to
    /// [`MAX_ERROR_TEXT`], so that it can always be sent.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> DeviceError {
        let mut message = message.into();
        if message.len() > MAX_ERROR_TEXT {
            let mut end = MAX_ERROR_TEXT;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        DeviceError { code, message }
    }
}

/// Host → board.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Ping {
        nonce: u64,
    },
    GetInfo,
    /// Starts an upload of `len` bytes (dropping any upload in progress).
    LoadModelBegin(ModelSummary),
    LoadModelChunk {
        offset: u32,
        data: Vec<u8>,
    },
    /// Ends the upload: the board checks size and digest, then loads it.
    LoadModelEnd(ModelSummary),
    /// Asks for the size and digest of the model the board holds.
    Verify,
    /// A chunk of the next run's input of `total_len` bytes; a chunk at
    /// offset 0 starts a new input, and the board loads it when the last
    /// byte has arrived.
    LoadInput {
        total_len: u32,
        offset: u32,
        data: Vec<u8>,
    },
    Run,
    /// Asks for the output of the last run from `offset` on (as much as
    /// one message carries).
    ReadOutput {
        offset: u32,
    },
    ReadStatistics,
    Reset,
}

/// Board → host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Pong {
        nonce: u64,
    },
    Info(DeviceInfo),
    UploadStarted,
    /// The board holds every byte before `next_offset`.
    ChunkAccepted {
        next_offset: u32,
    },
    ModelLoaded(ModelSummary),
    /// The loaded model, if any.
    Verified(Option<ModelSummary>),
    /// The board holds the input's bytes before `received` (all of them:
    /// the input is loaded).
    InputLoaded {
        received: u32,
    },
    RunComplete {
        output_len: u32,
        statistics: RunStatistics,
    },
    /// Output bytes from the requested offset on, of `total_len`.
    Output {
        total_len: u32,
        data: Vec<u8>,
    },
    Statistics(RunStatistics),
    ResetDone,
    Error(DeviceError),
}

/// Why a payload is not the message its frame type says.
#[derive(Debug, Error)]
pub enum MessageError {
    #[error("{kind:?} payload is not valid: {source}")]
    Decode { kind: MessageType, source: postcard::Error },
    #[error("{kind:?} payload has {extra} bytes after the message")]
    Trailing { kind: MessageType, extra: usize },
    #[error("{field} is {len} bytes; the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind:?} is a response, not a request")]
    NotARequest { kind: MessageType },
    #[error("{kind:?} is a request, not a response")]
    NotAResponse { kind: MessageType },
    #[error("cannot encode {kind:?}: {source}")]
    Encode { kind: MessageType, source: postcard::Error },
}

impl MessageError {
    /// The code a board answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            MessageError::TooLong { .. } => ErrorCode::TooLarge,
            MessageError::NotARequest { .. } | MessageError::NotAResponse { .. } => ErrorCode::Unsupported,
            MessageError::Decode { .. } | MessageError::Trailing { .. } => ErrorCode::Malformed,
            MessageError::Encode { .. } => ErrorCode::Internal,
        }
    }
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), MessageError> {
    if len > max {
        Err(MessageError::TooLong { field, len, max })
    } else {
        Ok(())
    }
}

fn encode<T: Serialize>(kind: MessageType, value: &T) -> Result<Vec<u8>, MessageError> {
    postcard::to_stdvec(value).map_err(|source| MessageError::Encode { kind, source })
}

fn decode<T: DeserializeOwned>(kind: MessageType, payload: &[u8]) -> Result<T, MessageError> {
    // postcard reads a length prefix and then takes that many bytes from
    // the payload, so no allocation exceeds the payload (itself limited by
    // the frame header).
    let (value, rest) = postcard::take_from_bytes(payload).map_err(|source| MessageError::Decode { kind, source })?;
    if !rest.is_empty() {
        return Err(MessageError::Trailing {
            kind,
            extra: rest.len(),
        });
    }
    Ok(value)
}

fn decode_unit(kind: MessageType, payload: &[u8]) -> Result<(), MessageError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(MessageError::Trailing {
            kind,
            extra: payload.len(),
        })
    }
}

impl DeviceInfo {
    fn check(&self) -> Result<(), MessageError> {
        check_len("board name", self.board.len(), MAX_TEXT)?;
        check_len("accelerator name", self.accelerator.len(), MAX_TEXT)?;
        check_len("firmware version", self.firmware_version.len(), MAX_TEXT)?;
        check_len("board identity", self.identity.len(), MAX_TEXT)
    }
}

impl Request {
    pub fn kind(&self) -> MessageType {
        match self {
            Request::Ping { .. } => MessageType::Ping,
            Request::GetInfo => MessageType::GetInfo,
            Request::LoadModelBegin(_) => MessageType::LoadModelBegin,
            Request::LoadModelChunk { .. } => MessageType::LoadModelChunk,
            Request::LoadModelEnd(_) => MessageType::LoadModelEnd,
            Request::Verify => MessageType::Verify,
            Request::LoadInput { .. } => MessageType::LoadInput,
            Request::Run => MessageType::Run,
            Request::ReadOutput { .. } => MessageType::ReadOutput,
            Request::ReadStatistics => MessageType::ReadStatistics,
            Request::Reset => MessageType::Reset,
        }
    }

    fn check(&self) -> Result<(), MessageError> {
        match self {
            Request::LoadModelChunk { data, .. } => check_len("model chunk", data.len(), MAX_DATA),
            Request::LoadInput { total_len, data, .. } => {
                check_len("input chunk", data.len(), MAX_DATA)?;
                check_len("input", *total_len as usize, MAX_TENSOR_BYTES as usize)
            }
            Request::LoadModelBegin(model) | Request::LoadModelEnd(model) => {
                check_len("model", model.len as usize, MAX_MODEL_BYTES as usize)
            }
            _ => Ok(()),
        }
    }

    /// The frame payload.
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        self.check()?;
        let kind = self.kind();
        match self {
            Request::Ping { nonce } => encode(kind, nonce),
            Request::LoadModelBegin(model) | Request::LoadModelEnd(model) => encode(kind, model),
            Request::LoadModelChunk { offset, data } => encode(kind, &(offset, Bytes::new(data))),
            Request::LoadInput {
                total_len,
                offset,
                data,
            } => encode(kind, &(total_len, offset, Bytes::new(data))),
            Request::ReadOutput { offset } => encode(kind, offset),
            Request::GetInfo | Request::Verify | Request::Run | Request::ReadStatistics | Request::Reset => {
                Ok(Vec::new())
            }
        }
    }

    /// The request a frame of type `kind` with this payload holds.
    pub fn decode(kind: MessageType, payload: &[u8]) -> Result<Request, MessageError> {
        let request = match kind {
            MessageType::Ping => Request::Ping {
                nonce: decode(kind, payload)?,
            },
            MessageType::GetInfo => decode_unit(kind, payload).map(|()| Request::GetInfo)?,
            MessageType::LoadModelBegin => Request::LoadModelBegin(decode(kind, payload)?),
            MessageType::LoadModelChunk => {
                let (offset, data): (u32, ByteBuf) = decode(kind, payload)?;
                Request::LoadModelChunk {
                    offset,
                    data: data.into_vec(),
                }
            }
            MessageType::LoadModelEnd => Request::LoadModelEnd(decode(kind, payload)?),
            MessageType::Verify => decode_unit(kind, payload).map(|()| Request::Verify)?,
            MessageType::LoadInput => {
                let (total_len, offset, data): (u32, u32, ByteBuf) = decode(kind, payload)?;
                let data = data.into_vec();
                Request::LoadInput {
                    total_len,
                    offset,
                    data,
                }
            }
            MessageType::Run => decode_unit(kind, payload).map(|()| Request::Run)?,
            MessageType::ReadOutput => Request::ReadOutput {
                offset: decode(kind, payload)?,
            },
            MessageType::ReadStatistics => decode_unit(kind, payload).map(|()| Request::ReadStatistics)?,
            MessageType::Reset => decode_unit(kind, payload).map(|()| Request::Reset)?,
            _ => return Err(MessageError::NotARequest { kind }),
        };
        request.check()?;
        Ok(request)
    }
}

impl Response {
    pub fn kind(&self) -> MessageType {
        match self {
            Response::Pong { .. } => MessageType::Pong,
            Response::Info(_) => MessageType::Info,
            Response::UploadStarted => MessageType::UploadStarted,
            Response::ChunkAccepted { .. } => MessageType::ChunkAccepted,
            Response::ModelLoaded(_) => MessageType::ModelLoaded,
            Response::Verified(_) => MessageType::Verified,
            Response::InputLoaded { .. } => MessageType::InputLoaded,
            Response::RunComplete { .. } => MessageType::RunComplete,
            Response::Output { .. } => MessageType::Output,
            Response::Statistics(_) => MessageType::Statistics,
            Response::ResetDone => MessageType::ResetDone,
            Response::Error(_) => MessageType::Error,
        }
    }

    fn check(&self) -> Result<(), MessageError> {
        match self {
            Response::Info(info) => info.check(),
            Response::Output { data, .. } => check_len("output chunk", data.len(), MAX_DATA),
            Response::Error(error) => check_len("error message", error.message.len(), MAX_ERROR_TEXT),
            _ => Ok(()),
        }
    }

    /// The frame payload.
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        self.check()?;
        let kind = self.kind();
        match self {
            Response::Pong { nonce } => encode(kind, nonce),
            Response::Info(info) => encode(kind, info),
            Response::ChunkAccepted { next_offset } => encode(kind, next_offset),
            Response::ModelLoaded(model) => encode(kind, model),
            Response::Verified(model) => encode(kind, model),
            Response::InputLoaded { received } => encode(kind, received),
            Response::RunComplete { output_len, statistics } => encode(kind, &(output_len, statistics)),
            Response::Output { total_len, data } => encode(kind, &(total_len, Bytes::new(data))),
            Response::Statistics(statistics) => encode(kind, statistics),
            Response::Error(error) => encode(kind, error),
            Response::UploadStarted | Response::ResetDone => Ok(Vec::new()),
        }
    }

    /// The response a frame of type `kind` with this payload holds.
    pub fn decode(kind: MessageType, payload: &[u8]) -> Result<Response, MessageError> {
        let response = match kind {
            MessageType::Pong => Response::Pong {
                nonce: decode(kind, payload)?,
            },
            MessageType::Info => Response::Info(decode(kind, payload)?),
            MessageType::UploadStarted => decode_unit(kind, payload).map(|()| Response::UploadStarted)?,
            MessageType::ChunkAccepted => Response::ChunkAccepted {
                next_offset: decode(kind, payload)?,
            },
            MessageType::ModelLoaded => Response::ModelLoaded(decode(kind, payload)?),
            MessageType::Verified => Response::Verified(decode(kind, payload)?),
            MessageType::InputLoaded => Response::InputLoaded {
                received: decode(kind, payload)?,
            },
            MessageType::RunComplete => {
                let (output_len, statistics) = decode(kind, payload)?;
                Response::RunComplete { output_len, statistics }
            }
            MessageType::Output => {
                let (total_len, data): (u32, ByteBuf) = decode(kind, payload)?;
                Response::Output {
                    total_len,
                    data: data.into_vec(),
                }
            }
            MessageType::Statistics => Response::Statistics(decode(kind, payload)?),
            MessageType::ResetDone => decode_unit(kind, payload).map(|()| Response::ResetDone)?,
            MessageType::Error => Response::Error(decode(kind, payload)?),
            _ => return Err(MessageError::NotAResponse { kind }),
        };
        response.check()?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_payloads_are_their_length_then_the_bytes() {
        let chunk = Request::LoadModelChunk {
            offset: 300,
            data: vec![7, 8, 9],
        };
        // postcard: varint 300, varint 3, then the bytes as they are.
        assert_eq!(chunk.encode().unwrap(), vec![0xac, 0x02, 3, 7, 8, 9]);
        assert_eq!(Request::decode(chunk.kind(), &[0xac, 0x02, 3, 7, 8, 9]).unwrap(), chunk);
    }
    use crate::frame::{Frame, MAX_PAYLOAD};

    fn model() -> ModelSummary {
        ModelSummary::of(b"weights").unwrap()
    }

    fn info() -> DeviceInfo {
        DeviceInfo {
            board: "max78002".into(),
            accelerator: "MAX78002 CNN".into(),
            kernel_memory_bytes: 2_359_296,
            bias_memory_bytes: 8_192,
            data_memory_bytes: 1_310_720,
            clock_hz: 200_000_000,
            firmware_version: "kflow-sim 0.1.0".into(),
            identity: "sim:max78002".into(),
            max_model_bytes: MAX_MODEL_BYTES,
            max_chunk_bytes: MAX_DATA as u32,
        }
    }

    fn all_requests() -> Vec<Request> {
        vec![
            Request::Ping { nonce: u64::MAX },
            Request::GetInfo,
            Request::LoadModelBegin(model()),
            Request::LoadModelChunk {
                offset: 4096,
                data: vec![0xAB; MAX_DATA],
            },
            Request::LoadModelEnd(model()),
            Request::Verify,
            Request::LoadInput {
                total_len: 1000,
                offset: 256,
                data: (0..=255).collect(),
            },
            Request::Run,
            Request::ReadOutput { offset: 61440 },
            Request::ReadStatistics,
            Request::Reset,
        ]
    }

    fn all_responses() -> Vec<Response> {
        vec![
            Response::Pong { nonce: 7 },
            Response::Info(info()),
            Response::UploadStarted,
            Response::ChunkAccepted { next_offset: 8192 },
            Response::ModelLoaded(model()),
            Response::Verified(Some(model())),
            Response::Verified(None),
            Response::InputLoaded { received: 256 },
            Response::RunComplete {
                output_len: 10,
                statistics: RunStatistics {
                    cycles: Some(123_456),
                    time_us: Some(617),
                    instructions: None,
                },
            },
            Response::Output {
                total_len: 100_000,
                data: vec![1; MAX_DATA],
            },
            Response::Statistics(RunStatistics {
                cycles: None,
                time_us: None,
                instructions: Some(1),
            }),
            Response::ResetDone,
            Response::Error(DeviceError::new(
                ErrorCode::Refused,
                "kernel memory of processor 3 is full",
            )),
            Response::Error(DeviceError::new(ErrorCode::Other(999), "")),
        ]
    }

    #[test]
    fn every_request_round_trips_through_a_frame() {
        for request in all_requests() {
            let bytes = Frame::new(request.kind(), 3, request.encode().unwrap())
                .encode()
                .unwrap();
            let (frame, _) = Frame::decode(&bytes).unwrap();
            assert_eq!(Request::decode(frame.kind, &frame.payload).unwrap(), request);
        }
    }

    #[test]
    fn every_response_round_trips_through_a_frame() {
        for response in all_responses() {
            let bytes = Frame::new(response.kind(), 3, response.encode().unwrap())
                .encode()
                .unwrap();
            let (frame, _) = Frame::decode(&bytes).unwrap();
            assert_eq!(Response::decode(frame.kind, &frame.payload).unwrap(), response);
        }
    }

    #[test]
    fn largest_data_messages_fit_a_frame() {
        let chunk = Request::LoadModelChunk {
            offset: u32::MAX,
            data: vec![0; MAX_DATA],
        };
        assert!(chunk.encode().unwrap().len() <= MAX_PAYLOAD as usize);
        let input = Request::LoadInput {
            total_len: MAX_TENSOR_BYTES,
            offset: u32::MAX,
            data: vec![0; MAX_DATA],
        };
        assert!(input.encode().unwrap().len() <= MAX_PAYLOAD as usize);
        let output = Response::Output {
            total_len: u32::MAX,
            data: vec![0; MAX_DATA],
        };
        assert!(output.encode().unwrap().len() <= MAX_PAYLOAD as usize);
        let mut big = info();
        big.board = "b".repeat(MAX_TEXT);
        big.accelerator = "a".repeat(MAX_TEXT);
        big.firmware_version = "f".repeat(MAX_TEXT);
        big.identity = "i".repeat(MAX_TEXT);
        let payload = Response::Info(big).encode().unwrap();
        assert!(payload.len() <= MessageType::Info.max_payload() as usize);
        let error = Response::Error(DeviceError::new(ErrorCode::Internal, "é".repeat(MAX_ERROR_TEXT)));
        assert!(error.encode().unwrap().len() <= MessageType::Error.max_payload() as usize);
    }

    #[test]
    fn oversized_chunk_is_refused_on_encode_and_decode() {
        let chunk = Request::LoadModelChunk {
            offset: 0,
            data: vec![0; MAX_DATA + 1],
        };
        assert!(matches!(
            chunk.encode(),
            Err(MessageError::TooLong {
                field: "model chunk",
                ..
            })
        ));
        let payload = postcard::to_stdvec(&(0u32, vec![0u8; MAX_DATA + 1])).unwrap();
        let err = Request::decode(MessageType::LoadModelChunk, &payload).unwrap_err();
        assert_eq!(err.code(), ErrorCode::TooLarge);
    }

    #[test]
    fn long_strings_are_refused_on_decode() {
        let mut long = info();
        long.identity = "x".repeat(MAX_TEXT + 1);
        let payload = postcard::to_stdvec(&long).unwrap();
        let err = Response::decode(MessageType::Info, &payload).unwrap_err();
        assert!(
            matches!(
                err,
                MessageError::TooLong {
                    field: "board identity",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn too_large_input_is_refused_on_decode() {
        let payload = postcard::to_stdvec(&(MAX_TENSOR_BYTES + 1, 0u32, vec![1u8])).unwrap();
        let err = Request::decode(MessageType::LoadInput, &payload).unwrap_err();
        assert!(matches!(err, MessageError::TooLong { field: "input", .. }), "{err}");
    }

    #[test]
    fn too_large_model_is_refused_on_decode() {
        let payload = postcard::to_stdvec(&ModelSummary {
            len: MAX_MODEL_BYTES + 1,
            digest: Digest([0; 32]),
        })
        .unwrap();
        assert!(matches!(
            Request::decode(MessageType::LoadModelBegin, &payload),
            Err(MessageError::TooLong { .. })
        ));
    }

    #[test]
    fn a_length_prefix_larger_than_the_payload_fails_without_allocating_it() {
        // offset 0, then a varint length of about 2^35 and no data.
        let payload = [0u8, 0xff, 0xff, 0xff, 0xff, 0x7f];
        let err = Request::decode(MessageType::LoadModelChunk, &payload).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Malformed);
    }

    #[test]
    fn trailing_bytes_and_wrong_direction_are_errors() {
        assert!(matches!(
            Request::decode(MessageType::Run, &[0]),
            Err(MessageError::Trailing { extra: 1, .. })
        ));
        let mut ping = Request::Ping { nonce: 1 }.encode().unwrap();
        ping.push(0);
        assert!(matches!(
            Request::decode(MessageType::Ping, &ping),
            Err(MessageError::Trailing { .. })
        ));
        assert!(matches!(
            Request::decode(MessageType::Pong, &[]),
            Err(MessageError::NotARequest { .. })
        ));
        assert!(matches!(
            Response::decode(MessageType::Run, &[]),
            Err(MessageError::NotAResponse { .. })
        ));
    }

    #[test]
    fn invalid_utf8_in_a_string_is_malformed() {
        let mut error = Response::Error(DeviceError::new(ErrorCode::Internal, "ab"))
            .encode()
            .unwrap();
        let last = error.len() - 1;
        error[last] = 0xff;
        assert_eq!(
            Response::decode(MessageType::Error, &error).unwrap_err().code(),
            ErrorCode::Malformed
        );
    }

    #[test]
    fn error_codes_round_trip_including_unknown_ones() {
        for code in 0..20u16 {
            assert_eq!(ErrorCode::from(code).code(), code);
        }
        assert_eq!(ErrorCode::from(8), ErrorCode::DigestMismatch);
    }

    #[test]
    fn long_error_messages_are_cut_at_a_character_boundary() {
        let error = DeviceError::new(ErrorCode::Internal, "é".repeat(MAX_ERROR_TEXT));
        assert_eq!(error.message.len(), MAX_ERROR_TEXT);
    }

    #[test]
    fn digest_displays_as_hex() {
        assert_eq!(Digest([0xab; 32]).to_string(), "ab".repeat(32));
    }
}
