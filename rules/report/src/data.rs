//! What the report reads: the search's `summary.json` and `candidates.json`
//! as the `automl` rule writes them. Fields the report does not use are
//! ignored, and the optional ones may be missing (a search without a
//! board, a platform without a CPU run), so that the report renders what
//! there is and says what is not.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize)]
pub struct Summary {
    pub platform: Option<String>,
    pub search: SearchInfo,
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    #[serde(default)]
    pub objectives: Vec<String>,
    #[serde(default)]
    pub pareto_front: Vec<String>,
    pub zscore: Option<Baseline>,
    /// The fixed model the search is meant to beat, when it names one.
    pub baseline: Option<Fixed>,
    #[serde(default)]
    pub kept: Vec<Kept>,
    pub missing: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SearchInfo {
    pub seed: u64,
    pub candidates: usize,
    pub batch: usize,
    #[serde(default)]
    pub rungs: Vec<Rung>,
    #[serde(default)]
    pub epochs: u64,
    pub strategy: serde_json::Value,
    pub budget: serde_json::Value,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Rung {
    pub epochs: u32,
    pub candidates: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Baseline {
    pub f1: Option<f64>,
    pub roc_auc: Option<f64>,
}

/// A search's fixed baseline: a hand-made model, evaluated and checked
/// on the same data and platform.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Fixed {
    /// Its `[[evaluate]]` and `[[check]]` targets.
    pub targets: Vec<String>,
    pub f1: Option<f64>,
    pub f1_float: Option<f64>,
    pub roc_auc: Option<f64>,
    /// The float model's validation F1, as candidates are ranked.
    pub val_f1: Option<f64>,
    pub latency_us: Option<f64>,
    pub weight_bytes: Option<f64>,
}

/// A deployed model.
#[derive(Clone, Debug, Deserialize)]
pub struct Kept {
    pub candidate: String,
    pub family: String,
    /// Test F1 on the target (the accelerator, or the host for a CPU-only
    /// platform).
    pub f1: Option<f64>,
    pub f1_float: Option<f64>,
    pub roc_auc: Option<f64>,
    pub val_f1: Option<f64>,
    pub latency_us: Option<f64>,
    pub weight_bytes: Option<f64>,
    pub device: Option<Board>,
    pub cpu: Option<Board>,
}

/// A model's run on a board, as `summary.json` records it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Board {
    pub url: Option<String>,
    pub f1: Option<f64>,
    pub latency_us: Option<f64>,
    pub instructions: Option<f64>,
    pub cycles: Option<f64>,
    pub matches_simulator: Option<bool>,
    pub windows_compared: Option<u64>,
    /// On a CPU run of an accelerator's model: the accelerator's time.
    pub accelerator_us: Option<f64>,
    pub accelerator_speedup: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Candidate {
    pub candidate: String,
    pub index: u64,
    pub family: String,
    pub status: String,
    pub reason: Option<String>,
    #[serde(default)]
    pub resources: BTreeMap<String, f64>,
    pub rung: Option<usize>,
    #[serde(default)]
    pub epochs: u32,
    pub best: Option<Epoch>,
    #[serde(default)]
    pub log: Vec<Epoch>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Epoch {
    pub epoch: u32,
    pub train_loss: f64,
    pub val_loss: f64,
    #[serde(default)]
    pub val_f1: f64,
}

/// What the report shows of one kept model beyond `summary.json`: its
/// `metrics.json` (confusion matrices) and its placement on the device.
#[derive(Clone, Debug, Default)]
pub struct KeptDetail {
    pub metrics: Option<serde_json::Value>,
    pub resources: Option<ResourceUse>,
}

/// A model's use of the accelerator's memories against their sizes.
#[derive(Clone, Debug, Serialize)]
pub struct ResourceUse {
    pub device: String,
    /// Kernel-memory columns used and available, per processor.
    pub kernel_columns: Vec<u32>,
    pub kernel_columns_limit: Vec<u32>,
    /// Bias bytes used per quadrant, and the size of each.
    pub bias_bytes: Vec<u32>,
    pub bias_bytes_limit: u32,
    /// Bytes of one data-memory instance, which holds a layer's input and
    /// output maps in each of its processors' groups.
    pub data_bytes_limit: u32,
    pub layers: Vec<LayerUse>,
}

/// One hardware layer, as placed.
#[derive(Clone, Debug, Serialize)]
pub struct LayerUse {
    pub name: String,
    pub op: String,
    /// `[channels, height, width]`.
    pub input: [u32; 3],
    pub output: [u32; 3],
    pub processors: u32,
    pub kernel_columns: u32,
    pub weight_bytes: u64,
    pub bias_bytes: u64,
    pub macs: u64,
    /// Data-memory bytes its input and output maps take in an instance.
    pub data_bytes: u64,
}
