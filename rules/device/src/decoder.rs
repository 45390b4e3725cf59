//! Turning a byte stream into frames, whatever the stream contains.
//!
//! The decoder scans for the magic, trusts a length only from a header that
//! passed its check, and after anything it cannot read starts over at the
//! next byte that could begin a frame. It never loses a good frame that
//! follows garbage, a corrupt frame or a truncated one: a frame whose CRC
//! fails gives up only its header, so a real frame hidden in what looked
//! like its payload is still found.
//!
//! Memory: the caller pushes a bounded read and then drains [`FrameDecoder::decode_next`]
//! until it returns `None`, which it does only while the buffer holds less
//! than one frame ([`crate::frame::MAX_FRAME`]); so the buffer never holds
//! more than one frame plus one read.

use crate::frame::{Frame, FrameError, HEADER_LEN, Header, MAGIC};

/// Bytes that were not a frame, with the sequence number their header
/// named when it was intact (so that the answer can carry it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub seq: Option<u32>,
    pub error: FrameError,
}

/// What the decoder found next in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    Frame(Frame),
    Rejected(Rejected),
}

/// A streaming frame decoder.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet decoded (part of a frame, or less than a
    /// header).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next frame or rejection, or `None` when more bytes are needed.
    pub fn decode_next(&mut self) -> Option<Decoded> {
        let mut skipped = 0;
        loop {
            let data = &self.buf[self.start..];
            let candidate = find_frame_start(data);
            if candidate > 0 {
                skipped += candidate;
                self.start += candidate;
                continue;
            }
            let Some(head) = data.first_chunk::<HEADER_LEN>() else {
                break;
            };
            let header = match Header::parse(head) {
                Err((None, _)) => {
                    // The magic was noise.
                    skipped += 1;
                    self.start += 1;
                    continue;
                }
                _ if skipped > 0 => break,
                Err((seq, error)) => {
                    self.start += HEADER_LEN;
                    return Some(Decoded::Rejected(Rejected { seq, error }));
                }
                Ok(header) => header,
            };
            if data.len() < header.frame_len() {
                return None;
            }
            return Some(match Frame::decode(data) {
                Ok((frame, used)) => {
                    self.start += used;
                    Decoded::Frame(frame)
                }
                Err((seq, error)) => {
                    self.start += HEADER_LEN;
                    Decoded::Rejected(Rejected { seq, error })
                }
            });
        }
        (skipped > 0).then_some(Decoded::Rejected(Rejected {
            seq: None,
            error: FrameError::Garbage { len: skipped },
        }))
    }

    /// Gives up on the partial frame at the head of the buffer (the stream
    /// went quiet before it was complete) and says what was dropped. The
    /// bytes after its header stay buffered: call [`FrameDecoder::decode_next`]
    /// again, a later frame may already be there.
    pub fn give_up_partial(&mut self) -> Option<Rejected> {
        let data = &self.buf[self.start..];
        if data.is_empty() {
            return None;
        }
        let rejected = match data.first_chunk::<HEADER_LEN>().map(Header::parse) {
            Some(Ok(header)) => {
                self.start += HEADER_LEN;
                Rejected {
                    seq: Some(header.seq),
                    error: FrameError::Truncated {
                        have: data.len(),
                        need: header.frame_len(),
                    },
                }
            }
            // Anything else would already have been consumed by `next`:
            // here the buffer holds less than a header.
            _ => {
                let have = data.len();
                self.start = self.buf.len();
                Rejected {
                    seq: None,
                    error: FrameError::Truncated { have, need: HEADER_LEN },
                }
            }
        };
        Some(rejected)
    }
}

