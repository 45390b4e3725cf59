//! From register values back to layer settings (spec/max78002.md §6.3),
//! from data-memory offsets to the layers' inputs (§5.2), and from kernel
//! and bias memory to integer weights (§5.5, §5.6).
//!
//! The decoder reads each field where the hardware reads it:
//!
//! - processors: ENA bits 0–15 of every quadrant; the output map: the first
//!   output instance of WPTR_BASE (bits 15+/13+) and the span of LCTL2
//!   (bits 12+/8+, in units of the weight width);
//! - data memory: RPTR_BASE (input offset ÷ 4), WPTR_BASE bits below the
//!   instance (output offset ÷ 4), LCTL2 bits 4–11 (write pointer skip:
//!   passes and write gap);
//! - the operator: POST bits 24–25 (passthrough), 28 (transposed), ONED
//!   bit 12 with bits 8–11 (conv1d and its kernel), bit 8 (1×1: linear or
//!   conv2d), otherwise conv2d with LCTL bits 18–21/22–25 (MAX78002) or
//!   3×3 (MAX78000); LCTL bit 29 depthwise; POST bit 27, an LCTL2 pass
//!   count beyond the input passes, or on one pixel a kernel count
//!   without the last output pass's empty slots: flatten;
//! - geometry: RCNT/CCNT (rows and columns of the stored input, padding in
//!   bits 13–15 on the MAX78002, 16+ on the MAX78000; rows times passes
//!   for an element-wise layer the MAX78000 emulates), PRCNT/PCCNT (pool
//!   size), STRIDE bits 0–3 (pool stride), LCTL bit 7 (pool larger than
//!   1×1) and 8 (max; clear, or a stride, without bit 7: a 1×1 pool);
//! - arithmetic: POST bits 13–17 (shift with sign), 22–23 (weight width),
//!   26 (abs); LCTL bits 9 (ReLU), 16 (32-bit output), 6 (CHW input);
//!   CTL bit 30 of `cnn_start` (binary weights);
//! - element-wise: ONED bits 13 (on), 14–15 (op), 16 (pool first), 17
//!   (with an operator), 18–21 (operands − 1);
//! - kernel memory: MCNT2 (MAX78002) or MCNT1 bits 16+ (MAX78000) with
//!   ONED bits 4–7 (the kernel's first column and slot), MCNT1 − MCNT2 the
//!   kernel count; bias: POST bit 12 and bits 0–11 of the quadrant that
//!   holds it (every quadrant a depthwise layer uses);
//! - the layer count: LCNT_MAX + 1.
//!
//! Rows on the MAX78002 are stored as `H − r_tail`, which does not fix
//! `H` when the pool stride exceeds 1; the row count is the pixels of the
//! producer's output divided by the decoded columns, as the hardware
//! simply reads what is there.
//!
//! A decoded network is then encoded again with `kflow-ai8x-codegen` and
//! must give back every register write and every kernel and bias byte
//! that the board received: what the decoder cannot express, or what
//! disagrees with itself (a flipped bit in an unused field, a weight
//! in an empty slot), is refused with the register or address that
//! differs.

use kflow_ai8x_codegen::{
    Activation, Bias, DataFormat, Device, Dims, Eltwise, EltwiseOp, Layer, LayerRegister as R, Operator, OutputWidth,
    Passes, Pool, PoolKind, Program, QUADRANTS,
};
use kflow_ai8x_sim as sim;

use crate::Refusal;
use crate::image::ModelImage;
use crate::memory::{AddressMap, Memories, Registers};

/// What one layer reads: per operand, the producers whose outputs it
/// concatenates.
type Operands = Vec<Vec<sim::Source>>;

/// A decoded network: the program the registers describe (with the
/// weights read from kernel memory) and the simulator's view of it.
pub struct Decoded {
    pub program: Program,
    pub network: sim::Network,
    pub weights: Vec<sim::LayerWeights>,
    /// Kernel count of every layer (MCNT), for the cycle model.
    pub kernel_counts: Vec<u32>,
}

/// Fields of one layer that the registers give directly.
struct Fields {
    operator: Operator,
    kernel: [u32; 2],
    pad: u32,
    /// Columns of the stored input as the hardware counts them (2W for a
    /// transposed convolution); `None` for flatten, which reads 1×1.
    columns: Option<u32>,
    /// MAX78000: rows from RCNT.
    rows: Option<u32>,
    pool: Option<Pool>,
    eltwise: Option<Eltwise>,
    processors: u64,
    output_processors: u64,
    in_offset: u32,
    out_offset: u32,
    write_skip: u32,
    in_count: u32,
    flatten_bit: bool,
    activation: Activation,
    output_shift: i32,
    weight_bits: u32,
    output_width: OutputWidth,
    depthwise: bool,
    kernel_offset: u32,
    kernel_count: u32,
    bias: Option<BiasPlace>,
}

