//! Writing `model.c` and `model.h`: the runtime kernels, the constant
//! tables of every layer and `kflow_infer`, one call per step.

use std::fmt::Write as _;

use kflow_ai8x_sim::{
    Activation, EltwiseOp, Layer, LayerWeights, Network, Op, OutputWidth, PoolKind, SimOptions, Source,
};

use crate::arena::{self, ArenaPlan, Lifetime};
use crate::error::CodegenError;
use crate::geometry::{LayerGeometry, kind};

const RUNTIME: &str = include_str!("runtime.c");

/// Where a layer's buffers are.
pub(crate) struct Buffers {
    /// Arena offset of each layer's output; `None` for the last layer,
    /// which writes the caller's output.
    pub output: Vec<Option<usize>>,
    /// Arena offset of each layer's assembled operator input, when it has one
    /// apart from its output.
    pub prepared: Vec<Option<usize>>,
    /// Arena offset of each convolution's receptive-field vector.
    pub scratch: Vec<Option<usize>>,
    pub arena_bytes: usize,
}

/// Lifetimes in layer steps: an output lives until its last reader, an
/// assembled input and a convolution's scratch only during their layer.
pub(crate) fn buffers(net: &Network, geometry: &[LayerGeometry]) -> Buffers {
    let n = net.layers.len();
    let mut last_read: Vec<usize> = (0..n).collect();
    for (i, g) in geometry.iter().enumerate() {
        for s in &g.sources {
            if let Source::Layer(j) = *s {
                last_read[j] = last_read[j].max(i);
            }
        }
    }
    let mut lifetimes = Vec::new();
    let mut owners = Vec::new();
    for (i, (layer, g)) in net.layers.iter().zip(geometry).enumerate() {
        if i + 1 < n {
            let width = match layer.output_width {
                OutputWidth::Eight => 1,
                OutputWidth::ThirtyTwo => 4,
            };
            lifetimes.push(Lifetime {
                bytes: g.output.len() * width,
                first: i,
                last: last_read[i],
            });
            owners.push((i, Role::Output));
        }
        if g.needs_prepare(layer) && layer.op != Op::None {
            lifetimes.push(Lifetime {
                bytes: g.pooled.len(),
                first: i,
                last: i,
            });
            owners.push((i, Role::Prepared));
        }
        if let Some(bytes) = scratch_bytes(layer) {
            lifetimes.push(Lifetime {
                bytes,
                first: i,
                last: i,
            });
            owners.push((i, Role::Scratch));
        }
    }
    let ArenaPlan { offsets, bytes } = arena::plan(&lifetimes);
    let mut out = Buffers {
        output: vec![None; n],
        prepared: vec![None; n],
        scratch: vec![None; n],
        arena_bytes: bytes,
    };
    for ((layer, role), offset) in owners.into_iter().zip(offsets) {
        let slot = match role {
            Role::Output => &mut out.output,
            Role::Prepared => &mut out.prepared,
            Role::Scratch => &mut out.scratch,
        };
        slot[layer] = Some(offset);
    }
    out
}

enum Role {
    Output,
    Prepared,
    Scratch,
}

/// `kf_conv` gathers one output pixel's receptive field, `n = in_c·kh·kw`
/// bytes (`kh·kw` for a depthwise layer), and on the DSP path widens it
/// to `2·n` more bytes after a word boundary.
fn scratch_bytes(layer: &Layer) -> Option<usize> {
    field_len(layer).map(|n| n.next_multiple_of(4) + 2 * n)
}

fn field_len(layer: &Layer) -> Option<usize> {
    match layer.op {
        Op::Conv1d { kernel, .. } => Some(layer.in_channels * kernel),
        Op::Conv2d {
            kernel,
            depthwise: true,
            ..
        } => Some(kernel * kernel),
        Op::Conv2d { kernel, .. } => Some(layer.in_channels * kernel * kernel),
        Op::ConvTranspose2d { .. } => Some(layer.in_channels * 9),
        Op::None | Op::Linear { .. } => None,
    }
}

/// The geometry fields of the generated tables are 16 bits wide.
fn field(layer_index: usize, layer: &Layer, what: &str, value: usize) -> Result<usize, CodegenError> {
    if value <= usize::from(u16::MAX) {
        Ok(value)
    } else {
        Err(CodegenError::Unsupported {
            layer: layer_index,
            kind: kind(layer),
            what: format!("{what} of {value}"),
            missing: "the kernels' geometry tables hold at most 65535".into(),
        })
    }
}

