//! The child actions a search plans: each an ordinary action of an existing
//! rule (`generate`, `prune`, `quantize`, `check`, `train`,
//! `ai8x_synthesize`, `codegen`, `evaluate`), with that rule's own params.

use kflow_cm_codegen::MODEL_BIN;
use kflow_engine::{ActionError, BlobRef, ChildInput, ChildSpec};
use kflow_train::Hyper;
use serde::Serialize;

use super::candidate::name;
use super::config::Params;
use crate::check::CHECK;
use crate::codegen::{BIN, CPU_FILES, REGS};
use crate::dataset::{META, TEST, TRAIN, VAL};
use crate::device::{FIRMWARE, FLASH, IMAGE};
use crate::evaluate::{METRICS, ONNX};
use crate::generate::{GENOME, HISTORY_INPUT, META_INPUT, SPACE_INPUT};
use crate::model::{INIT, MODEL};
use crate::platform::PLATFORM;
use crate::prune::REPORT;
use crate::quantize::{QAT_LOG, QUANT, QUANTIZED};
use crate::synthesize::{ALLOCATION, NETWORK};
use crate::train::{Budget, CHECKPOINT, LOG, WEIGHTS};

/// The artifacts every candidate's stages read.
pub struct Shared {
    /// The spaces, as one JSON list.
    pub spaces: BlobRef,
    pub meta: BlobRef,
    pub train: BlobRef,
    pub val: BlobRef,
    pub test: BlobRef,
    pub platform: Option<BlobRef>,
    /// The `check_files`, by input name: inputs of every check child, so
    /// that editing one reruns the checks.
    pub check_files: Vec<(String, BlobRef)>,
}

