//! `cnn_model.bin`: the weight and bias stream KZR's loader parses
//! (spec/max78002.md §6.4, §6.5, §6.6), as little-endian 32-bit words:
//! `[kernel chunks…] 0 [bias chunks…] 0`, each chunk
//! `[address, n_words, word_1 … word_n]`. Bias chunks follow each other
//! with no 0 between them, because KZR's loader takes a 0 in bias-address
//! position as the end of the stream (§6.5 "KZR bug 1").

use serde::{Deserialize, Serialize};

/// Words to write at `address`, `address + 4`, ….
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub address: u32,
    pub words: Vec<u32>,
}

/// The parsed stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelBlob {
    /// Kernel chunks: each word holds 4 kernel bytes, big-endian (§6.4).
    pub kernels: Vec<Chunk>,
    /// Bias chunks: one zero-extended bias byte per word (§6.4).
    pub biases: Vec<Chunk>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("the stream has {0} bytes, not a whole number of 32-bit words")]
    NotWords(usize),
    #[error("the stream ends inside the {section} section at word {word}: expected {expected}")]
    Truncated {
        section: &'static str,
        word: usize,
        expected: &'static str,
    },
    #[error(
        "{section} chunk at word {word} (address {address:#010x}) declares {length} words, only {available} remain"
    )]
    ChunkTooLong {
        section: &'static str,
        word: usize,
        address: u32,
        length: u32,
        available: usize,
    },
    #[error("{extra} words follow the terminating 0 of the bias section")]
    TrailingWords { extra: usize },
}

impl ModelBlob {
    /// The stream's words.
    pub fn to_words(&self) -> Vec<u32> {
        let mut words = Vec::new();
        for section in [&self.kernels, &self.biases] {
            for chunk in section {
                words.push(chunk.address);
                words.push(chunk.words.len() as u32);
                words.extend_from_slice(&chunk.words);
            }
            words.push(0);
        }
        words
    }

    /// The stream's bytes (`cnn_model.bin`).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_words().iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// Parses `cnn_model.bin`.
pub fn parse_bin(bytes: &[u8]) -> Result<ModelBlob, BlobError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(BlobError::NotWords(bytes.len()));
    }
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut at = 0;
    let kernels = parse_section(&words, &mut at, "kernel")?;
    let biases = parse_section(&words, &mut at, "bias")?;
    if at != words.len() {
        return Err(BlobError::TrailingWords {
            extra: words.len() - at,
        });
    }
    Ok(ModelBlob { kernels, biases })
}

fn parse_section(words: &[u32], at: &mut usize, section: &'static str) -> Result<Vec<Chunk>, BlobError> {
    let mut chunks = Vec::new();
    loop {
        let Some(&address) = words.get(*at) else {
            return Err(BlobError::Truncated {
                section,
                word: *at,
                expected: "a chunk address or the terminating 0",
            });
        };
        if address == 0 {
            *at += 1;
            return Ok(chunks);
        }
        let Some(&length) = words.get(*at + 1) else {
            return Err(BlobError::Truncated {
                section,
                word: *at + 1,
                expected: "a chunk length",
            });
        };
        let start = *at + 2;
        let available = words.len() - start;
        if length as usize > available {
            return Err(BlobError::ChunkTooLong {
                section,
                word: *at,
                address,
                length,
                available,
            });
        }
        chunks.push(Chunk {
            address,
            words: words[start..start + length as usize].to_vec(),
        });
        *at = start + length as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelBlob {
        ModelBlob {
            kernels: vec![
                Chunk {
                    address: 0x5140_0000,
                    words: vec![0x0102_0304, 0x0506_0708, 0x0900_0000],
                },
                Chunk {
                    address: 0x5142_0030,
                    words: vec![0xFFFF_FFFF],
                },
            ],
            biases: vec![
                Chunk {
                    address: 0x5118_0000,
                    words: vec![0xFF, 0x01],
                },
                Chunk {
                    address: 0x5218_0000,
                    words: vec![0x80],
                },
            ],
        }
    }

    #[test]
    fn parse_inverts_to_bytes() {
        let blob = sample();
        assert_eq!(parse_bin(&blob.to_bytes()).unwrap(), blob);
    }

    #[test]
    fn bias_chunks_are_back_to_back_with_one_final_zero() {
        let words = sample().to_words();
        // kernels: 2 + 3, 2 + 1, then 0; biases: 2 + 2, 2 + 1, then 0.
        assert_eq!(words.len(), 5 + 3 + 1 + 4 + 3 + 1);
        assert_eq!(words[8], 0);
        assert_eq!(&words[9..11], &[0x5118_0000, 2]);
        assert_eq!(words[13], 0x5218_0000);
        assert_eq!(words.last(), Some(&0));
    }

    #[test]
    fn an_empty_model_is_two_zero_words() {
        let blob = ModelBlob::default();
        assert_eq!(blob.to_bytes(), vec![0; 8]);
        assert_eq!(parse_bin(&[0; 8]).unwrap(), blob);
    }

    #[test]
    fn malformed_streams_are_errors() {
        let bytes = sample().to_bytes();
        assert_eq!(
            parse_bin(&bytes[..bytes.len() - 1]),
            Err(BlobError::NotWords(bytes.len() - 1))
        );
        assert!(matches!(
            parse_bin(&bytes[..bytes.len() - 4]),
            Err(BlobError::Truncated { section: "bias", .. })
        ));
        assert!(matches!(
            parse_bin(&bytes[..12]),
            Err(BlobError::ChunkTooLong {
                length: 3,
                available: 1,
                ..
            })
        ));
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 4]);
        assert_eq!(parse_bin(&longer), Err(BlobError::TrailingWords { extra: 1 }));
        assert!(matches!(
            parse_bin(&[]),
            Err(BlobError::Truncated { section: "kernel", .. })
        ));
    }
}
