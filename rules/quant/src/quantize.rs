//! ai8x-compatible quantization of fused layers (spec §3.10).
//!
//! The accelerator keeps activations as Q7 values in [−1, 1). A float model
//! trained without that limit has activations of any size, so calibration
//! first rescales every layer's output: layer `L`'s output is multiplied by
//! a positive factor `s_L` chosen so that a high percentile of its
//! magnitude on calibration samples lands at `target`. ReLU, Abs, pooling
//! and batch-norm-folded operators commute with positive factors, so the
//! rescaled network computes the same function up to the final factor,
//! which neither an argmax nor a threshold on a ratio of logits sees. The
//! weights become `W·s_L/s_in` and the bias `b·s_L`; then each layer gets
//! the shift ai8x's quantize.py would give it, and its weights are rounded
//! either to nearest, as quantize.py does, or (the default) with each
//! rounding error compensated on the weights not yet rounded (`compensate`),
//! after hidden channels have been equalized (`equalize`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::QuantError;
use kflow_ai8x::network::WeightBits;

use crate::forward::layer_outputs;
use crate::fuse::{Fused, FusedLayer, HwOp, HwSource};

/// A weight width as graph files and `quant.json` spell it: 1, 2, 4, 8, or
/// `"binary"` for the MAX78002's ±1 weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BitsText", into = "BitsText")]
pub struct Bits(pub WeightBits);

#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum BitsText {
    Int(i64),
    Name(String),
}

impl TryFrom<BitsText> for Bits {
    type Error = String;
    fn try_from(text: BitsText) -> Result<Bits, String> {
        Ok(Bits(match text {
            BitsText::Int(1) => WeightBits::One,
            BitsText::Int(2) => WeightBits::Two,
            BitsText::Int(4) => WeightBits::Four,
            BitsText::Int(8) => WeightBits::Eight,
            BitsText::Name(n) if n == "binary" => WeightBits::Binary,
            BitsText::Int(n) => return Err(format!("weight bits are 1, 2, 4, 8 or \"binary\", not {n}")),
            BitsText::Name(n) => return Err(format!("weight bits are 1, 2, 4, 8 or \"binary\", not \"{n}\"")),
        }))
    }
}

impl From<Bits> for BitsText {
    fn from(b: Bits) -> BitsText {
        match b.0 {
            WeightBits::Binary => BitsText::Name("binary".into()),
            other => BitsText::Int(i64::from(other.bits())),
        }
    }
}

impl Bits {
    pub const EIGHT: Bits = Bits(WeightBits::Eight);
}

/// How to quantize.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuantOptions {
    /// Weight bits of every layer not named in `layer_bits`.
    pub weight_bits: Bits,
    /// Per-layer weight bits, by fused layer name.
    pub layer_bits: BTreeMap<String, Bits>,
    /// The quantile of weight and bias magnitudes that sets each layer's
    /// shift (1.0: the largest, as quantize.py's default).
    pub shift_quantile: f64,
    /// The percentile (0–100) of an activation's magnitude on calibration
    /// samples that is mapped to `target`.
    pub calibration_percentile: f64,
    /// Where that percentile lands, as a fraction of the Q7 range.
    pub target: f64,
    /// Whether the last layer writes its raw 32-bit accumulator (as
    /// ai8x-training's `wide=True` classifiers do) when it can.
    pub wide_output: bool,
    /// Adjust each layer's calibration factor so that its weights fill the
    /// int8 range their power-of-two shift leaves (see `align_shifts`).
    pub align_shifts: bool,
    /// How a scaled weight becomes an integer.
    pub rounding: Rounding,
}

/// How weights are rounded to their layer's levels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Each to its nearest level, as quantize.py rounds.
    Nearest,
    /// Hidden channels first rescaled to use more of their layer's ranges
    /// (see `equalize`; when `shift_quantile` is 1), then each row rounded
    /// in turn, the values not yet rounded absorbing the errors of those
    /// rounded, weighed by the calibration inputs (see `compensate`): the
    /// layer's output stays closer to the float one.
    #[default]
    Compensated,
}

impl Default for QuantOptions {
    fn default() -> Self {
        QuantOptions {
            weight_bits: Bits::EIGHT,
            layer_bits: BTreeMap::new(),
            shift_quantile: 1.0,
            calibration_percentile: 99.9,
            target: 0.9,
            wide_output: true,
            align_shifts: false,
            rounding: Rounding::default(),
        }
    }
}

