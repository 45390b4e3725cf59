//! Quantized layers on the bit-exact simulator, and float samples through
//! it: how kflow measures what the accelerator will compute before there is
//! a device. The network goes through the same hardware layers the checker
//! and the YAML writer see.

use std::collections::BTreeMap;

use kflow_ai8x::{Device, Int8Layer};
use kflow_ai8x_sim::{LayerWeights, Network, Output, SimOptions, Tensor};

use crate::error::QuantError;
use crate::quantize::{Quantized, quantize_input};
use crate::to_ai8x::to_ai8x;

/// The simulator's network and weights for `q` on `device`.
pub fn to_sim(q: &Quantized, device: Device) -> (Network, Vec<LayerWeights>) {
    let (layers, _, input) = to_ai8x(q);
    let values: BTreeMap<usize, Int8Layer> = q
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.weight_shape.is_empty())
        .map(|(i, l)| {
            let layer = Int8Layer {
                shape: l.weight_shape.clone(),
                weight: l.weight.clone(),
                bias: l.bias.clone(),
            };
            (i, layer)
        })
        .collect();
    kflow_ai8x::sim::to_sim(device, &layers, input, &values)
}

/// The network's output for one float sample (quantized to int8 at the
/// input), as real values (see [`real_outputs`]).
pub fn simulate_sample(
    q: &Quantized,
    net: &Network,
    weights: &[LayerWeights],
    x: &[f32],
) -> Result<Vec<f64>, QuantError> {
    let out = kflow_ai8x_sim::simulate(net, weights, &sample_input(net, x)?, SimOptions::default())
        .map_err(|e| QuantError::Simulation(e.to_string()))?;
    real_outputs(q, &out)
}

/// A float sample as the accelerator's int8 input tensor.
pub fn sample_input(net: &Network, x: &[f32]) -> Result<Tensor<i8>, QuantError> {
    let data: Vec<i8> = x.iter().map(|&v| quantize_input(v)).collect();
    Tensor::new(net.input, data).ok_or_else(|| QuantError::Forward {
        layer: 0,
        why: format!("{} input values for shape {:?}", x.len(), net.input),
    })
}

/// The accelerator's output as real values: int8 outputs are Q7, 32-bit
/// outputs carry the accumulator scale `2^S / 2^14` of spec §3.4; both
/// divided by the last layer's calibration scale, so they compare with the
/// float model's.
pub fn real_outputs(q: &Quantized, out: &Output) -> Result<Vec<f64>, QuantError> {
    let last = q.layers.last().ok_or(QuantError::Simulation("no layers".into()))?;
    let values: Vec<f64> = match out {
        Output::Int8(t) => t.data.iter().map(|&v| f64::from(v) / 128.0).collect(),
        Output::Int32(t) => {
            let s = last.output_shift + 8 - last.weight_bits.0.bits() as i32;
            let factor = 2f64.powi(s) / 2f64.powi(14);
            t.data.iter().map(|&v| f64::from(v) * factor).collect()
        }
    };
    Ok(values.into_iter().map(|v| v / last.scale).collect())
}