/// Quadrant, byte offset and a depthwise layer's per-quadrant offsets.
type BiasPlace = (u32, u32, Option<[Option<u32>; 4]>);

pub fn decode(
    device: Device,
    map: &AddressMap,
    registers: &Registers,
    memories: &Memories,
    image: &ModelImage,
) -> Result<Decoded, Refusal> {
    let used: Vec<u32> = (0..QUADRANTS)
        .filter(|q| {
            registers
                .init
                .contains_key(&(*q, kflow_ai8x_codegen::ControlRegister::Ctl as u8))
        })
        .collect();
    let master = *used
        .first()
        .ok_or_else(|| Refusal::new("cnn_init enables no quadrant (no CTL write)"))?;
    let lcnt = registers
        .init
        .get(&(master, kflow_ai8x_codegen::ControlRegister::LcntMax as u8))
        .copied()
        .unwrap_or(0);
    let lcnt_address = device.control_address(master, kflow_ai8x_codegen::ControlRegister::LcntMax);
    let count = (lcnt & 0xff) as usize + 1;
    if lcnt >> 8 != 0 || count > device.max_layers() {
        return Err(Refusal::new(format!(
            "LCNT_MAX of quadrant {master} (0x{lcnt_address:08x}) = 0x{lcnt:08x}: the {} runs layers 0 to at most {}",
            device.name(),
            device.max_layers() - 1
        )));
    }
    if count != image.layers.len() {
        return Err(Refusal::new(format!(
            "LCNT_MAX of quadrant {master} (0x{lcnt_address:08x}) = {lcnt} runs {count} layers; the image gives channel counts for {}",
            image.layers.len()
        )));
    }
    check_channels(device, image)?;
    let binary = registers.start.iter().any(|(_, v)| v & 1 << 30 != 0);
    let fields: Vec<Fields> = (0..count)
        .map(|i| layer_fields(device, map, registers, master, i as u32, image.layers[i].output))
        .collect::<Result<_, _>>()?;
    // LCTL bit 6: the first layer reads CHW data (§6.3).
    let chw = registers.layer(master, 0, R::Lctl) & 0x40 != 0;

    // Dataflow and shapes, layer by layer.
    let input = sim::Shape::new(
        image.input[0] as usize,
        image.input[1] as usize,
        image.input[2] as usize,
    );
    let mut network = sim::Network {
        device: match device {
            Device::Max78000 => sim::Device::Max78000,
            Device::Max78002 => sim::Device::Max78002,
        },
        input,
        layers: Vec::with_capacity(count),
    };
    let mut outputs: Vec<sim::Shape> = Vec::with_capacity(count);
    let mut layers = Vec::with_capacity(count);
    for (i, f) in fields.iter().enumerate() {
        let channels = image.layers[i];
        let operands = sources(i, f, &fields, map, master)?;
        let produced = match operands[0].as_slice() {
            [sim::Source::Input] => input,
            [sim::Source::Layer(j)] => outputs[*j],
            many => {
                // Concatenated producers: one shape, channels summed.
                let shapes: Vec<sim::Shape> = many
                    .iter()
                    .map(|s| match s {
                        sim::Source::Input => input,
                        sim::Source::Layer(j) => outputs[*j],
                    })
                    .collect();
                sim::Shape::new(
                    shapes.iter().map(|s| s.channels).sum(),
                    shapes[0].height,
                    shapes[0].width,
                )
            }
        };
        let pixels = produced.pixels() as u32;
        // A flatten of one pixel reads like a linear layer; only its kernel
        // count tells it apart, which leaves out the empty slots of the
        // last output pass (§5.5, as kflow-ai8x-codegen counts kc).
        let (in_passes, out_passes) = (
            Passes::for_channels(channels.input),
            Passes::for_channels(channels.output),
        );
        let slots = out_passes.count * out_passes.per_pass;
        let empty = slots.saturating_sub(channels.output);
        let one_pixel_flatten = pixels == 1 && empty > 0 && f.kernel_count + empty == slots * in_passes.count;
        let flatten = f.operator == Operator::Linear
            && (f.flatten_bit || one_pixel_flatten || (pixels > 1 && f.in_count + 1 != in_passes.count));
        let (height, width) = if flatten {
            (produced.height as u32, produced.width as u32)
        } else {
            let hw_columns = f.columns.unwrap_or(1);
            let width = if f.operator == Operator::ConvTranspose2d {
                hw_columns / 2
            } else {
                hw_columns
            };
            // The MAX78000 runs a multi-pass element-wise layer other than
            // 2 operands × 2 passes as one pass over its rows times its
            // passes (izer EMULATE_ELTWISE_MP, as kflow-ai8x-codegen writes
            // RCNT).
            let passes = in_passes.count;
            let operands = f.eltwise.map_or(1, |e| e.operands);
            let emulated = device == Device::Max78000
                && f.operator == Operator::Passthrough
                && operands > 1
                && passes > 1
                && operands * passes != operands + passes;
            let height = match f.rows {
                Some(rows) if f.operator == Operator::ConvTranspose2d => rows / 2,
                Some(rows) if emulated => rows / passes,
                Some(rows) => rows,
                None if width > 0 && pixels.is_multiple_of(width) => pixels / width,
                None => {
                    return Err(Refusal::new(format!(
                        "layer {i}: CCNT gives {width} columns, which do not divide the {pixels} pixels it reads ({})",
                        map.describe(device.layer_register_address(
                            master,
                            i as u32,
                            R::Ccnt.index(device).unwrap_or(0)
                        ))
                    )));
                }
            };
            (height, width)
        };
        let operator = match f.operator {
            // A 1×1 operator on one pixel is a linear layer.
            Operator::Linear if !flatten && height * width > 1 => Operator::Conv2d,
            other => other,
        };
        let pooled = match f.pool {
            Some(p) if height >= p.size[0] && width >= p.size[1] => {
                [(height - p.size[0]) / p.stride + 1, (width - p.size[1]) / p.stride + 1]
            }
            Some(_) => [0, 0],
            None => [height, width],
        };
        let taps = (f.kernel[0] * f.kernel[1]) as usize;
        let (cin, cout) = (channels.input as usize, channels.output as usize);
        let n_weights = match operator {
            Operator::Passthrough => 0,
            _ if f.depthwise => cin * taps,
            Operator::Linear if flatten => cout * cin * (pooled[0] * pooled[1]) as usize,
            _ => cout * cin * taps,
        };
        let capacity = 64 * device.kernel_columns(0) as usize * 9 * (8 / f.weight_bits.clamp(1, 8) as usize);
        if n_weights > capacity {
            return Err(Refusal::new(format!(
                "layer {i}: {n_weights} weights do not fit the kernel memory of the {} ({capacity} at {} bits)",
                device.name(),
                f.weight_bits
            )));
        }
        let fill = if binary && f.weight_bits == 1 { 1 } else { 0 };
        let out_expand = Passes::for_channels(channels.output).count;
        let write_gap = if operator == Operator::Passthrough {
            f.write_skip
        } else {
            ((f.write_skip + 1) / out_expand).saturating_sub(1)
        };
        layers.push(Layer {
            name: format!("layer{i}"),
            operator,
            input: Dims {
                channels: channels.input,
                height,
                width,
            },
            pool: f.pool,
            kernel: f.kernel,
            pad: f.pad,
            flatten,
            out_channels: channels.output,
            activation: f.activation,
            output_shift: f.output_shift,
            weight_bits: f.weight_bits,
            output_width: f.output_width,
            processors: f.processors,
            output_processors: f.output_processors,
            in_offset: f.in_offset,
            out_offset: f.out_offset,
            kernel_offset: f.kernel_offset,
            weights: vec![fill; n_weights],
            bias: f.bias.map(|(quadrant, offset, broadcast)| Bias {
                quadrant,
                offset,
                values: vec![0; cout],
                broadcast,
            }),
            depthwise: f.depthwise,
            binary: binary && f.weight_bits == 1,
            eltwise: f.eltwise,
            write_gap,
        });
        let layer = &layers[i];
        network.layers.push(sim_layer(layer, operands, produced));
        let shapes = sim::output_shapes(&network)
            .map_err(|e| Refusal::new(format!("{e}; {}", layer_context(map, registers, master, i as u32))))?;
        outputs.push(shapes[i]);
    }
    let mut program = Program {
        device,
        input_format: if chw { DataFormat::Chw } else { DataFormat::Hwc },
        layers,
    };

    // Weights and biases where the placement puts them.
    let parameters =
        kflow_ai8x_codegen::unpack_parameters(&program, |p, c| memories.kernels.get(&(p, c)).copied(), &memories.bias)
            .map_err(|e| codegen_refusal("cannot be placed", &e, map, registers, master))?;
    let mut weights = Vec::with_capacity(count);
    for (layer, (w, b)) in program.layers.iter_mut().zip(parameters) {
        layer.weights = w.clone();
        if let (Some(bias), Some(values)) = (layer.bias.as_mut(), b.clone()) {
            bias.values = values;
        }
        weights.push(sim::LayerWeights { weight: w, bias: b });
    }
    verify(&program, map, registers, memories, master)?;
    check_data_memory(&program, &outputs, map, master)?;
    check_load_and_unload(&program, image, map, master)?;
    Ok(Decoded {
        program,
        network,
        weights,
        kernel_counts: fields.iter().map(|f| f.kernel_count).collect(),
    })
}

