//! What quantization-aware fine-tuning needs from the quantizer (spec
//! §3.11): the model with its batch norms folded into the operators, as
//! ai8x-training does before QAT starts, and the quantized view of its
//! weights that the forward pass sees while the gradients update the float
//! weights underneath (the straight-through estimator).

use std::collections::{BTreeMap, BTreeSet};

use kflow_model::{Model, Op, Tensor, Weights};

use crate::error::QuantError;
use crate::fuse::fuse;
use crate::quantize::{
    QuantOptions, calibrate, check_options, dequantize_step, input_scale, quantize_layer, scaled_parameters,
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
    model: Model,
    scales: Vec<f64>,
    options: QuantOptions,
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
        Ok(FakeQuant {
            model: model.clone(),
            scales: calibrate(&fused, x, n, options)?,
            options: options.clone(),
        })
    }

    /// `weights` with every operator's weight and bias replaced by the
    /// float values its quantized integers stand for.
    pub fn apply(&self, weights: &Weights) -> Result<Weights, QuantError> {
        let fused = fuse(&self.model, weights)?;
        let mut seen = weights.clone();
        for (i, layer) in fused.layers.iter().enumerate() {
            let Some((w, b)) = scaled_parameters(&fused, &self.scales, i) else {
                continue;
            };
            let bits = self.options.bits_of(layer).0;
            let (qw, qb, shift) = quantize_layer(&w, b.as_deref(), bits, self.options.shift_quantile);
            let step = dequantize_step(bits, shift);
            let factor = self.scales[i] / input_scale(layer, &self.scales);
            let back = |q: &[i8], factor: f64| q.iter().map(|&v| (f64::from(v) * step / factor) as f32).collect();
            let shape = |name: &str| weights.get(name).map(|t| t.shape.clone());
            let weight_name = format!("{}.weight", layer.name);
            let shape_w = shape(&weight_name).ok_or_else(|| QuantError::MissingTensor(weight_name.clone()))?;
            seen.insert(weight_name, Tensor::new(shape_w, back(&qw, factor)));
            if let Some(qb) = qb {
                let bias_name = format!("{}.bias", layer.name);
                let shape_b = shape(&bias_name).ok_or_else(|| QuantError::MissingTensor(bias_name.clone()))?;
                seen.insert(bias_name, Tensor::new(shape_b, back(&qb, self.scales[i])));
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