fn array<T: std::fmt::Display>(out: &mut String, decl: &str, values: &[T], per_line: usize) {
    let _ = writeln!(out, "{decl}[{}] = {{", values.len());
    for chunk in values.chunks(per_line) {
        let line: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "    {},", line.join(", "));
    }
    out.push_str("};\n");
}

/// PyTorch's `[in, out, 3, 3]` as `[out, in, 3, 3]`, flipped in both
/// spatial axes (spec §2.4), so that convtranspose2d runs as a convolution.
fn transposed_kernel(layer: &Layer, w: &[i8]) -> Vec<i8> {
    let (inp, out) = (layer.in_channels, layer.out_channels);
    let mut t = vec![0i8; w.len()];
    for o in 0..out {
        for c in 0..inp {
            for k in 0..9 {
                t[(o * inp + c) * 9 + k] = w[(c * out + o) * 9 + (8 - k)];
            }
        }
    }
    t
}

fn act(a: Activation) -> &'static str {
    match a {
        Activation::None => "KF_ACT_NONE",
        Activation::Relu => "KF_ACT_RELU",
        Activation::Abs => "KF_ACT_ABS",
    }
}

/// `n = 7 − S` of spec §3.3, with `S = output_shift + 8 − b` (§2.11).
fn shift_n(layer: &Layer) -> i32 {
    7 - layer.output_shift.saturating_add(8 - layer.weight_bits.bits())
}

pub(crate) struct Sources<'a> {
    pub net: &'a Network,
    pub weights: &'a [LayerWeights],
    pub geometry: &'a [LayerGeometry],
    pub buffers: &'a Buffers,
    pub options: SimOptions,
}

#[derive(Default)]
struct Needs {
    prepare: bool,
    conv: bool,
    linear: bool,
}

/// `model.c` and the blob of weights and biases its `kflow_infer` reads.
pub(crate) struct ModelC {
    pub text: String,
    pub blob: Blob,
}