/// One quantized layer: the fused layer's description, its integer weights
/// (PyTorch layout) and what the hardware needs to scale them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantLayer {
    #[serde(flatten)]
    pub layer: FusedLayer,
    pub weight_bits: Bits,
    /// The YAML `output_shift`; the hardware shift is `output_shift + 8 − bits`.
    pub output_shift: i32,
    /// 8, or 32 for a raw accumulator.
    pub output_width: u8,
    /// The calibration factor of the layer's output (see the module docs).
    pub scale: f64,
    /// PyTorch layout; empty for a passthrough layer.
    pub weight_shape: Vec<usize>,
    /// Output channels with a bias, if the layer has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bias_len: Option<usize>,
    #[serde(skip)]
    pub weight: Vec<i8>,
    #[serde(skip)]
    pub bias: Option<Vec<i8>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantized {
    pub input: Vec<usize>,
    pub layers: Vec<QuantLayer>,
}

/// A float input value as the accelerator's int8 input (Q7, clamped).
pub fn quantize_input(x: f32) -> i8 {
    (f64::from(x) * 128.0).round().clamp(-128.0, 127.0) as i8
}

/// Quantizes `fused`, calibrated on `n` samples `x` (each of the model's
/// input shape).
pub fn quantize(fused: &Fused, x: &[f32], n: usize, options: &QuantOptions) -> Result<Quantized, QuantError> {
    check_options(options)?;
    // Equalizing rows against the largest one only pays when the largest
    // sets the shift.
    let equalized;
    let fused = match options.rounding {
        Rounding::Compensated if options.shift_quantile >= 1.0 => {
            equalized = crate::equalize::equalize(fused, x, n, options)?;
            &equalized
        }
        _ => fused,
    };
    let scales = calibrate(fused, x, n, options)?;
    let moments = match options.rounding {
        Rounding::Compensated => crate::compensate::moments(fused, &scales, x, n)?,
        Rounding::Nearest => vec![None; fused.layers.len()],
    };
    let mut layers = Vec::with_capacity(fused.layers.len());
    for (i, layer) in fused.layers.iter().enumerate() {
        let bits = options.bits_of(layer);
        let wide = is_wide(fused, i, options);
        let (weight, bias, output_shift) = match scaled_parameters(fused, &scales, i) {
            Some((w, b)) => moments[i]
                .as_ref()
                .and_then(|m| quantize_layer_compensated(&w, b.as_deref(), bits.0, options.shift_quantile, m))
                .unwrap_or_else(|| quantize_layer(&w, b.as_deref(), bits.0, options.shift_quantile)),
            None => (Vec::new(), None, 0),
        };
        layers.push(QuantLayer {
            layer: layer.clone(),
            weight_bits: if layer.op.has_weights() { bits } else { Bits::EIGHT },
            output_shift,
            output_width: if wide { 32 } else { 8 },
            scale: scales[i],
            weight_shape: layer.weight.as_ref().map(|w| w.shape.clone()).unwrap_or_default(),
            bias_len: bias.as_ref().map(Vec::len),
            weight,
            bias,
        });
    }
    Ok(Quantized {
        input: fused.input.clone(),
        layers,
    })
}

impl QuantOptions {
    pub(crate) fn bits_of(&self, layer: &FusedLayer) -> Bits {
        self.layer_bits.get(&layer.name).copied().unwrap_or(self.weight_bits)
    }
}

/// Whether layer `i` writes its raw 32-bit accumulator.
pub(crate) fn is_wide(fused: &Fused, i: usize, options: &QuantOptions) -> bool {
    let layer = &fused.layers[i];
    options.wide_output
        && i + 1 == fused.layers.len()
        && layer.op.has_weights()
        && layer.activation == crate::fuse::Activation::None
}

/// A power-of-two shift (spec §3.10) leaves a layer's largest scaled weight
/// between half and all of the int8 range, depending only on where its
/// magnitude falls between two powers of two: up to a bit of weight
/// precision lost by chance. A wide last layer's output factor is free (its
/// 32-bit output has room in either direction and nothing downstream reads
/// it), so it is moved until the weights fill the range. Hidden layers keep
/// theirs: halving an 8-bit activation's range costs as much as the weights
/// gain.
fn align_shifts(fused: &Fused, scales: &mut [f64], options: &QuantOptions) {
    let Some(i) = fused.layers.len().checked_sub(1) else {
        return;
    };
    if !is_wide(fused, i, options) || options.bits_of(&fused.layers[i]).0 == WeightBits::Binary {
        return;
    }
    let Some((weight, bias)) = scaled_parameters(fused, scales, i) else {
        return;
    };
    let t = shift_magnitude(&weight, bias.as_deref(), options.shift_quantile);
    if t > 0.0 {
        // The share of the range the largest weight fills, in [0.5, 1); the
        // target stays just below a power of two so that rounding keeps the
        // shift.
        let filled = t * 2f64.powf((1.0 / t).log2().floor());
        scales[i] *= 0.999 / filled;
    }
}

