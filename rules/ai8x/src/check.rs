//! The constraint checker: every rule of spec/max78002.md §2 and §5 (the
//! §2.16 checklist), with exact resource use. A rejected network is a
//! result, not an error: the report lists every violation found.

use serde::{Deserialize, Serialize};

use crate::alloc::{AllocError, Allocation, LayerMaps, place};
use crate::bias_memory::BiasPlacement;
use crate::data_memory::{DataMemory, Passes, input_bytes, network_input_footprint, output_bytes, output_footprint};
use crate::device::{
    CHANNELS_PER_PASS, COLUMN_BYTES, Device, FRAME_LIMIT, MAX_CHANNELS, MAX_CONV1D_KERNEL, MAX_FLATTEN_FEATURES,
    MAX_FLATTEN_PIXELS, MAX_LINEAR_FEATURES, MAX_OPERANDS, MAX_PAD, MAX_PASSES, MAX_POOL, PROCESSORS_PER_QUADRANT,
    SHIFT_RANGE,
};
use crate::kernel_memory::KernelPlacement;
use crate::layer::{At, Findings, HwLayer, Operator, Shape, Source, resolve};
use crate::network::{Activation, DataFormat, Dims, Layer, Network, Op, OutputWidth, PoolKind, WeightBits};
use crate::violation::{Rule, Violation};
use crate::weights::Weights;

/// The outcome of checking a network against a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub device: Device,
    /// No violations.
    pub passed: bool,
    pub violations: Vec<Violation>,
    pub warnings: Vec<String>,
    /// The network as placed, when resolution and placement succeeded
    /// (also for networks rejected by other rules).
    pub allocation: Option<Allocation>,
    pub resources: Option<Resources>,
}

/// Exact resource use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Hardware layers, including hidden avg-pool-reset layers (§2.7).
    pub layers: usize,
    pub per_layer: Vec<LayerResources>,
    /// Kernel-memory columns (72-bit words) in use per processor.
    pub kernel_columns_per_processor: Vec<u32>,
    /// Allocated kernel columns × 9 bytes over all processors.
    pub kernel_bytes_allocated: u64,
    pub bias_bytes_per_quadrant: Vec<u32>,
    /// §5.7: `Σ ⌈n_weights·b/8⌉`.
    pub weight_bytes: u64,
    /// §5.7: biases that are kept (all-zero biases are dropped).
    pub bias_bytes: u64,
    /// The izer's `TOTAL` bytes (what Kenning reads as the model size).
    pub total_bytes: u64,
    pub parameters: u64,
    pub macs: u64,
    pub used_quadrants: Vec<u8>,
}

/// Resource use of one layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerResources {
    pub index: usize,
    pub op: String,
    pub input: Shape,
    pub output: Shape,
    /// Enabled input processors (per pass).
    pub processors: u32,
    pub output_processors: u32,
    pub in_passes: u32,
    pub out_passes: u32,
    pub kernel: Option<KernelPlacement>,
    pub bias: Option<BiasPlacement>,
    pub in_offset: u32,
    pub out_offset: u32,
    /// Bytes used per input / output data-memory instance.
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub weight_bytes: u64,
    pub bias_bytes: u64,
    pub macs: u64,
}

impl Resources {
    pub fn of(allocation: &Allocation, hidden_layers: usize) -> Resources {
        let per_layer: Vec<LayerResources> = allocation
            .layers
            .iter()
            .map(|a| {
                let l = &a.layer;
                let weight_bytes = (l.weight_count() * u64::from(l.weight_bits.bits())).div_ceil(8);
                LayerResources {
                    index: l.index,
                    op: l.op_name().to_owned(),
                    input: l.input,
                    output: l.output,
                    processors: a.maps.processors.count_ones(),
                    output_processors: a.maps.output_processors.count_ones(),
                    in_passes: a.in_passes.count,
                    out_passes: a.out_passes.count,
                    kernel: a.kernel,
                    bias: a.bias,
                    in_offset: a.maps.in_offset,
                    out_offset: a.maps.out_offset,
                    in_bytes: a.in_bytes,
                    out_bytes: a.out_bytes,
                    weight_bytes,
                    bias_bytes: if l.bias { u64::from(l.out_channels) } else { 0 },
                    macs: l.macs(),
                }
            })
            .collect();
        let weight_bytes = per_layer.iter().map(|l| l.weight_bytes).sum();
        let bias_bytes = per_layer.iter().map(|l| l.bias_bytes).sum();
        let parameters = allocation
            .layers
            .iter()
            .map(|a| {
                a.layer.weight_count()
                    + if a.layer.bias {
                        u64::from(a.layer.out_channels)
                    } else {
                        0
                    }
            })
            .sum();
        Resources {
            layers: allocation.layers.len() + hidden_layers,
            macs: per_layer.iter().map(|l| l.macs).sum(),
            per_layer,
            kernel_bytes_allocated: allocation
                .kernel_columns_per_processor
                .iter()
                .map(|c| u64::from(*c) * u64::from(COLUMN_BYTES))
                .sum(),
            kernel_columns_per_processor: allocation.kernel_columns_per_processor.clone(),
            bias_bytes_per_quadrant: allocation.bias_bytes_per_quadrant.to_vec(),
            weight_bytes,
            bias_bytes,
            total_bytes: weight_bytes + bias_bytes,
            parameters,
            used_quadrants: allocation.used_quadrants.clone(),
        }
    }
}

/// Checks a network file with its weights for a device. `input` is the
/// network input's shape (CHW; 1-D data as `C × L × 1`), which the YAML
/// does not carry.
pub fn check(device: Device, network: &Network, weights: &Weights, input: Shape) -> CheckReport {
    let mut findings = Findings::default();
    for key in &network.unsupported {
        findings.violations.push(Violation::network(
            Rule::Unsupported,
            format!("global key `{key}`"),
            "present",
            "not modelled by kflow",
        ));
    }
    if network.layers.is_empty() {
        findings
            .violations
            .push(Violation::network(Rule::LayerCount, "layers", 0, "at least 1"));
    }
    let resolved = resolve(network, weights, input, &mut findings);
    let (allocation, resources) = match resolved {
        Some(layers) => {
            let hidden = hidden_layers(device, &layers);
            check_network(device, &layers, hidden, &mut findings);
            for (doc, hw) in network.layers.iter().zip(&layers) {
                check_layer(device, doc, hw, weights, &mut findings);
            }
            let maps = file_maps(network, &layers, &mut findings);
            check_master_quadrant(&maps, &mut findings);
            check_maps(&layers, &maps, &mut findings);
            check_data_memory(device, &layers, &maps, &mut findings);
            crate::generator_limits::check_generator_limits(device, &layers, &maps, &mut findings);
            match place(device, &layers, &maps) {
                Ok(allocation) => {
                    let resources = Resources::of(&allocation, hidden);
                    (Some(allocation), Some(resources))
                }
                Err(e) => {
                    findings.violations.push(alloc_violation(&e, &layers));
                    (None, None)
                }
            }
        }
        None => (None, None),
    };
    CheckReport {
        device,
        passed: findings.violations.is_empty(),
        violations: findings.violations,
        warnings: findings.warnings,
        allocation,
        resources,
    }
}

