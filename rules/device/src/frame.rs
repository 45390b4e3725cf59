//! The wire format: one frame carries one message.
//!
//! All integers are little-endian.
//!
//! | offset    | size | field                                                          |
//! |-----------|------|----------------------------------------------------------------|
//! | 0         | 2    | magic `4B 46` (`"KF"`)                                         |
//! | 2         | 1    | protocol version, [`VERSION`]                                  |
//! | 3         | 1    | message type ([`MessageType`]; a response is its request `\| 0x80`) |
//! | 4         | 1    | flags ([`Flags`]); unknown bits are an error                   |
//! | 5         | 1    | reserved, 0                                                    |
//! | 6         | 4    | sequence number (a response repeats its request's)             |
//! | 10        | 4    | payload length, at most the type's limit ([`MessageType::max_payload`]) |
//! | 14        | 2    | header check: low 16 bits of the CRC-32 of bytes 0..14         |
//! | 16        | n    | payload (postcard, see [`crate::message`])                     |
//! | 16 + n    | 4    | CRC-32 (IEEE) of bytes 0..16 + n                               |
//!
//! The header has its own check so that a receiver trusts a length only from
//! a header that is intact: noise that happens to contain the magic is
//! skipped at once instead of making the receiver wait for a payload that
//! never comes. Everything in the header is validated before any payload
//! buffer is allocated, and no type allows more than [`MAX_PAYLOAD`] bytes.

use thiserror::Error;

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"KF";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 2;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;
/// Bytes after the payload (the frame's CRC-32).
pub const TRAILER_LEN: usize = 4;
/// The largest payload of any frame. Chunk, input and output data stay below
/// it ([`crate::message::MAX_DATA`]) with room for their other fields.
pub const MAX_PAYLOAD: u32 = 64 * 1024;
/// The largest frame on the wire.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD as usize + TRAILER_LEN;

/// Payload limit of the messages whose fields are a few integers and short
/// strings.
const SMALL_PAYLOAD: u32 = 2 * 1024;

macro_rules! message_types {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $max:expr;)*) => {
        /// What a frame carries. The numbering is part of the wire format.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum MessageType {
            $($(#[$doc])* $name = $code,)*
        }

        impl MessageType {
            /// Every type, in code order.
            pub const ALL: &'static [MessageType] = &[$(MessageType::$name,)*];

            /// The type with this code, if there is one.
            pub fn from_code(code: u8) -> Option<MessageType> {
                match code {
                    $($code => Some(MessageType::$name),)*
                    _ => None,
                }
            }

            /// The largest payload a frame of this type may announce.
            pub fn max_payload(self) -> u32 {
                match self {
                    $(MessageType::$name => $max,)*
                }
            }
        }
    };
}

message_types! {
    Ping = 0x01, SMALL_PAYLOAD;
    GetInfo = 0x02, SMALL_PAYLOAD;
    LoadModelBegin = 0x03, SMALL_PAYLOAD;
    LoadModelChunk = 0x04, MAX_PAYLOAD;
    LoadModelEnd = 0x05, SMALL_PAYLOAD;
    Verify = 0x06, SMALL_PAYLOAD;
    LoadInput = 0x07, MAX_PAYLOAD;
    Run = 0x08, SMALL_PAYLOAD;
    ReadOutput = 0x09, SMALL_PAYLOAD;
    ReadStatistics = 0x0A, SMALL_PAYLOAD;
    Reset = 0x0B, SMALL_PAYLOAD;
    Pong = 0x81, SMALL_PAYLOAD;
    Info = 0x82, SMALL_PAYLOAD;
    UploadStarted = 0x83, SMALL_PAYLOAD;
    ChunkAccepted = 0x84, SMALL_PAYLOAD;
    ModelLoaded = 0x85, SMALL_PAYLOAD;
    Verified = 0x86, SMALL_PAYLOAD;
    InputLoaded = 0x87, SMALL_PAYLOAD;
    RunComplete = 0x88, SMALL_PAYLOAD;
    Output = 0x89, MAX_PAYLOAD;
    Statistics = 0x8A, SMALL_PAYLOAD;
    ResetDone = 0x8B, SMALL_PAYLOAD;
    /// The board's answer to anything it could not do, including frames it
    /// could not read.
    Error = 0xFF, SMALL_PAYLOAD;
}

impl MessageType {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Sent by the board (responses and errors) rather than by the host.
    pub fn is_response(self) -> bool {
        self.code() & 0x80 != 0
    }
}

/// Frame flags. Bits other than those named here are rejected, so that a
/// later version can give them a meaning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(u8);

impl Flags {
    /// No flag set.
    pub const NONE: Flags = Flags(0);
    /// The host sends this sequence number again because it got no answer.
    pub const RETRY: Flags = Flags(0x01);
    const KNOWN: u8 = 0x01;

    /// The flags with these bits, if every bit is known.
    pub fn from_bits(bits: u8) -> Option<Flags> {
        (bits & !Self::KNOWN == 0).then_some(Flags(bits))
    }

