//! What quantization-aware fine-tuning needs from the quantizer (spec
//! §3.11): the model with its batch norms folded into the operators, as
//! ai8x-training does before QAT starts, and the quantized view of its
//! weights that the forward pass sees while the gradients update the float
//! weights underneath (the straight-through estimator).

use std::collections::{BTreeMap, BTreeSet};

use kflow_ai8x::network::WeightBits;
use kflow_model::{Model, Op, Tensor, Weights};

use crate::error::QuantError;
use crate::fuse::fuse;
use crate::quantize::{
    QuantOptions, calibrate, check_options, dequantize_step, factors, is_wide, quantize_layer, scaled,
};

/// `model` with every batch norm folded into the operator before it (its
/// weight scaled, its bias created or shifted), computing what `model`
/// computes in evaluation mode. Layers that read a batch norm's output by
/// name read the operator's instead.
pub fn fold_batchnorm(model: &Model, weights: &Weights) -> Result<(Model, Weights), QuantError> {
    let norms: BTreeSet<&str> = model
        .layers
        .iter()
        .filter(|l| matches!(l.op, Op::BatchNorm { .. }))
        .map(|l| l.name.as_str())
        .collect();
    if norms.is_empty() {
        return Ok((model.clone(), weights.clone()));
    }
    let fused = fuse(model, weights)?;
    let owner = |tensor: &str| tensor.rsplit_once('.').map_or(tensor, |(layer, _)| layer).to_owned();
    let mut folded_weights = Weights::default();
    for (name, t) in &weights.tensors {
        if !norms.contains(owner(name).as_str()) {
            folded_weights.insert(name.clone(), t.clone());
        }
    }
    // Batch norm name → the operator it folded into.
    let mut into: BTreeMap<&str, &str> = BTreeMap::new();
    let mut biased: BTreeSet<&str> = BTreeSet::new();
    for layer in &fused.layers {
        let Some(w) = &layer.weight else { continue };
        folded_weights.insert(format!("{}.weight", layer.name), w.clone());
        if let Some(b) = &layer.bias {
            folded_weights.insert(format!("{}.bias", layer.name), b.clone());
            biased.insert(&layer.name);
        }
        for member in &layer.ir_layers {
            if norms.contains(member.as_str()) {
                into.insert(member, &layer.name);
            }
        }
    }
    let mut layers = Vec::with_capacity(model.layers.len() - norms.len());
    for l in model.layers.iter().filter(|l| !norms.contains(l.name.as_str())) {
        let mut l = l.clone();
        for input in &mut l.inputs {
            if let Some(op) = into.get(input.as_str()) {
                *input = (*op).to_owned();
            }
        }
        if biased.contains(l.name.as_str()) {
            match &mut l.op {
                Op::Conv1d { bias, .. }
                | Op::Conv2d { bias, .. }
                | Op::ConvTranspose2d { bias, .. }
                | Op::Linear { bias, .. } => *bias = true,
                _ => {}
            }
        }
        layers.push(l);
    }
    let folded = Model {
        layers,
        ..model.clone()
    };
    folded_weights.check(&folded)?;
    Ok((folded, folded_weights))
}

/// The quantizer's view of a model's float weights, with the calibration
/// factors of one moment of training. The shifts are derived again from
/// the weights at each call, as quantize.py will derive them at the end.
pub struct FakeQuant {
    layers: Vec<FakeLayer>,
    quantile: f64,
    activations: ActivationScales,
}

/// Where the accelerator rounds activations to int8, and at which scale
/// (the hardware value of an activation `v` is `round(v · scale · 128)`):
/// the network input, and the outputs of layers by their IR name.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationScales {
    pub input: f64,
    pub layers: BTreeMap<String, f64>,
}

/// A layer with parameters. Without batch norms, a fused layer's weight and
/// bias are its operator's IR tensors, read by the operator's name.
struct FakeLayer {
    name: String,
    bits: WeightBits,
    weight_factor: f64,
    bias_factor: f64,
}

impl FakeQuant {
    /// Calibrates `model` (batch norms folded, see [`fold_batchnorm`]) with
    /// `weights` on `n` samples `x`.
    pub fn calibrate(
        model: &Model,
        weights: &Weights,
        x: &[f32],
        n: usize,
        options: &QuantOptions,
    ) -> Result<FakeQuant, QuantError> {
        check_options(options)?;
        let fused = fuse(model, weights)?;
        if let Some(l) = fused
            .layers
            .iter()
            .find(|l| l.ir_layers.iter().any(|m| m != &l.name && is_norm(model, m)))
        {
            return Err(QuantError::Options(format!(
                "layer `{}` still has a batch norm; fold batch norms before quantization-aware training",
                l.name
            )));
        }
        let scales = calibrate(&fused, x, n, options)?;
        // The accelerator rounds the input and each hidden layer's output to
        // int8 at its scale; a wide last layer's output is not rounded.
        let rounded = (0..fused.layers.len())
            .filter(|&i| factors(&fused, &scales, i).is_some() && !is_wide(&fused, i, options))
            .filter_map(|i| Some((fused.layers[i].ir_layers.last()?.clone(), scales[i])));
        let activations = ActivationScales {
            input: 1.0,
            layers: rounded.collect(),
        };
        let layers = (0..fused.layers.len())
            .filter_map(|i| {
                let (weight_factor, bias_factor) = factors(&fused, &scales, i)?;
                let layer = &fused.layers[i];
                Some(FakeLayer {
                    name: layer.name.clone(),
                    bits: options.bits_of(layer).0,
                    weight_factor,
                    bias_factor,
                })
            })
            .collect();
        Ok(FakeQuant {
            layers,
            quantile: options.shift_quantile,
            activations,
        })
    }

    /// Where the accelerator rounds activations, at this calibration.
    pub fn activations(&self) -> &ActivationScales {
        &self.activations
    }

    /// `weights` with every operator's weight and bias replaced by the
    /// float values its quantized integers stand for.
    pub fn apply(&self, weights: &Weights) -> Result<Weights, QuantError> {
        let mut seen = weights.clone();
        for l in &self.layers {
            let weight_name = format!("{}.weight", l.name);
            let bias_name = format!("{}.bias", l.name);
            let w = weights
                .get(&weight_name)
                .ok_or_else(|| QuantError::MissingTensor(weight_name.clone()))?;
            let b = weights.get(&bias_name);
            let (qw, qb, shift) = quantize_layer(
                &scaled(&w.data, l.weight_factor),
                b.map(|b| scaled(&b.data, l.bias_factor)).as_deref(),
                l.bits,
                self.quantile,
            );
            let step = dequantize_step(l.bits, shift);
            let back = |q: &[i8], factor: f64| q.iter().map(|&v| (f64::from(v) * step / factor) as f32).collect();
            seen.insert(weight_name, Tensor::new(w.shape.clone(), back(&qw, l.weight_factor)));
            if let (Some(b), Some(qb)) = (b, qb) {
                seen.insert(bias_name, Tensor::new(b.shape.clone(), back(&qb, l.bias_factor)));
            }
        }
        Ok(seen)
    }
}

fn is_norm(model: &Model, name: &str) -> bool {
    model
        .layers
        .iter()
        .any(|l| l.name == name && matches!(l.op, Op::BatchNorm { .. }))
}
