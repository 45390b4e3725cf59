//! `[[train]]`: trains a model on a dataset's training split with candle on
//! the CPU.
//!
//! Every epoch is a child action of its own (`<id>[epoch-3]/epoch`), keyed
//! by the checkpoint it starts from: a run with a larger budget replays the
//! epochs it shares with a smaller one from the cache and continues from
//! the last checkpoint, which is what successive halving needs. Early
//! stopping and the time budget are decided here, between epochs.
//!
//! `train_log.json` holds what training computed (losses, metrics) and is
//! byte-identical on every machine; the wall time of each epoch is measured
//! on the machine that ran it and travels in the action's metadata
//! (`epochs[].wall_ms`), which the cache keeps with the result.

use std::time::Instant;

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, BlobRef, ChildInput, ChildSpec, Diagnostic, Outcome,
    Planner, Rule, Status, Target,
};
use kflow_model::Task;
use kflow_train::{Checkpoint, EpochStats, Hyper};
use serde::{Deserialize, Serialize};

use crate::dataset::{TRAIN, VAL};
use crate::generate::one_output;
use crate::inputs;
use crate::json;
use crate::model::{INIT, MODEL};
use crate::split::Learning;

pub struct TrainRule;

pub const WEIGHTS: &str = "weights.safetensors";
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const LOG: &str = "train_log.json";

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required("model", AttrType::Label, "a `[[model]]` or `[[generate]]` target"),
    AttrSpec::required("dataset", AttrType::Label, "a `[[dataset]]` target"),
    AttrSpec::optional("epochs", AttrType::Int, "at most this many epochs (default 10)"),
    AttrSpec::optional(
        "seconds",
        AttrType::Float,
        "stop after the epoch that passes this much training time",
    ),
    AttrSpec::optional(
        "patience",
        AttrType::Int,
        "stop after this many epochs without improvement",
    ),
    AttrSpec::optional("batch_size", AttrType::Int, "samples per step (default 64)"),
    AttrSpec::optional("lr", AttrType::Float, "AdamW learning rate (default 0.001)"),
    AttrSpec::optional("weight_decay", AttrType::Float, "AdamW weight decay (default 0.01)"),
    AttrSpec::optional("seed", AttrType::Int, "seed of the batch order (default 0)"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "model")]
    _model: String,
    #[serde(rename = "dataset")]
    _dataset: String,
    epochs: Option<u32>,
    seconds: Option<f64>,
    patience: Option<u32>,
    batch_size: Option<usize>,
    lr: Option<f64>,
    weight_decay: Option<f64>,
    seed: Option<u64>,
}

/// When a run stops.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub epochs: u32,
    /// Training time after which no further epoch starts. Runs that use it
    /// are not reproducible across machines of different speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<u32>,
}

/// A training run, or one epoch of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Params {
    Run { hyper: Hyper, budget: Budget },
    Epoch { hyper: Hyper, epoch: u32 },
}

/// What one epoch's action reports besides its checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct EpochMeta {
    stats: EpochStats,
    wall_ms: u64,
}

/// The deterministic record of a run.
#[derive(Serialize)]
struct TrainLog<'a> {
    model: &'a str,
    hyper: &'a Hyper,
    budget: &'a Budget,
    epochs: &'a [EpochStats],
    best_epoch: u32,
    stopped: &'a str,
}

