//! The network description the simulator runs: one [`Layer`] per hardware
//! layer, in the terms of the accelerator (spec/max78002.md §2), not of
//! PyTorch. Converters (the YAML reader, kflow's own toolchain) build it; the
//! simulator validates it before running anything.

/// Which accelerator. It decides binary weights, depthwise convolution,
/// the row/column limit and the fused element-wise + bias rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Max78000,
    Max78002,
}

/// Channels × height × width. 1-D data of length `L` is `height = L`,
/// `width = 1` (spec §0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Shape {
    pub fn new(channels: usize, height: usize, width: usize) -> Shape {
        Shape {
            channels,
            height,
            width,
        }
    }

    /// 1-D data: `channels × length`, stored as `length × 1`.
    pub fn one_d(channels: usize, length: usize) -> Shape {
        Shape::new(channels, length, 1)
    }

    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    pub fn len(&self) -> usize {
        self.channels * self.pixels()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A whole network: the device, the shape of the network input and the
/// hardware layers in execution order.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub device: Device,
    pub input: Shape,
    pub layers: Vec<Layer>,
}

/// Where a layer reads from (the YAML's `in_sequences`; −1 is the input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The network input.
    Input,
    /// The output of an earlier layer, by index into `Network::layers`.
    Layer(usize),
}

/// The operator of a layer (spec §2.2–2.5). Strides are not parameters:
/// convolutions have stride 1 and `ConvTranspose2d` stride 2 on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Passthrough (`op: none`): pooling and/or element-wise only. No
    /// weights, bias, shift or activation.
    None,
    /// `kernel` 1..=9 along the length, `pad` 0..=2 and `pad < kernel`.
    /// Weights `[out, in, kernel]`. Dilation is 1.
    Conv1d { kernel: usize, pad: usize },
    /// `kernel` 1 or 3 (square), `pad` 0..=2 and `pad < kernel`. Weights
    /// `[out, in, k, k]`, or `[out, 1, k, k]` when `depthwise` (MAX78002,
    /// `in_channels == out_channels`).
    Conv2d { kernel: usize, pad: usize, depthwise: bool },
    /// 3×3, stride 2, `output_padding` 1, `pad` 0..=2 in PyTorch's
    /// convention. Weights in PyTorch's layout `[in, out, 3, 3]`.
    ConvTranspose2d { pad: usize },
    /// Weights `[out, in]`. Without `flatten` the input must be `C×1×1`;
    /// with it, `C×H×W` is read as `C·H·W` features in channel-major order
    /// and `in_channels` is the pre-flatten `C`.
    Linear { flatten: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// Pooling before the operator. `size` is `[rows, columns]`, 1..=16 each;
/// pool 1-D data with `[p, 1]`. `stride` 1..=16 applies to both dimensions.
/// No padding: `H_p = ⌊(H − size)/stride⌋ + 1` (spec §2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub kind: PoolKind,
    pub size: [usize; 2],
    pub stride: usize,
}

/// Element-wise operators (spec §2.7, §3.7). With more than two operands
/// they fold from the left (`a − b − c` for `Sub`) and clip once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EltwiseOp {
    Add,
    Sub,
    Xor,
    Or,
}

/// Applied after the shift and clamp of an 8-bit output (spec §2.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Clamp to [−128, 127].
    None,
    /// Clamp to [0, 127].
    Relu,
    /// `min(|y|, 127)`.
    Abs,
}

/// Weight width. `One` holds −1..0; `Binary` (MAX78002) holds ±1 and
/// counts as one bit in the shift; the two cannot share a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightBits {
    One,
    Two,
    Four,
    Eight,
    Binary,
}

impl WeightBits {
    /// `b` in `S = output_shift + 8 − b` (spec §0).
    pub fn bits(self) -> i32 {
        match self {
            WeightBits::One | WeightBits::Binary => 1,
            WeightBits::Two => 2,
            WeightBits::Four => 4,
            WeightBits::Eight => 8,
        }
    }

    pub(crate) fn admits(self, w: i8) -> bool {
        match self {
            WeightBits::Binary => w == -1 || w == 1,
            _ => {
                let half = 1i32 << (self.bits() - 1);
                (-half..half).contains(&i32::from(w))
            }
        }
    }
}

/// 8-bit outputs are shifted, rounded, clamped and activated; 32-bit
/// outputs are the raw accumulator (spec §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputWidth {
    Eight,
    ThirtyTwo,
}

/// One hardware layer (spec §2.1): assemble the input, element-wise and
/// pooling, the operator, bias, output scaling and activation.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub op: Op,
    /// Empty: the previous layer's output (the network input for layer 0).
    /// Several sources are concatenated along channels, or, with `eltwise`,
    /// are its operands (2..=16, all of one shape).
    pub inputs: Vec<Source>,
    /// Reinterpret the assembled `C×H×W` input as `C×rows×columns` (the
    /// YAML's `in_dim`; the pixel count must match).
    pub in_dim: Option<[usize; 2]>,
    /// Channels entering the operator: the concatenated count, or one
    /// operand's count with `eltwise`; before flattening for `Linear`.
    pub in_channels: usize,
    /// Must equal `in_channels` for `Op::None`.
    pub out_channels: usize,
    pub pool: Option<Pool>,
    /// Only with `Op::None` or `Op::Conv2d`.
    pub eltwise: Option<EltwiseOp>,
    /// `true` (the default on the device): pool each operand, then combine.
    /// `false`: combine two operands, then pool the result.
    pub pool_first: bool,
    pub activation: Activation,
    /// The YAML's `output_shift`; the hardware adds `8 − b` (spec §2.11).
    pub output_shift: i32,
    pub weight_bits: WeightBits,
    pub output_width: OutputWidth,
}

impl Layer {
    /// A layer reading the previous output with everything else at the
    /// device's defaults: 8-bit weights and output, no pooling, no
    /// element-wise, no activation, shift 0.
    pub fn new(op: Op, in_channels: usize, out_channels: usize) -> Layer {
        Layer {
            op,
            inputs: Vec::new(),
            in_dim: None,
            in_channels,
            out_channels,
            pool: None,
            eltwise: None,
            pool_first: true,
            activation: Activation::None,
            output_shift: 0,
            weight_bits: WeightBits::Eight,
            output_width: OutputWidth::Eight,
        }
    }
}

/// The integer parameters of one layer, in PyTorch's layouts (see [`Op`]).
/// Passthrough layers have an empty `weight` and no bias.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerWeights {
    pub weight: Vec<i8>,
    /// One value per output channel; the accumulator receives `128·bias`.
    pub bias: Option<Vec<i8>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimOptions {
    /// ai8xize's `--avg-pool-rounding`: average pooling rounds half away from
    /// zero instead of truncating toward zero (spec §3.5).
    pub avg_pool_rounding: bool,
}