/// Converts a placement failure into the violation the checker reports.
pub fn alloc_violation(error: &AllocError, layers: &[HwLayer]) -> Violation {
    let at = |i: usize| At {
        index: i,
        op: layers.get(i).map_or("layer", HwLayer::op_name),
    };
    match error {
        AllocError::KernelMemory {
            layer,
            processor,
            used,
            needed,
            limit,
        } => at(*layer).violation(
            Rule::KernelMemory,
            format!("kernel memory of processor {processor} (72-bit columns)"),
            format!("{needed} needed + {used} used by earlier layers"),
            limit,
        ),
        AllocError::BiasMemory {
            layer,
            bytes,
            used,
            limit,
            candidates,
        } => at(*layer).violation(
            Rule::BiasMemory,
            format!("bias bytes in the emptiest of quadrants {candidates:?} ({used} used)"),
            used + bytes,
            limit,
        ),
        AllocError::DataMemory {
            layer,
            what,
            bytes,
            limit,
        } => at(*layer).violation(Rule::DataMemory, format!("{what} bytes per instance"), bytes, limit),
        AllocError::Unsupported { layer, what } => {
            at(*layer).violation(Rule::Unsupported, what.clone(), "requested", "not modelled by kflow")
        }
    }
}

/// MAX78002: an avg-pool layer right after an element-wise layer gets a
/// hidden "avg-pool reset" layer (§2.7).
fn hidden_layers(device: Device, layers: &[HwLayer]) -> usize {
    if device != Device::Max78002 {
        return 0;
    }
    layers
        .windows(2)
        .filter(|w| w[0].eltwise.is_some() && w[1].pool.is_some_and(|p| p.kind == PoolKind::Avg))
        .count()
}

fn check_network(device: Device, layers: &[HwLayer], hidden: usize, findings: &mut Findings) {
    let total = layers.len() + hidden;
    if total > device.max_layers() {
        let subject = if hidden > 0 {
            format!("hardware layers ({} + {hidden} hidden avg-pool resets)", layers.len())
        } else {
            "hardware layers".to_owned()
        };
        findings.violations.push(Violation::network(
            Rule::LayerCount,
            subject,
            total,
            device.max_layers(),
        ));
    }
    let binary = layers.iter().find(|l| l.weight_bits == WeightBits::Binary);
    let one_bit = layers.iter().find(|l| l.weight_bits == WeightBits::One);
    if let (Some(b), Some(o)) = (binary, one_bit) {
        findings.violations.push(Violation::network(
            Rule::WeightBits,
            format!("binary layer {} and 1-bit layer {} in one network", b.index, o.index),
            "both",
            "one or the other (one global CTL bit)",
        ));
    }
}

/// §5.1: quadrant 0 starts the network, so the izer needs it among the
/// quadrants it configures: those with a layer's input processors or the
/// last layer's output processors (ai8x-synthesis
/// izer/backend/max7800x.py:997-1001).
fn check_master_quadrant(maps: &[LayerMaps], findings: &mut Findings) {
    let last_output = maps.last().map_or(0, |m| m.output_processors);
    if last_output & 0xffff == 0 && !maps.iter().any(|m| m.processors & 0xffff != 0) {
        findings.violations.push(Violation::network(
            Rule::ProcessorMap,
            "quadrant 0",
            "unused",
            "used by some layer or by the last layer's output",
        ));
    }
}

fn kernel_text(kernel: [u32; 2], operator: Operator) -> String {
    match operator {
        Operator::Conv1d => kernel[0].to_string(),
        _ => format!("{}x{}", kernel[0], kernel[1]),
    }
}

