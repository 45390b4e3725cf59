//! `evaluate_device`: the flashed model evaluated on its board (SPEC.md
//! §10). Every validation and test window is quantized on the host, sent
//! to the board (accelerator code: packed into the words `cnn_load_input`
//! takes; C inference: the int8 tensor), run there, and its output read
//! back with what the run cost: an accelerator's cycles, or the
//! instructions an emulated core executed, timed at the platform's clock
//! with the core's cycles per instruction (kflow-platform's
//! `core_timing`). The board's own validation outputs (with those of the
//! training split's anomalous windows, for a model that never learned from
//! them) set its threshold, as a deployment would; its test outputs give
//! the quality. Each output is compared bit for bit with the host-side
//! simulator's for the same quantized model and input
//! (`matches_simulator`), so a fault in the generated registers or weight
//! stream shows up here.

use kflow_ai8x_codegen::{InputLayout, Program};
use kflow_ai8x_sim as sim;
use kflow_cm_codegen::MODEL_BIN;
use kflow_data::{Quality, Split};
use kflow_device::{Client, Transport};
use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use kflow_quant::Quantized;
use serde::{Deserialize, Serialize};

use crate::dataset::{TEST, TRAIN, VAL};
use crate::device::{self, FIRMWARE, FLASH, FlashRecord, IMAGE};
use crate::evaluate::{Latency, METRICS, Splits, latency, score};
use crate::generate::one_output;
use crate::inputs;
use crate::json;
use crate::model::MODEL;
use crate::platform::PLATFORM;
use crate::quantize::{QUANT, QUANTIZED};
use crate::split::read_split;
use crate::synthesize::{ALLOCATION, WEIGHTS};

pub struct EvaluateDeviceRule;

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required(
        "flashed",
        AttrType::Label,
        "the `[[flash]]` target: the board and its model",
    ),
    AttrSpec::optional(
        "synthesized",
        AttrType::Label,
        "accelerator code: the `[[ai8x_synthesize]]` target the flashed code was generated from",
    ),
    AttrSpec::optional(
        "platform",
        AttrType::Label,
        "C inference (no `synthesized`): the `[[platform]]` whose core and clock time the executed instructions",
    ),
    AttrSpec::required(
        "quantized",
        AttrType::Label,
        "the `[[quantize]]` target synthesized: the host-side simulator runs it for comparison",
    ),
    AttrSpec::required(
        "model",
        AttrType::Label,
        "the `[[model]]` or `[[generate]]` target (how outputs score)",
    ),
    AttrSpec::required(
        "dataset",
        AttrType::Label,
        "the `[[dataset]]` whose validation and test splits to stream",
    ),
    AttrSpec::optional(
        "windows",
        AttrType::Int,
        "stream only the first N validation and N test windows: the cost of a run and bit-exactness, without quality (default: every window)",
    ),
    AttrSpec::optional(
        "threshold_percentile",
        AttrType::Float,
        "autoencoders: the anomaly threshold is this percentile of nominal validation errors (default 99)",
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "flashed")]
    _flashed: String,
    synthesized: Option<String>,
    platform: Option<String>,
    #[serde(rename = "quantized")]
    _quantized: String,
    #[serde(rename = "model")]
    _model: String,
    #[serde(rename = "dataset")]
    _dataset: String,
    windows: Option<usize>,
    threshold_percentile: Option<f64>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Params {
    pub threshold_percentile: f64,
    /// The flashed code is C inference for a core without an accelerator.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cpu: bool,
    /// Windows per split, when not every window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<usize>,
}

