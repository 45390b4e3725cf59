//! `[[search]]`: a search on the host. Candidates are drawn from a space
//! (random, or regularized evolution over the results so far), each
//! generated and trained as child actions, and ranked by their best
//! validation result. Every candidate is an ordinary cached action, so a
//! search run again with one setting changed replays what it shares from
//! the cache.
//!
//! The full AutoML of SPEC.md §8 (budgets, pruning and quantization,
//! hardware checks, deployment) builds on this; `search` is its host-only
//! core.

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, BlobRef, ChildInput, ChildResult, ChildSpec,
    Diagnostic, Outcome, Planner, Rule, Target,
};
use kflow_model::Model;
use kflow_search::{Evaluated, Evolution, Genome};
use kflow_train::{EpochStats, Hyper};
use serde::{Deserialize, Serialize};

use crate::dataset::{META, TRAIN, VAL};
use crate::generate::{self, GENOME, HISTORY_INPUT, META_INPUT, SPACE_INPUT, Strategy, one_output};
use crate::json;
use crate::model::{INIT, MODEL};
use crate::space::OUTPUT as SPACE;
use crate::train::{self, Budget, CHECKPOINT, LOG, WEIGHTS};

pub struct SearchRule;

pub const LEADERBOARD: &str = "leaderboard.json";
const BEST_MODEL: &str = "best/model.json";
const BEST_WEIGHTS: &str = "best/weights.safetensors";

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required("space", AttrType::Label, "the `[[space]]` to search"),
    AttrSpec::required("dataset", AttrType::Label, "the `[[dataset]]` to train and validate on"),
    AttrSpec::required(
        "strategy",
        AttrType::Table,
        "`{ kind = \"random\", candidates, seed }` or `{ kind = \"evolution\", candidates, seed, population, sample }`",
    ),
    AttrSpec::optional("epochs", AttrType::Int, "training epochs per candidate (default 3)"),
    AttrSpec::optional("batch_size", AttrType::Int, "samples per step (default 64)"),
    AttrSpec::optional("lr", AttrType::Float, "AdamW learning rate (default 0.001)"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "space")]
    _space: String,
    #[serde(rename = "dataset")]
    _dataset: String,
    strategy: StrategyAttrs,
    epochs: Option<u32>,
    batch_size: Option<usize>,
    lr: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StrategyAttrs {
    kind: String,
    candidates: u64,
    #[serde(default)]
    seed: u64,
    population: Option<usize>,
    sample: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct Params {
    strategy: Strategy,
    candidates: u64,
    seed: u64,
    hyper: Hyper,
    epochs: u32,
}

/// One row of the leaderboard.
#[derive(Serialize)]
struct Entry {
    candidate: u64,
    genome: Option<Genome>,
    params: Option<u64>,
    macs: Option<u64>,
    status: &'static str,
    /// Classifiers: best validation F1; autoencoders: minus the best
    /// validation loss (higher is better either way).
    fitness: Option<f64>,
    best: Option<EpochStats>,
    reason: Option<String>,
}

/// What search feeds one candidate's children.
struct Inputs {
    space: BlobRef,
    meta: BlobRef,
    train: BlobRef,
    val: BlobRef,
}

impl Rule for SearchRule {
    fn name(&self) -> &'static str {
        "search"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "searches a space on the host: candidates generated and trained as cached child actions, ranked"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        let s = &attrs.strategy;
        let strategy = match s.kind.as_str() {
            "random" => Strategy::Random,
            "evolution" => Strategy::Evolution(Evolution {
                population: s.population.unwrap_or(8),
                sample: s.sample.unwrap_or(3),
            }),
            other => {
                return Err(planner.error(
                    "strategy",
                    format!("`strategy.kind` is `random` or `evolution`, not `{other}`"),
                ));
            }
        };
        if s.candidates == 0 {
            return Err(planner.error("strategy", "`strategy.candidates` must be at least 1"));
        }
        let mut hyper = Hyper::default();
        hyper.batch_size = attrs.batch_size.unwrap_or(hyper.batch_size);
        hyper.lr = attrs.lr.unwrap_or(hyper.lr);
        hyper.seed = s.seed;
        let params = Params {
            strategy,
            candidates: s.candidates,
            seed: s.seed,
            hyper,
            epochs: attrs.epochs.unwrap_or(3).max(1),
        };
        let inputs = vec![
            (SPACE.to_owned(), one_output(planner, target, "space", SPACE)?),
            (META.to_owned(), one_output(planner, target, "dataset", META)?),
            (TRAIN.to_owned(), one_output(planner, target, "dataset", TRAIN)?),
            (VAL.to_owned(), one_output(planner, target, "dataset", VAL)?),
        ];
        let outputs: Vec<String> = [LEADERBOARD, BEST_MODEL, BEST_WEIGHTS].map(str::to_owned).to_vec();
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&params)?,
            inputs,
            outputs,
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let blob = |name: &str| cx.input(name).map(|i| i.blob);
        let inputs = Inputs {
            space: blob(SPACE)?,
            meta: blob(META)?,
            train: blob(TRAIN)?,
            val: blob(VAL)?,
        };
        let mut entries: Vec<(Entry, Option<(BlobRef, BlobRef)>)> = Vec::new();
        match params.strategy {
            Strategy::Random => {
                // Independent candidates: one batch of generations, then one
                // of trainings, all in parallel.
                let generated = cx.submit(
                    (0..params.candidates)
                        .map(|i| generate_child(&params, i, &inputs, None))
                        .collect::<Result<_, _>>()?,
                )?;
                let trainings: Vec<ChildSpec> = generated
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| g.status.succeeded())
                    .map(|(i, g)| train_child(&params, i as u64, g, &inputs))
                    .collect::<Result<_, _>>()?;
                let mut trained = cx.submit(trainings)?.into_iter();
                for (i, g) in generated.iter().enumerate() {
                    let t = if g.status.succeeded() { trained.next() } else { None };
                    entries.push(entry(cx, i as u64, g, t.as_ref())?);
                }
            }
            Strategy::Evolution(_) => {
                // Each candidate depends on the results before it.
                let mut history: Vec<Evaluated> = Vec::new();
                for i in 0..params.candidates {
                    let history_blob = cx.put_artifact(&json::pretty(&history)?)?;
                    let g = cx.submit(vec![generate_child(&params, i, &inputs, Some(history_blob))?])?;
                    let g = g
                        .into_iter()
                        .next()
                        .ok_or_else(|| ActionError::new("lost a candidate"))?;
                    let t = if g.status.succeeded() {
                        cx.submit(vec![train_child(&params, i, &g, &inputs)?])?
                            .into_iter()
                            .next()
                    } else {
                        None
                    };
                    let e = entry(cx, i, &g, t.as_ref())?;
                    if let (Some(genome), Some(fitness)) = (&e.0.genome, e.0.fitness) {
                        history.push(Evaluated {
                            genome: genome.clone(),
                            fitness,
                        });
                    }
                    entries.push(e);
                }
            }
        }
        cx.progress(&format!("{} candidates ranked", entries.len()));
        // Best first; failures last; ties by candidate number.
        entries.sort_by(|a, b| {
            let f = |e: &Entry| e.fitness.unwrap_or(f64::NEG_INFINITY);
            f(&b.0).total_cmp(&f(&a.0)).then(a.0.candidate.cmp(&b.0.candidate))
        });
        let (model, weights) = entries
            .iter()
            .find_map(|(_, blobs)| *blobs)
            .ok_or_else(|| ActionError::new("no candidate finished training"))?;
        cx.set_output_blob(BEST_MODEL, model);
        cx.set_output_blob(BEST_WEIGHTS, weights);
        let rows: Vec<&Entry> = entries.iter().map(|(e, _)| e).collect();
        cx.write_output(LEADERBOARD, &json::pretty(&rows)?)?;
        Ok(Outcome::Done)
    }
}

