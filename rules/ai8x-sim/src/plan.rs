//! Validation and shape inference, done once before any arithmetic so that
//! the kernels can index without checks failing at run time.

use crate::error::{SimError, layer_error};
use crate::network::{
    Activation, Device, Layer, LayerWeights, Network, Op, OutputWidth, Pool, Shape, Source, WeightBits,
};

/// spec §1: 16 passes × 64 processors.
const MAX_CHANNELS: usize = 1024;
/// spec §2.2, §2.3: the operand count of element-wise layers.
const MAX_OPERANDS: usize = 16;
/// spec §1: "H·W·in_expand < 2^21".
const FRAME_LIMIT: usize = 1 << 21;
/// spec §2.5: the hardware bound on flattened features, and the izer's
/// bound on the pixels per channel. kflow's constraint checks enforce the
/// tighter 1024 features of ai8x-training; the simulator runs what the
/// hardware runs, and 16384·2^14 still fits an i32 (§3.6).
const MAX_FLATTEN_FEATURES: usize = 16384;
const MAX_FLATTEN_PIXELS: usize = 256;
const MAX_POOL: usize = 16;

/// What validation learned about one layer.
#[derive(Clone, Debug)]
pub(crate) struct LayerPlan {
    /// Resolved: never empty.
    pub sources: Vec<Source>,
    /// One operand (the concatenation when there is no element-wise op),
    /// after `in_dim`.
    pub operand: Shape,
    /// After pooling: what the operator reads.
    pub pooled: Shape,
    pub output: Shape,
}

impl LayerPlan {
    /// Products the accelerator evaluates, including those against zero
    /// padding and against the zeros `ConvTranspose2d` inserts (spec §2.4).
    pub fn macs(&self, layer: &Layer) -> u64 {
        let reduction = match layer.op {
            Op::None => 0,
            Op::Conv1d { kernel, .. } => layer.in_channels * kernel,
            Op::Conv2d { kernel, depthwise, .. } => (if depthwise { 1 } else { layer.in_channels }) * kernel * kernel,
            Op::ConvTranspose2d { .. } => layer.in_channels * 9,
            Op::Linear { .. } => self.pooled.len(),
        };
        (self.output.len() as u64) * (reduction as u64)
    }
}

pub(crate) fn plan(net: &Network) -> Result<Vec<LayerPlan>, SimError> {
    if net.layers.is_empty() {
        return Err(SimError::NoLayers);
    }
    check_dims(net.device, net.input).map_err(|r| SimError::Layer {
        layer: 0,
        reason: format!("network input: {r}"),
    })?;
    check_weight_kinds(net)?;
    let mut plans: Vec<LayerPlan> = Vec::with_capacity(net.layers.len());
    for (index, layer) in net.layers.iter().enumerate() {
        let p = plan_layer(net, &plans, index, layer).map_err(|reason| layer_error(index, reason))?;
        plans.push(p);
    }
    Ok(plans)
}

/// spec §3.8: CTL bit 30 switches every 1-bit layer of the network to ±1.
fn check_weight_kinds(net: &Network) -> Result<(), SimError> {
    let mut one_bit = None;
    let mut binary = None;
    for (i, layer) in net.layers.iter().enumerate() {
        if layer.op == Op::None {
            continue;
        }
        match layer.weight_bits {
            WeightBits::One => one_bit = one_bit.or(Some(i)),
            WeightBits::Binary => {
                if net.device == Device::Max78000 {
                    return Err(layer_error(i, "binary weights need a MAX78002"));
                }
                binary = binary.or(Some(i));
            }
            _ => {}
        }
    }
    if let (Some(one), Some(bin)) = (one_bit, binary) {
        return Err(layer_error(
            one.max(bin),
            format!("binary weights (layer {bin}) and 1-bit weights (layer {one}) cannot share a network"),
        ));
    }
    Ok(())
}