/// The calibration factors of layer `i`'s weight and bias, `s_L/s_in` and
/// `s_L` (see the module docs); `None` for a layer without parameters.
pub(crate) fn factors(fused: &Fused, scales: &[f64], i: usize) -> Option<(f64, f64)> {
    let layer = &fused.layers[i];
    (layer.weight.is_some() && layer.op != HwOp::Passthrough)
        .then(|| (scales[i] / input_scale(layer, scales), scales[i]))
}

/// Layer `i`'s weight and bias as its quantizer sees them: multiplied by
/// their calibration factors. `None` for a layer without parameters.
fn scaled_parameters(fused: &Fused, scales: &[f64], i: usize) -> Option<(Vec<f64>, Option<Vec<f64>>)> {
    let (weight_factor, bias_factor) = factors(fused, scales, i)?;
    let layer = &fused.layers[i];
    let weight = scaled(&layer.weight.as_ref()?.data, weight_factor);
    let bias = layer.bias.as_ref().map(|b| scaled(&b.data, bias_factor));
    Some((weight, bias))
}

pub(crate) fn scaled(values: &[f32], factor: f64) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v) * factor).collect()
}

/// The calibration factor of a layer's input.
pub(crate) fn input_scale(layer: &FusedLayer, scales: &[f64]) -> f64 {
    match layer.sources.first() {
        Some(HwSource::Layer(j)) => scales[*j],
        _ => 1.0,
    }
}

pub(crate) fn check_options(o: &QuantOptions) -> Result<(), QuantError> {
    if !(o.shift_quantile > 0.0 && o.shift_quantile <= 1.0) {
        return Err(QuantError::Options(format!(
            "shift_quantile must be in (0, 1], not {}",
            o.shift_quantile
        )));
    }
    if !(o.calibration_percentile > 0.0 && o.calibration_percentile <= 100.0) {
        return Err(QuantError::Options(format!(
            "calibration_percentile must be in (0, 100], not {}",
            o.calibration_percentile
        )));
    }
    if !(o.target > 0.0 && o.target <= 1.0) {
        return Err(QuantError::Options(format!(
            "target must be in (0, 1], not {}",
            o.target
        )));
    }
    Ok(())
}

/// The output factor `s_L` of every layer.
pub(crate) fn calibrate(fused: &Fused, x: &[f32], n: usize, o: &QuantOptions) -> Result<Vec<f64>, QuantError> {
    Ok(scales_of(fused, output_magnitudes(fused, x, n)?, o))
}

/// The magnitudes of every operator layer's outputs over the `n`
/// calibration samples `x`, sample after sample (empty for passthrough
/// layers).
pub(crate) fn output_magnitudes(fused: &Fused, x: &[f32], n: usize) -> Result<Vec<Vec<f32>>, QuantError> {
    let per: usize = fused.input.iter().product();
    if n == 0 || per == 0 || x.len() != n * per {
        return Err(QuantError::Options(format!(
            "calibration needs at least one sample of {per} values; got {} values for {n} samples",
            x.len()
        )));
    }
    let mut magnitudes: Vec<Vec<f32>> = vec![Vec::new(); fused.layers.len()];
    for sample in x.chunks_exact(per) {
        for (i, out) in layer_outputs(fused, sample)?.into_iter().enumerate() {
            if fused.layers[i].op.has_weights() {
                magnitudes[i].extend(out.iter().map(|v| v.abs()));
            }
        }
    }
    Ok(magnitudes)
}