fn group(index: u64) -> String {
    format!("cand-{index}")
}

fn generate_child(
    params: &Params,
    index: u64,
    inputs: &Inputs,
    history: Option<BlobRef>,
) -> Result<ChildSpec, ActionError> {
    let mut child_inputs = vec![
        (SPACE_INPUT.to_owned(), ChildInput::Blob(inputs.space)),
        (META_INPUT.to_owned(), ChildInput::Blob(inputs.meta)),
    ];
    child_inputs.extend(history.map(|h| (HISTORY_INPUT.to_owned(), ChildInput::Blob(h))));
    let p = generate::Params {
        strategy: params.strategy,
        index,
        seed: params.seed,
        name: group(index),
    };
    Ok(ChildSpec {
        group: group(index),
        name: "generate".to_owned(),
        rule: "generate".to_owned(),
        params: serde_json::to_value(&p).map_err(|e| ActionError::new(e.to_string()))?,
        inputs: child_inputs,
        outputs: [MODEL, INIT, GENOME].map(str::to_owned).to_vec(),
    })
}

fn train_child(
    params: &Params,
    index: u64,
    generated: &ChildResult,
    inputs: &Inputs,
) -> Result<ChildSpec, ActionError> {
    let output = |name: &str| {
        generated
            .outputs
            .get(name)
            .copied()
            .ok_or_else(|| ActionError::new(format!("candidate {index} has no `{name}`")))
    };
    let p = train::Params::Run {
        hyper: params.hyper.clone(),
        budget: Budget {
            epochs: params.epochs,
            seconds: None,
            patience: None,
        },
    };
    Ok(ChildSpec {
        group: group(index),
        name: "train".to_owned(),
        rule: "train".to_owned(),
        params: serde_json::to_value(&p).map_err(|e| ActionError::new(e.to_string()))?,
        inputs: vec![
            (MODEL.to_owned(), ChildInput::Blob(output(MODEL)?)),
            (INIT.to_owned(), ChildInput::Blob(output(INIT)?)),
            (TRAIN.to_owned(), ChildInput::Blob(inputs.train)),
            (VAL.to_owned(), ChildInput::Blob(inputs.val)),
        ],
        outputs: [WEIGHTS, CHECKPOINT, LOG].map(str::to_owned).to_vec(),
    })
}