fn plan_layer(net: &Network, plans: &[LayerPlan], index: usize, layer: &Layer) -> Result<LayerPlan, String> {
    let sources = resolve_sources(net, index, layer)?;
    let source_shape = |s: &Source| match s {
        Source::Input => net.input,
        Source::Layer(j) => plans[*j].output,
    };
    let mut operand = match layer.eltwise {
        Some(_) => {
            if !(2..=MAX_OPERANDS).contains(&sources.len()) {
                return Err(format!(
                    "an element-wise layer needs 2..={MAX_OPERANDS} operands, found {}",
                    sources.len()
                ));
            }
            let first = source_shape(&sources[0]);
            if let Some(other) = sources.iter().map(source_shape).find(|s| *s != first) {
                return Err(format!(
                    "element-wise operands differ in shape: {first:?} and {other:?}"
                ));
            }
            first
        }
        None => {
            let first = source_shape(&sources[0]);
            let mut channels = 0;
            for s in sources.iter().map(source_shape) {
                if (s.height, s.width) != (first.height, first.width) {
                    return Err(format!("concatenated inputs differ in size: {first:?} and {s:?}"));
                }
                channels += s.channels;
            }
            Shape { channels, ..first }
        }
    };
    if let Some([rows, columns]) = layer.in_dim {
        if rows.checked_mul(columns) != Some(operand.pixels()) {
            return Err(format!(
                "in_dim {rows}×{columns} does not hold the {}×{} input",
                operand.height, operand.width
            ));
        }
        operand.height = rows;
        operand.width = columns;
    }
    if operand.channels != layer.in_channels {
        return Err(format!(
            "in_channels is {}, but the input has {} channels",
            layer.in_channels, operand.channels
        ));
    }
    for (name, c) in [("in_channels", layer.in_channels), ("out_channels", layer.out_channels)] {
        if !(1..=MAX_CHANNELS).contains(&c) {
            return Err(format!("{name} is {c}, the device allows 1..={MAX_CHANNELS}"));
        }
    }
    check_dims(net.device, operand).map_err(|r| format!("input: {r}"))?;
    if !layer.pool_first && layer.eltwise.is_some() && sources.len() != 2 {
        return Err(format!("pool_first: false allows 2 operands, found {}", sources.len()));
    }
    let pooled = match &layer.pool {
        Some(pool) => pool_shape(operand, pool)?,
        None => operand,
    };
    let output = operator_shape(net.device, layer, pooled)?;
    check_dims(net.device, output).map_err(|r| format!("output: {r}"))?;
    check_output(layer)?;
    Ok(LayerPlan {
        sources,
        operand,
        pooled,
        output,
    })
}

fn resolve_sources(net: &Network, index: usize, layer: &Layer) -> Result<Vec<Source>, String> {
    let sources = if layer.inputs.is_empty() {
        vec![if index == 0 {
            Source::Input
        } else {
            Source::Layer(index - 1)
        }]
    } else {
        layer.inputs.clone()
    };
    for s in &sources {
        if let Source::Layer(j) = *s {
            if j >= index {
                return Err(format!("reads layer {j}, which does not run before it"));
            }
            if net.layers[j].output_width == OutputWidth::ThirtyTwo {
                return Err(format!("reads layer {j}, whose output is 32-bit"));
            }
        }
    }
    Ok(sources)
}

fn pool_shape(input: Shape, pool: &Pool) -> Result<Shape, String> {
    let [ph, pw] = pool.size;
    if !(1..=MAX_POOL).contains(&ph) || !(1..=MAX_POOL).contains(&pw) {
        return Err(format!("pool size {ph}×{pw}; each side must be 1..={MAX_POOL}"));
    }
    if !(1..=MAX_POOL).contains(&pool.stride) {
        return Err(format!("pool stride {}; must be 1..={MAX_POOL}", pool.stride));
    }
    if ph > input.height || pw > input.width {
        return Err(format!(
            "pool {ph}×{pw} is larger than the {}×{} input",
            input.height, input.width
        ));
    }
    Ok(Shape {
        channels: input.channels,
        height: (input.height - ph) / pool.stride + 1,
        width: (input.width - pw) / pool.stride + 1,
    })
}