fn check_layer(device: Device, doc: &Layer, hw: &HwLayer, weights: &Weights, findings: &mut Findings) {
    let at = At {
        index: hw.index,
        op: doc.op.unwrap_or(Op::Conv2d).as_str(),
    };
    let v = &mut findings.violations;
    let w = &mut findings.warnings;
    let conv = matches!(
        hw.operator,
        Operator::Conv1d | Operator::Conv2d | Operator::ConvTranspose2d
    );

    for key in &doc.unsupported {
        v.push(at.violation(
            Rule::Unsupported,
            format!("`{key}`"),
            "set",
            "not modelled by kflow (§2.14, §2.15)",
        ));
    }
    if hw.index > 0 && doc.data_format.is_some() {
        v.push(at.violation(Rule::DataFormat, "`data_format`", "set", "layer 0 only"));
    }
    if let Some(p) = doc.output_pad {
        let expected = u32::from(hw.operator == Operator::ConvTranspose2d);
        if p != expected {
            v.push(at.violation(Rule::Padding, "`output_pad`", p, expected));
        }
    }

    // C2, C3: channels and passes.
    for (what, channels) in [
        ("input channels", hw.in_channels()),
        ("output channels", hw.out_channels),
    ] {
        if channels > MAX_CHANNELS {
            v.push(at.violation(Rule::Channels, what, channels, MAX_CHANNELS));
        }
        let passes = channels.div_ceil(CHANNELS_PER_PASS);
        if passes > MAX_PASSES {
            let subject = if what == "input channels" {
                "input passes"
            } else {
                "output passes"
            };
            v.push(at.violation(Rule::Passes, subject, passes, MAX_PASSES));
        }
    }

    // C4: rows and columns, and the frame counter.
    let max = device.max_rows_cols();
    for (what, shape) in [("input", hw.input), ("output", hw.output)] {
        for (dim, extent) in [("rows", shape.height), ("columns", shape.width)] {
            if extent > max {
                v.push(at.violation(Rule::Dimensions, format!("{what} {dim}"), extent, max));
            } else if extent == max {
                w.push(format!(
                    "layer {}: {what} {dim} of {extent}: the README's limit is {}",
                    hw.index,
                    max - 1
                ));
            }
        }
    }
    let frame = hw.input.pixels() * u64::from(hw.in_channels().div_ceil(CHANNELS_PER_PASS));
    if frame >= FRAME_LIMIT {
        v.push(at.violation(
            Rule::Dimensions,
            "input rows × columns × passes",
            frame,
            format!("below {FRAME_LIMIT}"),
        ));
    }

    // C5: kernel sizes, as the weights have them, and as the file says.
    let [kh, kw] = hw.kernel;
    let kernel_ok = match hw.operator {
        Operator::Conv2d => (kh, kw) == (1, 1) || (kh, kw) == (3, 3),
        Operator::Conv1d => (1..=MAX_CONV1D_KERNEL).contains(&kh),
        Operator::ConvTranspose2d => (kh, kw) == (3, 3),
        Operator::Linear | Operator::None => true,
    };
    if !kernel_ok {
        let limit = match hw.operator {
            Operator::Conv2d => "1x1 or 3x3",
            Operator::Conv1d => "1..9",
            _ => "3x3",
        };
        v.push(at.violation(
            Rule::KernelSize,
            "kernel size",
            kernel_text(hw.kernel, hw.operator),
            limit,
        ));
    }
    if let Some(written) = doc.kernel_size {
        let as_written = match (written, hw.operator) {
            (Dims::One(k), Operator::Conv1d) => [k, 1],
            (Dims::One(k), _) => [k, k],
            (Dims::Two(r, c), _) => [r, c],
        };
        if hw.operator == Operator::Linear {
            v.push(at.violation(Rule::Linear, "`kernel_size` key", written, "absent on linear layers"));
        } else if conv && as_written != hw.kernel {
            v.push(at.violation(
                Rule::KernelSize,
                "`kernel_size`",
                written,
                format!("{} as in `{}.weight`", kernel_text(hw.kernel, hw.operator), hw.index),
            ));
        }
    } else if hw.operator == Operator::Conv1d && kh != MAX_CONV1D_KERNEL {
        w.push(format!(
            "layer {}: no `kernel_size`; the izer assumes 9 for conv1d",
            hw.index
        ));
    }

    // C6: padding.
    if conv {
        let shortest = if hw.operator == Operator::Conv1d {
            kh
        } else {
            kh.min(kw)
        };
        let default_note = if doc.pad.is_none() {
            " (the default when `pad` is absent)"
        } else {
            ""
        };
        if hw.pad > MAX_PAD {
            v.push(at.violation(Rule::Padding, "pad", format!("{}{default_note}", hw.pad), "0..2"));
        } else if hw.operator != Operator::ConvTranspose2d && hw.pad >= shortest {
            v.push(at.violation(
                Rule::Padding,
                "pad",
                format!("{}{default_note}", hw.pad),
                format!("below the kernel size {shortest}"),
            ));
        }
        if device == Device::Max78002
            && hw.operator == Operator::Conv1d
            && hw.pad > 0
            && hw.in_channels() > CHANNELS_PER_PASS
        {
            v.push(at.violation(
                Rule::Padding,
                format!("pad with {} input channels", hw.in_channels()),
                hw.pad,
                "0 when more than 64",
            ));
        }
    } else if let Some(pad) = doc.pad.filter(|p| *p > 0) {
        if hw.operator == Operator::None {
            v.push(at.violation(Rule::Padding, "pad", pad, "0 on passthrough layers"));
        } else {
            w.push(format!(
                "layer {}: `pad: {pad}` on a linear layer is ignored (forced to 0)",
                hw.index
            ));
        }
    }

    // C7: stride.
    if let Some(stride) = doc.stride
        && matches!(hw.operator, Operator::Conv1d | Operator::Conv2d)
        && stride != Dims::One(1)
        && stride != Dims::Two(1, 1)
    {
        v.push(at.violation(Rule::Stride, "stride", stride, "1 (use pool_stride)"));
    }

    // C8: dilation (§2.3: conv1d kernels up to 9 taps once zero-stuffed run
    // natively; longer spans are remapped onto conv2d hardware, which kflow
    // does not model).
    match hw.operator {
        Operator::Conv1d if hw.dilation > device.max_conv1d_dilation() => {
            v.push(at.violation(Rule::Dilation, "dilation", hw.dilation, device.max_conv1d_dilation()));
        }
        Operator::Conv1d if (kh.saturating_sub(1)) * hw.dilation >= MAX_CONV1D_KERNEL => {
            v.push(at.violation(
                Rule::Unsupported,
                "dilated kernel span (k−1)·d",
                (kh - 1) * hw.dilation,
                "below 9 (kflow does not remap onto conv2d)",
            ));
        }
        Operator::Conv1d => {}
        _ if hw.dilation != 1 => v.push(at.violation(Rule::Dilation, "dilation", hw.dilation, "1 except conv1d")),
        _ => {}
    }

    // C9: groups.
    if hw.groups != 1 {
        let depthwise_ok = device.supports_depthwise() && hw.operator == Operator::Conv2d && hw.is_depthwise();
        if !depthwise_ok {
            let limit = if device.supports_depthwise() {
                format!("1, or {} = input = output channels on conv2d", hw.in_channels())
            } else {
                "1".to_owned()
            };
            v.push(at.violation(Rule::Groups, "groups", hw.groups, limit));
        }
        if doc.bias_group.is_some() {
            v.push(at.violation(Rule::Groups, "`bias_group` on a depthwise layer", "set", "absent"));
        }
    }

    // C10: pooling.
    if let Some(pool) = hw.pool {
        for (what, [r, c]) in [("pool size", pool.size), ("pool stride", pool.stride)] {
            if r.max(c) > MAX_POOL {
                v.push(at.violation(Rule::Pooling, what, format!("{r}x{c}"), "1..16 per dimension"));
            }
        }
        let one_d = hw.input.width == 1;
        if !one_d && pool.stride[0] != pool.stride[1] {
            v.push(at.violation(
                Rule::Pooling,
                "pool stride",
                format!("{}x{}", pool.stride[0], pool.stride[1]),
                "equal in both dimensions",
            ));
        }
        if hw.flatten {
            v.push(at.violation(Rule::Pooling, "pooling on a flatten layer", "set", "a separate layer"));
        }
        if device == Device::Max78000
            && hw.operator == Operator::None
            && hw.in_channels() > CHANNELS_PER_PASS
            && hw.pooled.pixels() != 1
        {
            v.push(at.violation(
                Rule::Pooling,
                format!("pooling-only output with {} channels", hw.in_channels()),
                format!("{}x{}", hw.pooled.height, hw.pooled.width),
                "1x1 above 64 channels",
            ));
        }
    }
    if let Some(d) = doc.pool_dilation {
        let largest = match d {
            Dims::One(n) => n,
            Dims::Two(r, c) => r.max(c),
        };
        if largest > device.max_pool_dilation() {
            v.push(at.violation(Rule::Pooling, "pool dilation", d, device.max_pool_dilation()));
        } else if largest > 1 {
            v.push(at.violation(
                Rule::Unsupported,
                "pool dilation",
                d,
                "1 (the izer's dilated-pool size is unverified)",
            ));
        }
    }

    // C11: flatten.
    if hw.flatten {
        if hw.operator != Operator::Linear {
            v.push(at.violation(
                Rule::Flatten,
                "`flatten` on this operation",
                "set",
                "linear layers only",
            ));
        }
        if hw.is_depthwise() {
            v.push(at.violation(Rule::Flatten, "`flatten` on a depthwise layer", "set", "absent"));
        }
        let pixels = hw.pooled.pixels();
        if pixels > MAX_FLATTEN_PIXELS {
            v.push(at.violation(
                Rule::Flatten,
                "flattened pixels per channel (rows × columns)",
                pixels,
                MAX_FLATTEN_PIXELS,
            ));
        }
        let features = pixels * u64::from(hw.in_channels());
        if features > MAX_FLATTEN_FEATURES {
            v.push(at.violation(
                Rule::Flatten,
                "flattened features (channels × rows × columns)",
                features,
                MAX_FLATTEN_FEATURES,
            ));
        }
    }

    // C12: linear.
    if hw.operator == Operator::Linear {
        if !hw.flatten && hw.in_channels() > MAX_LINEAR_FEATURES {
            v.push(at.violation(Rule::Linear, "input features", hw.in_channels(), MAX_LINEAR_FEATURES));
        }
        if hw.out_channels > MAX_LINEAR_FEATURES {
            v.push(at.violation(Rule::Linear, "output features", hw.out_channels, MAX_LINEAR_FEATURES));
        }
    }

    // C13, C14: shift, activation, output width.
    if hw.operator == Operator::None {
        if hw.activation != Activation::None {
            v.push(at.violation(
                Rule::Activation,
                "activation on a passthrough layer",
                hw.activation.as_str(),
                "None",
            ));
        }
        if let Some(shift) = doc.output_shift.filter(|s| *s != 0) {
            v.push(at.violation(
                Rule::OutputShift,
                "`output_shift` on a passthrough layer",
                shift,
                "absent or 0",
            ));
        }
        if hw.output_width == OutputWidth::ThirtyTwo {
            v.push(at.violation(
                Rule::Activation,
                "32-bit output of a passthrough layer",
                32,
                "8 (32 needs an operator)",
            ));
        }
    } else {
        let implicit = 8 - hw.weight_bits.bits() as i32;
        let total = hw.output_shift + implicit;
        if total < SHIFT_RANGE.0 || total > SHIFT_RANGE.1 {
            v.push(at.violation(
                Rule::OutputShift,
                format!("output_shift ({} with {}-bit weights)", hw.output_shift, hw.weight_bits),
                hw.output_shift,
                format!("{}..{}", SHIFT_RANGE.0 - implicit, SHIFT_RANGE.1 - implicit),
            ));
        }
        if hw.output_width == OutputWidth::ThirtyTwo && hw.activation != Activation::None {
            v.push(at.violation(
                Rule::Activation,
                "activation with a 32-bit output",
                hw.activation.as_str(),
                "None",
            ));
        }
    }

    // C15: weight widths and values.
    if hw.weight_bits == WeightBits::Binary && !device.supports_binary_weights() {
        v.push(at.violation(Rule::WeightBits, "quantization", "binary", "1, 2, 4 or 8 on MAX78000"));
    }
    if let Some(stats) = weights
        .get(hw.index)
        .and_then(|w| w.stats)
        .filter(|_| hw.operator != Operator::None)
    {
        let (lo, hi) = hw.weight_bits.range();
        let out_of_range = i32::from(stats.min) < lo || i32::from(stats.max) > hi;
        if out_of_range || (hw.weight_bits == WeightBits::Binary && stats.zeros > 0) {
            let limit = if hw.weight_bits == WeightBits::Binary {
                "-1 or 1, no zeros".to_owned()
            } else {
                format!("{lo}..{hi} for {}-bit weights", hw.weight_bits)
            };
            let actual = format!(
                "{}..{}{}",
                stats.min,
                stats.max,
                if stats.zeros > 0 { " with zeros" } else { "" }
            );
            v.push(at.violation(
                Rule::WeightBits,
                format!("values of `{}.weight`", hw.index),
                actual,
                limit,
            ));
        }
    }

    // C16 (one layer): a layer keeps all its biases in one quadrant.
    if hw.bias && hw.out_channels > device.bias_bytes_per_quadrant() {
        v.push(at.violation(
            Rule::BiasMemory,
            "biased outputs",
            hw.out_channels,
            device.bias_bytes_per_quadrant(),
        ));
    }

    // C20: element-wise.
    if let Some(e) = hw.eltwise {
        if hw.operator == Operator::Conv1d {
            v.push(at.violation(
                Rule::Eltwise,
                format!("`{}` fused into conv1d", e.as_str()),
                "set",
                "a conv2d or separate layer",
            ));
        }
        if device == Device::Max78002 && hw.operator != Operator::None && hw.bias {
            v.push(at.violation(
                Rule::Eltwise,
                "element-wise op fused with a biased convolution",
                "bias present",
                "a separate layer or no bias",
            ));
        }
        if !(2..=MAX_OPERANDS).contains(&hw.operands) {
            v.push(at.violation(Rule::Eltwise, "operands", hw.operands, "2..16"));
        }
        if !hw.pool_first && hw.operands > 2 {
            v.push(at.violation(Rule::Eltwise, "operands with `pool_first: false`", hw.operands, 2));
        }
        let passes = hw.in_channels().div_ceil(CHANNELS_PER_PASS);
        if device == Device::Max78000
            && passes > 1
            && (hw.pool.is_some() || hw.operator != Operator::None)
            && (hw.operands, passes) != (2, 2)
        {
            v.push(at.violation(
                Rule::Eltwise,
                "multi-pass element-wise with pooling or a convolution",
                format!("{} operands × {passes} passes", hw.operands),
                "2 operands × 2 passes",
            ));
        }
    }
}

