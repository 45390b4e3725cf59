//! C sources, weight stream and Zephyr module for a network on the
//! MAX78000/MAX78002 CNN accelerator (spec/max78002.md §6).
//!
//! The input is a [`Program`]: layers already fused, checked and allocated
//! (by `kflow-ai8x`), with their integer weights. [`generate`] computes the
//! register values (§6.3), packs the kernels (§5.5) and biases (§5.6), and
//! writes `cnn_model.c`, `cnn_model.h`, `cnn_model_weights.h`,
//! `cnn_model.bin`, the driver's register writes as data (`cnn_model.regs`,
//! [`register_list`]) and a Zephyr module skeleton.
//!
//! Scope: conv1d, conv2d (1×1, 3×3; depthwise in broadcast mode) and
//! linear (with or without flatten) layers with 1-, 2-, 4- or 8-bit or
//! binary weights (8-bit only with flatten or depthwise),
//! optional max/avg pooling, 8- or 32-bit outputs, contiguous output maps
//! starting at a multiple of 4 (§4.4); passthrough layers (pooling-only,
//! §2.6, or plain copies, one or more passes) whose output map equals
//! their packed input map; element-wise stages (§2.7), alone or fused,
//! over operands that their producers write interleaved (`write_gap`).
//! Anything else is `CodegenError::Unsupported` or `Invalid`, never code
//! with register values that neither the spec nor the izer reference
//! gives.
//!
//! Passthrough registers follow what ADI's izer writes (ai8x-synthesis
//! izer/backend/max7800x.py, checked against the reference cases in
//! `kflow-ai8x`'s tests/data/izer-reference): ONED `1 << 8` plus the time
//! slots of the widest quadrant, which OCHAN repeats; POST `3 << 24`; a
//! per-quadrant WPTR_BASE; WPTR_TOFFS instead of WPTR_MOFFS; processor
//! enables without mask enables; no kernel memory, so no MCNT1 and no
//! weight-width span in LCTL2.

mod bias;
mod blob;
mod c_source;
mod device;
mod error;
mod geometry;
mod input_layout;
mod kernels;
mod program;
mod register_list;
mod registers;
#[cfg(test)]
mod test_layers;
mod zephyr;

use std::collections::BTreeMap;

pub use bias::broadcast_bias_layout;
pub use blob::{BlobError, Chunk, ModelBlob, parse_bin};
pub use device::{COLUMN_BYTES, ControlRegister, Device, PROCESSORS, QUADRANTS};
pub use error::CodegenError;
pub use geometry::Passes;
pub use input_layout::InputLayout;
pub use program::{
    Activation, Bias, DataFormat, Dims, Eltwise, EltwiseOp, Layer, Operator, OutputWidth, Pool, PoolKind, Program,
};
pub use register_list::{RegisterList, RegisterListError, Write, register_list};
pub use registers::{LayerRegister, RegisterWrite, WRITE_ORDER, layer_registers};

/// The generated files by path, relative to the module's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    pub files: BTreeMap<String, Vec<u8>>,
}

/// The weight and bias stream of `program` (`cnn_model.bin` parsed).
pub fn model_blob(program: &Program) -> Result<ModelBlob, CodegenError> {
    Ok(Model::build(program)?.blob)
}

/// The integer weights and biases a board holds for `program`, read back
/// from its kernel memory (`column(processor, column)`: 9 bytes in
/// byte-index order, `None` where nothing was written) and bias memory
/// (`bias[q]`: quadrant `q`'s bytes), by the same placement the packing
/// uses (§5.5, §5.6). `program` supplies everything but the values: its
/// weight vectors give only their lengths and its biases their places.
/// Returns per layer `(weights, bias values)`.
#[allow(clippy::type_complexity)]
pub fn unpack_parameters(
    program: &Program,
    column: impl Fn(u32, u32) -> Option<[u8; COLUMN_BYTES]>,
    bias: &[Vec<u8>; device::QUADRANTS as usize],
) -> Result<Vec<(Vec<i8>, Option<Vec<i8>>)>, CodegenError> {
    let checked = geometry::check(program)?;
    let weights = kernels::unpack(&checked, column);
    let biases = bias::unpack(&checked, bias);
    Ok(weights.into_iter().zip(biases).collect())
}

/// Everything the files are written from.
struct Model<'a> {
    checked: geometry::Checked<'a>,
    registers: Vec<RegisterWrite>,
    bias: bias::BiasImage,
    blob: ModelBlob,
}

impl<'a> Model<'a> {
    fn build(program: &'a Program) -> Result<Model<'a>, CodegenError> {
        let checked = geometry::check(program)?;
        let kernels = kernels::KernelImage::pack(&checked)?;
        let bias = bias::BiasImage::pack(&checked)?;
        let blob = ModelBlob {
            kernels: kernels.chunks(program.device),
            biases: bias.chunks(program.device),
        };
        Ok(Model {
            registers: registers::register_writes(&checked),
            checked,
            bias,
            blob,
        })
    }
}

/// Generates every file for `program`. The bytes depend on the program
/// only (no dates, paths or host names).
pub fn generate(program: &Program) -> Result<Generated, CodegenError> {
    let model = Model::build(program)?;
    let mut files = BTreeMap::new();
    files.insert("cnn_model.h".to_owned(), c_source::header(&model).into_bytes());
    files.insert("cnn_model.c".to_owned(), c_source::source(&model).into_bytes());
    files.insert(
        "cnn_model_weights.h".to_owned(),
        c_source::weights_header(&model).into_bytes(),
    );
    files.insert("cnn_model.bin".to_owned(), model.blob.to_bytes());
    files.insert(
        "cnn_model.regs".to_owned(),
        register_list::list(&model.checked, &model.registers).to_bytes(program.device),
    );
    for (path, text) in zephyr::module_files() {
        files.insert(path.to_owned(), text.as_bytes().to_vec());
    }
    Ok(Generated { files })
}
