//! The `[[automl]]` attributes as written, checked when the graph loads,
//! and the canonical params of the search action that they become.

use std::collections::BTreeMap;

use kflow_engine::{AttrSpec, AttrType, Diagnostic, Planner};
use kflow_quant::{Bits, PruneKind, QuantOptions, Rounding};
use kflow_search::Evolution;
use kflow_train::Hyper;
use serde::{Deserialize, Serialize};

use super::rungs::Budget;
use super::select::Objective;
use crate::check::USER_CHECKS;
use crate::generate::Strategy;

pub const ATTRS: &[AttrSpec] = &[
    AttrSpec::required(
        "dataset",
        AttrType::Label,
        "the `[[dataset]]` to train, validate and test on",
    ),
    AttrSpec::required(
        "space",
        AttrType::Labels,
        "the `[[space]]` (or a list of them) candidates are drawn from",
    ),
    AttrSpec::optional(
        "platform",
        AttrType::Label,
        "the `[[platform]]` every candidate must fit; without one the search runs on the host only",
    ),
    AttrSpec::required(
        "strategy",
        AttrType::Table,
        "`{ kind = \"random\" | \"evolution\" | \"grid\", candidates, seed, batch, population, sample }`",
    ),
    AttrSpec::required(
        "budget",
        AttrType::Table,
        "`{ kind = \"epochs\", epochs }` or `{ kind = \"successive_halving\", min_epochs, max_epochs, eta }`",
    ),
    AttrSpec::optional(
        "train",
        AttrType::Table,
        "`{ batch_size, lr, weight_decay, timeout_s }` of every candidate's training",
    ),
    AttrSpec::optional(
        "prune",
        AttrType::Table,
        "`{ kind, amount, epochs, lr }`: pruning before quantization (fine-tune epochs for kept models only)",
    ),
    AttrSpec::optional(
        "quantize",
        AttrType::Table,
        "`{ weight_bits, shift_quantile, calibration_samples, calibration_percentile, align_shifts, rounding, qat_epochs, qat_lr, precheck_samples }`",
    ),
    AttrSpec::optional(
        "objectives",
        AttrType::StringList,
        "`name:max|min` to choose kept models by (default f1:max, latency_us:min, weight_bytes:min)",
    ),
    AttrSpec::optional("keep", AttrType::Int, "models to deploy and evaluate (default 3)"),
    AttrSpec::optional(
        "device",
        AttrType::String,
        "the board kept models are flashed to and evaluated on: with an accelerator platform `sim://...`, `tcp://HOST:PORT` or `serial:///dev/ttyX?baud=N` (default: the platform's simulated board), with a CPU-only platform `qemu://mps2-an386` (Cortex-M4) or `qemu://mps2-an500` (Cortex-M7) (default: none, the host evaluates); `kflow build --device` wins",
    ),
    AttrSpec::optional(
        "cpu_device",
        AttrType::String,
        "accelerator platforms: a `qemu://` board on which kept models also run as C inference on the platform's core without the accelerator, to measure the accelerator's speed-up",
    ),
    AttrSpec::optional(
        super::baseline::ATTR,
        AttrType::Labels,
        "a fixed model to beat: its `[[evaluate]]` target (quality) and `[[check]]` target (latency, weight memory), shown beside the kept models",
    ),
    USER_CHECKS[0],
    USER_CHECKS[1],
    USER_CHECKS[2],
    USER_CHECKS[3],
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "dataset")]
    _dataset: String,
    #[serde(rename = "space")]
    _space: Vec<String>,
    platform: Option<String>,
    strategy: StrategyAttrs,
    budget: Budget,
    #[serde(default)]
    train: TrainAttrs,
    prune: Option<PruneAttrs>,
    #[serde(default)]
    quantize: QuantizeAttrs,
    objectives: Option<Vec<String>>,
    keep: Option<usize>,
    device: Option<String>,
    cpu_device: Option<String>,
    #[serde(default)]
    constraints: Vec<String>,
    #[serde(default)]
    checks: Vec<String>,
    check_timeout_s: Option<u64>,
    #[serde(default, rename = "check_files")]
    _check_files: Vec<String>,
    #[serde(default, rename = "baseline")]
    _baseline: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrategyAttrs {
    kind: String,
    candidates: Option<u64>,
    #[serde(default)]
    seed: u64,
    batch: Option<usize>,
    population: Option<usize>,
    sample: Option<usize>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainAttrs {
    batch_size: Option<usize>,
    lr: Option<f64>,
    weight_decay: Option<f64>,
    timeout_s: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneAttrs {
    kind: Option<PruneKind>,
    amount: Option<f64>,
    epochs: Option<u32>,
    lr: Option<f64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuantizeAttrs {
    weight_bits: Option<Bits>,
    #[serde(default)]
    layer_bits: BTreeMap<String, Bits>,
    shift_quantile: Option<f64>,
    calibration_samples: Option<usize>,
    calibration_percentile: Option<f64>,
    align_shifts: Option<bool>,
    rounding: Option<Rounding>,
    qat_epochs: Option<u32>,
    qat_lr: Option<f64>,
    precheck_samples: Option<usize>,
}

/// The search action's params: everything that decides what it does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Params {
    pub strategy: Strategy,
    /// `None` for a grid: all of it.
    pub candidates: Option<u64>,
    pub seed: u64,
    /// Candidates proposed (and pre-checked, and trained at the first rung)
    /// together: what evolution learns from is the batches before.
    pub batch: usize,
    pub budget: Budget,
    pub hyper: Hyper,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<Prune>,
    pub quantize: Quantize,
    pub objectives: Vec<Objective>,
    pub keep: usize,
    pub check: crate::check::Params,
    /// Where kept models are flashed and evaluated; `None`: the simulated
    /// board of an accelerator platform, the host for a CPU-only one.
    /// Always present in the params (null by default), so that `--device`
    /// can override it.
    pub device_url: Option<String>,
    /// Where kept models of an accelerator platform also run in software.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_device_url: Option<String>,
    /// The targets of the fixed baseline, by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Prune {
    pub kind: PruneKind,
    pub amount: f64,
    pub epochs: u32,
    pub lr: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quantize {
    pub options: QuantOptions,
    pub calibration_samples: usize,
    pub precheck_samples: usize,
    pub qat_epochs: u32,
    pub qat_lr: f64,
}

/// Grids larger than this are a mistake in the graph, not a search.
const MAX_GRID: u64 = 100_000;

const DEFAULT_OBJECTIVES: [&str; 3] = ["f1:max", "latency_us:min", "weight_bytes:min"];

/// The params of a target's attributes, or the attribute that is wrong.
pub fn params(planner: &Planner<'_>) -> Result<Params, Diagnostic> {
    let attrs: Attrs = planner.attrs_as()?;
    let err = |attr: &str, message: String| planner.error(attr, message);
    let s = &attrs.strategy;
    let strategy = match s.kind.as_str() {
        "random" => Strategy::Random,
        "grid" => Strategy::Grid,
        "evolution" => Strategy::Evolution(Evolution {
            population: s.population.unwrap_or(8),
            sample: s.sample.unwrap_or(3),
        }),
        other => {
            return Err(err(
                "strategy",
                format!("`strategy.kind` is `random`, `evolution` or `grid`, not `{other}`"),
            ));
        }
    };
    let candidates = match (strategy, s.candidates) {
        (Strategy::Grid, n) => n,
        (_, Some(n)) => Some(n),
        (_, None) => return Err(err("strategy", "`strategy.candidates` is required".to_owned())),
    };
    if candidates == Some(0) || candidates.is_some_and(|n| n > MAX_GRID) {
        return Err(err(
            "strategy",
            format!("`strategy.candidates` must be in 1..={MAX_GRID}"),
        ));
    }
    if let Strategy::Evolution(e) = strategy
        && (e.population == 0 || e.sample == 0 || e.sample > e.population)
    {
        return Err(err(
            "strategy",
            "evolution needs 1 <= `sample` <= `population`".to_owned(),
        ));
    }
    let batch = s.batch.unwrap_or(8);
    if batch == 0 {
        return Err(err("strategy", "`strategy.batch` must be at least 1".to_owned()));
    }
    if let Some(problem) = attrs.budget.problem() {
        return Err(err("budget", problem));
    }
    let mut hyper = Hyper::default();
    hyper.batch_size = attrs.train.batch_size.unwrap_or(hyper.batch_size);
    hyper.lr = attrs.train.lr.unwrap_or(hyper.lr);
    hyper.weight_decay = attrs.train.weight_decay.unwrap_or(hyper.weight_decay);
    hyper.seed = s.seed;
    if hyper.batch_size < 2 {
        return Err(err("train", "`train.batch_size` must be at least 2".to_owned()));
    }
    let prune = match attrs.prune {
        None => None,
        Some(p) => {
            let amount = p.amount.unwrap_or(0.5);
            if !(0.0..1.0).contains(&amount) {
                return Err(err("prune", format!("`prune.amount` must be in [0, 1), not {amount}")));
            }
            Some(Prune {
                kind: p.kind.unwrap_or(PruneKind::Channels),
                amount,
                epochs: p.epochs.unwrap_or(0),
                lr: p.lr.unwrap_or(0.0005),
            })
        }
    };
    let q = attrs.quantize;
    let defaults = QuantOptions::default();
    let quantize = Quantize {
        options: QuantOptions {
            weight_bits: q.weight_bits.unwrap_or(defaults.weight_bits),
            layer_bits: q.layer_bits,
            shift_quantile: q.shift_quantile.unwrap_or(defaults.shift_quantile),
            calibration_percentile: q.calibration_percentile.unwrap_or(defaults.calibration_percentile),
            target: defaults.target,
            wide_output: defaults.wide_output,
            align_shifts: q.align_shifts.unwrap_or(defaults.align_shifts),
            rounding: q
                .rounding
                .unwrap_or(crate::quantize::default_rounding(q.qat_epochs.unwrap_or(0))),
        },
        calibration_samples: q.calibration_samples.unwrap_or(256),
        precheck_samples: q.precheck_samples.unwrap_or(32),
        qat_epochs: q.qat_epochs.unwrap_or(0),
        qat_lr: q.qat_lr.unwrap_or(1e-4),
    };
    if quantize.calibration_samples == 0 || quantize.precheck_samples == 0 {
        return Err(err(
            "quantize",
            "`calibration_samples` and `precheck_samples` must be at least 1".to_owned(),
        ));
    }
    let objectives = match attrs.objectives {
        Some(list) => list,
        None => DEFAULT_OBJECTIVES.map(str::to_owned).to_vec(),
    };
    let objectives = objectives
        .iter()
        .map(|o| Objective::parse(o))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("objectives", e))?;
    if objectives.is_empty() {
        return Err(err("objectives", "name at least one objective".to_owned()));
    }
    let keep = attrs.keep.unwrap_or(3);
    if keep == 0 || candidates.is_some_and(|n| keep as u64 > n) {
        return Err(err(
            "keep",
            format!("`keep` must be between 1 and the number of candidates, not {keep}"),
        ));
    }
    if attrs.platform.is_none() && !(attrs.constraints.is_empty() && attrs.checks.is_empty()) {
        return Err(err(
            "constraints",
            "`constraints` and `checks` need a `platform` whose resource report they judge".to_owned(),
        ));
    }
    crate::flash::check_url(planner, "device", attrs.device.as_deref())?;
    crate::flash::check_url(planner, "cpu_device", attrs.cpu_device.as_deref())?;
    for expression in &attrs.constraints {
        kflow_platform::validate(expression).map_err(|e| err("constraints", e.to_string()))?;
    }
    Ok(Params {
        strategy,
        candidates,
        seed: s.seed,
        batch,
        budget: attrs.budget,
        hyper,
        timeout_s: attrs.train.timeout_s,
        prune,
        quantize,
        objectives,
        keep,
        check: crate::check::Params {
            constraints: attrs.constraints,
            checks: attrs.checks,
            check_timeout_s: attrs.check_timeout_s.unwrap_or(60),
        },
        device_url: attrs.device,
        cpu_device_url: attrs.cpu_device,
        baseline: Vec::new(),
    })
}