/// The output factor of every layer, from its [`output_magnitudes`].
pub(crate) fn scales_of(fused: &Fused, mut magnitudes: Vec<Vec<f32>>, o: &QuantOptions) -> Vec<f64> {
    // What each layer would like; passthrough layers keep their input's.
    let mut desired: Vec<Option<f64>> = magnitudes
        .iter_mut()
        .map(|m| {
            (!m.is_empty()).then(|| {
                let a = percentile(m, o.calibration_percentile);
                if a > 0.0 {
                    (o.target / a).clamp(1.0 / 65536.0, 65536.0)
                } else {
                    1.0
                }
            })
        })
        .collect();
    // Operands of an element-wise layer must share one scale: the smallest
    // of their producers' (lowering a scale never makes anything clip).
    loop {
        let mut changed = false;
        for layer in fused.layers.iter().filter(|l| l.eltwise_add) {
            let roots: Vec<Option<usize>> = layer.sources.iter().map(|s| root(fused, *s)).collect();
            let common = roots
                .iter()
                .map(|r| r.and_then(|r| desired[r]).unwrap_or(1.0))
                .fold(f64::INFINITY, f64::min);
            for r in roots.into_iter().flatten() {
                if desired[r].is_some_and(|d| d > common) {
                    desired[r] = Some(common);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut scales: Vec<f64> = Vec::with_capacity(fused.layers.len());
    for (i, layer) in fused.layers.iter().enumerate() {
        let s = desired[i].unwrap_or_else(|| input_scale(layer, &scales));
        scales.push(s);
    }
    if o.align_shifts {
        align_shifts(fused, &mut scales, o);
    }
    scales
}

/// The operator layer whose scale a source carries (through passthrough
/// layers), or `None` for the network input.
fn root(fused: &Fused, mut s: HwSource) -> Option<usize> {
    loop {
        match s {
            HwSource::Input => return None,
            HwSource::Layer(j) => {
                let l = &fused.layers[j];
                if l.op.has_weights() || l.eltwise_add {
                    return l.op.has_weights().then_some(j);
                }
                s = *l.sources.first()?;
            }
        }
    }
}

/// The `p`-th percentile (0–100) by linear interpolation on the sorted
/// values' grid `i/(N−1)` (torch.quantile's rule, which quantize.py uses).
pub(crate) fn percentile(values: &mut [f32], p: f64) -> f64 {
    values.sort_unstable_by(f32::total_cmp);
    quantile_sorted(values, p / 100.0)
}

/// The `quantile` of a layer's weight and bias magnitudes: the value its
/// power-of-two shift is chosen for (spec §3.10).
fn shift_magnitude(weight: &[f64], bias: Option<&[f64]>, quantile: f64) -> f64 {
    let mut magnitudes: Vec<f32> = weight
        .iter()
        .chain(bias.into_iter().flatten())
        .map(|v| v.abs() as f32)
        .collect();
    magnitudes.sort_unstable_by(f32::total_cmp);
    quantile_sorted(&magnitudes, quantile)
}

fn quantile_sorted(sorted: &[f32], q: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => f64::from(sorted[0]),
        n => {
            let pos = q * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let frac = pos - lo as f64;
            f64::from(sorted[lo]) + (f64::from(sorted[hi]) - f64::from(sorted[lo])) * frac
        }
    }
}

/// One layer's integer weights, bias and `output_shift`, as quantize.py
/// computes them (spec §3.10): the shift from the `quantile` of all
/// weight and bias magnitudes, both rounded half up at `bits` bits.
///
/// Binary layers (§3.8) take the sign of each weight (zero counts as +1,
/// as the hardware has no zero) at a scale of `2^−bit_shift`, the power
/// of two nearest the mean weight magnitude (the scale that minimizes the
/// L1 error of `sign(w)`); their bias keeps the same factor and the full
/// 8 bits the bias memory holds.
pub fn quantize_layer(
    weight: &[f64],
    bias: Option<&[f64]>,
    bits: WeightBits,
    quantile: f64,
) -> (Vec<i8>, Option<Vec<i8>>, i32) {
    let b = bits.bits() as i32;
    let round = |f: f64, lo: f64, hi: f64| move |v: &f64| (f * v + 0.5).floor().clamp(lo, hi) as i8;
    if bits == WeightBits::Binary {
        let mean = weight.iter().map(|v| v.abs()).sum::<f64>() / weight.len().max(1) as f64;
        let bit_shift = if mean > 0.0 {
            ((1.0 / mean).log2().round() as i32).clamp(-7 - b, 23 - b)
        } else {
            0
        };
        let weight = weight.iter().map(|&v| if v < 0.0 { -1 } else { 1 }).collect();
        let bias = bias.map(|bias| bias.iter().map(round(2f64.powi(bit_shift), -128.0, 127.0)).collect());
        return (weight, bias, -bit_shift);
    }
    let bit_shift = bit_shift(weight, bias, b, quantile);
    let (factor, (lo, hi)) = grid(b, bit_shift);
    let q = round(factor, lo, hi);
    let weight = weight.iter().map(q).collect();
    let bias = bias.map(|bias| bias.iter().map(q).collect());
    (weight, bias, -bit_shift)
}

/// The power-of-two shift quantize.py gives a layer of `b`-bit weights:
/// the one that brings the `quantile` of its magnitudes just under 1.
fn bit_shift(weight: &[f64], bias: Option<&[f64]>, b: i32, quantile: f64) -> i32 {
    let t = shift_magnitude(weight, bias, quantile);
    // All-zero parameters: any shift gives zeros; 0 keeps S = 8 − b.
    if t > 0.0 {
        ((1.0 / t).log2().floor() as i32).clamp(-7 - b, 23 - b)
    } else {
        0
    }
}

/// The factor that takes a scaled weight to its integer, and the integers'
/// range, at `b` bits and `bit_shift`.
fn grid(b: i32, bit_shift: i32) -> (f64, (f64, f64)) {
    let half = 2f64.powi(b - 1);
    (2f64.powi(b - 1 + bit_shift), (-half, half - 1.0))
}

/// [`quantize_layer`] with compensated rounding (see `compensate`), at the
/// same shift: `None` for binary weights, which have no levels to choose
/// between, and for degenerate moments.
fn quantize_layer_compensated(
    weight: &[f64],
    bias: Option<&[f64]>,
    bits: WeightBits,
    quantile: f64,
    moments: &nalgebra::DMatrix<f64>,
) -> Option<(Vec<i8>, Option<Vec<i8>>, i32)> {
    if bits == WeightBits::Binary {
        return None;
    }
    let b = bits.bits() as i32;
    let bit_shift = bit_shift(weight, bias, b, quantile);
    let (factor, range) = grid(b, bit_shift);
    let patch = moments
        .ncols()
        .checked_sub(usize::from(bias.is_some()))
        .filter(|&d| d > 0)?;
    let mut rows: Vec<Vec<f64>> = weight
        .chunks_exact(patch)
        .enumerate()
        .map(|(o, w)| w.iter().copied().chain(bias.map(|b| b[o])).collect())
        .collect();
    if rows.len() * patch != weight.len() || bias.is_some_and(|b| b.len() != rows.len()) {
        return None;
    }
    let rounded = crate::compensate::round_rows(&mut rows, moments, factor, range)?;
    let weight = rounded.iter().flat_map(|r| r[..patch].iter().copied()).collect();
    let bias = bias.map(|_| rounded.iter().map(|r| r[patch]).collect());
    Some((weight, bias, -bit_shift))
}

/// The float value of one integer step of a layer's weights and bias:
/// `1 / 2^(b − 1 + bit_shift)` with `bit_shift = −output_shift` (b = 1 for
/// binary), the inverse of the quantizer's factor.
pub fn dequantize_step(bits: WeightBits, output_shift: i32) -> f64 {
    2f64.powi(-(bits.bits() as i32 - 1 - output_shift))
}

impl Quantized {
    /// The integer weights as SPEC.md §9's weights file: int8 tensors
    /// `<layer_index>.weight` (PyTorch layout) and `<layer_index>.bias`.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, QuantError> {
        use safetensors::tensor::{Dtype, TensorView};
        let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
        let as_bytes = |v: &[i8]| -> Vec<u8> { v.iter().map(|&b| b as u8).collect() };
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.weight_shape.is_empty())
            .flat_map(|(i, l)| {
                let shape = l.weight_shape.clone();
                let mut tensors = vec![(format!("{i}.weight"), shape, as_bytes(&l.weight))];
                if let Some(b) = &l.bias {
                    tensors.push((format!("{i}.bias"), vec![b.len()], as_bytes(b)));
                }
                tensors
            })
            .collect();
        for (name, shape, data) in &bytes {
            let view = TensorView::new(Dtype::I8, shape.clone(), data)
                .map_err(|e| QuantError::Safetensors(format!("tensor `{name}`: {e}")))?;
            views.push((name.clone(), view));
        }
        views.sort_by(|a, b| a.0.cmp(&b.0));
        safetensors::serialize(views, None).map_err(|e| QuantError::Safetensors(e.to_string()))
    }
}

impl Quantized {
    /// Reads `quant.json` and `quantized.safetensors` back into one value.
    pub fn from_files(quant_json: &[u8], weights: &[u8]) -> Result<Quantized, QuantError> {
        let mut q: Quantized =
            serde_json::from_slice(quant_json).map_err(|e| QuantError::Options(format!("quant.json: {e}")))?;
        let mut values = kflow_ai8x::int8_values(weights).map_err(|e| QuantError::Safetensors(e.to_string()))?;
        for (i, l) in q.layers.iter_mut().enumerate() {
            match values.remove(&i) {
                Some(v) => {
                    l.weight = v.weight;
                    l.bias = v.bias;
                }
                None if l.layer.op.has_weights() => return Err(QuantError::MissingTensor(format!("{i}.weight"))),
                None => {}
            }
        }
        Ok(q)
    }
}