fn layer_fields(
    device: Device,
    map: &AddressMap,
    registers: &Registers,
    master: u32,
    i: u32,
    out_channels: u32,
) -> Result<Fields, Refusal> {
    let get = |r: R| registers.layer(master, i, r);
    let name = |q: u32, r: R| map.describe(device.layer_register_address(q, i, r.index(device).unwrap_or(0)));
    let refuse = |r: R, why: String| Refusal::new(format!("layer {i}: {} = 0x{:08x}: {why}", name(master, r), get(r)));
    let mut processors = 0u64;
    for q in 0..QUADRANTS {
        processors |= u64::from(registers.layer(q, i, R::Ena) & 0xffff) << (16 * q);
    }
    if processors == 0 {
        return Err(Refusal::new(format!(
            "layer {i}: ENA enables no processor in any quadrant ({})",
            name(master, R::Ena)
        )));
    }
    let (lctl, lctl2, post, oned) = (get(R::Lctl), get(R::Lctl2), get(R::Post), get(R::Oned));
    let eltwise = (oned & 1 << 13 != 0).then(|| Eltwise {
        op: match oned >> 14 & 3 {
            0b01 => EltwiseOp::Add,
            0b00 => EltwiseOp::Sub,
            0b11 => EltwiseOp::Xor,
            _ => EltwiseOp::Or,
        },
        operands: (oned >> 18 & 0xf) + 1,
        pool_first: oned & 1 << 16 != 0 || lctl & 0x80 == 0,
    });
    let passthrough = post >> 24 & 3 == 3 || (eltwise.is_some() && oned & 1 << 17 == 0);
    let transposed = post & 1 << 28 != 0;
    let depthwise = lctl & 1 << 29 != 0;
    let (operator, kernel) = if passthrough {
        (Operator::Passthrough, [1, 1])
    } else if transposed {
        (Operator::ConvTranspose2d, [3, 3])
    } else if oned & 1 << 12 != 0 {
        let k = oned >> 8 & 0xf;
        if k == 0 || k > 9 {
            return Err(refuse(R::Oned, format!("a conv1d kernel of {k} taps (§2.3: 1 to 9)")));
        }
        (Operator::Conv1d, [k, 1])
    } else if oned & 1 << 8 != 0 {
        (Operator::Linear, [1, 1])
    } else {
        match device {
            Device::Max78002 => (Operator::Conv2d, [(lctl >> 22 & 0xf) + 1, (lctl >> 18 & 0xf) + 1]),
            Device::Max78000 => (Operator::Conv2d, [3, 3]),
        }
    };
    let (rcnt, ccnt) = (get(R::Rcnt), get(R::Ccnt));
    let (pad_h, pad_w, rows, columns) = match device {
        Device::Max78002 => {
            let pad = |v: u32| if v & 1 << 15 != 0 { (v >> 13 & 3) + 1 } else { 0 };
            (pad(rcnt), pad(ccnt), None, (ccnt & 0x1fff) + (ccnt >> 16))
        }
        Device::Max78000 => {
            let (ph, pw) = (rcnt >> 16, ccnt >> 16);
            let rows = ((rcnt & 0xffff) + 1).checked_sub(2 * ph);
            let columns = ((ccnt & 0xffff) + 1).checked_sub(2 * pw);
            let (Some(rows), Some(columns)) = (rows, columns) else {
                return Err(refuse(R::Rcnt, "padding larger than the rows it pads".into()));
            };
            (ph, pw, Some(rows), columns)
        }
    };
    let pad = match operator {
        Operator::ConvTranspose2d => 2u32.checked_sub(pad_h).ok_or_else(|| {
            refuse(
                R::Rcnt,
                format!("a transposed convolution pads its upsampled input by 0 to 2, not {pad_h}"),
            )
        })?,
        Operator::Linear | Operator::Passthrough => 0,
        _ => pad_h,
    };
    if operator == Operator::Conv2d && pad_w != pad_h {
        return Err(refuse(
            R::Ccnt,
            format!("column padding {pad_w} differs from row padding {pad_h}"),
        ));
    }
    // LCTL bit 7 enables only pools larger than 1×1 (izer
    // max7800x.py:1843); a 1×1 pool still subsamples by its STRIDE and
    // keeps its kind in bit 8, which is set without a pool. So bit 8
    // clear, or a stride, is a 1×1 pool too.
    let pool_stride = (get(R::Stride) & 0xf) + 1;
    let pool = (lctl & 0x180 != 0x100 || pool_stride > 1).then(|| Pool {
        kind: if lctl & 0x100 != 0 {
            PoolKind::Max
        } else {
            PoolKind::Avg
        },
        // Pools are at most 16 × 16 (§2.6); wider fields are kept so that
        // the encoding check names the register.
        size: [(get(R::Prcnt) & 0xff) + 1, (get(R::Pccnt) & 0xff) + 1],
        stride: pool_stride,
    });
    let weight_bits = if passthrough {
        8
    } else {
        match post >> 22 & 3 {
            0 => 8,
            3 => 4,
            2 => 2,
            _ => 1,
        }
    };
    let scale = (post >> 13 & 0xf) as i32 * if post & 1 << 17 != 0 { -1 } else { 1 };
    let activation = if lctl & 0x200 != 0 {
        Activation::Relu
    } else if post & 1 << 26 != 0 {
        Activation::Abs
    } else {
        Activation::None
    };
    let shift = device.instance_word_shift();
    let wptr_base = get(R::WptrBase);
    let out_offset = (wptr_base & ((1 << shift) - 1)) * 4;
    let span_shift = if device == Device::Max78002 { 12 } else { 8 };
    let output_processors = if passthrough {
        processors
    } else {
        // LCTL2's span runs from the output instance's first processor
        // (WPTR_BASE) to the last output processor; the map holds one
        // processor per output channel of a pass (§5.1), so it may start
        // inside the instance (the kernels' empty slots, §5.5 start_col).
        let base = (wptr_base >> shift) * 4;
        let span = lctl2 >> span_shift;
        let per_pass = Passes::for_channels(out_channels).per_pass;
        let last = base + span / weight_bits;
        if !span.is_multiple_of(weight_bits)
            || last >= 64
            || last + 1 < base + per_pass.max(1)
            || last + 1 - per_pass > base + 3
        {
            return Err(refuse(
                R::Lctl2,
                format!(
                    "an output span of {span} bits from processor {base} is no run of {per_pass} processors of {weight_bits}-bit weights starting in that instance"
                ),
            ));
        }
        (last + 1 - per_pass..=last).fold(0u64, |m, p| m | 1 << p)
    };
    let write_skip = lctl2 >> 4 & if device == Device::Max78002 { 0xff } else { 0xf };
    let taps = kernel[0] * kernel[1];
    let (mcnt1, mcnt2) = (get(R::Mcnt1), get(R::Mcnt2));
    let (koffs, kend) = match device {
        Device::Max78002 => (mcnt2, mcnt1),
        Device::Max78000 => (mcnt1 >> 16, mcnt1 & 0xffff),
    };
    let (kernel_offset, kernel_count) = if passthrough {
        (0, 0)
    } else {
        let r = if device == Device::Max78002 { R::Mcnt2 } else { R::Mcnt1 };
        let start = u64::from(koffs / 8) * u64::from(taps) + u64::from(oned >> 4 & 0xf);
        if !koffs.is_multiple_of(8) || !start.is_multiple_of(9) {
            return Err(refuse(r, "the kernel offset is no whole 72-bit column".into()));
        }
        let columns = device.kernel_columns(0);
        if start / 9 >= u64::from(columns) {
            return Err(refuse(r, format!("kernels from column {} of {columns}", start / 9)));
        }
        let start = start as u32;
        let Some(kl) = kend.checked_sub(koffs).filter(|kl| kl.is_multiple_of(weight_bits)) else {
            return Err(refuse(R::Mcnt1, "the kernel count does not follow from MCNT".into()));
        };
        (start / 9, kl / weight_bits + 1)
    };
    let mut bias_quadrants = (0..QUADRANTS).filter(|q| registers.layer(*q, i, R::Post) & 1 << 12 != 0);
    let bias = if depthwise {
        let mut offsets = [None; 4];
        for q in bias_quadrants {
            offsets[q as usize] = Some((registers.layer(q, i, R::Post) & 0xfff) * 4);
        }
        offsets
            .iter()
            .position(Option::is_some)
            .map(|q| (q as u32, offsets[q].unwrap_or(0), Some(offsets)))
    } else {
        match (bias_quadrants.next(), bias_quadrants.next()) {
            (None, _) => None,
            (Some(q), None) => Some((q, registers.layer(q, i, R::Post) & 0xfff, None)),
            (Some(q), Some(other)) => {
                return Err(Refusal::new(format!(
                    "layer {i}: both {} and {} enable a bias; a layer's bias is in one quadrant (§5.6)",
                    name(q, R::Post),
                    name(other, R::Post)
                )));
            }
        }
    };
    let rptr = get(R::RptrBase);
    if u64::from(rptr) * 4 >= u64::from(device.instance_bytes()) {
        return Err(refuse(
            R::RptrBase,
            format!(
                "the input starts past the {}-byte data-memory instance",
                device.instance_bytes()
            ),
        ));
    }
    Ok(Fields {
        operator,
        kernel,
        pad,
        columns: Some(columns),
        rows,
        pool,
        eltwise,
        processors,
        output_processors,
        in_offset: rptr * 4,
        out_offset,
        write_skip,
        in_count: lctl2 & 0xf,
        flatten_bit: post & 1 << 27 != 0,
        activation,
        output_shift: scale - 8 + weight_bits as i32,
        weight_bits,
        output_width: if lctl & 1 << 16 != 0 {
            OutputWidth::Bits32
        } else {
            OutputWidth::Bits8
        },
        depthwise,
        kernel_offset,
        kernel_count,
        bias,
    })
}

