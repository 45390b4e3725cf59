//! Blake3 digests: the names of blobs in the store and the keys of actions.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A blake3 digest (32 bytes), shown and serialized as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestParseError {
    #[error("a digest has 64 hex digits, this has {0} characters")]
    Length(usize),
    #[error("a digest has only hex digits 0-9 and a-f, found {found:?} at position {position}")]
    NotHex { found: char, position: usize },
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Digest {
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        blake3::hash(bytes).into()
    }

    /// Hashes everything `r` yields without holding it in memory; also returns
    /// how many bytes were read, so callers get the blob size from the same pass.
    pub fn of_reader(mut r: impl Read) -> io::Result<(Digest, u64)> {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut len = 0u64;
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    len += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((hasher.finalize().into(), len))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Accepts lowercase and uppercase hex; `to_hex` always writes lowercase.
    pub fn from_hex(s: &str) -> Result<Digest, DigestParseError> {
        let chars = s.chars().count();
        if chars != 64 || s.len() != 64 {
            return Err(DigestParseError::Length(chars));
        }
        let mut out = [0u8; 32];
        let bytes = s.as_bytes();
        for (i, byte) in out.iter_mut().enumerate() {
            let hi = hex_value(bytes[2 * i], 2 * i)?;
            let lo = hex_value(bytes[2 * i + 1], 2 * i + 1)?;
            *byte = (hi << 4) | lo;
        }
        Ok(Digest(out))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn hex_value(c: u8, position: usize) -> Result<u8, DigestParseError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        // The length check counted chars and bytes alike, so every byte is ASCII here.
        _ => Err(DigestParseError::NotHex {
            found: c as char,
            position,
        }),
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Digest {
        Digest(*h.as_bytes())
    }
}

/// Bytes as lowercase hex, as every name in the cache is written.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Digest, DigestParseError> {
        Digest::from_hex(s)
    }
}

/// Hex in human-readable formats (JSON), 32 raw bytes in binary ones.
impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        struct HexVisitor;
        impl Visitor<'_> for HexVisitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a blake3 digest as 64 hex digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Digest, E> {
                Digest::from_hex(v).map_err(E::custom)
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(HexVisitor)
        } else {
            <[u8; 32]>::deserialize(d).map(Digest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = Digest::of_bytes(b"hello");
        let hex = d.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_eq!(Digest::from_hex(&hex).unwrap(), d);
        assert_eq!(hex.parse::<Digest>().unwrap(), d);
        assert_eq!(Digest::from_hex(&hex.to_uppercase()).unwrap(), d);
        assert_eq!(format!("{d}"), hex);
        assert_eq!(format!("{d:?}"), hex);
    }

    #[test]
    fn binary_formats_store_raw_bytes() {
        let d = Digest::of_bytes(b"hello");
        let bytes = postcard::to_stdvec(&d).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(postcard::from_bytes::<Digest>(&bytes).unwrap(), d);
    }

    #[test]
    fn matches_blake3() {
        assert_eq!(
            Digest::of_bytes(b"abc").to_hex(),
            blake3::hash(b"abc").to_hex().as_str()
        );
    }

    #[test]
    fn bad_hex_is_rejected_with_reason() {
        assert_eq!(Digest::from_hex("abc"), Err(DigestParseError::Length(3)));
        let mut s = "0".repeat(64);
        s.replace_range(10..11, "g");
        assert_eq!(
            Digest::from_hex(&s),
            Err(DigestParseError::NotHex {
                found: 'g',
                position: 10
            })
        );
        // 63 ASCII chars plus one two-byte char: 64 bytes but not 64 hex digits.
        let s = format!("{}é", "0".repeat(62));
        assert_eq!(s.len(), 64);
        assert!(matches!(Digest::from_hex(&s), Err(DigestParseError::Length(63))));
        let msg = Digest::from_hex("xyz").unwrap_err().to_string();
        assert!(msg.contains("64 hex digits"), "{msg}");
    }

    #[test]
    fn of_reader_matches_of_bytes_and_counts_length() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (d, n) = Digest::of_reader(&data[..]).unwrap();
        assert_eq!(d, Digest::of_bytes(&data));
        assert_eq!(n, data.len() as u64);
    }

    #[test]
    fn serde_uses_hex_string() {
        let d = Digest::of_bytes(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", d.to_hex()));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"nothex\"").is_err());
    }
}