/// An input of a child: an artifact, or an earlier child's output.
#[derive(Clone)]
pub enum From {
    Blob(BlobRef),
    Child(usize, &'static str),
}

impl From {
    fn input(&self, name: &str) -> (String, ChildInput) {
        let input = match self {
            From::Blob(b) => ChildInput::Blob(*b),
            From::Child(child, output) => ChildInput::Sibling {
                child: *child,
                output: (*output).to_owned(),
            },
        };
        (name.to_owned(), input)
    }
}

/// The board C inference is flashed to.
pub enum CpuBoard {
    /// The search's `device`, which `--device` may override.
    Search(Option<String>),
    /// A board of its own.
    Fixed(String),
}

/// A batch of children under construction.
#[derive(Default)]
pub struct Batch {
    pub specs: Vec<ChildSpec>,
}

/// The optimizer settings of a kept model's fine-tuning.
fn fine_tune_hyper(lr: f64, seed: u64) -> Hyper {
    Hyper {
        lr,
        seed,
        ..Hyper::default()
    }
}

fn json<T: Serialize>(value: &T) -> Result<serde_json::Value, ActionError> {
    serde_json::to_value(value).map_err(|e| ActionError::new(e.to_string()))
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

impl Batch {
    fn push(
        &mut self,
        index: u64,
        name: &str,
        rule: &str,
        params: serde_json::Value,
        inputs: Vec<(String, ChildInput)>,
        outputs: &[&str],
    ) -> usize {
        self.specs.push(ChildSpec {
            group: super::candidate::name(index),
            name: name.to_owned(),
            rule: rule.to_owned(),
            params,
            inputs,
            outputs: names(outputs),
        });
        self.specs.len() - 1
    }

    pub fn generate(
        &mut self,
        p: &Params,
        index: u64,
        shared: &Shared,
        history: Option<BlobRef>,
    ) -> Result<usize, ActionError> {
        let params = crate::generate::Params {
            strategy: p.strategy,
            index,
            seed: p.seed,
            name: name(index),
        };
        let mut inputs = vec![
            From::Blob(shared.spaces).input(SPACE_INPUT),
            From::Blob(shared.meta).input(META_INPUT),
        ];
        inputs.extend(history.map(|h| From::Blob(h).input(HISTORY_INPUT)));
        Ok(self.push(
            index,
            "generate",
            "generate",
            json(&params)?,
            inputs,
            &[MODEL, INIT, GENOME],
        ))
    }

    /// Pruning as configured; with `fine_tune`, its fine-tune epochs too.
    pub fn prune(
        &mut self,
        p: &Params,
        index: u64,
        stage: &str,
        (model, weights): (From, From),
        fine_tune: bool,
        shared: &Shared,
    ) -> Result<Option<usize>, ActionError> {
        let Some(prune) = &p.prune else {
            return Ok(None);
        };
        let epochs = if fine_tune { prune.epochs } else { 0 };
        let params = crate::prune::Params {
            kind: prune.kind,
            amount: prune.amount,
            epochs,
            hyper: fine_tune_hyper(prune.lr, p.seed),
        };
        let mut inputs = vec![model.input(MODEL), weights.input(WEIGHTS)];
        if epochs > 0 {
            inputs.push(From::Blob(shared.train).input(TRAIN));
            inputs.push(From::Blob(shared.val).input(VAL));
        }
        let name = format!("{stage}/prune");
        Ok(Some(self.push(
            index,
            &name,
            "prune",
            json(&params)?,
            inputs,
            &[MODEL, WEIGHTS, REPORT],
        )))
    }

    /// Quantization: calibrated on `samples` training windows, with the
    /// quantization-aware epochs when `fine_tune`.
    pub fn quantize(
        &mut self,
        p: &Params,
        index: u64,
        stage: &str,
        (model, weights): (From, From),
        fine_tune: bool,
        shared: &Shared,
    ) -> Result<usize, ActionError> {
        let q = &p.quantize;
        let qat = (fine_tune && q.qat_epochs > 0).then(|| crate::quantize::Qat {
            epochs: q.qat_epochs,
            hyper: fine_tune_hyper(q.qat_lr, p.seed),
        });
        let mut inputs = vec![
            model.input(MODEL),
            weights.input(WEIGHTS),
            From::Blob(shared.train).input(TRAIN),
        ];
        let mut outputs = vec![QUANTIZED, QUANT];
        if qat.is_some() {
            inputs.push(From::Blob(shared.val).input(VAL));
            outputs.push(QAT_LOG);
        }
        let params = crate::quantize::Params {
            options: q.options.clone(),
            calibration_samples: if fine_tune {
                q.calibration_samples
            } else {
                q.precheck_samples
            },
            qat,
        };
        let name = format!("{stage}/quantize");
        Ok(self.push(index, &name, "quantize", json(&params)?, inputs, &outputs))
    }

    pub fn check(
        &mut self,
        p: &Params,
        index: u64,
        stage: &str,
        model: From,
        quantized: Option<usize>,
        (platform, shared): (BlobRef, &Shared),
    ) -> Result<usize, ActionError> {
        let mut inputs = vec![model.input(MODEL), From::Blob(platform).input(PLATFORM)];
        if let Some(q) = quantized {
            inputs.push(From::Child(q, QUANT).input(QUANT));
            inputs.push(From::Child(q, QUANTIZED).input(QUANTIZED));
        }
        inputs.extend(
            shared
                .check_files
                .iter()
                .map(|(name, blob)| From::Blob(*blob).input(name)),
        );
        let name = format!("{stage}/check");
        Ok(self.push(index, &name, "check", json(&p.check)?, inputs, &[CHECK]))
    }

    /// Training from the candidate's initial weights to `epochs`; the
    /// epochs a lower rung trained are the same cached actions.
    pub fn train(
        &mut self,
        p: &Params,
        index: u64,
        rung: usize,
        epochs: u32,
        (model, init): (BlobRef, BlobRef),
        shared: &Shared,
    ) -> Result<usize, ActionError> {
        let params = crate::train::Params::Run {
            hyper: p.hyper.clone(),
            budget: Budget {
                epochs,
                seconds: p.timeout_s,
                patience: None,
            },
        };
        let inputs = vec![
            From::Blob(model).input(MODEL),
            From::Blob(init).input(INIT),
            From::Blob(shared.train).input(TRAIN),
            From::Blob(shared.val).input(VAL),
        ];
        let name = format!("rung-{rung}/train");
        Ok(self.push(
            index,
            &name,
            "train",
            json(&params)?,
            inputs,
            &[WEIGHTS, CHECKPOINT, LOG],
        ))
    }

    pub fn synthesize(&mut self, index: u64, quantized: usize, platform: BlobRef) -> Result<usize, ActionError> {
        let params = crate::synthesize::Params { arch: name(index) };
        let inputs = vec![
            From::Child(quantized, QUANT).input(QUANT),
            From::Child(quantized, QUANTIZED).input(QUANTIZED),
            From::Blob(platform).input(PLATFORM),
        ];
        Ok(self.push(
            index,
            "deploy/synthesize",
            "ai8x_synthesize",
            json(&params)?,
            inputs,
            &[NETWORK, ALLOCATION, crate::synthesize::WEIGHTS],
        ))
    }

    pub fn codegen(&mut self, index: u64, synthesized: usize) -> usize {
        let inputs = vec![
            From::Child(synthesized, ALLOCATION).input(ALLOCATION),
            From::Child(synthesized, crate::synthesize::WEIGHTS).input(crate::synthesize::WEIGHTS),
        ];
        self.push(
            index,
            "deploy/codegen",
            "codegen",
            serde_json::Value::Null,
            inputs,
            &crate::codegen::FILES,
        )
    }

    /// The quantized model as C inference on a core without an accelerator:
    /// `stage`/codegen, `stage`/flash to `board` and `stage`/evaluate_device
    /// (every window, or the first `windows` of each split), timed at
    /// `platform`'s clock.
    pub fn c_inference(
        &mut self,
        index: u64,
        (stage, windows): (&str, Option<usize>),
        (quantized, board): (usize, CpuBoard),
        model: From,
        (platform, shared): (BlobRef, &Shared),
    ) -> Result<[usize; 3], ActionError> {
        let codegen = self.cpu_codegen(index, stage, quantized)?;
        let flash = self.cpu_flash(index, stage, codegen, board)?;
        let evaluate = self.cpu_evaluate(index, (stage, windows), (flash, quantized), model, (platform, shared))?;
        Ok([codegen, flash, evaluate])
    }

    fn cpu_codegen(&mut self, index: u64, stage: &str, quantized: usize) -> Result<usize, ActionError> {
        let inputs = vec![
            From::Child(quantized, QUANT).input(QUANT),
            From::Child(quantized, QUANTIZED).input(QUANTIZED),
        ];
        let params = json(&crate::codegen::CpuParams { cpu: true })?;
        let name = format!("{stage}/codegen");
        Ok(self.push(index, &name, "codegen", params, inputs, &crate::codegen::CPU_FILES))
    }

    fn cpu_flash(&mut self, index: u64, stage: &str, codegen: usize, board: CpuBoard) -> Result<usize, ActionError> {
        let params = match board {
            CpuBoard::Search(device_url) => json(&crate::flash::Params {
                device_url,
                fixed_device: None,
                cpu: true,
            })?,
            CpuBoard::Fixed(url) => crate::flash::fixed_board_params(&url),
        };
        let inputs = CPU_FILES.iter().map(|&f| From::Child(codegen, f).input(f)).collect();
        let name = format!("{stage}/flash");
        Ok(self.push(index, &name, "flash", params, inputs, &[FLASH, FIRMWARE, MODEL_BIN]))
    }

    fn cpu_evaluate(
        &mut self,
        index: u64,
        (stage, windows): (&str, Option<usize>),
        (flash, quantized): (usize, usize),
        model: From,
        (platform, shared): (BlobRef, &Shared),
    ) -> Result<usize, ActionError> {
        let params = crate::evaluate_device::Params {
            threshold_percentile: 99.0,
            cpu: true,
            windows,
        };
        let inputs = vec![
            From::Child(flash, FLASH).input(FLASH),
            From::Child(flash, FIRMWARE).input(FIRMWARE),
            From::Child(flash, MODEL_BIN).input(MODEL_BIN),
            From::Blob(platform).input(PLATFORM),
            model.input(MODEL),
            From::Child(quantized, QUANT).input(QUANT),
            From::Child(quantized, QUANTIZED).input(QUANTIZED),
            From::Blob(shared.train).input(TRAIN),
            From::Blob(shared.val).input(VAL),
            From::Blob(shared.test).input(TEST),
        ];
        let name = format!("{stage}/evaluate_device");
        Ok(self.push(index, &name, "evaluate_device", json(&params)?, inputs, &[METRICS]))
    }

    /// The generated code's model onto the search's board.
    pub fn flash(
        &mut self,
        index: u64,
        synthesized: usize,
        codegen: usize,
        device_url: Option<String>,
    ) -> Result<usize, ActionError> {
        let params = crate::flash::Params {
            device_url,
            fixed_device: None,
            cpu: false,
        };
        let inputs = vec![
            From::Child(synthesized, ALLOCATION).input(ALLOCATION),
            From::Child(synthesized, crate::synthesize::WEIGHTS).input(crate::synthesize::WEIGHTS),
            From::Child(codegen, REGS).input(REGS),
            From::Child(codegen, BIN).input(BIN),
        ];
        Ok(self.push(index, "deploy/flash", "flash", json(&params)?, inputs, &[FLASH, IMAGE]))
    }

    /// The flashed model on its board, beside the host-side simulator.
    pub fn evaluate_device(
        &mut self,
        index: u64,
        (flash, synthesized, quantized): (usize, usize, usize),
        model: From,
        shared: &Shared,
    ) -> Result<usize, ActionError> {
        let params = crate::evaluate_device::Params {
            threshold_percentile: 99.0,
            cpu: false,
            windows: None,
        };
        let inputs = vec![
            From::Child(flash, FLASH).input(FLASH),
            From::Child(flash, IMAGE).input(IMAGE),
            From::Child(synthesized, ALLOCATION).input(ALLOCATION),
            From::Child(synthesized, crate::synthesize::WEIGHTS).input(crate::synthesize::WEIGHTS),
            model.input(MODEL),
            From::Child(quantized, QUANT).input(QUANT),
            From::Child(quantized, QUANTIZED).input(QUANTIZED),
            From::Blob(shared.train).input(TRAIN),
            From::Blob(shared.val).input(VAL),
            From::Blob(shared.test).input(TEST),
        ];
        Ok(self.push(
            index,
            "deploy/evaluate_device",
            "evaluate_device",
            json(&params)?,
            inputs,
            &[METRICS],
        ))
    }

    /// Quality on the test split with ONNX Runtime, and on the simulated
    /// accelerator when `quantized`. Not timed, so that its `metrics.json`
    /// is the same on every run.
    pub fn evaluate(
        &mut self,
        index: u64,
        (model, weights): (From, From),
        quantized: Option<(usize, kflow_ai8x::Device)>,
        shared: &Shared,
    ) -> Result<usize, ActionError> {
        let params = crate::evaluate::Params {
            threshold_percentile: 99.0,
            latency_samples: 0,
            device: quantized.map(|(_, d)| d),
        };
        let mut inputs = vec![
            model.input(MODEL),
            weights.input(WEIGHTS),
            From::Blob(shared.train).input(TRAIN),
            From::Blob(shared.val).input(VAL),
            From::Blob(shared.test).input(TEST),
            From::Blob(shared.meta).input(META),
        ];
        if let Some((q, _)) = quantized {
            inputs.push(From::Child(q, QUANT).input(QUANT));
            inputs.push(From::Child(q, QUANTIZED).input(QUANTIZED));
        }
        Ok(self.push(
            index,
            "deploy/evaluate",
            "evaluate",
            json(&params)?,
            inputs,
            &[METRICS, ONNX],
        ))
    }
}