/// The producers of each operand of layer `i`: the latest earlier layers
/// whose output lands where it reads (§5.2: same offset in the instances
/// of its processors; operand `k` of an element-wise layer one word after
/// operand `k − 1`), or the network input, which layer 0 reads.
fn sources(i: usize, f: &Fields, fields: &[Fields], map: &AddressMap, master: u32) -> Result<Operands, Refusal> {
    if i == 0 {
        return Ok(vec![vec![sim::Source::Input]]);
    }
    let operands = f.eltwise.map_or(1, |e| e.operands);
    let mut all = Vec::with_capacity(operands as usize);
    for k in 0..operands {
        let at = f.in_offset + 4 * k;
        let mut covered = 0u64;
        let mut found: Vec<(u32, sim::Source)> = Vec::new();
        for j in (0..i).rev() {
            let g = &fields[j];
            let new = g.output_processors & f.processors & !covered;
            if g.out_offset == at && new != 0 {
                covered |= new;
                found.push((new.trailing_zeros(), sim::Source::Layer(j)));
            }
        }
        let input = &fields[0];
        let new = input.processors & f.processors & !covered;
        if input.in_offset == at && new != 0 {
            covered |= new;
            found.push((new.trailing_zeros(), sim::Source::Input));
        }
        if covered != f.processors {
            let device = map.device;
            let rptr = device.layer_register_address(master, i as u32, R::RptrBase.index(device).unwrap_or(0));
            return Err(Refusal::new(format!(
                "layer {i}: {} points operand {k} at data-memory offset 0x{at:x} of processors {:#x}, where no earlier layer writes",
                map.describe(rptr),
                f.processors & !covered
            )));
        }
        found.sort_by_key(|(first, _)| *first);
        all.push(found.into_iter().map(|(_, s)| s).collect());
    }
    Ok(all)
}

