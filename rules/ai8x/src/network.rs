//! The ai8x network ("sidecar") document as written (spec/max78002.md §4):
//! every optional key stays optional here, so that a parsed file can be told
//! apart from the defaults the reference tools would fill in. `layer.rs`
//! resolves defaults; `yaml.rs` reads and writes the text.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A whole network file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Network {
    /// Must equal the checkpoint's `arch` when fed to the izer.
    pub arch: String,
    /// Descriptive only.
    pub dataset: String,
    /// Output processors of the final layer, when that layer has none.
    pub output_map: Option<u64>,
    pub layers: Vec<Layer>,
    /// Global keys the reference tools accept but kflow does not model
    /// (`unload`, `data_buffer`, `snoop`, `weights`, `bias`).
    pub unsupported: Vec<String>,
}

/// One layer as written. `None` means the key was absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layer {
    pub name: Option<String>,
    /// Input processor mask (mandatory in a file).
    pub processors: u64,
    pub output_processors: Option<u64>,
    pub in_offset: Option<u32>,
    pub out_offset: Option<u32>,
    /// `operation` / `op` / `operator` / `convolution`.
    pub op: Option<Op>,
    pub kernel_size: Option<Dims>,
    pub pad: Option<u32>,
    pub stride: Option<Dims>,
    pub dilation: Option<u32>,
    /// `groups` / `conv_groups`.
    pub groups: Option<u32>,
    /// `activate` / `activation`.
    pub activate: Option<Activation>,
    /// `max_pool` or `avg_pool`.
    pub pool: Option<(PoolKind, Dims)>,
    pub pool_stride: Option<Dims>,
    pub pool_dilation: Option<Dims>,
    pub pool_first: Option<bool>,
    /// Element-wise op fused into a convolution.
    pub eltwise: Option<EltwiseOp>,
    pub operands: Option<u32>,
    pub in_sequences: Option<Vec<SequenceRef>>,
    pub in_dim: Option<Dims>,
    pub in_channels: Option<u32>,
    pub out_channels: Option<u32>,
    pub write_gap: Option<u32>,
    pub data_format: Option<DataFormat>,
    pub output_width: Option<OutputWidth>,
    pub output_shift: Option<i32>,
    pub quantization: Option<WeightBits>,
    pub flatten: Option<bool>,
    pub output_pad: Option<u32>,
    /// `bias_group` / `bias_quadrant`.
    pub bias_group: Option<Vec<u8>>,
    /// Marks a layer whose output the known-answer test checks.
    pub output: Option<bool>,
    /// Keys the reference tools accept but kflow does not model, present
    /// with a value other than their default (`streaming: true`, ...).
    pub unsupported: Vec<String>,
}

/// The operation of a layer as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    /// `linear` / `fc` / `mlp`.
    Linear,
    /// `none` / `passthrough`.
    Passthrough,
    /// A standalone element-wise layer (`add`, `sub`, `xor`, `or`).
    Eltwise(EltwiseOp),
}

impl Op {
    /// The spelling in messages and written YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Conv1d => "conv1d",
            Op::Conv2d => "conv2d",
            Op::ConvTranspose2d => "convtranspose2d",
            // yamlwriter's and the spec's spelling.
            Op::Linear => "mlp",
            Op::Passthrough => "passthrough",
            Op::Eltwise(e) => e.as_str(),
        }
    }
}

/// An element-wise operation: the code generator's type, so that a layer's operation reaches the registers unchanged.
pub use kflow_ai8x_codegen::EltwiseOp;

/// `activate` values (§2.9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Activation {
    /// Clamp to [−128, 127].
    #[default]
    None,
    /// Clamp to [0, 127].
    ReLU,
    /// `min(|y|, 127)`.
    Abs,
}

impl Activation {
    pub fn as_str(self) -> &'static str {
        match self {
            Activation::None => "None",
            Activation::ReLU => "ReLU",
            Activation::Abs => "Abs",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    Max,
    Avg,
}

/// Layer-0 input layout (§2.13).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataFormat {
    /// Channels interleaved 4 per word (`HWC`, alias `little`).
    #[default]
    HWC,
    /// One channel per instance, pixels byte by byte (`CHW`, alias `big`).
    CHW,
}

/// Weight width (`quantization`, §2.10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightBits {
    One,
    Two,
    Four,
    #[default]
    Eight,
    /// ±1 weights stored in one bit (MAX78002).
    Binary,
}

impl WeightBits {
    /// Bits per stored weight (binary: 1).
    pub fn bits(self) -> u32 {
        match self {
            WeightBits::One | WeightBits::Binary => 1,
            WeightBits::Two => 2,
            WeightBits::Four => 4,
            WeightBits::Eight => 8,
        }
    }

    /// The integer range of a weight.
    pub fn range(self) -> (i32, i32) {
        match self {
            WeightBits::Binary => (-1, 1),
            other => {
                let half = 1 << (other.bits() - 1);
                (-half, half - 1)
            }
        }
    }
}

impl fmt::Display for WeightBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightBits::Binary => f.write_str("binary"),
            other => write!(f, "{}", other.bits()),
        }
    }
}

/// `output_width` (§2.12).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutputWidth {
    #[default]
    Eight,
    ThirtyTwo,
}

impl OutputWidth {
    pub fn bits(self) -> u32 {
        match self {
            OutputWidth::Eight => 8,
            OutputWidth::ThirtyTwo => 32,
        }
    }
}

/// A value written as one int or as `[rows, cols]` (kernel sizes written as
/// `"3x3"` become a pair).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dims {
    One(u32),
    Two(u32, u32),
}

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dims::One(n) => write!(f, "{n}"),
            Dims::Two(r, c) => write!(f, "{r}x{c}"),
        }
    }
}

/// An entry of `in_sequences`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SequenceRef {
    /// The network input (`-1` or `input`).
    Input,
    /// A layer by index.
    Index(usize),
    /// A layer by `name`.
    Name(String),
}
