//! Self-contained C99 inference for CPU-only microcontrollers (Cortex-M
//! without an accelerator), generated from the bit-exact simulator's
//! explicit network so that the C computes exactly what
//! [`kflow_ai8x_sim::simulate`] computes: the same accumulation, bias,
//! shifts, rounding, saturation, pooling and element-wise arithmetic.
//!
//! [`generate`] validates the network as the simulator does and writes
//! `model.c` and `model.h` (the network as code: one kernel call per
//! layer, one static arena laid out by a liveness planner ([`arena`]), no
//! `malloc` and no floating point) and `model.bin`, the weights and biases
//! they read, as `cnn_model.c` and `cnn_model.bin` split an accelerator's
//! model: a firmware receives new weights without being rebuilt, and a
//! build may link them into flash instead. The entry points are
//!
//! ```c
//! int kflow_check_weights(const void *weights, uint32_t len);
//! int kflow_infer(const void *weights, const int8_t *input, void *output);
//! ```
//!
//! `weights` points to the bytes of `model.bin`, 4-byte aligned;
//! `kflow_check_weights` returns 0 only for the blob generated with this
//! `model.c` (its header names the model by [`Generated::model_id`]).
//! `input` holds `KFLOW_INPUT_LEN` int8 values in CHW order, as the
//! simulator's `Tensor` (1-D data of length `L` is `C×L×1`). `output`
//! receives the last layer's output as the simulator's `Output`:
//! `KFLOW_OUTPUT_LEN` values in CHW order, `int8_t` or, when
//! `KFLOW_OUTPUT_INT32` is 1, `int32_t` (then `output` must be 4-byte
//! aligned). The two must not overlap. It returns 0, or −1 for a null
//! pointer. It is not reentrant: the arena is static.

pub mod arena;
mod c_source;
mod error;
mod geometry;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kflow_ai8x_sim::{LayerWeights, Network, OutputWidth, Shape, SimOptions};

pub use error::CodegenError;

/// The generated sources and the facts a firmware needs about them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    pub model_c: String,
    pub model_h: String,
    pub model_bin: Vec<u8>,
    /// Names the network `model.c` computes: 16 hex digits of the blake3
    /// of `model.c`, in `model.h` and `model.bin`'s header.
    pub model_id: String,
    pub input: Shape,
    pub output: Shape,
    /// The last layer's output is `int32_t` (a 32-bit output layer).
    pub output_int32: bool,
    /// Bytes of the static arena (0: the network needs none).
    pub arena_bytes: usize,
    /// Bytes of weights and biases (biases as int32), without `model.bin`'s
    /// header and padding.
    pub constant_bytes: usize,
}

impl Generated {
    /// `model.c`, `model.h` and `model.bin` by file name.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (MODEL_C.to_owned(), self.model_c.clone().into_bytes()),
            (MODEL_H.to_owned(), self.model_h.clone().into_bytes()),
            (MODEL_BIN.to_owned(), self.model_bin.clone()),
        ])
    }

    /// Bytes `kflow_infer` writes to `output`.
    pub fn output_bytes(&self) -> usize {
        self.output.len() * if self.output_int32 { 4 } else { 1 }
    }
}

pub const MODEL_C: &str = "model.c";
pub const MODEL_H: &str = "model.h";
pub const MODEL_BIN: &str = "model.bin";

/// `kflow_check_weights` as `model.c` defines it, for hand-written C that
/// reads the same `model.bin` (it needs `model.h`, `stddef.h` and
/// `stdint.h`).
pub const CHECK_WEIGHTS: &str = c_source::CHECK_WEIGHTS;