#[derive(Serialize)]
struct Metrics {
    model: String,
    board: FlashRecord,
    /// Chosen on the board's validation outputs (when every window ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quality: Option<Quality>,
    latency: OnBoardLatency,
    /// Every output the board returned equals the host-side simulator's,
    /// bit for bit.
    matches_simulator: bool,
    /// Windows run on the board and compared (validation, held-out
    /// anomalous and test).
    windows_compared: usize,
    /// Of which test windows.
    test_windows_compared: usize,
    mismatched_windows: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_mismatch: Option<Mismatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forecast_weights: Option<Vec<f64>>,
    /// A forecaster's readings whose holding still over a window flags it.
    #[serde(skip_serializing_if = "Option::is_none")]
    still_readings: Option<Vec<String>>,
}

#[derive(Serialize)]
struct OnBoardLatency {
    /// Instructions of one inference, as an emulated core counts them.
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<Latency>,
    /// Cycles of one inference.
    cycles: Latency,
    /// The same at the clock `clock_mhz`.
    us: Latency,
    clock_mhz: f64,
    /// Where `cycles` come from: the board's count, or instructions times
    /// a core's cycles per instruction.
    cycles_from: String,
}

#[derive(Clone, Serialize)]
struct Mismatch {
    split: &'static str,
    window: usize,
    /// First differing byte of the output buffer.
    byte: usize,
    board: Option<u8>,
    simulator: Option<u8>,
}

