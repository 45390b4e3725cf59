//! Memory fit of an int8 model run in software: weights in flash, the
//! activation arena in RAM.

use kflow_model::{Model, Op, Source, counts, infer_shapes};
use serde::Serialize;

use crate::platform::Platform;

/// What an int8 deployment of the model needs, in bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuFit {
    /// int8 weights plus int32 biases (the usual CMSIS-NN layout), after
    /// batch norm is folded into the layer before it.
    pub weight_bytes: u64,
    /// The largest sum of live int8 tensors at any layer: its inputs, its
    /// output, and earlier outputs still to be read by a later layer.
    pub arena_bytes: u64,
    pub macs: u64,
    pub flash_bytes: u64,
    pub ram_bytes: u64,
    /// What does not fit, if anything.
    pub problems: Vec<String>,
}

pub fn cpu_fit(model: &Model, platform: &Platform) -> Result<CpuFit, kflow_model::ModelError> {
    let shapes = infer_shapes(model)?;
    let tally = counts(model)?;
    let mut weight_bytes = 0u64;
    for (layer, ls) in model.layers.iter().zip(&shapes.layers) {
        let fan_in: u64 = match layer.op {
            Op::Conv1d { kernel, .. } => ls.input()[0] as u64 * kernel as u64,
            Op::Conv2d { kernel, .. } => ls.input()[0] as u64 * (kernel * kernel) as u64,
            Op::ConvTranspose2d { kernel, .. } => ls.input()[0] as u64 * (kernel * kernel) as u64,
            Op::Linear { .. } => ls.input().iter().product::<usize>() as u64,
            _ => continue,
        };
        let outputs = ls.output[0] as u64;
        // Every output channel gets a bias once batch norm is folded.
        weight_bytes += outputs * fan_in + 4 * outputs;
    }
    let size = |shape: &[usize]| shape.iter().product::<usize>() as u64;
    // The last reader of each layer's output.
    let mut last_use: Vec<usize> = (0..model.layers.len()).collect();
    for (i, ls) in shapes.layers.iter().enumerate() {
        for s in &ls.sources {
            if let Source::Layer(j) = *s {
                last_use[j] = last_use[j].max(i);
            }
        }
    }
    let mut arena_bytes = 0u64;
    for (i, ls) in shapes.layers.iter().enumerate() {
        let reads_input = ls.sources.contains(&Source::Input);
        let live: u64 = (0..i)
            .filter(|&j| last_use[j] >= i)
            .map(|j| size(&shapes.layers[j].output))
            .sum::<u64>()
            + if reads_input { size(&shapes.input) } else { 0 }
            + size(&ls.output);
        arena_bytes = arena_bytes.max(live);
    }
    let flash_bytes = weight_bytes + platform.firmware_flash_kb * 1024;
    let ram_bytes = arena_bytes + platform.firmware_ram_kb * 1024;
    let mut problems = Vec::new();
    if flash_bytes > platform.flash_kb * 1024 {
        problems.push(format!(
            "flash: {weight_bytes} B of weights + {} KiB of firmware exceed {} KiB",
            platform.firmware_flash_kb, platform.flash_kb
        ));
    }
    if ram_bytes > platform.ram_kb * 1024 {
        problems.push(format!(
            "RAM: an arena of {arena_bytes} B + {} KiB of firmware exceed {} KiB",
            platform.firmware_ram_kb, platform.ram_kb
        ));
    }
    Ok(CpuFit {
        weight_bytes,
        arena_bytes,
        macs: tally.total.macs,
        flash_bytes,
        ram_bytes,
        problems,
    })
}
