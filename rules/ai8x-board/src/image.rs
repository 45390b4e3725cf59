//! The model image a host flashes to a simulated board: what the generated
//! code ships (`cnn_model.regs` and `cnn_model.bin`), plus the channel
//! counts, which no register holds.
//!
//! Layout (`KFMD`, little-endian throughout):
//!
//! ```text
//! magic     "KFMD"                          4 bytes
//! version   1                               u16
//! layers    n (1..=128)                     u16
//! input     channels, height, width         3 × u16   (the network input)
//! per layer in_channels, out_channels       2 × u16   (n times)
//! load      address u32                     where cnn_load_input writes its first word
//! unload    address u32                     where cnn_unload reads output channel 0
//! regs      length u32, then cnn_model.regs (register_list.rs of kflow-ai8x-codegen)
//! bin       length u32, then cnn_model.bin  (blob.rs of kflow-ai8x-codegen)
//! ```
//!
//! Nothing follows `bin`. The channel counts and the two addresses are
//! what a real board's firmware has compiled in from `cnn_model.c/.h`
//! besides the register table (input words, output bytes, the load and
//! unload tables); the board checks the addresses against where the
//! decoded first layer reads and last layer writes. Every other layer setting
//! the board decodes from the registers, and it refuses an image whose
//! registers disagree with those counts.

use kflow_ai8x_codegen::Program;
use thiserror::Error;

const MAGIC: &[u8; 4] = b"KFMD";
const VERSION: u16 = 1;
/// The MAX78002's hardware layers (§1); the MAX78000 has fewer and
/// refuses more later, naming its limit.
pub const MAX_LAYERS: usize = 128;

/// Channel counts of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerChannels {
    pub input: u32,
    pub output: u32,
}