    /// The byte on the wire.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// These flags and `other`.
    pub fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// Why bytes are not a frame.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("{len} bytes without a frame header skipped")]
    Garbage { len: usize },
    #[error("frame header check failed")]
    HeaderCheck,
    #[error("protocol version {0} (this side speaks {VERSION})")]
    Version(u8),
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    #[error("unknown flag bits 0x{0:02x}")]
    UnknownFlags(u8),
    #[error("reserved header byte is 0x{0:02x}, not 0")]
    Reserved(u8),
    #[error("{kind:?} frame announces a {len}-byte payload; the limit is {max}")]
    Oversized { kind: MessageType, len: u32, max: u32 },
    #[error("frame CRC mismatch (computed {computed:08x}, frame says {stated:08x})")]
    Crc { computed: u32, stated: u32 },
    #[error("frame truncated: {have} of {need} bytes arrived")]
    Truncated { have: usize, need: usize },
}

/// A frame header that passed every check: its length can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: MessageType,
    pub flags: Flags,
    pub seq: u32,
    pub payload_len: u32,
}

impl Header {
    /// Checks a header: magic, header check, version, type, flags, the
    /// reserved byte and the type's payload limit, in that order.
    ///
    /// A header whose magic or check fails is not a header at all (`Err`
    /// with no sequence number); one that is intact but not acceptable
    /// still names the sequence number it came with, so the answer can
    /// carry it.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Header, (Option<u32>, FrameError)> {
        if bytes[0..2] != MAGIC {
            return Err((None, FrameError::HeaderCheck));
        }
        let check = u16::from_le_bytes([bytes[14], bytes[15]]);
        if check != header_check(&bytes[..14]) {
            return Err((None, FrameError::HeaderCheck));
        }
        let seq = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        let payload_len = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
        let reject = |error| Err((Some(seq), error));
        if bytes[2] != VERSION {
            return reject(FrameError::Version(bytes[2]));
        }
        let Some(kind) = MessageType::from_code(bytes[3]) else {
            return reject(FrameError::UnknownType(bytes[3]));
        };
        let Some(flags) = Flags::from_bits(bytes[4]) else {
            return reject(FrameError::UnknownFlags(bytes[4]));
        };
        if bytes[5] != 0 {
            return reject(FrameError::Reserved(bytes[5]));
        }
        if payload_len > kind.max_payload() {
            return reject(FrameError::Oversized {
                kind,
                len: payload_len,
                max: kind.max_payload(),
            });
        }
        Ok(Header {
            kind,
            flags,
            seq,
            payload_len,
        })
    }

    /// The header's 16 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0..2].copy_from_slice(&MAGIC);
        bytes[2] = VERSION;
        bytes[3] = self.kind.code();
        bytes[4] = self.flags.bits();
        bytes[6..10].copy_from_slice(&self.seq.to_le_bytes());
        bytes[10..14].copy_from_slice(&self.payload_len.to_le_bytes());
        let check = header_check(&bytes[..14]);
        bytes[14..16].copy_from_slice(&check.to_le_bytes());
        bytes
    }

    /// Bytes of the whole frame this header starts.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize + TRAILER_LEN
    }
}

fn header_check(bytes: &[u8]) -> u16 {
    crc32fast::hash(bytes) as u16
}

