//! A bit-exact simulator of the MAX78000/MAX78002 CNN accelerator's integer
//! pipeline (spec/max78002.md §2.1 and §3).
//!
//! Describe the network in hardware terms with [`Network`] and [`Layer`]
//! (one entry per hardware layer, pooling and element-wise fused in), give
//! the integer weights of each layer as [`LayerWeights`] in PyTorch's layout
//! and the int8 input as a CHW [`Tensor`], and call [`simulate`] (the last
//! layer's output) or [`simulate_all`] (every layer's). Everything is
//! validated up front; a network the device cannot run, or weights and
//! input of the wrong shape, are a [`SimError`] naming the layer.
//!
//! Multi-pass layers (more than 64 channels) are not modelled as passes:
//! the accelerator keeps the full-precision sum across passes (spec §3.1,
//! §3.2 step 5), so passes are not observable in the results.

mod conv;
#[cfg(target_arch = "x86_64")]
mod conv_pairs;
mod eltwise;
mod error;
mod linear;
mod network;
mod plan;
mod pool;
mod scale;
mod simulate;
mod tensor;

pub use error::SimError;
pub use network::{
    Activation, Device, EltwiseOp, Layer, LayerWeights, Network, Op, OutputWidth, Pool, PoolKind, Shape, SimOptions,
    Source, WeightBits,
};
pub use tensor::{Output, Tensor};

/// Runs the network on `input` and returns the last layer's output.
pub fn simulate(
    net: &Network,
    weights: &[LayerWeights],
    input: &Tensor<i8>,
    options: SimOptions,
) -> Result<Output, SimError> {
    let mut outputs = simulate::run(net, weights, input, options)?;
    outputs.pop().ok_or(SimError::NoLayers)
}

/// Runs the network on `input` and returns every layer's output, in layer order.
pub fn simulate_all(
    net: &Network,
    weights: &[LayerWeights],
    input: &Tensor<i8>,
    options: SimOptions,
) -> Result<Vec<Output>, SimError> {
    simulate::run(net, weights, input, options)
}

/// The output shape of every layer, after validating the network.
pub fn output_shapes(net: &Network) -> Result<Vec<Shape>, SimError> {
    Ok(plan::plan(net)?.iter().map(|p| p.output).collect())
}

/// Multiply-accumulates of one inference as the accelerator evaluates them,
/// counting products with padding and with convtranspose2d's inserted zeros.
pub fn macs(net: &Network) -> Result<u64, SimError> {
    Ok(plan::plan(net)?.iter().zip(&net.layers).map(|(p, l)| p.macs(l)).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// spec §3.12: conv1d, k = 3, two input channels, 8-bit weights, ReLU,
    /// `output_shift` −1 (so `S = −1`, `n = 8`), bias 10.
    fn worked_example(window: [[i8; 3]; 2], activation: Activation) -> i8 {
        let layer = Layer {
            activation,
            output_shift: -1,
            ..Layer::new(Op::Conv1d { kernel: 3, pad: 0 }, 2, 1)
        };
        let net = Network {
            device: Device::Max78002,
            input: Shape::one_d(2, 3),
            layers: vec![layer],
        };
        let weights = [LayerWeights {
            weight: vec![54, -77, 13, 32, 44, -20],
            bias: Some(vec![10]),
        }];
        let input = Tensor {
            shape: net.input,
            data: window.concat(),
        };
        let out = simulate(&net, &weights, &input, SimOptions::default()).unwrap();
        assert_eq!(out.shape(), Shape::one_d(1, 1));
        out.as_int8().unwrap().data[0]
    }

    #[test]
    fn worked_example_of_spec_3_12_gives_2() {
        // acc = 596; ⌊(596 + 128)/256⌋ = 2.
        assert_eq!(worked_example([[40, -12, 100], [-128, 7, 64]], Activation::Relu), 2);
    }

    #[test]
    fn worked_example_with_accumulator_minus_300_rounds_to_minus_1_then_relu_0() {
        // acc = −77·20 − 20·2 + 1280 = −300; ⌊(−300 + 128)/256⌋ = −1.
        let window = [[0, 20, 0], [0, 0, 2]];
        assert_eq!(worked_example(window, Activation::None), -1);
        assert_eq!(worked_example(window, Activation::Relu), 0);
    }
}