impl Rule for TrainRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "train"
    }

    fn version(&self) -> u32 {
        3
    }

    /// Epochs go remote; the run that chains them submits them as
    /// children, so it stays with the build.
    fn remote(&self, params: &serde_json::Value) -> bool {
        params.get("step").and_then(|s| s.as_str()) == Some("epoch")
    }

    fn summary(&self) -> &'static str {
        "trains a model on a dataset (candle, CPU), one cached action per epoch"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        let mut hyper = Hyper::default();
        hyper.batch_size = attrs.batch_size.unwrap_or(hyper.batch_size);
        hyper.lr = attrs.lr.unwrap_or(hyper.lr);
        hyper.weight_decay = attrs.weight_decay.unwrap_or(hyper.weight_decay);
        hyper.seed = attrs.seed.unwrap_or(hyper.seed);
        // Batch norm needs two samples for a variance.
        if hyper.batch_size < 2 {
            return Err(planner.error("batch_size", "`batch_size` must be at least 2"));
        }
        let budget = Budget {
            epochs: attrs.epochs.unwrap_or(10),
            seconds: attrs.seconds,
            patience: attrs.patience,
        };
        if budget.epochs == 0 {
            return Err(planner.error("epochs", "`epochs` must be at least 1"));
        }
        let inputs = vec![
            (MODEL.to_owned(), one_output(planner, target, "model", MODEL)?),
            (INIT.to_owned(), one_output(planner, target, "model", INIT)?),
            (TRAIN.to_owned(), one_output(planner, target, "dataset", TRAIN)?),
            (VAL.to_owned(), one_output(planner, target, "dataset", VAL)?),
        ];
        let outputs: Vec<String> = [WEIGHTS, CHECKPOINT, LOG].map(str::to_owned).to_vec();
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&Params::Run { hyper, budget })?,
            inputs,
            outputs,
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        match cx.params_as::<Params>()? {
            Params::Run { hyper, budget } => run(cx, &hyper, &budget),
            Params::Epoch { hyper, .. } => epoch(cx, &hyper),
        }
    }
}

fn train_err(e: kflow_train::TrainError) -> ActionError {
    ActionError::new(e.to_string())
}

/// One epoch: the checkpoint it starts from in, the next one out.
fn epoch(cx: &ActionContext<'_>, hyper: &Hyper) -> Result<Outcome, ActionError> {
    let started = Instant::now();
    let model = inputs::model(cx)?;
    let checkpoint = Checkpoint::from_safetensors(&json::input_bytes(cx, CHECKPOINT)?).map_err(train_err)?;
    let splits = Learning::read(cx, model.task)?;
    let (next, stats) =
        kflow_train::train_epoch(&model, checkpoint, &splits.train(), &splits.val(), hyper).map_err(train_err)?;
    cx.write_output(CHECKPOINT, &next.to_safetensors().map_err(train_err)?)?;
    let meta = EpochMeta {
        stats,
        wall_ms: started.elapsed().as_millis() as u64,
    };
    cx.set_metadata(serde_json::to_value(&meta).unwrap_or_default());
    Ok(Outcome::Done)
}

/// Better is a larger validation F1: at argmax for a classifier, at the
/// best threshold of the prediction error for a forecaster. An autoencoder
/// is better at a smaller validation loss.
fn improves(task: Task, stats: &EpochStats, best: Option<&EpochStats>) -> bool {
    // Early on the F1 is often tied (0 until the model first flags an
    // anomaly); the loss then says which epoch is better.
    let by_f1 = |f1: f64, best_f1: f64, b: &EpochStats| f1 > best_f1 || (f1 == best_f1 && stats.val_loss < b.val_loss);
    match (task, best) {
        (_, None) => true,
        (Task::Classifier { .. }, Some(b)) => by_f1(stats.val_metric, b.val_metric, b),
        (Task::Forecaster { .. }, Some(b)) => by_f1(stats.val_f1, b.val_f1, b),
        (Task::Autoencoder, Some(b)) => stats.val_loss < b.val_loss,
    }
}