pub(crate) fn model_c(s: &Sources) -> Result<ModelC, CodegenError> {
    let mut blob = Blob::default();
    let mut tables = String::new();
    let mut body = String::new();
    let mut needs = Needs::default();
    let last = s.net.layers.len() - 1;
    let arena_at = |offset: usize| format!("KF_ARENA + {offset}");
    let output_of = |i: usize| match s.buffers.output[i] {
        Some(offset) => arena_at(offset),
        None => "output".to_owned(),
    };
    for (i, ((layer, g), w)) in s.net.layers.iter().zip(s.geometry).zip(s.weights).enumerate() {
        let reads: Vec<String> = g
            .sources
            .iter()
            .map(|src| match *src {
                Source::Input => "input".to_owned(),
                Source::Layer(j) => format!("layer {j}"),
            })
            .collect();
        let _ = writeln!(body, "    /* layer {i}: {}; reads {} */", kind(layer), reads.join(", "));
        let source_ptrs: Vec<String> = g
            .sources
            .iter()
            .map(|src| match *src {
                Source::Input => "input".to_owned(),
                Source::Layer(j) => output_of(j),
            })
            .collect();
        let operator_input = if g.needs_prepare(layer) {
            needs.prepare = true;
            let dst = match (layer.op, s.buffers.prepared[i]) {
                (Op::None, _) if i == last => "(int8_t *)output".to_owned(),
                (Op::None, _) => output_of(i),
                (_, Some(offset)) => arena_at(offset),
                // `buffers` gives every prepared operator input a place.
                (_, None) => "output".to_owned(),
            };
            emit_prepare(&mut tables, i, layer, g, s.options)?;
            let _ = writeln!(body, "    {{");
            let _ = writeln!(
                body,
                "        const int8_t *const src[{}] = {{ {} }};",
                source_ptrs.len(),
                source_ptrs.join(", ")
            );
            let _ = writeln!(body, "        kf_prepare(&kf_p{i}, src, kf_sc{i}, {dst});");
            let _ = writeln!(body, "    }}");
            dst
        } else {
            source_ptrs[0].clone()
        };
        if layer.op == Op::None {
            continue;
        }
        let weights = match layer.op {
            Op::ConvTranspose2d { .. } => transposed_kernel(layer, &w.weight),
            _ => w.weight.clone(),
        };
        let weights = format!("KF_W8({})", blob.int8s(&weights));
        let bias = match &w.bias {
            Some(b) => {
                let scaled: Vec<i32> = b.iter().map(|&v| 128 * i32::from(v)).collect();
                format!("KF_W32({})", blob.int32s(&scaled))
            }
            None => "NULL".to_owned(),
        };
        let out = output_of(i);
        let wide = u8::from(layer.output_width == OutputWidth::ThirtyTwo);
        let (n, a) = (shift_n(layer), act(layer.activation));
        let x = g.pooled;
        if let Op::Linear { .. } = layer.op {
            needs.linear = true;
            let _ = writeln!(
                tables,
                "static const kf_linear_t kf_g{i} = {{ {}, {}, {n}, {a}, {wide} }};",
                field(i, layer, "features", x.len())?,
                field(i, layer, "output channels", layer.out_channels)?,
            );
            let _ = writeln!(
                body,
                "    kf_linear(&kf_g{i}, {operator_input}, {weights}, {bias}, {out});"
            );
            continue;
        }
        needs.conv = true;
        // Conv1d runs as one row of `length` pixels, as in the simulator.
        let (in_h, in_w, out_h, out_w, kh, kw, top, left, step, depthwise) = match layer.op {
            Op::Conv1d { kernel, pad } => (1, x.height, 1, g.output.height, 1, kernel, 0, pad, 1, false),
            Op::Conv2d { kernel, pad, depthwise } => (
                x.height,
                x.width,
                g.output.height,
                g.output.width,
                kernel,
                kernel,
                pad,
                pad,
                1,
                depthwise,
            ),
            // spec §2.4: zero-stuffed, 2 − pad zeros before the first pixel.
            _ => {
                let pad = match layer.op {
                    Op::ConvTranspose2d { pad } => pad,
                    _ => 0,
                };
                (
                    x.height,
                    x.width,
                    g.output.height,
                    g.output.width,
                    3,
                    3,
                    2 - pad.min(2),
                    2 - pad.min(2),
                    2,
                    false,
                )
            }
        };
        let _ = writeln!(
            tables,
            "static const kf_conv_t kf_g{i} = {{ {}, {}, {}, {}, {}, {}, {kh}, {kw}, {top}, {left}, {step}, {}, {n}, {a}, {wide} }};",
            field(i, layer, "input channels", x.channels)?,
            field(i, layer, "input rows", in_h)?,
            field(i, layer, "input columns", in_w)?,
            field(i, layer, "output channels", layer.out_channels)?,
            field(i, layer, "output rows", out_h)?,
            field(i, layer, "output columns", out_w)?,
            u8::from(depthwise),
        );
        let col = s.buffers.scratch[i].map_or("NULL".to_owned(), arena_at);
        let _ = writeln!(
            body,
            "    kf_conv(&kf_g{i}, {operator_input}, {weights}, {bias}, {out}, {col});"
        );
    }

    let mut c = String::new();
    c.push_str("/* Generated by kflow-cm-codegen: integer inference, bit-exact with kflow's simulator. */\n");
    c.push_str("#include <stddef.h>\n#include <stdint.h>\n\n#include \"model.h\"\n\n");
    let _ = writeln!(c, "#define KF_NEED_PREPARE {}", u8::from(needs.prepare));
    let _ = writeln!(c, "#define KF_NEED_CONV {}", u8::from(needs.conv));
    let _ = writeln!(c, "#define KF_NEED_LINEAR {}", u8::from(needs.linear));
    let _ = writeln!(c, "#define KF_NEED_SCALE {}\n", u8::from(needs.conv || needs.linear));
    c.push_str(RUNTIME);
    c.push('\n');
    c.push_str(&tables);
    if s.buffers.arena_bytes > 0 {
        let _ = writeln!(
            c,
            "\n/* Every intermediate buffer, placed by kflow's liveness planner. */\nstatic int32_t kf_arena[{}];\n#define KF_ARENA ((int8_t *)kf_arena)",
            s.buffers.arena_bytes / arena::ALIGN
        );
    }
    c.push_str(WEIGHT_TABLES);
    c.push_str(CHECK_WEIGHTS);
    c.push_str("\nint kflow_infer(const void *weights, const int8_t *input, void *output)\n{\n");
    c.push_str("    const uint8_t *const kf_wb = (const uint8_t *)weights;\n");
    if blob.is_empty() {
        // A network of pooling and element-wise layers reads no weights.
        c.push_str("    (void)kf_wb;\n");
    }
    c.push_str("    if (weights == NULL || input == NULL || output == NULL) {\n        return -1;\n    }\n");
    c.push_str(&body);
    c.push_str("    return 0;\n}\n");
    Ok(ModelC { text: c, blob })
}

/// The weight and bias tables of `model.bin`, at their offsets.
const WEIGHT_TABLES: &str = r#"
#define KF_W8(offset) ((const int8_t *)(kf_wb + (offset)))
#define KF_W32(offset) ((const int32_t *)(const void *)(kf_wb + (offset)))
"#;