fn operator_shape(device: Device, layer: &Layer, x: Shape) -> Result<Shape, String> {
    if layer.eltwise.is_some() && !matches!(layer.op, Op::None | Op::Conv2d { .. }) {
        return Err("element-wise operations fuse only into conv2d or passthrough layers".into());
    }
    let out = layer.out_channels;
    let check_pad = |kernel: usize, pad: usize| {
        if pad > 2 || pad >= kernel {
            Err(format!(
                "pad {pad} with kernel {kernel}; pad must be 0..=2 and below the kernel size"
            ))
        } else {
            Ok(())
        }
    };
    let spatial = |len: usize, pad: usize, kernel: usize| (len + 2 * pad + 1).checked_sub(kernel).filter(|&n| n > 0);
    let too_small = || format!("the {}×{} input is smaller than the kernel", x.height, x.width);
    match layer.op {
        Op::None => {
            if out != x.channels {
                return Err(format!(
                    "a passthrough layer keeps its {} channels, not {out}",
                    x.channels
                ));
            }
            Ok(x)
        }
        Op::Conv1d { kernel, pad } => {
            if !(1..=9).contains(&kernel) {
                return Err(format!("conv1d kernel {kernel}; must be 1..=9"));
            }
            check_pad(kernel, pad)?;
            if device == Device::Max78002 && pad > 0 && x.channels > 64 {
                return Err("the MAX78002 has no padded conv1d with more than 64 input channels".into());
            }
            if x.width != 1 {
                return Err(format!(
                    "conv1d needs 1-D data (width 1), found {}×{}",
                    x.height, x.width
                ));
            }
            let len = spatial(x.height, pad, kernel).ok_or_else(too_small)?;
            Ok(Shape::one_d(out, len))
        }
        Op::Conv2d { kernel, pad, depthwise } => {
            if kernel != 1 && kernel != 3 {
                return Err(format!("conv2d kernel {kernel}×{kernel}; must be 1×1 or 3×3"));
            }
            check_pad(kernel, pad)?;
            if depthwise {
                if device == Device::Max78000 {
                    return Err("depthwise conv2d needs a MAX78002".into());
                }
                if x.channels != out {
                    return Err(format!(
                        "depthwise conv2d maps {} channels to {out}; they must be equal",
                        x.channels
                    ));
                }
            }
            let h = spatial(x.height, pad, kernel).ok_or_else(too_small)?;
            let w = spatial(x.width, pad, kernel).ok_or_else(too_small)?;
            Ok(Shape::new(out, h, w))
        }
        Op::ConvTranspose2d { pad } => {
            if pad > 2 {
                return Err(format!("convtranspose2d pad {pad}; must be 0..=2"));
            }
            // spec §2.4: H_out = 2·(H−1) − 2·pad + 2 + 1 + 1.
            let grow = |len: usize| (2 * len + 2).checked_sub(2 * pad).filter(|&n| n > 0);
            let h = grow(x.height).ok_or_else(too_small)?;
            let w = grow(x.width).ok_or_else(too_small)?;
            Ok(Shape::new(out, h, w))
        }
        Op::Linear { flatten } => {
            if flatten {
                if layer.pool.is_some() {
                    return Err("flatten cannot be combined with pooling".into());
                }
                if x.pixels() > MAX_FLATTEN_PIXELS {
                    return Err(format!(
                        "flatten of {}×{} pixels; at most {MAX_FLATTEN_PIXELS} per channel",
                        x.height, x.width
                    ));
                }
                if x.len() > MAX_FLATTEN_FEATURES {
                    return Err(format!(
                        "flatten gives {} features; at most {MAX_FLATTEN_FEATURES}",
                        x.len()
                    ));
                }
            } else if x.pixels() != 1 {
                return Err(format!(
                    "linear without flatten needs 1×1 data, found {}×{}",
                    x.height, x.width
                ));
            }
            Ok(Shape::new(out, 1, 1))
        }
    }
}