/// A parsed model image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelImage {
    /// Channels × height × width of the network input.
    pub input: [u32; 3],
    pub layers: Vec<LayerChannels>,
    /// Data-memory address of the first word `cnn_load_input` writes.
    pub load_address: u32,
    /// Data-memory address `cnn_unload` reads output channel 0 from.
    pub unload_address: u32,
    /// `cnn_model.regs`.
    pub regs: Vec<u8>,
    /// `cnn_model.bin`.
    pub bin: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ImageError {
    #[error("not a kflow model image (no KFMD magic)")]
    Magic,
    #[error("model image version {0}; this board reads version 1")]
    Version(u16),
    #[error("model image with {0} layers; a board takes 1 to {MAX_LAYERS}")]
    Layers(usize),
    #[error("model image ends at byte {at} inside its {what}")]
    Truncated { what: &'static str, at: usize },
    #[error("{0} bytes follow the model image's cnn_model.bin")]
    Trailing(usize),
    #[error("a dimension of {value} does not fit the image's 16-bit field ({what})")]
    TooWide { what: &'static str, value: u32 },
}

impl ModelImage {
    /// The image of `program`'s generated `cnn_model.regs` and
    /// `cnn_model.bin`.
    pub fn new(program: &Program, regs: Vec<u8>, bin: Vec<u8>) -> Result<ModelImage, ImageError> {
        let first = program.layers.first().ok_or(ImageError::Layers(0))?;
        let last = program.layers.last().ok_or(ImageError::Layers(0))?;
        let device = program.device;
        // c_source.rs: the input's instances in ascending order; output
        // channel 0 on the first output processor, word 0.
        let first_instance = (0..16).find(|i| first.processors >> (4 * i) & 0xf != 0).unwrap_or(0);
        let out_instance = last.output_processors.trailing_zeros().min(63) / 4;
        Ok(ModelImage {
            load_address: device.data_address(first_instance, first.in_offset),
            unload_address: device.data_address(out_instance, last.out_offset),
            input: [first.input.channels, first.input.height, first.input.width],
            layers: program
                .layers
                .iter()
                .map(|l| LayerChannels {
                    input: l.input.channels,
                    output: l.out_channels,
                })
                .collect(),
            regs,
            bin,
        })
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, ImageError> {
        let u16_of = |what, value: u32| u16::try_from(value).map_err(|_| ImageError::TooWide { what, value });
        if self.layers.is_empty() || self.layers.len() > MAX_LAYERS {
            return Err(ImageError::Layers(self.layers.len()));
        }
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(self.layers.len() as u16).to_le_bytes());
        for d in self.input {
            bytes.extend_from_slice(&u16_of("input", d)?.to_le_bytes());
        }
        for l in &self.layers {
            bytes.extend_from_slice(&u16_of("channels", l.input)?.to_le_bytes());
            bytes.extend_from_slice(&u16_of("channels", l.output)?.to_le_bytes());
        }
        bytes.extend_from_slice(&self.load_address.to_le_bytes());
        bytes.extend_from_slice(&self.unload_address.to_le_bytes());
        for part in [&self.regs, &self.bin] {
            bytes.extend_from_slice(&(part.len() as u32).to_le_bytes());
            bytes.extend_from_slice(part);
        }
        Ok(bytes)
    }

    /// Reads an image; every length is checked against the bytes present
    /// before anything is copied.
    pub fn parse(bytes: &[u8]) -> Result<ModelImage, ImageError> {
        let mut at = 0usize;
        let mut take = |n: usize, what: &'static str| -> Result<&[u8], ImageError> {
            let part = bytes
                .get(at..at.saturating_add(n))
                .ok_or(ImageError::Truncated { what, at: bytes.len() })?;
            at += n;
            Ok(part)
        };
        if take(4, "header")? != MAGIC {
            return Err(ImageError::Magic);
        }
        let mut u16_field = |what| take(2, what).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let version = u16_field("header")?;
        if version != VERSION {
            return Err(ImageError::Version(version));
        }
        let n = u16_field("header")? as usize;
        if n == 0 || n > MAX_LAYERS {
            return Err(ImageError::Layers(n));
        }
        let input = [
            u16_field("input shape")? as u32,
            u16_field("input shape")? as u32,
            u16_field("input shape")? as u32,
        ];
        let mut layers = Vec::with_capacity(n);
        for _ in 0..n {
            layers.push(LayerChannels {
                input: u16_field("channel counts")? as u32,
                output: u16_field("channel counts")? as u32,
            });
        }
        let mut u32_field = |what| take(4, what).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let load_address = u32_field("load address")?;
        let unload_address = u32_field("unload address")?;
        let mut part = |what: &'static str| -> Result<Vec<u8>, ImageError> {
            let len = take(4, what).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))?;
            take(len as usize, what).map(<[u8]>::to_vec)
        };
        let regs = part("cnn_model.regs")?;
        let bin = part("cnn_model.bin")?;
        if at != bytes.len() {
            return Err(ImageError::Trailing(bytes.len() - at));
        }
        Ok(ModelImage {
            input,
            layers,
            load_address,
            unload_address,
            regs,
            bin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelImage {
        ModelImage {
            input: [3, 32, 32],
            layers: vec![
                LayerChannels { input: 3, output: 16 },
                LayerChannels { input: 16, output: 10 },
            ],
            load_address: 0x5180_0000,
            unload_address: 0x5180_1000,
            regs: b"KFRG....".to_vec(),
            bin: vec![0; 8],
        }
    }

    #[test]
    fn bytes_round_trip() {
        let image = sample();
        assert_eq!(ModelImage::parse(&image.to_bytes().unwrap()).unwrap(), image);
    }

    #[test]
    fn every_truncation_and_trailing_bytes_are_refused() {
        let bytes = sample().to_bytes().unwrap();
        for end in 0..bytes.len() {
            assert!(ModelImage::parse(&bytes[..end]).is_err(), "{end}");
        }
        let mut longer = bytes;
        longer.extend_from_slice(b"xy");
        assert_eq!(ModelImage::parse(&longer), Err(ImageError::Trailing(2)));
    }

    #[test]
    fn a_huge_part_length_is_refused_without_allocating() {
        let mut bytes = sample().to_bytes().unwrap();
        let regs_len_at = 4 + 2 + 2 + 6 + 2 * 4 + 8;
        bytes[regs_len_at..regs_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ModelImage::parse(&bytes),
            Err(ImageError::Truncated {
                what: "cnn_model.regs",
                ..
            })
        ));
    }
}