fn sim_layer(l: &Layer, operands: Operands, produced: sim::Shape) -> sim::Layer {
    let [kernel, _] = l.kernel.map(|k| k as usize);
    let pad = l.pad as usize;
    let op = match l.operator {
        Operator::Passthrough => sim::Op::None,
        Operator::Conv1d => sim::Op::Conv1d { kernel, pad },
        Operator::Conv2d => sim::Op::Conv2d {
            kernel,
            pad,
            depthwise: l.depthwise,
        },
        Operator::ConvTranspose2d => sim::Op::ConvTranspose2d { pad },
        Operator::Linear => sim::Op::Linear { flatten: l.flatten },
    };
    let inputs: Vec<sim::Source> = operands.into_iter().flatten().collect();
    let stored = [l.input.height as usize, l.input.width as usize];
    let in_dim = (l.eltwise.is_none() && stored != [produced.height, produced.width]).then_some(stored);
    sim::Layer {
        op,
        inputs,
        in_dim,
        in_channels: l.input.channels as usize,
        out_channels: l.out_channels as usize,
        pool: l.pool.map(|p| sim::Pool {
            kind: match p.kind {
                PoolKind::Max => sim::PoolKind::Max,
                PoolKind::Avg => sim::PoolKind::Avg,
            },
            size: p.size.map(|s| s as usize),
            stride: p.stride as usize,
        }),
        eltwise: l.eltwise.map(|e| match e.op {
            EltwiseOp::Add => sim::EltwiseOp::Add,
            EltwiseOp::Sub => sim::EltwiseOp::Sub,
            EltwiseOp::Xor => sim::EltwiseOp::Xor,
            EltwiseOp::Or => sim::EltwiseOp::Or,
        }),
        pool_first: l.eltwise.is_none_or(|e| e.pool_first),
        activation: match l.activation {
            Activation::None => sim::Activation::None,
            Activation::Relu => sim::Activation::Relu,
            Activation::Abs => sim::Activation::Abs,
        },
        output_shift: l.output_shift,
        weight_bits: match (l.binary, l.weight_bits) {
            (true, _) => sim::WeightBits::Binary,
            (false, 1) => sim::WeightBits::One,
            (false, 2) => sim::WeightBits::Two,
            (false, 4) => sim::WeightBits::Four,
            _ => sim::WeightBits::Eight,
        },
        output_width: match l.output_width {
            OutputWidth::Bits8 => sim::OutputWidth::Eight,
            OutputWidth::Bits32 => sim::OutputWidth::ThirtyTwo,
        },
    }
}

