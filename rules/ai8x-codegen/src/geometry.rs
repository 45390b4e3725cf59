//! Per-layer quantities every later stage needs (passes, pooled and output
//! sizes, kernel count), derived once from a program whose consistency is
//! checked here. A check covers what would make the generated code wrong;
//! the full constraint checklist (§2.16) is `kflow-ai8x`'s.

use crate::device::{Device, PROCESSORS_PER_QUADRANT, QUADRANTS};
use crate::error::CodegenError;
use crate::program::{DataFormat, Layer, Operator, OutputWidth, Program};

/// Channels handled per pass, and the number of passes (§5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Passes {
    /// `in_expand` / `out_expand`.
    pub count: u32,
    /// `thresh_in` / `thresh_out`: enabled processors per pass.
    pub per_pass: u32,
}

impl Passes {
    /// §5.1: `expand = ⌈C/64⌉`, `thresh = ⌈C/expand⌉`, rounded up to a
    /// multiple of 4 when `C > 64`.
    pub fn for_channels(channels: u32) -> Passes {
        let count = channels.div_ceil(64).max(1);
        let mut per_pass = channels.div_ceil(count);
        if channels > 64 {
            per_pass = (per_pass.div_ceil(4) * 4).min(64);
        }
        Passes { count, per_pass }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerGeometry {
    pub in_passes: Passes,
    pub out_passes: Passes,
    /// Pool rows × columns, 1×1 without pooling.
    pub pool: [u32; 2],
    pub pool_stride: u32,
    /// Rows × columns after pooling.
    pub pooled: [u32; 2],
    /// Rows × columns of the output.
    pub output: [u32; 2],
    /// Bytes of one kernel in weight memory (`ksize` of §5.5).
    pub taps: u32,
    /// The kernel count `kc` of §5.5.
    pub kernel_count: u32,
    /// Empty kernel slots before the first output: `ffs(output map) mod 4`
    /// (§5.5 `start_col`).
    pub start_col: u32,
}

/// A program with its derived per-layer quantities.
pub struct Checked<'a> {
    pub program: &'a Program,
    pub layers: Vec<LayerGeometry>,
    /// Quadrants with an enabled input processor in any layer, or with an
    /// output processor of the last layer, ascending: the izer initialises,
    /// configures and starts these (§5.1 "used quadrants"; ai8x-synthesis
    /// izer/backend/max7800x.py:997-1001 adds the final output map).
    pub used_quadrants: Vec<u32>,
}

pub fn check(program: &Program) -> Result<Checked<'_>, CodegenError> {
    if program.layers.is_empty() {
        return Err(CodegenError::NoLayers);
    }
    let limit = program.device.max_layers();
    if program.layers.len() > limit {
        return Err(CodegenError::TooManyLayers {
            count: program.layers.len(),
            limit,
            device: program.device,
        });
    }
    let layers = program
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| layer_geometry(program.device, i, layer, program.input_format))
        .collect::<Result<Vec<_>, _>>()?;
    let last_output = program.layers.last().map_or(0, |l| l.output_processors);
    let used_quadrants: Vec<u32> = (0..QUADRANTS)
        .filter(|q| {
            quadrant_map(last_output, *q) != 0 || program.layers.iter().any(|l| quadrant_map(l.processors, *q) != 0)
        })
        .collect();
    let at = |i: usize, problem: String| CodegenError::Invalid {
        layer: i,
        name: program.layers[i].name.clone(),
        problem,
    };
    if used_quadrants.first() != Some(&0) {
        return Err(at(0, "no layer uses quadrant 0, the master quadrant (§5.1)".into()));
    }
    // §5.2 gives the 8-bit output words of a gapped layer; the 32-bit
    // layout is verified only without a gap.
    let last = program.layers.len() - 1;
    if program.layers[last].write_gap != 0 && program.layers[last].output_width == OutputWidth::Bits32 {
        return Err(at(last, "a 32-bit output layer cannot have a write gap".into()));
    }
    for (i, layer) in program.layers.iter().enumerate() {
        if let Some(bias) = &layer.bias
            && !used_quadrants.contains(&bias.quadrant)
        {
            return Err(at(
                i,
                format!(
                    "bias quadrant {} is not used by the network (used: {used_quadrants:?}), so it is never configured (§5.6)",
                    bias.quadrant
                ),
            ));
        }
    }
    Ok(Checked {
        program,
        layers,
        used_quadrants,
    })
}