/// Processor maps and offsets as the file gives them, with the izer's
/// defaults for absent keys (§4.2).
fn file_maps(network: &Network, layers: &[HwLayer], findings: &mut Findings) -> Vec<LayerMaps> {
    let mut maps: Vec<LayerMaps> = Vec::with_capacity(layers.len());
    for (i, (doc, hw)) in network.layers.iter().zip(layers).enumerate() {
        let output_processors = doc
            .output_processors
            .or_else(|| network.layers.get(i + 1).map(|next| next.processors))
            .or(network.output_map)
            .unwrap_or_else(|| {
                let per_pass = Passes::for_channels(hw.out_channels).per_pass;
                if per_pass >= 64 {
                    u64::MAX
                } else {
                    (1u64 << per_pass) - 1
                }
            });
        let in_offset = doc.in_offset.unwrap_or_else(|| maps.last().map_or(0, |m| m.out_offset));
        let out_offset = doc.out_offset.unwrap_or_else(|| {
            findings
                .warnings
                .push(format!("layer {i}: no `out_offset`; the izer uses 0"));
            0
        });
        maps.push(LayerMaps {
            processors: doc.processors,
            output_processors,
            in_offset,
            out_offset,
        });
    }
    maps
}

fn check_maps(layers: &[HwLayer], maps: &[LayerMaps], findings: &mut Findings) {
    for (hw, m) in layers.iter().zip(maps) {
        let at = At {
            index: hw.index,
            op: hw.op_name(),
        };
        let v = &mut findings.violations;
        let in_passes = Passes::for_channels(hw.in_channels());
        let out_passes = Passes::for_channels(hw.out_channels);
        if m.processors.count_ones() != in_passes.per_pass {
            v.push(at.violation(
                Rule::ProcessorMap,
                format!(
                    "processors 0x{:016x} for {} input channels in {} pass(es)",
                    m.processors,
                    hw.in_channels(),
                    in_passes.count
                ),
                format!("{} bits", m.processors.count_ones()),
                format!("{} bits", in_passes.per_pass),
            ));
        }
        if m.output_processors.count_ones() != out_passes.per_pass {
            v.push(at.violation(
                Rule::ProcessorMap,
                format!(
                    "output_processors 0x{:016x} for {} output channels in {} pass(es)",
                    m.output_processors, hw.out_channels, out_passes.count
                ),
                format!("{} bits", m.output_processors.count_ones()),
                format!("{} bits", out_passes.per_pass),
            ));
        }
        if hw.index == 0 && hw.data_format == DataFormat::CHW {
            let shared = (0..16).find(|i| (m.processors >> (4 * i) & 0xf).count_ones() > 1);
            if let Some(i) = shared {
                v.push(at.violation(
                    Rule::ProcessorMap,
                    format!("CHW input processors in data-memory instance {i}"),
                    (m.processors >> (4 * i) & 0xf).count_ones(),
                    1,
                ));
            }
        }
        if hw.operator == Operator::None {
            // §2.6: a passthrough layer writes each channel where it read
            // it; the izer accepts any map whose part in each quadrant is
            // contiguous (packed), wherever it starts.
            let packed = (0..4).all(|q| {
                let map = m.processors >> (q * PROCESSORS_PER_QUADRANT) & 0xffff;
                map == 0 || (map >> map.trailing_zeros()).trailing_ones() == map.count_ones()
            });
            if !packed {
                v.push(at.violation(
                    Rule::ProcessorMap,
                    "passthrough processors",
                    format!("0x{:016x}", m.processors),
                    "contiguous within each quadrant",
                ));
            } else if m.output_processors != m.processors {
                v.push(at.violation(
                    Rule::ProcessorMap,
                    "passthrough output_processors",
                    format!("0x{:016x}", m.output_processors),
                    format!("0x{:016x} (the input map)", m.processors),
                ));
            }
        }
        if hw.is_depthwise() {
            for (what, map) in [("processors", m.processors), ("output_processors", m.output_processors)] {
                let spans = (map.trailing_zeros() / 16) != ((63 - map.leading_zeros()) / 16);
                if spans && (map.trailing_zeros() % 4 != 0 || map.count_ones() % 4 != 0) {
                    v.push(at.violation(
                        Rule::ProcessorMap,
                        format!("depthwise {what} across quadrants"),
                        format!("0x{map:016x}"),
                        "4-aligned",
                    ));
                }
            }
        }
        check_sources(layers, maps, hw, m, &at, v);
    }
}