/// A leaderboard row for a candidate, and its model and weights when it
/// trained.
fn entry(
    cx: &ActionContext<'_>,
    index: u64,
    generated: &ChildResult,
    trained: Option<&ChildResult>,
) -> Result<(Entry, Option<(BlobRef, BlobRef)>), ActionError> {
    let read = |r: &ChildResult, name: &str| -> Result<Option<Vec<u8>>, ActionError> {
        r.outputs.get(name).map(|b| cx.read_artifact(b)).transpose()
    };
    let genome: Option<Genome> = read(generated, GENOME)?
        .map(|bytes| serde_json::from_slice(&bytes))
        .transpose()
        .map_err(|e| ActionError::new(format!("candidate {index}: unreadable genome: {e}")))?;
    let model = read(generated, MODEL)?.and_then(|bytes| Model::from_json(&bytes).ok());
    let counts = model.as_ref().and_then(|m| kflow_model::counts(m).ok());
    let mut e = Entry {
        candidate: index,
        genome,
        params: counts.as_ref().map(|c| c.total.params),
        macs: counts.as_ref().map(|c| c.total.macs),
        status: "generated",
        fitness: None,
        best: None,
        reason: None,
    };
    if !generated.status.succeeded() {
        e.status = "crashed";
        e.reason = generated.reason.clone();
        return Ok((e, None));
    }
    let Some(t) = trained.filter(|t| t.status.succeeded()) else {
        e.status = "crashed";
        e.reason = trained.and_then(|t| t.reason.clone());
        return Ok((e, None));
    };
    let best: Option<EpochStats> = t
        .metadata
        .get("best")
        .and_then(|b| serde_json::from_value(b.clone()).ok());
    e.status = "trained";
    e.fitness = best.as_ref().zip(model.as_ref()).map(|(b, m)| match m.task {
        kflow_model::Task::Classifier { .. } => b.val_metric,
        kflow_model::Task::Autoencoder => -b.val_loss,
    });
    e.best = best;
    let blobs = generated
        .outputs
        .get(MODEL)
        .copied()
        .zip(t.outputs.get(WEIGHTS).copied());
    Ok((e, blobs))
}