fn run(cx: &ActionContext<'_>, hyper: &Hyper, budget: &Budget) -> Result<Outcome, ActionError> {
    let model = inputs::model(cx)?;
    let init = inputs::weights(cx, INIT)?;
    let blob = |name: &str| cx.input(name).map(|i| i.blob);
    let (model_blob, train_blob, val_blob) = (blob(MODEL)?, blob(TRAIN)?, blob(VAL)?);
    let mut checkpoint = cx.put_artifact(&Checkpoint::fresh(init).to_safetensors().map_err(train_err)?)?;

    let mut log: Vec<EpochStats> = Vec::new();
    let mut walls: Vec<serde_json::Value> = Vec::new();
    let mut best: Option<(usize, BlobRef)> = None;
    let mut spent_ms = 0u64;
    let mut stopped = "epochs";
    for epoch in 1..=budget.epochs {
        let child = ChildSpec {
            group: format!("epoch-{epoch}"),
            name: "epoch".to_owned(),
            rule: "train".to_owned(),
            params: serde_json::to_value(Params::Epoch {
                hyper: hyper.clone(),
                epoch,
            })
            .map_err(|e| ActionError::new(e.to_string()))?,
            inputs: vec![
                (MODEL.to_owned(), ChildInput::Blob(model_blob)),
                (CHECKPOINT.to_owned(), ChildInput::Blob(checkpoint)),
                (TRAIN.to_owned(), ChildInput::Blob(train_blob)),
                (VAL.to_owned(), ChildInput::Blob(val_blob)),
            ],
            outputs: vec![CHECKPOINT.to_owned()],
        };
        let result = cx
            .submit(vec![child])?
            .into_iter()
            .next()
            .ok_or_else(|| ActionError::new("lost an epoch"))?;
        if !matches!(result.status, Status::Executed | Status::Cached | Status::RemoteCached) {
            return Err(ActionError::new(format!(
                "epoch {epoch} {}: {}",
                result.status.as_str(),
                result.reason.unwrap_or_default()
            )));
        }
        let meta: EpochMeta = serde_json::from_value(result.metadata)
            .map_err(|e| ActionError::new(format!("epoch {epoch} reported no statistics: {e}")))?;
        checkpoint = *result
            .outputs
            .get(CHECKPOINT)
            .ok_or_else(|| ActionError::new(format!("epoch {epoch} produced no checkpoint")))?;
        cx.progress(&format!(
            "epoch {epoch}/{}: train loss {:.4}, val loss {:.4}, val F1 {:.4} ({:.1} s)",
            budget.epochs,
            meta.stats.train_loss,
            meta.stats.val_loss,
            meta.stats.val_f1,
            meta.wall_ms as f64 / 1000.0
        ));
        if improves(model.task, &meta.stats, best.map(|(i, _)| &log[i])) {
            best = Some((log.len(), checkpoint));
        }
        spent_ms += meta.wall_ms;
        walls.push(serde_json::json!({"epoch": epoch, "wall_ms": meta.wall_ms}));
        log.push(meta.stats);
        if let (Some(patience), Some((b, _))) = (budget.patience, best)
            && log.len() - 1 - b >= patience as usize
        {
            stopped = "patience";
            break;
        }
        if budget.seconds.is_some_and(|s| spent_ms as f64 >= s * 1000.0) {
            stopped = "seconds";
            break;
        }
    }
    let (best_index, best_blob) = best.ok_or_else(|| ActionError::new("no epoch ran"))?;
    let best_checkpoint = Checkpoint::from_safetensors(&cx.read_artifact(&best_blob)?).map_err(train_err)?;
    let weights = best_checkpoint
        .weights
        .to_safetensors()
        .map_err(|e| ActionError::new(format!("cannot write the weights: {e}")))?;
    cx.write_output(WEIGHTS, &weights)?;
    cx.set_output_blob(CHECKPOINT, checkpoint);
    let record = TrainLog {
        model: &model.name,
        hyper,
        budget,
        epochs: &log,
        best_epoch: log[best_index].epoch,
        stopped,
    };
    cx.write_output(LOG, &json::pretty(&record)?)?;
    cx.set_metadata(serde_json::json!({
        "epochs": walls,
        "best_epoch": log[best_index].epoch,
        "best": log[best_index],
        "stopped": stopped,
    }));
    Ok(Outcome::Done)
}