/// The 16 processor bits of `quadrant` in a 64-bit map.
pub fn quadrant_map(map: u64, quadrant: u32) -> u32 {
    ((map >> (quadrant * PROCESSORS_PER_QUADRANT)) & 0xffff) as u32
}

/// Why the generator refuses a flatten layer with weights narrower than 8
/// bits.
const SUB_8_BIT_FLATTEN: &str =
    "neither the spec (§5.5) nor the izer reference gives the packing of such a layer; use 8-bit weights";

/// §2.6 pooling-only layer (or a plain copy), §2.9, §2.11, §2.12, §5.1:
/// what a passthrough layer must look like for the izer's passthrough
/// registers to describe it.
fn check_passthrough(layer: &Layer) -> Result<(), String> {
    let problems = [
        (
            layer.kernel != [1, 1],
            format!("kernel {:?} (needs [1, 1])", layer.kernel),
        ),
        (layer.pad != 0, format!("pad {} (§2.6: no pad)", layer.pad)),
        (layer.flatten, "flatten (§2.5)".into()),
        (
            layer.activation != crate::program::Activation::None,
            format!("activation {:?} (§2.9)", layer.activation),
        ),
        (
            layer.output_shift != 0,
            format!("output_shift {} (§2.11)", layer.output_shift),
        ),
        (
            layer.output_width != OutputWidth::Bits8,
            "a 32-bit output (§2.12: only for layers with an operator)".into(),
        ),
        (
            layer.weight_bits != 8,
            format!(
                "weight_bits {} (must be 8: POST width code 0, no implicit shift)",
                layer.weight_bits
            ),
        ),
        (!layer.weights.is_empty(), format!("{} weights", layer.weights.len())),
        (layer.bias.is_some(), "a bias".into()),
        (
            layer.out_channels != layer.input.channels,
            format!(
                "{} output channels for {} inputs",
                layer.out_channels, layer.input.channels
            ),
        ),
    ];
    if let Some((_, problem)) = problems.iter().find(|(bad, _)| *bad) {
        return Err(format!("a passthrough (pooling-only) layer cannot have {problem}"));
    }
    // §2.6, §5.1: the output map equals the input map, each quadrant's
    // part contiguous (packed), wherever in the quadrant it starts, as the
    // izer accepts.
    let packed = (0..QUADRANTS).all(|q| {
        let map = quadrant_map(layer.processors, q);
        map == 0 || (map >> map.trailing_zeros()).trailing_ones() == map.count_ones()
    });
    if layer.output_processors != layer.processors || !packed {
        return Err(format!(
            "a passthrough layer's output map must equal its packed input map (§2.6, §5.1): processors {:#018x}, output_processors {:#018x}",
            layer.processors, layer.output_processors
        ));
    }
    Ok(())
}

/// What a depthwise layer must look like for the izer's broadcast mode as
/// the reference shows it: one output per input channel, one pass, 8-bit
/// weights, processors contiguous from a quadrant's first, the output map
/// 4-aligned, the bias laid out for broadcast.
fn check_depthwise(layer: &Layer, out_passes: Passes) -> Result<(), String> {
    let first = layer.processors.trailing_zeros();
    let problems = [
        (
            layer.operator != Operator::Conv2d,
            "an operator other than conv2d".to_owned(),
        ),
        (
            layer.out_channels != layer.input.channels,
            format!("{} outputs for {} inputs", layer.out_channels, layer.input.channels),
        ),
        (out_passes.count > 1, "more than one pass".to_owned()),
        (layer.weight_bits != 8, format!("{}-bit weights", layer.weight_bits)),
        (
            !first.is_multiple_of(16)
                || (layer.processors >> first).count_ones() != (layer.processors >> first).trailing_ones(),
            format!(
                "processors {:#018x} (contiguous from a quadrant's first)",
                layer.processors
            ),
        ),
        (
            !layer.output_processors.trailing_zeros().is_multiple_of(4),
            format!("output map {:#018x}", layer.output_processors),
        ),
        (
            layer.bias.as_ref().is_some_and(|b| b.broadcast.is_none()),
            "a bias without per-quadrant offsets".to_owned(),
        ),
        (layer.eltwise.is_some(), "an element-wise stage".to_owned()),
    ];
    match problems.iter().find(|(bad, _)| *bad) {
        Some((_, problem)) => Err(format!("a depthwise layer cannot have {problem}")),
        None => Ok(()),
    }
}