impl Rule for EvaluateDeviceRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "evaluate_device"
    }

    fn version(&self) -> u32 {
        2
    }

    fn summary(&self) -> &'static str {
        "quality and cycles of a flashed model on its board, compared bit for bit with the host-side simulator"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        let cpu = attrs.synthesized.is_none();
        if cpu && attrs.platform.is_none() {
            return Err(planner.error(
                "platform",
                "C inference (no `synthesized`) needs `platform`, whose clock times the executed instructions",
            ));
        }
        if attrs.windows == Some(0) {
            return Err(planner.error("windows", "`windows` is at least 1"));
        }
        let params = Params {
            threshold_percentile: attrs.threshold_percentile.unwrap_or(99.0),
            cpu,
            windows: attrs.windows,
        };
        if !(0.0..=100.0).contains(&params.threshold_percentile) {
            return Err(planner.error(
                "threshold_percentile",
                "`threshold_percentile` is a percentile, 0..=100",
            ));
        }
        let board: &[(&str, &str)] = if cpu {
            &[
                (FLASH, "flashed"),
                (FIRMWARE, "flashed"),
                (MODEL_BIN, "flashed"),
                (PLATFORM, "platform"),
            ]
        } else {
            &[
                (FLASH, "flashed"),
                (IMAGE, "flashed"),
                (ALLOCATION, "synthesized"),
                (WEIGHTS, "synthesized"),
            ]
        };
        let model = [
            (MODEL, "model"),
            (QUANT, "quantized"),
            (QUANTIZED, "quantized"),
            (TRAIN, "dataset"),
            (VAL, "dataset"),
            (TEST, "dataset"),
        ];
        let inputs = board
            .iter()
            .chain(&model)
            .map(|(name, attr)| Ok(((*name).to_owned(), one_output(planner, target, attr, name)?)))
            .collect::<Result<Vec<_>, Diagnostic>>()?;
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&params)?,
            inputs,
            outputs: vec![METRICS.to_owned()],
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let record: FlashRecord = json::input(cx, FLASH)?;
        let url: kflow_device::DeviceUrl = record
            .device
            .parse()
            .map_err(|e: kflow_device::url::UrlError| ActionError::new(format!("input `{FLASH}`: {e}")))?;
        let q = crate::quantize::quantized(cx)?;
        let (wire, image, boot) = if params.cpu {
            let platform: kflow_platform::Platform = json::input(cx, PLATFORM)?;
            let timing = kflow_platform::core_timing(&platform.cpu).ok_or_else(|| {
                ActionError::new(format!(
                    "platform `{}`: kflow has no timing of a `{}` core to turn instructions into time",
                    platform.name, platform.cpu
                ))
            })?;
            let boot = device::booting(&url, &cx.input(FIRMWARE)?.path);
            let platform = Box::new(platform);
            (Wire::Cpu { platform, timing }, json::input_bytes(cx, MODEL_BIN)?, boot)
        } else {
            let program = crate::codegen::program(cx)?;
            let image = json::input_bytes(cx, IMAGE)?;
            (Wire::accelerator(&program), image, url.clone())
        };
        let mut connection = device::connect(cx, &boot)?;
        let client = &mut connection.client;
        let (info, _) = device::ensure_flashed(cx, client, &image)?;
        if (info.identity.as_str(), info.firmware_version.as_str()) != (&record.identity, &record.firmware) {
            return Err(ActionError::new(format!(
                "device {url} now reports board `{}` with firmware `{}`, but the model was flashed to `{}` with `{}`: run `kflow build --rerun-devices`",
                info.identity, info.firmware_version, record.identity, record.firmware
            )));
        }
        let model = inputs::model(cx)?;
        let (val, test) = (read_split(cx, VAL)?, read_split(cx, TEST)?);
        let limit = params.windows.unwrap_or(usize::MAX);
        // The held-out windows only set the threshold, which a timing run
        // over the first `windows` does not choose; a classifier has none.
        let held_out = match params.windows {
            None if !model.task.learns_labels() => read_split(cx, TRAIN)?.of_class(true),
            _ => Split::default(),
        };
        let (n_val, n_held_out, n_test) = (val.len().min(limit), held_out.len(), test.len().min(limit));
        let mut board = OnBoard::new(wire, &q, client);
        cx.progress(&format!("streaming {n_val} validation windows through {url}"));
        let val_out = board.stream(cx, &val, n_val, "validation")?;
        if n_held_out > 0 {
            cx.progress(&format!(
                "streaming {n_held_out} held-out anomalous windows through {url}"
            ));
        }
        let held_out_out = board.stream(cx, &held_out, n_held_out, "held-out")?;
        cx.progress(&format!("streaming {n_test} test windows through {url}"));
        let test_out = board.stream(cx, &test, n_test, "test")?;
        let splits = Splits {
            val: &val,
            held_out: &held_out,
            test: &test,
        };
        let scored = params.windows.is_none().then(|| {
            score(
                &model,
                &splits,
                [&val_out, &held_out_out, &test_out],
                params.threshold_percentile,
            )
        });
        let latency = board.latency(&info);
        let metrics = Metrics {
            model: model.name.clone(),
            board: record,
            threshold: scored.as_ref().map(|s| s.threshold),
            quality: scored.as_ref().map(|s| s.quality.clone()),
            latency,
            matches_simulator: board.mismatched == 0,
            windows_compared: n_val + n_held_out + n_test,
            test_windows_compared: n_test,
            mismatched_windows: board.mismatched,
            first_mismatch: board.first_mismatch.clone(),
            still_readings: scored.as_ref().and_then(|s| s.still_readings.clone()),
            forecast_weights: scored.and_then(|s| s.forecast_weights),
        };
        cx.write_output(METRICS, &json::pretty(&metrics)?)?;
        cx.set_metadata(serde_json::json!({
            "f1": metrics.quality.as_ref().map(|q| q.f1),
            "matches_simulator": metrics.matches_simulator,
            "latency_us": metrics.latency.us.median,
        }));
        Ok(Outcome::Done)
    }
}

/// How a board takes inputs, returns outputs and counts what a run cost.
enum Wire {
    /// Generated accelerator code: inputs packed as `cnn_load_input`
    /// takes them, outputs as `cnn_unload` gives them, cycles counted.
    Accelerator {
        device: kflow_ai8x::Device,
        layout: InputLayout,
        width: Option<kflow_ai8x_codegen::OutputWidth>,
    },
    /// C inference: the int8 tensor in, the simulator's output out
    /// (int32 values little-endian), instructions counted.
    Cpu {
        platform: Box<kflow_platform::Platform>,
        timing: kflow_platform::CoreTiming,
    },
}