/// One message on the wire, with its payload still encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: MessageType,
    pub flags: Flags,
    pub seq: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame without flags.
    pub fn new(kind: MessageType, seq: u32, payload: Vec<u8>) -> Frame {
        Frame {
            kind,
            flags: Flags::NONE,
            seq,
            payload,
        }
    }

    /// The frame's bytes. Fails only if the payload is over its type's
    /// limit, which the receiver would reject.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        if len > self.kind.max_payload() {
            return Err(FrameError::Oversized {
                kind: self.kind,
                len,
                max: self.kind.max_payload(),
            });
        }
        let header = Header {
            kind: self.kind,
            flags: self.flags,
            seq: self.seq,
            payload_len: len,
        };
        let mut bytes = Vec::with_capacity(header.frame_len());
        bytes.extend_from_slice(&header.to_bytes());
        bytes.extend_from_slice(&self.payload);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        Ok(bytes)
    }

    /// Reads the one frame at the start of `bytes`, returning it and the
    /// bytes it used. The header is checked before the payload is copied.
    pub fn decode(bytes: &[u8]) -> Result<(Frame, usize), (Option<u32>, FrameError)> {
        let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err((
                None,
                FrameError::Truncated {
                    have: bytes.len(),
                    need: HEADER_LEN,
                },
            ));
        };
        let header = Header::parse(head)?;
        let need = header.frame_len();
        if bytes.len() < need {
            return Err((
                Some(header.seq),
                FrameError::Truncated {
                    have: bytes.len(),
                    need,
                },
            ));
        }
        let body_end = need - TRAILER_LEN;
        let computed = crc32fast::hash(&bytes[..body_end]);
        let stated = u32::from_le_bytes([
            bytes[body_end],
            bytes[body_end + 1],
            bytes[body_end + 2],
            bytes[body_end + 3],
        ]);
        if computed != stated {
            return Err((Some(header.seq), FrameError::Crc { computed, stated }));
        }
        let frame = Frame {
            kind: header.kind,
            flags: header.flags,
            seq: header.seq,
            payload: bytes[HEADER_LEN..body_end].to_vec(),
        };
        Ok((frame, need))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(seq: u32) -> Frame {
        Frame::new(MessageType::Ping, seq, vec![1, 2, 3, 4])
    }

    #[test]
    fn frame_round_trips_with_its_layout() {
        let frame = ping(0x0102_0304);
        let bytes = frame.encode().unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 4 + TRAILER_LEN);
        assert_eq!(&bytes[0..2], b"KF");
        assert_eq!(bytes[2], VERSION);
        assert_eq!(bytes[3], 0x01);
        assert_eq!(&bytes[6..10], &[4, 3, 2, 1]);
        assert_eq!(&bytes[10..14], &[4, 0, 0, 0]);
        assert_eq!(Frame::decode(&bytes).unwrap(), (frame, bytes.len()));
    }

    #[test]
    fn every_type_code_round_trips_and_responses_have_the_high_bit() {
        for &kind in MessageType::ALL {
            assert_eq!(MessageType::from_code(kind.code()), Some(kind));
            assert!(kind.max_payload() <= MAX_PAYLOAD);
            if kind != MessageType::Error && kind.is_response() {
                assert!(MessageType::from_code(kind.code() & 0x7f).is_some_and(|r| !r.is_response()));
            }
        }
    }

    #[test]
    fn flipped_payload_bit_fails_the_crc_and_keeps_the_sequence_number() {
        let mut bytes = ping(7).encode().unwrap();
        bytes[HEADER_LEN + 1] ^= 0x10;
        assert!(matches!(Frame::decode(&bytes), Err((Some(7), FrameError::Crc { .. }))));
    }

    #[test]
    fn flipped_crc_bit_is_detected() {
        let mut bytes = ping(7).encode().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x80;
        assert!(matches!(Frame::decode(&bytes), Err((Some(7), FrameError::Crc { .. }))));
    }

    #[test]
    fn flipped_header_bit_fails_the_header_check() {
        for bit in 16..14 * 8 {
            let mut bytes = ping(7).encode().unwrap();
            bytes[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                Frame::decode(&bytes).unwrap_err(),
                (None, FrameError::HeaderCheck),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn oversized_length_is_rejected_from_the_header_alone() {
        let header = Header {
            kind: MessageType::LoadModelChunk,
            flags: Flags::NONE,
            seq: 9,
            payload_len: u32::MAX,
        };
        // Only the header exists: the decoder must refuse without waiting
        // for (or allocating) four gigabytes.
        let err = Frame::decode(&header.to_bytes()).unwrap_err();
        assert_eq!(
            err,
            (
                Some(9),
                FrameError::Oversized {
                    kind: MessageType::LoadModelChunk,
                    len: u32::MAX,
                    max: MAX_PAYLOAD
                }
            )
        );
        let small = Header {
            kind: MessageType::Ping,
            flags: Flags::NONE,
            seq: 9,
            payload_len: SMALL_PAYLOAD + 1,
        };
        assert!(matches!(
            Frame::decode(&small.to_bytes()),
            Err((Some(9), FrameError::Oversized { .. }))
        ));
    }

    #[test]
    fn encoding_refuses_a_payload_over_the_type_limit() {
        let frame = Frame::new(MessageType::Ping, 1, vec![0; SMALL_PAYLOAD as usize + 1]);
        assert!(matches!(frame.encode(), Err(FrameError::Oversized { .. })));
    }

    #[test]
    fn unknown_type_flags_version_and_reserved_byte_are_rejected_with_the_sequence_number() {
        let good = ping(5).encode().unwrap();
        let cases: [(usize, u8, FrameError); 4] = [
            (2, 9, FrameError::Version(9)),
            (3, 0x42, FrameError::UnknownType(0x42)),
            (4, 0x80, FrameError::UnknownFlags(0x80)),
            (5, 1, FrameError::Reserved(1)),
        ];
        for (at, value, expected) in cases {
            let mut bytes = good.clone();
            bytes[at] = value;
            let check = header_check(&bytes[..14]);
            bytes[14..16].copy_from_slice(&check.to_le_bytes());
            assert_eq!(Frame::decode(&bytes).unwrap_err(), (Some(5), expected));
        }
    }

    #[test]
    fn short_input_is_truncated() {
        let bytes = ping(1).encode().unwrap();
        assert!(matches!(
            Frame::decode(&bytes[..10]),
            Err((None, FrameError::Truncated { have: 10, need: 16 }))
        ));
        assert!(matches!(
            Frame::decode(&bytes[..20]),
            Err((Some(1), FrameError::Truncated { have: 20, need: 24 }))
        ));
    }

    #[test]
    fn retry_flag_is_known_and_other_bits_are_not() {
        assert_eq!(Flags::from_bits(1), Some(Flags::RETRY));
        assert!(Flags::NONE.with(Flags::RETRY).contains(Flags::RETRY));
        assert_eq!(Flags::from_bits(2), None);
    }
}