/// A byte written to lane ℓ of instance i is read by processor 4i + ℓ
/// (§5.1), so producers must write where the reader's processors read.
fn check_sources(layers: &[HwLayer], maps: &[LayerMaps], hw: &HwLayer, m: &LayerMaps, at: &At, v: &mut Vec<Violation>) {
    let producers: Vec<usize> = hw
        .sources
        .iter()
        .filter_map(|s| match s {
            Source::Layer(j) => Some(*j),
            Source::Input => None,
        })
        .collect();
    let concat = hw.sources.len() > 1 && hw.eltwise.is_none();
    if !concat {
        for &j in &producers {
            if maps[j].output_processors != m.processors {
                v.push(at.violation(
                    Rule::ProcessorMap,
                    format!("processors against layer {j}'s output_processors"),
                    format!("0x{:016x}", m.processors),
                    format!("0x{:016x}", maps[j].output_processors),
                ));
            }
            if hw.eltwise.is_none() && layers[j].write_gap > 0 {
                v.push(at.violation(
                    Rule::Unsupported,
                    format!(
                        "reading layer {j}'s output written with write_gap {}",
                        layers[j].write_gap
                    ),
                    "set",
                    "read_gap, which kflow does not model",
                ));
            }
            if hw.eltwise.is_some() && layers[j].write_gap + 1 != hw.operands {
                v.push(at.violation(
                    Rule::Eltwise,
                    format!("write_gap of operand layer {j}"),
                    layers[j].write_gap,
                    hw.operands - 1,
                ));
            }
        }
        return;
    }
    let mut union = 0u64;
    let mut previous_top: Option<u32> = None;
    for (k, s) in hw.sources.iter().enumerate() {
        let Source::Layer(j) = s else {
            continue;
        };
        let map = maps[*j].output_processors;
        if k + 1 < hw.sources.len() && !layers[*j].out_channels.is_multiple_of(4) {
            v.push(at.violation(
                Rule::ProcessorMap,
                format!("channels of concatenated layer {j} (not last)"),
                layers[*j].out_channels,
                "a multiple of 4",
            ));
        }
        if previous_top.is_some_and(|top| map.trailing_zeros() != top + 1) {
            v.push(at.violation(
                Rule::ProcessorMap,
                format!("output_processors of concatenated layer {j}"),
                format!("0x{map:016x}"),
                "adjacent to and above the previous source's",
            ));
        }
        previous_top = Some(63 - map.leading_zeros());
        union |= map;
    }
    if !hw.sources.contains(&Source::Input) && union != m.processors {
        v.push(at.violation(
            Rule::ProcessorMap,
            "processors against the concatenated sources' output_processors",
            format!("0x{:016x}", m.processors),
            format!("0x{union:016x}"),
        ));
    }
}