impl Wire {
    fn accelerator(program: &Program) -> Wire {
        Wire::Accelerator {
            device: match program.device {
                kflow_ai8x_codegen::Device::Max78000 => kflow_ai8x::Device::Max78000,
                kflow_ai8x_codegen::Device::Max78002 => kflow_ai8x::Device::Max78002,
            },
            layout: InputLayout::new(program),
            width: program.layers.last().map(|l| l.output_width),
        }
    }

    /// The device whose arithmetic the simulator follows (C inference
    /// computes the accelerator's; the MAX78002's limits are the wider).
    fn device(&self) -> kflow_ai8x::Device {
        match self {
            Wire::Accelerator { device, .. } => *device,
            Wire::Cpu { .. } => kflow_ai8x::Device::Max78002,
        }
    }

    fn input(&self, input: &sim::Tensor<i8>) -> Vec<u8> {
        match self {
            Wire::Accelerator { layout, .. } => layout.pack(&input.data).iter().flat_map(|w| w.to_le_bytes()).collect(),
            Wire::Cpu { .. } => input.data.iter().map(|&v| v as u8).collect(),
        }
    }

    fn output(&self, output: &sim::Output) -> Vec<u8> {
        match self {
            Wire::Accelerator { width, .. } => kflow_ai8x_board::output_bytes(output, *width),
            Wire::Cpu { .. } => match output {
                sim::Output::Int8(t) => t.data.iter().map(|&v| v as u8).collect(),
                sim::Output::Int32(t) => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
        }
    }

    /// The count this board must report for a run.
    fn cost(&self, statistics: &kflow_device::RunStatistics) -> Option<u64> {
        match self {
            Wire::Accelerator { .. } => statistics.cycles,
            Wire::Cpu { .. } => statistics.instructions,
        }
    }
}

/// Windows through a board, beside the host-side simulator.
struct OnBoard<'a> {
    client: &'a mut Client<Box<dyn Transport>>,
    q: &'a Quantized,
    net: sim::Network,
    weights: Vec<sim::LayerWeights>,
    wire: Wire,
    /// Cycles (accelerator) or instructions (C inference) per run.
    costs: Vec<u64>,
    mismatched: usize,
    first_mismatch: Option<Mismatch>,
}