/// C sources for `net` with `weights` (one entry per layer, in the
/// simulator's layouts). `options` are the simulator's, so that average
/// pooling rounds as the reference it is compared with.
pub fn generate(net: &Network, weights: &[LayerWeights], options: SimOptions) -> Result<Generated, CodegenError> {
    let geometry = geometry::geometry(net)?;
    geometry::check_weights(net, &geometry, weights)?;
    let buffers = c_source::buffers(net, &geometry);
    let c_source::ModelC { text: model_c, blob } = c_source::model_c(&c_source::Sources {
        net,
        weights,
        geometry: &geometry,
        buffers: &buffers,
        options,
    })?;
    // `geometry` succeeded, so there is a last layer.
    let (output, output_int32) = match (geometry.last(), net.layers.last()) {
        (Some(g), Some(l)) => (g.output, l.output_width == OutputWidth::ThirtyTwo),
        _ => return Err(CodegenError::Network(kflow_ai8x_sim::SimError::NoLayers)),
    };
    let constant_bytes = weights
        .iter()
        .map(|w| w.weight.len() + 4 * w.bias.as_ref().map_or(0, Vec::len))
        .sum();
    let model_id = blake3::hash(model_c.as_bytes()).to_hex()[..16].to_owned();
    let mut generated = Generated {
        model_c,
        model_h: String::new(),
        model_bin: blob.bytes(&model_id),
        model_id,
        input: net.input,
        output,
        output_int32,
        arena_bytes: buffers.arena_bytes,
        constant_bytes,
    };
    generated.model_h = model_h(&generated, net.layers.len());
    Ok(generated)
}

fn model_h(g: &Generated, layers: usize) -> String {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "/* Generated by kflow-cm-codegen: integer inference of a {layers}-layer network. */"
    );
    h.push_str("#ifndef KFLOW_MODEL_H\n#define KFLOW_MODEL_H\n\n#include <stdint.h>\n\n");
    h.push_str("/* The input: int8, CHW (1-D data of length L is C x L x 1). */\n");
    let shape = |h: &mut String, name: &str, s: Shape| {
        let _ = writeln!(h, "#define KFLOW_{name}_CHANNELS {}", s.channels);
        let _ = writeln!(h, "#define KFLOW_{name}_HEIGHT {}", s.height);
        let _ = writeln!(h, "#define KFLOW_{name}_WIDTH {}", s.width);
        let _ = writeln!(h, "#define KFLOW_{name}_LEN {}", s.len());
    };
    shape(&mut h, "INPUT", g.input);
    h.push_str("\n/* The output: CHW, int32_t when KFLOW_OUTPUT_INT32 (4-byte aligned), else int8_t. */\n");
    shape(&mut h, "OUTPUT", g.output);
    let _ = writeln!(h, "#define KFLOW_OUTPUT_INT32 {}", u8::from(g.output_int32));
    let _ = writeln!(h, "#define KFLOW_OUTPUT_BYTES {}", g.output_bytes());
    let _ = writeln!(h, "\n/* Static RAM the network uses besides input and output. */");
    let _ = writeln!(h, "#define KFLOW_ARENA_BYTES {}", g.arena_bytes);
    h.push_str("\n/* model.bin: weights and biases, little-endian, read in place (4-byte aligned). */\n");
    let _ = writeln!(h, "#define KFLOW_MODEL_ID \"{}\"", g.model_id);
    let _ = writeln!(h, "#define KFLOW_WEIGHTS_BYTES {}", g.model_bin.len());
    let _ = writeln!(h, "#define KFLOW_WEIGHTS_VERSION {}", c_source::BLOB_VERSION);
    h.push_str(
        "\n/* 0 when weights (len bytes) is the model.bin generated with this model.c. */\n\
         int kflow_check_weights(const void *weights, uint32_t len);\n",
    );
    h.push_str(
        "\n/* Runs one inference with weights (checked by kflow_check_weights). input and output\n * must not overlap. Returns 0, or -1 for a null pointer. Not reentrant: intermediate\n * results live in one static arena. */\n",
    );
    h.push_str("int kflow_infer(const void *weights, const int8_t *input, void *output);\n\n#endif\n");
    h
}
