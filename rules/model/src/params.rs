//! The tensors each layer owns: the one table behind the expected weight
//! list, weight checks, initialization, parameter counts and ONNX
//! initializers (the layout is documented in `weights.rs`).

use crate::ir::Op;

/// One tensor of a layer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParamSpec {
    /// The part after `<layer>.`.
    pub suffix: &'static str,
    pub shape: Vec<usize>,
    pub init: Init,
    /// Running statistics: state, but not trained by gradient.
    pub buffer: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Init {
    /// U(−b, b) with b = 1/√fan_in: PyTorch's default for Conv and Linear
    /// (kaiming_uniform with a = √5 for the weight gives the same bound as
    /// the bias).
    Uniform {
        fan_in: usize,
    },
    Fill(f32),
}

/// The tensors of a layer with operation `op` reading `input`, in the
/// order they are listed, initialized and exported.
pub(crate) fn layer_params(op: &Op, input: &[usize]) -> Vec<ParamSpec> {
    let channels = input.first().copied().unwrap_or(0);
    let learned = |suffix, shape: Vec<usize>, fan_in| ParamSpec {
        suffix,
        shape,
        init: Init::Uniform { fan_in },
        buffer: false,
    };
    let weight_and_bias = |weight: Vec<usize>, out: usize, bias: bool, fan_in: usize| {
        let mut params = vec![learned("weight", weight, fan_in)];
        if bias {
            params.push(learned("bias", vec![out], fan_in));
        }
        params
    };
    match *op {
        Op::Conv1d {
            out_channels,
            kernel,
            bias,
            ..
        } => weight_and_bias(
            vec![out_channels, channels, kernel],
            out_channels,
            bias,
            channels.saturating_mul(kernel),
        ),
        Op::Conv2d {
            out_channels,
            kernel,
            bias,
            ..
        } => weight_and_bias(
            vec![out_channels, channels, kernel, kernel],
            out_channels,
            bias,
            channels.saturating_mul(kernel).saturating_mul(kernel),
        ),
        // PyTorch takes fan_in from weight.size(1), which for a transposed
        // convolution is the output channel count.
        Op::ConvTranspose2d {
            out_channels,
            kernel,
            bias,
            ..
        } => weight_and_bias(
            vec![channels, out_channels, kernel, kernel],
            out_channels,
            bias,
            out_channels.saturating_mul(kernel).saturating_mul(kernel),
        ),
        Op::Linear { out_features, bias } => {
            weight_and_bias(vec![out_features, channels], out_features, bias, channels)
        }
        Op::BatchNorm { .. } => {
            let fill = |suffix, value, buffer| ParamSpec {
                suffix,
                shape: vec![channels],
                init: Init::Fill(value),
                buffer,
            };
            vec![
                fill("weight", 1.0, false),
                fill("bias", 0.0, false),
                fill("running_mean", 0.0, true),
                fill("running_var", 1.0, true),
            ]
        }
        Op::Flatten | Op::MaxPool { .. } | Op::AvgPool { .. } | Op::Add | Op::Relu | Op::Abs => vec![],
    }
}