impl<'a> OnBoard<'a> {
    fn new(wire: Wire, q: &'a Quantized, client: &'a mut Client<Box<dyn Transport>>) -> OnBoard<'a> {
        let (net, weights) = kflow_quant::to_sim(q, wire.device());
        OnBoard {
            client,
            q,
            net,
            weights,
            wire,
            costs: Vec::new(),
            mismatched: 0,
            first_mismatch: None,
        }
    }

    /// What the runs cost, in cycles and time and, for C inference, in
    /// instructions.
    fn latency(&self, info: &kflow_device::DeviceInfo) -> OnBoardLatency {
        let mut counted: Vec<f64> = self.costs.iter().map(|&c| c as f64).collect();
        // Cycles per counted unit, the clock, and how cycles were had.
        let (per_count, clock_hz, cycles_from) = match &self.wire {
            Wire::Accelerator { .. } => (1.0, info.clock_hz as f64, "the board's cycle count".to_owned()),
            Wire::Cpu { platform, timing } => (
                timing.cycles_per_instruction,
                platform.cpu_clock_mhz * 1e6,
                format!(
                    "instructions × {} cycles per instruction ({})",
                    timing.cycles_per_instruction, timing.basis
                ),
            ),
        };
        let mut cycles: Vec<f64> = counted.iter().map(|c| c * per_count).collect();
        let mut us: Vec<f64> = cycles.iter().map(|c| c * 1e6 / clock_hz.max(1.0)).collect();
        let counts_instructions = matches!(self.wire, Wire::Cpu { .. });
        OnBoardLatency {
            instructions: counts_instructions.then(|| latency(&mut counted)),
            cycles: latency(&mut cycles),
            us: latency(&mut us),
            clock_mhz: clock_hz / 1e6,
            cycles_from,
        }
    }

    /// The board's outputs for every window of `split`, as real values.
    /// A line of progress per tenth of the windows: a slow link (an
    /// emulator's one-byte UART) takes minutes.
    fn stream(
        &mut self,
        cx: &ActionContext<'_>,
        split: &Split,
        windows: usize,
        name: &'static str,
    ) -> Result<Vec<f32>, ActionError> {
        let quant = |e: kflow_quant::QuantError| ActionError::new(e.to_string());
        let per = split.shape[1] * split.shape[2];
        let mut outputs = Vec::new();
        let n = windows.min(split.len());
        let step = n.div_ceil(10).max(1);
        for i in 0..n {
            if i > 0 && i % step == 0 {
                cx.progress(&format!("{name}: {i} of {n} windows"));
            }
            let input = kflow_quant::sample_input(&self.net, &split.x[i * per..(i + 1) * per]).map_err(quant)?;
            let expected = sim::simulate(&self.net, &self.weights, &input, sim::SimOptions::default())
                .map_err(|e| ActionError::new(format!("host-side simulator: {e}")))?;
            let inference = self
                .client
                .infer(&self.wire.input(&input))
                .map_err(|e| ActionError::new(format!("{name} window {i}: {e}")))?;
            let cost = self.wire.cost(&inference.statistics).ok_or_else(|| {
                ActionError::new(format!(
                    "{name} window {i}: the board did not say what the run cost ({:?})",
                    inference.statistics
                ))
            })?;
            self.costs.push(cost);
            let simulated = self.wire.output(&expected);
            if inference.output != simulated {
                self.mismatched += 1;
                if self.first_mismatch.is_none() {
                    let byte = (0..inference.output.len().max(simulated.len()))
                        .find(|&b| inference.output.get(b) != simulated.get(b))
                        .unwrap_or(0);
                    self.first_mismatch = Some(Mismatch {
                        split: name,
                        window: i,
                        byte,
                        board: inference.output.get(byte).copied(),
                        simulator: simulated.get(byte).copied(),
                    });
                }
            }
            let on_board = decode(&expected, &inference.output).ok_or_else(|| {
                ActionError::new(format!(
                    "{name} window {i}: the board returned {} output bytes; the model's output is {} values",
                    inference.output.len(),
                    expected.shape().len()
                ))
            })?;
            let real = kflow_quant::real_outputs(self.q, &on_board).map_err(quant)?;
            outputs.extend(real.into_iter().map(|v| v as f32));
        }
        Ok(outputs)
    }
}

/// The board's output buffer read as the simulator's kind of output
/// (`like`): one byte per value, or a little-endian word per value.
fn decode(like: &sim::Output, bytes: &[u8]) -> Option<sim::Output> {
    let shape = like.shape();
    let n = shape.len();
    if bytes.len() == n {
        return sim::Tensor::new(shape, bytes.iter().map(|&b| b as i8).collect()).map(sim::Output::Int8);
    }
    if bytes.len() == 4 * n {
        let data = bytes
            .chunks_exact(4)
            .map(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        return sim::Tensor::new(shape, data).map(sim::Output::Int32);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_bytes_decode_as_bytes_or_words_by_their_count() {
        let shape = sim::Shape::new(2, 1, 1);
        let like = sim::Output::Int32(sim::Tensor::new(shape, vec![0, 0]).unwrap());
        match decode(&like, &[0xff, 1]) {
            Some(sim::Output::Int8(t)) => assert_eq!(t.data, vec![-1, 1]),
            _ => panic!("two bytes are two int8 values"),
        }
        let words: Vec<u8> = [-5i32, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        match decode(&like, &words) {
            Some(sim::Output::Int32(t)) => assert_eq!(t.data, vec![-5, 7]),
            _ => panic!("eight bytes are two int32 values"),
        }
        assert!(decode(&like, &[0; 3]).is_none());
    }
}