/// C18: offsets aligned, every input and output inside its instance, and
/// no layer overwriting data a later layer still reads (§5.4).
fn check_data_memory(device: Device, layers: &[HwLayer], maps: &[LayerMaps], findings: &mut Findings) {
    let size = device.data_instance_bytes();
    let mut memory = DataMemory::new(device);
    let mut readers: Vec<usize> = vec![0; layers.len()];
    let mut input_last = 0;
    for l in layers {
        for s in &l.sources {
            match s {
                Source::Layer(j) => readers[*j] = readers[*j].max(l.index),
                Source::Input => input_last = input_last.max(l.index),
            }
        }
    }
    let v = &mut findings.violations;
    for (hw, m) in layers.iter().zip(maps) {
        let at = At {
            index: hw.index,
            op: hw.op_name(),
        };
        let in_passes = Passes::for_channels(hw.in_channels());
        let out_passes = Passes::for_channels(hw.out_channels);
        for (what, offset) in [("in_offset", m.in_offset), ("out_offset", m.out_offset)] {
            if offset % 4 != 0 {
                v.push(at.violation(Rule::DataMemory, what, format!("0x{offset:x}"), "a multiple of 4"));
            }
        }
        let in_end = u64::from(m.in_offset) + input_bytes(hw, in_passes);
        if in_end > u64::from(size) {
            v.push(at.violation(
                Rule::DataMemory,
                format!(
                    "input end (in_offset 0x{:x} + {} bytes)",
                    m.in_offset,
                    input_bytes(hw, in_passes)
                ),
                in_end,
                size,
            ));
        }
        let out_end = u64::from(m.out_offset) + output_bytes(hw, out_passes);
        if out_end > u64::from(size) {
            v.push(at.violation(
                Rule::DataMemory,
                format!(
                    "output end (out_offset 0x{:x} + {} bytes)",
                    m.out_offset,
                    output_bytes(hw, out_passes)
                ),
                out_end,
                size,
            ));
        }
        if hw.index == 0 {
            let input = network_input_footprint(hw, m.processors, in_passes, m.in_offset);
            memory.store(Source::Input, input_last, &input);
        }
        let footprint = output_footprint(hw, m.output_processors, out_passes, m.out_offset);
        if out_end <= u64::from(size)
            && let Some(hit) = memory.overwrite(hw.index, &footprint)
        {
            let owner = match hit.producer {
                Source::Input => "the network input".to_owned(),
                Source::Layer(j) => format!("layer {j}'s output"),
            };
            v.push(at.violation(
                Rule::DataMemory,
                format!(
                    "output at 0x{:x} in instance {} overwrites {owner}, still needed",
                    hit.offset, hit.instance
                ),
                "overlap",
                "no overlap with live data",
            ));
        }
        let until = if readers[hw.index] == 0 {
            layers.len()
        } else {
            readers[hw.index]
        };
        memory.store(Source::Layer(hw.index), until, &footprint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_networks::cats_weights;
    use crate::weights::LayerWeights;
    use crate::yaml::parse_network;

    /// The spec's §4.5 example (MAX78002).
    const CATS: &str = "
arch: kflow_cats_cnn1d
dataset: cats_w8
layers:
  - name: conv0
    data_format: HWC
    processors: 0x000000000001ffff
    output_processors: 0x00000000ffffffff
    in_offset: 0x0000
    out_offset: 0xa000
    op: conv1d
    kernel_size: 3
    pad: 1
    activate: ReLU
    quantization: 8
    output_shift: -1
  - name: conv1
    processors: 0x00000000ffffffff
    output_processors: 0x000000000000ffff
    in_offset: 0xa000
    out_offset: 0x0000
    op: conv1d
    max_pool: 2
    pool_stride: 2
    kernel_size: 3
    pad: 1
    activate: ReLU
    quantization: 8
    output_shift: -2
  - name: fc0
    processors: 0x000000000000ffff
    output_processors: 0x000000000000ffff
    in_offset: 0x0000
    out_offset: 0xa000
    op: mlp
    flatten: true
    pad: 0
    activate: ReLU
    quantization: 8
    output_shift: 0
  - name: fc1
    processors: 0x000000000000ffff
    output_processors: 0x0000000000000003
    in_offset: 0xa000
    out_offset: 0x0000
    op: mlp
    pad: 0
    activate: None
    quantization: 8
    output_shift: 0
    output_width: 8
    output: true
";

    fn check_cats(device: Device) -> CheckReport {
        check(
            device,
            &parse_network(CATS).unwrap(),
            &cats_weights(),
            Shape::one_d(17, 8),
        )
    }

    #[test]
    fn spec_example_passes_with_the_izers_allocation() {
        let report = check_cats(Device::Max78002);
        assert!(report.passed, "{:#?}", report.violations);
        let r = report.resources.unwrap();
        assert_eq!(r.layers, 4);
        let col = |f: fn(&LayerResources) -> u32| r.per_layer.iter().map(f).collect::<Vec<_>>();
        assert_eq!(col(|l| l.processors), [17, 32, 16, 16]);
        assert_eq!(col(|l| l.output_processors), [32, 16, 16, 2]);
        assert_eq!(col(|l| l.in_passes), [1, 1, 1, 1]);
        assert_eq!(col(|l| l.kernel.unwrap().offset), [0, 12, 20, 28]);
        assert_eq!(col(|l| l.kernel.unwrap().columns), [11, 6, 8, 1]);
        assert_eq!(col(|l| l.kernel.unwrap().count), [32, 16, 64, 2]);
        let bias: Vec<(u8, u32)> = r
            .per_layer
            .iter()
            .map(|l| l.bias.map(|b| (b.quadrant, b.offset)).unwrap())
            .collect();
        assert_eq!(bias, [(0, 0), (1, 0), (1, 16), (0, 32)]);
        assert_eq!(r.bias_bytes_per_quadrant, [34, 32, 0, 0]);
        assert_eq!(r.used_quadrants, [0, 1]);
        assert_eq!((r.weight_bytes, r.bias_bytes, r.total_bytes), (4224, 66, 4290));
        assert_eq!(r.macs, 20_256);
        // Data per instance: 8 input pixels × 1 pass × 4 bytes, and so on.
        let bytes: Vec<(u64, u64)> = r.per_layer.iter().map(|l| (l.in_bytes, l.out_bytes)).collect();
        assert_eq!(bytes, [(32, 32), (32, 16), (16, 4), (4, 4)]);
        // Processor 0 holds all four layers, 16 the first two, 17..31 conv1.
        assert_eq!(r.kernel_columns_per_processor[0], 11 + 6 + 8 + 1);
        assert_eq!(r.kernel_columns_per_processor[16], 11 + 6);
        assert_eq!(r.kernel_columns_per_processor[17], 6);
        assert_eq!(r.kernel_columns_per_processor[32], 0);
        assert_eq!(r.kernel_bytes_allocated, 9 * (26 * 16 + 17 + 6 * 15));
    }

    #[test]
    fn spec_example_offsets_overflow_nothing_on_max78000_either() {
        // 0xa000 lies beyond the MAX78000's 32 KiB instances.
        let report = check_cats(Device::Max78000);
        assert!(!report.passed);
        assert!(
            report.violations.iter().all(|v| v.rule == Rule::DataMemory),
            "{:#?}",
            report.violations
        );
        assert_eq!(
            report.violations[0].to_string(),
            "layer 0 (conv1d): output end (out_offset 0xa000 + 32 bytes): 40992, limit 32768 (C18 data-memory)"
        );
    }

    /// A chain of conv2d layers on `channels × 8 × 8` input, each given as
    /// (input channels, output channels, kernel, pad).
    fn conv_chain(layers: &[(u32, u32, u32, u32)], extra: &str) -> (Network, Weights) {
        let mut text = String::from("arch: t\ndataset: t\nlayers:\n");
        let mut weights = Weights::default();
        for (i, (cin, cout, k, pad)) in layers.iter().enumerate() {
            let map = |c: u32| if c >= 64 { u64::MAX } else { (1u64 << c) - 1 };
            let out_offset = if i % 2 == 0 { 0x2000 } else { 0 };
            text += &format!(
                "  - processors: 0x{:x}\n    output_processors: 0x{:x}\n    out_offset: 0x{out_offset:x}\n    op: conv2d\n    kernel_size: {k}x{k}\n    pad: {pad}\n    activate: ReLU\n    quantization: 8\n    output_shift: 0\n",
                map(Passes::for_channels(*cin).per_pass),
                map(Passes::for_channels(*cout).per_pass),
            );
            weights.insert(
                i,
                LayerWeights::shape(
                    &[*cout as usize, *cin as usize, *k as usize, *k as usize],
                    Some(*cout as usize),
                ),
            );
        }
        text += extra;
        (parse_network(&text).unwrap(), weights)
    }

    fn violations(device: Device, network: &Network, weights: &Weights, input: Shape) -> Vec<String> {
        check(device, network, weights, input)
            .violations
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// A conv2d on processors 0-3 writing to `map`, then a pooling-only
    /// layer on `map`.
    fn conv_then_pool(map: u64) -> (Network, Weights) {
        let extra = format!(
            "  - processors: 0x{map:x}\n    output_processors: 0x{map:x}\n    in_offset: 0x2000\n    out_offset: 0x0\n    op: passthrough\n    max_pool: 2\n    pool_stride: 2\n"
        );
        let (mut net, w) = conv_chain(&[(4, 8, 3, 1)], &extra);
        net.layers[0].output_processors = Some(map);
        (net, w)
    }

    #[test]
    fn quadrant_0_used_only_by_the_final_output_map_is_accepted() {
        let (mut net, w) = conv_chain(&[(4, 8, 3, 1)], "");
        net.layers[0].processors = 0xf << 16;
        let got = violations(Device::Max78002, &net, &w, Shape::new(4, 8, 8));
        assert!(got.is_empty(), "{got:?}");
        net.layers[0].output_processors = Some(0xff << 16);
        let got = violations(Device::Max78002, &net, &w, Shape::new(4, 8, 8));
        assert!(got.iter().any(|v| v.contains("quadrant 0")), "{got:?}");
    }

    #[test]
    fn a_passthrough_packed_above_processor_0_is_accepted() {
        let (net, w) = conv_then_pool(0xff00);
        let got = violations(Device::Max78002, &net, &w, Shape::new(4, 8, 8));
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn a_passthrough_map_with_holes_is_rejected() {
        let (net, w) = conv_then_pool(0x5555);
        let got = violations(Device::Max78002, &net, &w, Shape::new(4, 8, 8));
        assert!(
            got.iter()
                .any(|v| v.contains("passthrough processors") && v.contains("contiguous within each quadrant")),
            "{got:?}"
        );
    }

    #[test]
    fn flatten_with_4_bit_weights_is_rejected_as_unsupported() {
        let extra = "  - processors: 0xff\n    output_processors: 0xf\n    in_offset: 0x2000\n    out_offset: 0x0\n    op: mlp\n    flatten: true\n    quantization: 4\n    output_shift: 0\n";
        let (net, mut w) = conv_chain(&[(4, 8, 3, 1)], extra);
        w.insert(1, LayerWeights::shape(&[4, 512], None));
        let got = violations(Device::Max78002, &net, &w, Shape::new(4, 8, 8));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains("flatten weights: 4") && got[0].contains("kflow"),
            "{got:?}"
        );
    }

    #[test]
    fn a_5x5_conv2d_kernel_is_rejected() {
        let (net, w) = conv_chain(&[(4, 8, 3, 1), (8, 8, 5, 2)], "");
        let got = violations(Device::Max78002, &net, &w, Shape::new(4, 8, 8));
        assert_eq!(
            got,
            ["layer 1 (conv2d): kernel size: 5x5, limit 1x1 or 3x3 (C5 kernel-size)"]
        );
    }

    #[test]
    fn pad_3_is_rejected() {
        let (net, w) = conv_chain(&[(4, 8, 3, 3)], "");
        let got = violations(Device::Max78000, &net, &w, Shape::new(4, 8, 8));
        assert_eq!(got, ["layer 0 (conv2d): pad: 3, limit 0..2 (C6 padding)"]);
    }

    #[test]
    fn pad_defaulting_to_1_on_a_1x1_kernel_is_rejected() {
        let (mut net, w) = conv_chain(&[(4, 8, 1, 0)], "");
        net.layers[0].pad = None;
        let got = violations(Device::Max78002, &net, &w, Shape::new(4, 8, 8));
        assert_eq!(
            got,
            ["layer 0 (conv2d): pad: 1 (the default when `pad` is absent), limit below the kernel size 1 (C6 padding)"]
        );
    }

    #[test]
    fn a_processor_map_that_misses_the_channel_count_is_rejected() {
        let (mut net, w) = conv_chain(&[(3, 8, 3, 1)], "");
        net.layers[0].processors = 0xf;
        let got = violations(Device::Max78002, &net, &w, Shape::new(3, 8, 8));
        assert_eq!(
            got,
            [
                "layer 0 (conv2d): processors 0x000000000000000f for 3 input channels in 1 pass(es): 4 bits, limit 3 bits (C19 processor-map)"
            ]
        );
    }

    #[test]
    fn kernel_memory_overflow_is_rejected_with_the_processor() {
        // 64 → 1024 channels of 3×3: kc = 64 × 16 passes = 1024 columns.
        let (net, mut w) = conv_chain(&[(64, 1024, 3, 1)], "");
        w.insert(0, LayerWeights::shape(&[1024, 64, 3, 3], None));
        let report = check(Device::Max78000, &net, &w, Shape::new(64, 4, 4));
        let got: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "layer 0 (conv2d): kernel memory of processor 0 (72-bit columns): 1024 needed + 0 used by earlier layers, limit 768 (C17 kernel-memory)"
            ]
        );
        // The MAX78002's 4096 columns hold it.
        assert!(check(Device::Max78002, &net, &w, Shape::new(64, 4, 4)).passed);
    }

    #[test]
    fn too_many_layers_are_rejected_on_max78000_only() {
        let spec = vec![(4, 4, 1, 0); 33];
        let (net, w) = conv_chain(&spec, "");
        let got = violations(Device::Max78000, &net, &w, Shape::new(4, 8, 8));
        assert_eq!(got, ["network: hardware layers: 33, limit 32 (C1 layer-count)"]);
        assert!(check(Device::Max78002, &net, &w, Shape::new(4, 8, 8)).passed);
    }

    #[test]
    fn an_output_shift_out_of_range_is_rejected() {
        let (mut net, w) = conv_chain(&[(4, 8, 3, 1), (8, 8, 3, 1)], "");
        net.layers[1].output_shift = Some(16);
        let got = violations(Device::Max78002, &net, &w, Shape::new(4, 8, 8));
        assert_eq!(
            got,
            ["layer 1 (conv2d): output_shift (16 with 8-bit weights): 16, limit -15..15 (C13 output-shift)"]
        );
        net.layers[1].output_shift = Some(-20);
        net.layers[1].quantization = Some(WeightBits::Four);
        let got = violations(Device::Max78002, &net, &w, Shape::new(4, 8, 8));
        assert_eq!(
            got,
            ["layer 1 (conv2d): output_shift (-20 with 4-bit weights): -20, limit -19..11 (C13 output-shift)"]
        );
    }

    #[test]
    fn flatten_of_too_many_pixels_is_rejected() {
        let text = "arch: t\ndataset: t\nlayers:\n  - processors: 0x1\n    output_processors: 0x3ff\n    out_offset: 0x2000\n    op: mlp\n    flatten: true\n    pad: 0\n    quantization: 8\n    output_shift: 0\n";
        let net = parse_network(text).unwrap();
        let mut w = Weights::default();
        w.insert(0, LayerWeights::shape(&[10, 1024], None));
        let got = violations(Device::Max78002, &net, &w, Shape::new(1, 32, 32));
        assert_eq!(
            got,
            ["layer 0 (mlp): flattened pixels per channel (rows × columns): 1024, limit 256 (C11 flatten)"]
        );
    }

    #[test]
    fn weights_outside_their_bit_width_are_rejected() {
        let (mut net, mut w) = conv_chain(&[(4, 8, 3, 1)], "");
        net.layers[0].quantization = Some(WeightBits::Two);
        w.insert(0, LayerWeights::values(&[8, 4, 3, 3], &[-2, 1, 3], None));
        let got = violations(Device::Max78002, &net, &w, Shape::new(4, 8, 8));
        assert_eq!(
            got,
            ["layer 0 (conv2d): values of `0.weight`: -2..3, limit -2..1 for 2-bit weights (C15 weight-bits)"]
        );
    }

    #[test]
    fn overwriting_a_live_input_is_rejected() {
        let (mut net, w) = conv_chain(&[(4, 8, 3, 1)], "");
        net.layers[0].out_offset = Some(0);
        let got = violations(Device::Max78002, &net, &w, Shape::new(4, 8, 8));
        assert_eq!(
            got,
            [
                "layer 0 (conv2d): output at 0x0 in instance 0 overwrites the network input, still needed: overlap, limit no overlap with live data (C18 data-memory)"
            ]
        );
    }

    #[test]
    fn linear_kernel_size_and_missing_weights_are_reported() {
        let text = "arch: t\ndataset: t\nlayers:\n  - processors: 0xf\n    op: fc\n    kernel_size: 1\n    out_offset: 0x100\n    output_shift: 0\n    quantization: 8\n";
        let net = parse_network(text).unwrap();
        let mut w = Weights::default();
        w.insert(0, LayerWeights::shape(&[2, 4], None));
        let got = violations(Device::Max78002, &net, &w, Shape::new(4, 1, 1));
        assert_eq!(
            got,
            ["layer 0 (mlp): `kernel_size` key: 1, limit absent on linear layers (C12 linear)"]
        );
        let got = violations(Device::Max78002, &net, &Weights::default(), Shape::new(4, 1, 1));
        assert_eq!(
            got,
            ["layer 0 (mlp): weights: no tensor `0.weight`, limit one per operator layer (shape shape)"]
        );
    }
}
