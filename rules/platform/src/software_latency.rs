//! Latency of a model's software inference on a CPU-only platform,
//! estimated without running anything: the instructions of kflow's
//! generated C by the core's fitted model (`kflow_ai8x::timing`), at the
//! core's cycles per instruction and the platform's CPU clock.

use kflow_ai8x::timing::{SoftwareKind, SoftwareLayer};
use kflow_model::{Model, ModelError, Op, infer_shapes};

use crate::core_timing::core_timing;
use crate::platform::Platform;

/// The latency model's view of a float model's layers. The generated C
/// runs the fused int8 network (batch norm folded, activations and
/// flattening in the operator's output step), so those layers cost
/// nothing of their own; pooling and `add` count as layers of their own
/// (in the fused network they join the next operator, at about the cost
/// of their inputs). A transposed convolution costs what the C computes:
/// every product over its zero-stuffed input.
pub fn software_layers(model: &Model) -> Result<Vec<SoftwareLayer>, ModelError> {
    let shapes = infer_shapes(model)?;
    let numel = |s: &[usize]| s.iter().product::<usize>() as u64;
    let mut layers = Vec::new();
    for (layer, ls) in model.layers.iter().zip(&shapes.layers) {
        let outputs = numel(&ls.output);
        let in_channels = ls.input().first().copied().unwrap_or(0) as u64;
        let out_channels = ls.output.first().copied().unwrap_or(0) as u64;
        let pixels = outputs / out_channels.max(1);
        let conv = |kind, width: usize, taps: usize| {
            let n = in_channels * taps as u64;
            SoftwareLayer::of_dot_products(kind, pixels, out_channels, n, Some(width as u64), 0, outputs)
        };
        layers.push(match layer.op {
            Op::Conv1d { kernel, .. } => conv(SoftwareKind::Conv1d, kernel, kernel),
            Op::Conv2d { kernel, .. } => conv(SoftwareKind::Conv2d, kernel, kernel * kernel),
            Op::ConvTranspose2d { kernel, .. } => conv(SoftwareKind::ConvTranspose2d, kernel, kernel * kernel),
            Op::Linear { out_features, .. } => SoftwareLayer::of_dot_products(
                SoftwareKind::Linear,
                1,
                out_features as u64,
                numel(ls.input()),
                None,
                0,
                outputs,
            ),
            Op::MaxPool { kernel, .. } | Op::AvgPool { kernel, .. } => {
                // Every pooled element reads its window: `kernel` long in 1-D data, square in 2-D.
                let window = if ls.input().len() == 2 { kernel } else { kernel * kernel };
                SoftwareLayer::pool_only(outputs * window as u64, outputs)
            }
            Op::Add => SoftwareLayer::pool_only(ls.inputs.iter().map(|s| numel(s)).sum(), outputs),
            Op::Flatten | Op::BatchNorm { .. } | Op::Relu | Op::Abs => continue,
        });
    }
    Ok(layers)
}

/// The estimated latency in microseconds, or `None` when kflow has no
/// timing of the platform's core.
pub fn software_latency_us(model: &Model, platform: &Platform) -> Result<Option<f64>, ModelError> {
    let Some(timing) = core_timing(&platform.cpu) else {
        return Ok(None);
    };
    let instructions = timing.software.instructions(&software_layers(model)?);
    Ok(Some(
        instructions * timing.cycles_per_instruction / platform.cpu_clock_mhz,
    ))
}

#[cfg(test)]
mod tests {
    use kflow_ai8x::timing::M4_SOFTWARE;

    use super::*;

    fn model() -> Model {
        let json = serde_json::json!({
            "format": "kflow-model/1", "name": "cnn", "task": {"kind": "classifier", "classes": 2}, "input": [3, 8, 8],
            "layers": [
                {"name": "conv0", "op": "conv2d", "out_channels": 8, "kernel": 3, "padding": 1},
                {"name": "bn0", "op": "batch_norm"},
                {"name": "act0", "op": "relu"},
                {"name": "pool0", "op": "max_pool", "kernel": 2, "stride": 2},
                {"name": "up", "op": "conv_transpose2d", "out_channels": 4, "kernel": 3, "padding": 1, "stride": 2, "output_padding": 1},
                {"name": "flat", "op": "flatten"},
                {"name": "fc", "op": "linear", "out_features": 2}
            ]
        });
        serde_json::from_value(json).unwrap()
    }

    fn platform(cpu: &str) -> Platform {
        serde_json::from_value(serde_json::json!({
            "name": "mcu", "cpu": cpu, "cpu_clock_mhz": 100.0, "flash_kb": 512, "ram_kb": 128
        }))
        .unwrap()
    }

    #[test]
    fn operators_and_pooling_are_layers_and_fused_steps_are_not() {
        let layers = software_layers(&model()).unwrap();
        let kinds: Vec<SoftwareKind> = layers.iter().map(|l| l.kind).collect();
        assert_eq!(
            kinds,
            [
                SoftwareKind::Conv2d,
                SoftwareKind::PoolOnly,
                SoftwareKind::ConvTranspose2d,
                SoftwareKind::Linear
            ]
        );
        assert_eq!(layers[0].macs, 8 * 64 * 3 * 9);
        assert_eq!((layers[1].assembled, layers[1].outputs), (8 * 16 * 4, 8 * 16));
        // Every product over the zero-stuffed 8×8 input: 4 × 64 outputs of 8 × 9 each.
        assert_eq!(layers[2].macs, 4 * 64 * 8 * 9);
        assert_eq!(layers[3].macs, 2 * 4 * 64);
    }

    #[test]
    fn latency_is_the_fitted_instructions_at_the_cores_cpi_and_clock() {
        let m = model();
        let instructions = M4_SOFTWARE.instructions(&software_layers(&m).unwrap());
        assert!(instructions > 0.0);
        let us = software_latency_us(&m, &platform("cortex-m4f")).unwrap().unwrap();
        let cpi = core_timing("cortex-m4f").unwrap().cycles_per_instruction;
        assert!((us - instructions * cpi / 100.0).abs() < 1e-9);
        assert_eq!(software_latency_us(&m, &platform("cortex-m33")).unwrap(), None);
    }
}