fn layer_geometry(
    device: Device,
    index: usize,
    layer: &Layer,
    format: DataFormat,
) -> Result<LayerGeometry, CodegenError> {
    let invalid = |problem: String| CodegenError::Invalid {
        layer: index,
        name: layer.name.clone(),
        problem,
    };
    let unsupported = |what: String, why: &'static str| CodegenError::Unsupported {
        layer: index,
        name: layer.name.clone(),
        what,
        why,
    };
    if let Some(e) = layer.eltwise
        && !(2..=16).contains(&e.operands)
    {
        return Err(invalid(format!("{} element-wise operands (§2.7: 2 to 16)", e.operands)));
    }
    let passthrough = layer.operator == Operator::Passthrough;
    if passthrough {
        check_passthrough(layer).map_err(invalid)?;
    } else if layer.binary && (layer.weight_bits != 1 || layer.weights.iter().any(|w| w.abs() != 1)) {
        return Err(invalid("binary weights are ±1 with weight_bits 1 (§2.10)".into()));
    } else if ![1, 2, 4, 8].contains(&layer.weight_bits) {
        return Err(invalid(format!(
            "{}-bit weights (§2.10: 1, 2, 4 or 8)",
            layer.weight_bits
        )));
    } else if layer.weight_bits != 8 && layer.flatten {
        return Err(unsupported(
            format!("flatten with {}-bit weights", layer.weight_bits),
            SUB_8_BIT_FLATTEN,
        ));
    }
    let (cin, h, w) = (layer.input.channels, layer.input.height, layer.input.width);
    if cin == 0 || h == 0 || w == 0 || layer.out_channels == 0 {
        return Err(invalid(format!(
            "input {cin}×{h}×{w} with {} outputs has an empty dimension",
            layer.out_channels
        )));
    }
    if h > device.max_rows_cols() || w > device.max_rows_cols() {
        return Err(invalid(format!(
            "input {h}×{w} exceeds {} rows or columns (§2.16 C4)",
            device.max_rows_cols()
        )));
    }
    if cin > 1024 || layer.out_channels > 1024 {
        return Err(invalid("more than 1024 input or output channels (§2.16 C2)".into()));
    }
    let [kh, kw] = layer.kernel;
    let kernel_ok = match layer.operator {
        Operator::Conv2d => matches!((kh, kw), (1, 1) | (3, 3)),
        Operator::ConvTranspose2d => (kh, kw) == (3, 3),
        Operator::Conv1d => (1..=9).contains(&kh) && kw == 1 && w == 1,
        Operator::Linear | Operator::Passthrough => (kh, kw) == (1, 1),
    };
    if !kernel_ok {
        return Err(invalid(format!(
            "a {kh}×{kw} kernel on {h}×{w} data is not a {:?} kernel (§2.2, §2.3, §2.5)",
            layer.operator
        )));
    }
    if layer.pad > 2 || (layer.pad > 0 && layer.pad >= kh.max(kw)) {
        return Err(invalid(format!("pad {} with a {kh}×{kw} kernel (§2.16 C6)", layer.pad)));
    }
    let (pool, pool_stride) = match layer.pool {
        Some(p) => (p.size, p.stride),
        None => ([1, 1], 1),
    };
    if pool.contains(&0)
        || pool_stride == 0
        || pool[0] > h
        || pool[1] > w
        || pool.iter().any(|p| *p > 16)
        || pool_stride > 16
    {
        return Err(invalid(format!(
            "pool {}×{} stride {pool_stride} on {h}×{w} data (§2.6)",
            pool[0], pool[1]
        )));
    }
    // §2.6: H_p = ⌊(H − P)/s⌋ + 1.
    let pooled = [(h - pool[0]) / pool_stride + 1, (w - pool[1]) / pool_stride + 1];
    let pad_w = if matches!(layer.operator, Operator::Conv2d | Operator::ConvTranspose2d) {
        layer.pad
    } else {
        0
    };
    let output = match layer.operator {
        Operator::Linear => {
            if layer.pad != 0 {
                return Err(invalid("a linear layer has pad 0 (§2.5)".into()));
            }
            if layer.flatten && layer.pool.is_some() {
                return Err(invalid("flatten cannot be combined with pooling (§2.5)".into()));
            }
            if layer.flatten && pooled[0] * pooled[1] > 256 {
                return Err(invalid(format!(
                    "flatten of {}×{} pixels exceeds 256 (§2.5)",
                    pooled[0], pooled[1]
                )));
            }
            if !layer.flatten && pooled != [1, 1] {
                return Err(invalid(format!(
                    "a linear layer without flatten needs 1×1 data, not {}×{} (§2.5)",
                    pooled[0], pooled[1]
                )));
            }
            [1, 1]
        }
        // §2.6: a pooling-only layer writes the pooled input (checked above:
        // no flatten, pad 0).
        Operator::Passthrough => pooled,
        // The input upsampled to 2H × 2W and convolved with pad 2 − pad.
        Operator::ConvTranspose2d => {
            if layer.pool.is_some() || layer.flatten || layer.depthwise || layer.eltwise.is_some() {
                return Err(unsupported(
                    "a transposed convolution with pooling, flatten, groups or an element-wise stage".into(),
                    "the izer reference has no such layer",
                ));
            }
            let out = [2 * h + 2 - 2 * layer.pad, 2 * w + 2 - 2 * layer.pad];
            if out.contains(&0) {
                return Err(invalid(format!(
                    "pad {} leaves no output of the {h}×{w} input",
                    layer.pad
                )));
            }
            out
        }
        // §2.2, §2.3: H_out = H_p + 2·pad − k + 1.
        Operator::Conv1d | Operator::Conv2d => {
            if layer.flatten {
                return Err(invalid("flatten is only for linear layers (§2.5)".into()));
            }
            let out_h = (pooled[0] + 2 * layer.pad).checked_sub(kh - 1);
            let out_w = (pooled[1] + 2 * pad_w).checked_sub(kw - 1);
            match (out_h, out_w) {
                (Some(oh), Some(ow)) if oh > 0 && ow > 0 => [oh, ow],
                _ => {
                    return Err(invalid(format!(
                        "a {kh}×{kw} kernel does not fit the pooled {}×{} input",
                        pooled[0], pooled[1]
                    )));
                }
            }
        }
    };
    // §2.11: S = output_shift + 8 − b must be in [−15, 15].
    if layer.output_width == OutputWidth::Bits8 && !(-15..=15).contains(&layer.output_shift) {
        return Err(invalid(format!(
            "output_shift {} is outside [−15, 15] for 8-bit weights (§2.11)",
            layer.output_shift
        )));
    }
    if layer.output_width == OutputWidth::Bits32 && layer.activation != crate::program::Activation::None {
        return Err(invalid("a 32-bit output has no activation (§2.12)".into()));
    }
    let in_passes = Passes::for_channels(cin);
    let out_passes = Passes::for_channels(layer.out_channels);
    if layer.processors.count_ones() != in_passes.per_pass {
        return Err(invalid(format!(
            "{cin} input channels in {} passes need {} processors, the map {:#018x} has {} (§5.1)",
            in_passes.count,
            in_passes.per_pass,
            layer.processors,
            layer.processors.count_ones()
        )));
    }
    if layer.output_processors.count_ones() != out_passes.per_pass {
        return Err(invalid(format!(
            "{} output channels in {} passes need {} processors, the map {:#018x} has {} (§5.1)",
            layer.out_channels,
            out_passes.count,
            out_passes.per_pass,
            layer.output_processors,
            layer.output_processors.count_ones()
        )));
    }
    let first_out = layer.output_processors.trailing_zeros();
    if (layer.output_processors >> first_out).count_ones() != (layer.output_processors >> first_out).trailing_ones() {
        return Err(unsupported(
            format!("output map {:#018x}", layer.output_processors),
            "output maps must be contiguous (spec §4.4, §5.5)",
        ));
    }
    // §5.5: an output map that starts inside a memory instance leaves
    // start_col empty kernel slots before the first output.
    let start_col = first_out % 4;
    if layer.depthwise {
        check_depthwise(layer, out_passes).map_err(invalid)?;
    }
    if start_col != 0 && out_passes.count > 1 {
        return Err(unsupported(
            format!(
                "output map {:#018x} in {} passes",
                layer.output_processors, out_passes.count
            ),
            "the izer reference has no multi-pass layer whose output map starts inside a memory instance",
        ));
    }
    if start_col != 0 && layer.flatten {
        return Err(unsupported(
            format!("flatten into output map {:#018x}", layer.output_processors),
            "neither the spec (§5.5) nor the izer reference gives the kernels of a flatten layer whose output map starts inside a memory instance",
        ));
    }
    if format == DataFormat::Chw && index == 0 && (0..16).any(|i| (layer.processors >> (4 * i) & 0xf).count_ones() > 1)
    {
        return Err(invalid(
            "CHW input with two processors in one memory instance (§2.13)".into(),
        ));
    }
    if layer.flatten && in_passes.count * in_passes.per_pass != cin {
        return Err(unsupported(
            format!("flatten of {cin} channels in {} passes", in_passes.count),
            "only passes that all hold the same number of channels have a known packing (the izer fails on the others)",
        ));
    }
    let taps = kh * kw;
    let features = if layer.flatten {
        cin * pooled[0] * pooled[1]
    } else if layer.depthwise {
        1
    } else {
        cin
    };
    // A passthrough layer has no weights (§2.6).
    let expected = if passthrough {
        0
    } else {
        layer.out_channels as usize * features as usize * taps as usize
    };
    if layer.weights.len() != expected {
        return Err(invalid(format!(
            "{} weights, expected {} × {features} × {taps} = {expected}",
            layer.weights.len(),
            layer.out_channels
        )));
    }
    if let Some(bias) = &layer.bias {
        if bias.values.len() != layer.out_channels as usize {
            return Err(invalid(format!(
                "{} bias values for {} outputs",
                bias.values.len(),
                layer.out_channels
            )));
        }
        if bias.quadrant >= QUADRANTS
            || u64::from(bias.offset) + u64::from(layer.out_channels) > u64::from(device.bias_bytes())
        {
            return Err(invalid(format!(
                "bias bytes {}..{} of quadrant {} exceed the {} bytes of a quadrant (§5.6)",
                bias.offset,
                u64::from(bias.offset) + u64::from(layer.out_channels),
                bias.quadrant,
                device.bias_bytes()
            )));
        }
    }
    // §5.4: input and output must fit one data-memory instance.
    let in_bytes = if index == 0 && format == DataFormat::Chw {
        (h * w).div_ceil(4) * 4
    } else {
        h * w * in_passes.count * 4
    };
    let word_bytes = if layer.output_width == OutputWidth::Bits32 {
        16
    } else {
        4
    };
    let out_bytes = output[0] * output[1] * out_passes.count * word_bytes;
    let limit = device.instance_bytes();
    for (what, offset, bytes) in [
        ("input", layer.in_offset, in_bytes),
        ("output", layer.out_offset, out_bytes),
    ] {
        if u64::from(offset) + u64::from(bytes) > u64::from(limit) {
            return Err(invalid(format!(
                "{what} of {bytes} bytes at offset {offset:#x} exceeds the {limit}-byte data-memory instance (§5.4)"
            )));
        }
    }
    if layer.kernel_offset >= device.kernel_columns(0) {
        return Err(invalid(format!(
            "kernel offset {} is beyond the {} columns of a processor (§1)",
            layer.kernel_offset,
            device.kernel_columns(0)
        )));
    }
    if !layer.kernel_offset.is_multiple_of(4) {
        return Err(invalid(format!(
            "kernel offset {} is not a multiple of 4 (§5.5)",
            layer.kernel_offset
        )));
    }
    if !layer.in_offset.is_multiple_of(4) || !layer.out_offset.is_multiple_of(4) {
        return Err(invalid("data offsets must be word-aligned (§4.2)".into()));
    }
    // §5.5: kc = span·out_expand·in_expand; the map is contiguous, so the
    // span is start_col + thresh_out. Flatten multiplies by H_p·W_p and
    // drops the outputs no channel uses.
    //
    // A passthrough layer uses no kernel memory; like a depthwise layer
    // (§5.5 "depthwise: kc = in_expand") each output channel comes from its
    // own input channel. Its registers do not use kc.
    // §5.5: a depthwise layer has kc = in_expand.
    let mut kernel_count = if passthrough || layer.depthwise {
        in_passes.count
    } else {
        (start_col + out_passes.per_pass) * out_passes.count * in_passes.count
    };
    if layer.flatten {
        let pixels = pooled[0] * pooled[1];
        kernel_count = kernel_count * pixels - (out_passes.count * out_passes.per_pass - layer.out_channels) * pixels;
    }
    Ok(LayerGeometry {
        in_passes,
        out_passes,
        pool,
        pool_stride,
        pooled,
        output,
        taps,
        kernel_count,
        start_col,
    })
}