/// The decoded program, encoded again, must give back every write and
/// every memory byte the board received.
fn verify(
    program: &Program,
    map: &AddressMap,
    registers: &Registers,
    memories: &Memories,
    master: u32,
) -> Result<(), Refusal> {
    let device = program.device;
    let list = kflow_ai8x_codegen::register_list(program)
        .map_err(|e| codegen_refusal("are not a valid network", &e, map, registers, master))?;
    let expected = Registers::load(map, &list)?;
    let mut slots: Vec<_> = registers.layers.keys().chain(expected.layers.keys()).copied().collect();
    slots.sort_by_key(|s| (s.layer, s.quadrant, s.register.index(device)));
    slots.dedup();
    for slot in slots {
        let got = registers.layer(slot.quadrant, slot.layer, slot.register);
        let want = expected.layer(slot.quadrant, slot.layer, slot.register);
        if got != want {
            let address =
                device.layer_register_address(slot.quadrant, slot.layer, slot.register.index(device).unwrap_or(0));
            return Err(Refusal::new(format!(
                "{} is 0x{got:08x}, inconsistent with the layer the other registers describe (which needs 0x{want:08x})",
                map.describe(address)
            )));
        }
    }
    // The start-up sequence must be the one the network needs, write by
    // write: a write a later one overwrites still ran on the board.
    for (phase, got, want) in [
        ("cnn_init", &registers.init_sequence, &expected.init_sequence),
        ("cnn_start", &registers.start_sequence, &expected.start_sequence),
    ] {
        if got != want {
            let first = got
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            let describe = |w: Option<&kflow_ai8x_codegen::Write>| match w {
                Some(w) => format!("0x{:08x} to {}", w.value, map.describe(w.address)),
                None => "nothing".to_owned(),
            };
            return Err(Refusal::new(format!(
                "{phase} write {first} writes {}, inconsistent with the network the layer registers describe (which needs {})",
                describe(got.get(first)),
                describe(want.get(first))
            )));
        }
    }
    let blob = kflow_ai8x_codegen::model_blob(program)
        .map_err(|e| codegen_refusal("cannot be packed", &e, map, registers, master))?;
    let placed = Memories::load(device, &blob)?;
    if let Some(difference) = memories.first_difference(device, &placed) {
        return Err(Refusal::new(difference));
    }
    Ok(())
}

