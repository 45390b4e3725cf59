//! The generator's input: a network already fused, checked and allocated,
//! with its integer weights. Every field names the spec section it comes
//! from (spec/max78002.md), so that `kflow-ai8x`'s `Allocation` and the
//! quantized weights convert into it field by field.

use serde::{Deserialize, Serialize};

use crate::device::Device;

/// A network placed on an accelerator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    pub device: Device,
    /// Layout of the network input in data memory (§2.13, §5.2): HWC, or
    /// CHW with at most one enabled processor per memory instance.
    pub input_format: DataFormat,
    /// Hardware layers in execution order (layer `i` is hardware layer `i`,
    /// start layer 0). The last one is the output layer `cnn_unload` reads
    /// (§6.6).
    pub layers: Vec<Layer>,
}

/// One hardware layer: configuration (§2, §4.2), allocation (§5) and
/// integer weights (SPEC.md §9).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// For comments in the generated code and for error messages.
    pub name: String,
    pub operator: Operator,
    /// The layer's input as stored in data memory, before pooling and
    /// flatten (§2.1 step 1). 1-D data of length `L` is `height = L`,
    /// `width = 1`.
    pub input: Dims,
    /// Pooling applied before the operator (§2.6).
    pub pool: Option<Pool>,
    /// Rows × columns: conv2d `[3, 3]` or `[1, 1]`, conv1d `[k, 1]`
    /// (k = 1..9), linear and passthrough `[1, 1]` (§2.2, §2.3, §2.5).
    pub kernel: [u32; 2],
    /// Zero padding on each side (§2.2, §2.3); conv1d pads rows only; 0 for
    /// linear.
    pub pad: u32,
    /// Flatten `C×H×W` into `C·H·W` features before a linear operator
    /// (§2.5). `input.channels` stays the pre-flatten count.
    pub flatten: bool,
    pub out_channels: u32,
    pub activation: Activation,
    /// The value the YAML `output_shift` carries (§2.11); POST holds it plus
    /// `8 − b`, as the izer writes it.
    pub output_shift: i32,
    /// Weight bits `b` (§2.10). The generator emits 8 only (see
    /// `CodegenError::Unsupported`); 8 for a passthrough layer (POST width
    /// code 0, so no implicit `8 − b` shift).
    pub weight_bits: u32,
    pub output_width: OutputWidth,
    /// 64-bit input processor map (§4.2 `processors`, §5.1).
    pub processors: u64,
    /// 64-bit output processor map (§4.2 `output_processors`, §5.1):
    /// contiguous and starting at a multiple of 4 (§4.4).
    pub output_processors: u64,
    /// Byte offset of the input inside every input instance (§5.2, §5.4).
    pub in_offset: u32,
    /// Byte offset of the output inside every output instance.
    pub out_offset: u32,
    /// First kernel-memory column of the layer on every enabled input
    /// processor, a multiple of 4 (§5.5 placement; `KernelPlacement.offset`
    /// of `kflow-ai8x`). Its length follows from the packed weights.
    /// Unused by passthrough layers (give 0).
    pub kernel_offset: u32,
    /// Integer weights in PyTorch layout: `[out, in, k]`,
    /// `[out, in, kh, kw]`, `[out, in]` (flatten: `[out, in·H·W]`), the
    /// layout of SPEC.md §9's safetensors.
    pub weights: Vec<i8>,
    /// `None` for a layer without (non-zero) bias.
    pub bias: Option<Bias>,
    /// Depthwise convolution (§2.3 `groups = C`, MAX78002) in the izer's
    /// broadcast mode: output channel c from input channel c only; weights
    /// `[C, 1, kh, kw]`.
    #[serde(default)]
    pub depthwise: bool,
    /// Binary weights (§2.10, MAX78002): every weight is −1 or +1 and
    /// `weight_bits` is 1.
    #[serde(default)]
    pub binary: bool,
    /// Element-wise operands combined before pooling or after it and the
    /// operator (§2.7): `None` for one input.
    #[serde(default)]
    pub eltwise: Option<Eltwise>,
    /// Words left free after each output word, for another producer's
    /// interleaved output (the operands of a later element-wise layer,
    /// §2.7).
    #[serde(default)]
    pub write_gap: u32,
}

/// An element-wise stage: `operands` inputs of `input`'s shape,
/// interleaved word by word in data memory from `in_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eltwise {
    pub op: EltwiseOp,
    /// 2..=16.
    pub operands: u32,
    /// Pool each operand before combining them (the default).
    pub pool_first: bool,
}

/// An element-wise operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EltwiseOp {
    Add,
    Sub,
    Xor,
    Or,
}

impl EltwiseOp {
    pub fn as_str(self) -> &'static str {
        match self {
            EltwiseOp::Add => "add",
            EltwiseOp::Sub => "sub",
            EltwiseOp::Xor => "xor",
            EltwiseOp::Or => "or",
        }
    }

    /// ONED's function code (§6.3): add 01, sub 00, xor 11, or 10.
    pub fn code(self) -> u32 {
        match self {
            EltwiseOp::Add => 0b01,
            EltwiseOp::Sub => 0b00,
            EltwiseOp::Xor => 0b11,
            EltwiseOp::Or => 0b10,
        }
    }
}

/// Channels × rows × columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dims {
    pub channels: u32,
    pub height: u32,
    pub width: u32,
}

impl Dims {
    pub fn pixels(&self) -> u32 {
        self.height * self.width
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    Conv1d,
    Conv2d,
    Linear,
    /// A 3×3 transposed convolution with stride 2 (§2.4, YAML
    /// `convtranspose2d`): `weights` are PyTorch's `[in, out, 3, 3]`,
    /// `pad` the PyTorch padding (0..=2), the output `2H + 2 − 2·pad`
    /// rows; no pooling.
    #[serde(rename = "convtranspose2d")]
    ConvTranspose2d,
    /// A pooling-only layer (§2.6, YAML `op: none` or `passthrough`): the
    /// pooled input is written unchanged (§3.2 step 5, `y = x`). It has no
    /// weights (`weights` empty, `weight_bits` 8), no bias, `output_shift`
    /// 0, no activation, an 8-bit output, kernel `[1, 1]`, pad 0,
    /// `out_channels = input.channels`, `output_processors = processors`,
    /// and `kernel_offset` is unused (no kernel memory).
    #[serde(alias = "none")]
    Passthrough,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataFormat {
    Hwc,
    Chw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    Max,
    Avg,
}

/// A pooling stage with dilation 1 (§2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub kind: PoolKind,
    /// Rows × columns; 1-D layers pool `[P, 1]`.
    pub size: [u32; 2],
    /// The same in both dimensions (§2.6).
    pub stride: u32,
}

/// §2.9.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    None,
    Relu,
    Abs,
}

/// §2.12.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputWidth {
    Bits8,
    Bits32,
}

/// A layer's bias and where it lives (§5.6; `BiasPlacement` of
/// `kflow-ai8x`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bias {
    pub quadrant: u32,
    /// Byte offset of output channel 0 inside the quadrant's bias memory.
    pub offset: u32,
    /// One value per output channel: the integer added to the accumulator
    /// times 128 (SPEC.md §9).
    pub values: Vec<i8>,
    /// A depthwise layer's offset in every quadrant it uses (§5.6 step 6;
    /// `quadrant` and `offset` name the first).
    #[serde(default)]
    pub broadcast: Option<[Option<u32>; 4]>,
}