/// Where a frame could start: the first `"KF"`, or a final `'K'` that the
/// next read may complete; `data.len()` when there is neither.
fn find_frame_start(data: &[u8]) -> usize {
    data.windows(MAGIC.len()).position(|w| w == MAGIC).unwrap_or_else(|| {
        if data.last() == Some(&MAGIC[0]) {
            data.len() - 1
        } else {
            data.len()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Flags, MessageType};

    fn frame(seq: u32, payload: &[u8]) -> Frame {
        Frame::new(MessageType::LoadInput, seq, payload.to_vec())
    }

    fn drain(decoder: &mut FrameDecoder) -> Vec<Decoded> {
        std::iter::from_fn(|| decoder.decode_next()).collect()
    }

    fn frames(events: &[Decoded]) -> Vec<u32> {
        events
            .iter()
            .filter_map(|e| if let Decoded::Frame(f) = e { Some(f.seq) } else { None })
            .collect()
    }

    #[test]
    fn frames_split_at_every_byte_boundary_are_reassembled() {
        let mut stream = frame(1, b"hello").encode().unwrap();
        stream.extend(frame(2, b"world").encode().unwrap());
        for cut in 0..stream.len() {
            let mut decoder = FrameDecoder::new();
            decoder.push(&stream[..cut]);
            let mut events = drain(&mut decoder);
            decoder.push(&stream[cut..]);
            events.extend(drain(&mut decoder));
            assert_eq!(frames(&events), vec![1, 2], "cut at {cut}");
            assert_eq!(events.len(), 2);
            assert_eq!(decoder.pending(), 0);
        }
    }

    #[test]
    fn resynchronises_after_garbage_that_contains_the_magic() {
        let mut stream = b"noise KF more noise K".to_vec();
        stream.extend(frame(3, b"x").encode().unwrap());
        let mut decoder = FrameDecoder::new();
        decoder.push(&stream);
        let events = drain(&mut decoder);
        assert_eq!(frames(&events), vec![3]);
        let Decoded::Rejected(Rejected {
            seq: None,
            error: FrameError::Garbage { len },
        }) = events[0]
        else {
            panic!("{events:?}")
        };
        assert_eq!(len, 21);
    }

    #[test]
    fn corrupt_frame_is_rejected_and_the_next_one_found() {
        let mut bad = frame(4, b"payload").encode().unwrap();
        bad[HEADER_LEN + 2] ^= 1;
        let mut stream = bad;
        stream.extend(frame(5, b"ok").encode().unwrap());
        let mut decoder = FrameDecoder::new();
        decoder.push(&stream);
        let events = drain(&mut decoder);
        assert!(matches!(
            events[0],
            Decoded::Rejected(Rejected {
                seq: Some(4),
                error: FrameError::Crc { .. }
            })
        ));
        assert_eq!(frames(&events), vec![5]);
    }

    #[test]
    fn truncated_frame_followed_by_a_good_one_loses_only_itself() {
        let truncated = frame(6, &[7; 100]).encode().unwrap();
        let mut stream = truncated[..40].to_vec();
        stream.extend(frame(7, b"next").encode().unwrap());
        let mut decoder = FrameDecoder::new();
        decoder.push(&stream);
        // The truncated header announces more than has arrived: wait.
        assert_eq!(decoder.decode_next(), None);
        let given_up = decoder.give_up_partial().unwrap();
        assert_eq!(given_up.seq, Some(6));
        assert!(matches!(given_up.error, FrameError::Truncated { need: 120, .. }));
        assert_eq!(frames(&drain(&mut decoder)), vec![7]);
    }

    #[test]
    fn oversized_header_is_rejected_without_waiting_for_its_payload() {
        let header = Header {
            kind: MessageType::LoadInput,
            flags: Flags::NONE,
            seq: 8,
            payload_len: 1 << 30,
        };
        let mut decoder = FrameDecoder::new();
        decoder.push(&header.to_bytes());
        let Some(Decoded::Rejected(rejected)) = decoder.decode_next() else {
            panic!()
        };
        assert_eq!(rejected.seq, Some(8));
        assert!(matches!(rejected.error, FrameError::Oversized { len: 1073741824, .. }));
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn a_lone_trailing_k_waits_for_the_next_read() {
        let bytes = frame(9, b"").encode().unwrap();
        let mut decoder = FrameDecoder::new();
        decoder.push(b"zzK");
        assert!(matches!(
            decoder.decode_next(),
            Some(Decoded::Rejected(Rejected {
                error: FrameError::Garbage { len: 2 },
                ..
            }))
        ));
        assert_eq!(decoder.decode_next(), None);
        assert_eq!(decoder.pending(), 1);
        decoder.push(&bytes);
        let events = drain(&mut decoder);
        assert_eq!(frames(&events), vec![9]);
    }

    #[test]
    fn give_up_on_a_partial_header_drops_it() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&frame(1, b"").encode().unwrap()[..5]);
        assert_eq!(decoder.decode_next(), None);
        assert_eq!(
            decoder.give_up_partial(),
            Some(Rejected {
                seq: None,
                error: FrameError::Truncated {
                    have: 5,
                    need: HEADER_LEN
                }
            })
        );
        assert_eq!(decoder.pending(), 0);
        assert_eq!(decoder.give_up_partial(), None);
    }
}