/// §1: every layer's input and output must fit the data-memory instances
/// it uses (§5.2: a pixel takes one word per pass and operand; an 8-bit
/// output one word per pass and gap word, a 32-bit output four).
fn check_data_memory(program: &Program, outputs: &[sim::Shape], map: &AddressMap, master: u32) -> Result<(), Refusal> {
    let device = program.device;
    let limit = u64::from(device.instance_bytes());
    for (i, (l, output)) in program.layers.iter().zip(outputs).enumerate() {
        let out_passes = u64::from(Passes::for_channels(l.out_channels).count);
        let in_passes = u64::from(Passes::for_channels(l.input.channels).count);
        let operands = u64::from(l.eltwise.map_or(1, |e| e.operands));
        let in_bytes = 4 * u64::from(l.input.pixels()) * in_passes * operands;
        let per_word = if l.output_width == OutputWidth::Bits32 {
            16
        } else {
            4 * u64::from(l.write_gap + 1)
        };
        let out_bytes = per_word * output.pixels() as u64 * out_passes;
        let reg = |r: R| map.describe(device.layer_register_address(master, i as u32, r.index(device).unwrap_or(0)));
        for (r, offset, bytes, what) in [
            (R::RptrBase, l.in_offset, in_bytes, "input"),
            (R::WptrBase, l.out_offset, out_bytes, "output"),
        ] {
            if u64::from(offset) + bytes > limit {
                return Err(Refusal::new(format!(
                    "layer {i}: {} puts its {what} at byte 0x{offset:x} of each data-memory instance; its {bytes} bytes end past the instance's {limit}",
                    reg(r)
                )));
            }
        }
    }
    Ok(())
}