fn check_output(layer: &Layer) -> Result<(), String> {
    if layer.op == Op::None {
        if layer.activation != Activation::None {
            return Err("a passthrough layer has no activation".into());
        }
        if layer.output_shift != 0 {
            return Err(format!(
                "a passthrough layer has no output_shift, found {}",
                layer.output_shift
            ));
        }
        if layer.output_width == OutputWidth::ThirtyTwo {
            return Err("a passthrough layer has no 32-bit output".into());
        }
        return Ok(());
    }
    match layer.output_width {
        OutputWidth::ThirtyTwo if layer.activation != Activation::None => {
            Err("a 32-bit output takes no activation".into())
        }
        OutputWidth::ThirtyTwo => Ok(()),
        OutputWidth::Eight => {
            let s = total_shift(layer);
            if (-15..=15).contains(&s) {
                Ok(())
            } else {
                let b = layer.weight_bits.bits();
                Err(format!(
                    "output_shift {} with {b}-bit weights gives a total shift of {s}; allowed {}..={}",
                    layer.output_shift,
                    -15 - (8 - b),
                    15 - (8 - b)
                ))
            }
        }
    }
}

/// spec §2.11: `S = output_shift + 8 − b`.
pub(crate) fn total_shift(layer: &Layer) -> i32 {
    layer.output_shift.saturating_add(8 - layer.weight_bits.bits())
}

/// The row/column limits of spec §1 and its frame limit.
fn check_dims(device: Device, s: Shape) -> Result<(), String> {
    let max = match device {
        Device::Max78000 => 1024,
        Device::Max78002 => 2048,
    };
    if s.channels == 0 || s.height == 0 || s.width == 0 {
        return Err(format!("empty shape {s:?}"));
    }
    if s.height > max || s.width > max {
        return Err(format!(
            "{}×{} pixels; this device allows at most {max} rows and columns",
            s.height, s.width
        ));
    }
    let passes = s.channels.div_ceil(64);
    if s.pixels() * passes >= FRAME_LIMIT {
        return Err(format!(
            "{} pixels × {passes} passes reaches the frame limit of 2^21",
            s.pixels()
        ));
    }
    Ok(())
}

/// The weight count a layer's operator needs, in PyTorch's layout.
pub(crate) fn weight_len(layer: &Layer, plan: &LayerPlan) -> usize {
    let (inp, out) = (layer.in_channels, layer.out_channels);
    match layer.op {
        Op::None => 0,
        Op::Conv1d { kernel, .. } => out * inp * kernel,
        Op::Conv2d {
            kernel,
            depthwise: true,
            ..
        } => out * kernel * kernel,
        Op::Conv2d { kernel, .. } => out * inp * kernel * kernel,
        Op::ConvTranspose2d { .. } => inp * out * 9,
        Op::Linear { .. } => out * plan.pooled.len(),
    }
}

pub(crate) fn check_weights(net: &Network, plans: &[LayerPlan], weights: &[LayerWeights]) -> Result<(), SimError> {
    if weights.len() != net.layers.len() {
        return Err(SimError::WeightCount {
            layers: net.layers.len(),
            weights: weights.len(),
        });
    }
    for (index, ((layer, plan), w)) in net.layers.iter().zip(plans).zip(weights).enumerate() {
        let fail = |reason: String| layer_error(index, reason);
        let expected = weight_len(layer, plan);
        if w.weight.len() != expected {
            return Err(fail(format!(
                "{} weights given, the operator needs {expected}",
                w.weight.len()
            )));
        }
        if let Some((at, v)) = w
            .weight
            .iter()
            .enumerate()
            .find(|(_, v)| !layer.weight_bits.admits(**v))
        {
            return Err(fail(format!(
                "weight {at} is {v}, outside the range of {:?} weights",
                layer.weight_bits
            )));
        }
        if let Some(bias) = &w.bias {
            if layer.op == Op::None {
                return Err(fail("a passthrough layer has no bias".into()));
            }
            if bias.len() != layer.out_channels {
                return Err(fail(format!(
                    "{} bias values for {} output channels",
                    bias.len(),
                    layer.out_channels
                )));
            }
            // spec §2.7/§10.10: the izer rejects any fused element-wise op with a bias.
            if net.device == Device::Max78002 && layer.eltwise.is_some() {
                return Err(fail(
                    "the MAX78002 cannot fuse an element-wise operation with a biased convolution".into(),
                ));
            }
        }
    }
    Ok(())
}