/// Reads the blob's header; the blob is little-endian, so the version word
/// also refuses a big-endian core.
pub(crate) const CHECK_WEIGHTS: &str = r#"
int kflow_check_weights(const void *weights, uint32_t len)
{
    static const char magic[] = "KFCW";
    static const char id[] = KFLOW_MODEL_ID;
    const uint8_t *b = (const uint8_t *)weights;
    const uint32_t *words = (const uint32_t *)weights;
    uint32_t i;
    if (weights == NULL || len != KFLOW_WEIGHTS_BYTES || ((uintptr_t)weights & 3u) != 0) {
        return -1;
    }
    for (i = 0; i < 4; i++) {
        if (b[i] != (uint8_t)magic[i]) {
            return -2;
        }
    }
    for (i = 0; i < 16; i++) {
        if (b[12 + i] != (uint8_t)id[i]) {
            return -2;
        }
    }
    if (words[1] != KFLOW_WEIGHTS_VERSION || words[2] != len) {
        return -3;
    }
    return 0;
}
"#;

/// `model.bin`: a header (magic `KFCW`, format version and length as
/// little-endian u32, the model id in 16 ASCII hex digits, 4 bytes of
/// padding), then every layer's weights (int8) and biases (int32,
/// little-endian, already scaled by 128), each table 4-byte aligned.
#[derive(Default)]
pub(crate) struct Blob {
    tables: Vec<u8>,
}

pub(crate) const BLOB_HEADER: usize = 32;
pub(crate) const BLOB_VERSION: u32 = 1;

impl Blob {
    /// Appends `values`; returns their offset in the blob.
    fn int8s(&mut self, values: &[i8]) -> usize {
        let at = self.align();
        self.tables.extend(values.iter().map(|&v| v as u8));
        at
    }

    fn int32s(&mut self, values: &[i32]) -> usize {
        let at = self.align();
        self.tables.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        at
    }

    fn align(&mut self) -> usize {
        self.tables.resize(self.tables.len().next_multiple_of(4), 0);
        BLOB_HEADER + self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    pub fn len(&self) -> usize {
        BLOB_HEADER + self.tables.len().next_multiple_of(4)
    }

    /// The whole blob, for the model named `id` (16 hex digits).
    pub fn bytes(&self, id: &str) -> Vec<u8> {
        let len = self.len();
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(b"KFCW");
        b.extend_from_slice(&BLOB_VERSION.to_le_bytes());
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(id.as_bytes());
        b.resize(BLOB_HEADER, 0);
        b.extend_from_slice(&self.tables);
        b.resize(len, 0);
        b
    }
}

pub(crate) fn emit_prepare(
    tables: &mut String,
    i: usize,
    layer: &Layer,
    g: &LayerGeometry,
    options: SimOptions,
) -> Result<(), CodegenError> {
    // No pooling is a 1x1 max pool with stride 1: a copy.
    let (pool_h, pool_w, stride, pool) = match &layer.pool {
        Some(p) => (
            p.size[0],
            p.size[1],
            p.stride,
            match p.kind {
                PoolKind::Max => "KF_POOL_MAX",
                PoolKind::Avg => "KF_POOL_AVG",
            },
        ),
        None => (1, 1, 1, "KF_POOL_MAX"),
    };
    let eltwise = match layer.eltwise {
        None => "KF_ELT_NONE",
        Some(EltwiseOp::Add) => "KF_ELT_ADD",
        Some(EltwiseOp::Sub) => "KF_ELT_SUB",
        Some(EltwiseOp::Xor) => "KF_ELT_XOR",
        Some(EltwiseOp::Or) => "KF_ELT_OR",
    };
    let _ = writeln!(
        tables,
        "static const kf_prep_t kf_p{i} = {{ {}, {}, {}, {}, {}, {pool_h}, {pool_w}, {stride}, {pool}, {}, {eltwise}, {}, {} }};",
        field(i, layer, "operand channels", g.operand.channels)?,
        field(i, layer, "operand rows", g.operand.height)?,
        field(i, layer, "operand columns", g.operand.width)?,
        field(i, layer, "pooled rows", g.pooled.height)?,
        field(i, layer, "pooled columns", g.pooled.width)?,
        u8::from(options.avg_pool_rounding),
        u8::from(layer.pool_first),
        g.sources.len(),
    );
    let channels: Vec<usize> = g.source_channels.clone();
    for &c in &channels {
        field(i, layer, "source channels", c)?;
    }
    array(tables, &format!("static const uint16_t kf_sc{i}"), &channels, 16);
    Ok(())
}