/// The image's shapes must fit the device before anything is sized from
/// them: at most 1024 channels (64 processors × 16 passes, §1), rows and
/// columns within the device's limit, an input within data memory.
fn check_channels(device: Device, image: &ModelImage) -> Result<(), Refusal> {
    let [c, h, w] = image.input;
    let limit = device.max_rows_cols();
    let data = 16 * u64::from(device.instance_bytes());
    if h == 0 || w == 0 || c == 0 || h > limit || w > limit || u64::from(c) * u64::from(h) * u64::from(w) > data {
        return Err(Refusal::new(format!(
            "a network input of {c}×{h}×{w} does not fit the {}: rows and columns 1 to {limit}, at most {data} bytes of data memory",
            device.name()
        )));
    }
    for (i, l) in image.layers.iter().enumerate() {
        for (what, n) in [("input", l.input), ("output", l.output)] {
            if n == 0 || n > 1024 {
                return Err(Refusal::new(format!(
                    "layer {i}: {n} {what} channels; the {} takes 1 to 1024 (64 processors × 16 passes)",
                    device.name()
                )));
            }
        }
    }
    Ok(())
}

/// A code generator's objection to the decoded network, with the
/// registers of the layer it names.
fn codegen_refusal(
    what: &str,
    error: &kflow_ai8x_codegen::CodegenError,
    map: &AddressMap,
    registers: &Registers,
    master: u32,
) -> Refusal {
    use kflow_ai8x_codegen::CodegenError as E;
    let layer = match error {
        E::Invalid { layer, .. }
        | E::Unsupported { layer, .. }
        | E::KernelMemory { layer, .. }
        | E::KernelOverlap { layer, .. }
        | E::BiasOverlap { layer, .. } => Some(*layer as u32),
        E::NoLayers | E::TooManyLayers { .. } => None,
    };
    let context = layer.map_or_else(String::new, |i| {
        format!("; {}", layer_context(map, registers, master, i))
    });
    Refusal::new(format!("the layers the registers describe {what}: {error}{context}"))
}

/// `layer i as written: NAME (0x…) = 0x…, …`: the non-zero registers of
/// layer `i` in the first quadrant, where the layer's settings live.
fn layer_context(map: &AddressMap, registers: &Registers, master: u32, i: u32) -> String {
    let device = map.device;
    let written: Vec<String> = kflow_ai8x_codegen::WRITE_ORDER
        .iter()
        .filter_map(|r| {
            let value = registers.layer(master, i, *r);
            let index = r.index(device)?;
            (value != 0).then(|| {
                format!(
                    "{} (0x{:08x}) = 0x{value:08x}",
                    r.name(),
                    device.layer_register_address(master, i, index)
                )
            })
        })
        .collect();
    format!("layer {i} as written in quadrant {master}: {}", written.join(", "))
}

/// The driver's load and unload tables are compiled in: the first layer
/// must read where `cnn_load_input` writes, the last write where
/// `cnn_unload` reads.
fn check_load_and_unload(program: &Program, image: &ModelImage, map: &AddressMap, master: u32) -> Result<(), Refusal> {
    let device = program.device;
    let (first, last) = (&program.layers[0], &program.layers[program.layers.len() - 1]);
    let first_instance = (0..16).find(|i| first.processors >> (4 * i) & 0xf != 0).unwrap_or(0);
    let reads = device.data_address(first_instance, first.in_offset);
    let writes = device.data_address(last.output_processors.trailing_zeros().min(63) / 4, last.out_offset);
    let n = program.layers.len() as u32 - 1;
    let reg =
        |layer: u32, r: R| map.describe(device.layer_register_address(master, layer, r.index(device).unwrap_or(0)));
    if reads != image.load_address {
        return Err(Refusal::new(format!(
            "layer 0 reads its input at 0x{reads:08x} ({} and ENA), but cnn_load_input writes it at 0x{:08x}",
            reg(0, R::RptrBase),
            image.load_address
        )));
    }
    if writes != image.unload_address {
        return Err(Refusal::new(format!(
            "the last layer writes its output at 0x{writes:08x} ({} and LCTL2), but cnn_unload reads it at 0x{:08x}",
            reg(n, R::WptrBase),
            image.unload_address
        )));
    }
    Ok(())
}
