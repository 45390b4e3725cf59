//! One search, as the `[[automl]]` action runs it: candidates proposed in
//! batches, checked against the platform before any training, trained in
//! rungs, the best deployed and evaluated. Every stage is a child action of
//! an existing rule, so everything a rerun shares comes from the cache, and
//! everything here is a pure function of the children's results.

use std::collections::BTreeMap;
use std::time::Instant;

use kflow_ai8x::Device;
use kflow_engine::{ActionContext, ActionError, BlobRef, ChildResult, Status as ChildStatus};
use kflow_model::Model;
use kflow_platform::Platform;
use kflow_search::{Evaluated, Genome, Space};
use kflow_train::EpochStats;

use super::candidate::{Candidate, Status};
use super::children::{Batch, CpuBoard, From, Shared};
use super::config::Params;
use super::select;
use crate::check::{CHECK, Misfit, Report};
use crate::codegen::CPU_FILES;
use crate::device::{FIRMWARE, FLASH, IMAGE};
use crate::generate::{GENOME, Strategy};
use crate::json;
use crate::model::{INIT, MODEL};
use crate::train::{LOG, WEIGHTS};

/// A search in progress.
pub struct Search<'a, 'c> {
    pub cx: &'a ActionContext<'c>,
    pub params: &'a Params,
    pub shared: Shared,
    pub platform: Option<Platform>,
    pub candidates: Vec<Candidate>,
    /// Epoch wall times per candidate, for the record outside the artifacts.
    pub walls: BTreeMap<String, Vec<u64>>,
    /// Epochs the training children report, cached or not: what progress
    /// counts.
    epochs_seen: u64,
    started: Instant,
    /// The rung being trained, for progress.
    rung: usize,
}

/// Windows per split an accelerator platform's kept model runs as C
/// inference on its core: enough to time it (its instruction count hardly
/// depends on the input) and to see it compute the simulator's outputs;
/// its quality is the accelerator's.
const SOFTWARE_BASELINE_WINDOWS: usize = 64;

/// A deployed model: the candidate and its artifacts by kept-file name.
pub struct Kept {
    pub candidate: usize,
    pub files: BTreeMap<&'static str, BlobRef>,
    pub metrics: serde_json::Value,
    /// Its `metrics.json` from the board it was deployed to.
    pub device_metrics: Option<serde_json::Value>,
    /// Its `metrics.json` as C inference on the core of an accelerator
    /// platform, without the accelerator.
    pub cpu_metrics: Option<serde_json::Value>,
    /// The resources of the deployed (pruned, quantized) network.
    pub resources: BTreeMap<String, f64>,
}

impl Kept {
    /// Validation F1 of what is deployed: on the simulated accelerator when
    /// the platform has one, else the float model's (host evaluation).
    pub fn deployed_val_f1(&self) -> Option<f64> {
        super::number(&self.metrics, &["accelerator", "validation_f1"])
            .or_else(|| super::number(&self.metrics, &["validation_f1"]))
    }
}

/// What a kept model's directory holds (some only on an accelerator): the
/// candidate's own files, its quantization and placement, the generated
/// sources, and its evaluation.
/// A kept model's `metrics.json` from its board.
pub const DEVICE_METRICS: &str = "device_metrics.json";
/// An accelerator platform's kept model run in software on its core: the
/// flash and the metrics.
pub const CPU_FLASH: &str = "cpu_flash.json";
pub const CPU_METRICS: &str = "cpu_metrics.json";

pub fn kept_files() -> Vec<&'static str> {
    let mut files = vec![
        "genome.json",
        "model.json",
        "weights.safetensors",
        "train_log.json",
        "quantized.safetensors",
        "quant.json",
        "check.json",
        "network.yaml",
        "allocation.json",
    ];
    files.extend(crate::codegen::FILES);
    files.extend(CPU_FILES);
    files.extend(["model.onnx", "metrics.json", FLASH, IMAGE, FIRMWARE, DEVICE_METRICS]);
    files.extend([CPU_FLASH, CPU_METRICS]);
    files
}

fn succeeded(r: &ChildResult) -> bool {
    r.status.succeeded()
}

/// Why a child did not succeed, in one line.
fn failure(stage: &str, r: &ChildResult) -> String {
    let stage = stage.rsplit('/').next().unwrap_or(stage);
    format!(
        "{stage} {}: {}",
        r.status.as_str(),
        r.reason.as_deref().unwrap_or("no reason given")
    )
}

fn output(r: &ChildResult, name: &str) -> Result<BlobRef, ActionError> {
    r.outputs
        .get(name)
        .copied()
        .ok_or_else(|| ActionError::new(format!("`{}` has no output `{name}`", r.id)))
}

impl<'a, 'c> Search<'a, 'c> {
    pub fn new(cx: &'a ActionContext<'c>, params: &'a Params, shared: Shared, platform: Option<Platform>) -> Self {
        Search {
            cx,
            params,
            shared,
            platform,
            candidates: Vec::new(),
            walls: BTreeMap::new(),
            epochs_seen: 0,
            started: Instant::now(),
            rung: 0,
        }
    }

    fn accelerator(&self) -> Option<Device> {
        self.platform.as_ref().and_then(|p| p.accelerator)
    }

    /// How many candidates the search proposes.
    pub fn total(&self, spaces: &[Space]) -> Result<u64, ActionError> {
        let grid = kflow_search::grid::total_size(spaces);
        match (self.params.strategy, self.params.candidates) {
            (Strategy::Grid, Some(n)) => Ok(n.min(u64::try_from(grid).unwrap_or(u64::MAX))),
            (Strategy::Grid, None) if grid <= 100_000 => Ok(grid as u64),
            (Strategy::Grid, None) => Err(ActionError::new(format!(
                "the grid of the spaces has {grid} points; give `strategy.candidates` or search it with `random` or `evolution`"
            ))),
            (_, Some(n)) => Ok(n),
            (_, None) => Err(ActionError::new("`strategy.candidates` is required")),
        }
    }

    /// Proposes candidates `indices`, checks them against the platform and
    /// trains the admitted ones at the first rung.
    pub fn propose(&mut self, indices: std::ops::Range<u64>) -> Result<(), ActionError> {
        let history = match self.params.strategy {
            Strategy::Evolution(_) => Some(self.history()?),
            _ => None,
        };
        let mut batch = Batch::default();
        for index in indices.clone() {
            batch.generate(self.params, index, &self.shared, history)?;
        }
        let generated = self.cx.submit(batch.specs)?;
        let first = self.candidates.len();
        for (index, result) in indices.zip(generated) {
            let mut c = Candidate::new(index);
            self.read_generated(&mut c, &result)?;
            self.candidates.push(c);
        }
        let admitted: Vec<usize> = (first..self.candidates.len())
            .filter(|&i| self.candidates[i].status == Status::Generated && self.candidates[i].reason.is_none())
            .collect();
        let admitted = self.precheck(admitted)?;
        let epochs = self.params.budget.rungs()[0];
        self.train(&admitted, 0, epochs)?;
        self.report_progress();
        Ok(())
    }

    /// Evolution's view of the search so far: every candidate proposed, in
    /// order, with its first-rung result if it trained.
    fn history(&self) -> Result<BlobRef, ActionError> {
        let history: Vec<Evaluated> = self
            .candidates
            .iter()
            .filter_map(|c| {
                Some(Evaluated {
                    genome: c.genome.clone()?,
                    fitness: c.first_rung_fitness,
                })
            })
            .collect();
        self.cx.put_artifact(&json::pretty(&history)?)
    }

    fn read_generated(&self, c: &mut Candidate, result: &ChildResult) -> Result<(), ActionError> {
        if !succeeded(result) {
            c.set(Status::RejectedIncompatible, failure("generate", result));
            return Ok(());
        }
        let genome: Genome = serde_json::from_slice(&self.cx.read_artifact(&output(result, GENOME)?)?)
            .map_err(|e| ActionError::new(format!("{}: unreadable genome: {e}", c.candidate)))?;
        c.family = Some(match &genome {
            Genome::Cnn(_) => "cnn",
            Genome::Autoencoder(_) => "autoencoder",
            Genome::Forecaster(_) => "forecaster",
        });
        c.blobs.model = Some(output(result, MODEL)?);
        c.blobs.init = Some(output(result, INIT)?);
        c.blobs.genome = Some(output(result, GENOME)?);
        if let Some(twin) = self.candidates.iter().find(|o| o.genome.as_ref() == Some(&genome)) {
            c.reason = Some(format!("the same network as {}; not trained again", twin.candidate));
        }
        c.genome = Some(genome);
        Ok(())
    }

    /// The pre-training check: each untrained candidate pruned and
    /// quantized as it would be after training (calibrated on a few
    /// training windows) and checked against the platform. Returns the
    /// admitted ones; the others are rejected with the check's reasons and
    /// their exact resources.
    fn precheck(&mut self, indices: Vec<usize>) -> Result<Vec<usize>, ActionError> {
        let Some(platform) = self.shared.platform else {
            for &i in &indices {
                self.candidates[i].resources = self.host_resources(i)?;
            }
            return Ok(indices);
        };
        let accelerator = self.accelerator().is_some();
        let mut batch = Batch::default();
        let mut chains = Vec::with_capacity(indices.len());
        for &i in &indices {
            let c = &self.candidates[i];
            let (model, init) = (blob(c.blobs.model)?, blob(c.blobs.init)?);
            let pruned = batch.prune(
                self.params,
                c.index,
                "precheck",
                (From::Blob(model), From::Blob(init)),
                false,
                &self.shared,
            )?;
            let (model, weights) = match pruned {
                Some(p) => (From::Child(p, MODEL), From::Child(p, WEIGHTS)),
                None => (From::Blob(model), From::Blob(init)),
            };
            let quantized = if accelerator {
                Some(batch.quantize(
                    self.params,
                    c.index,
                    "precheck",
                    (model.clone(), weights),
                    false,
                    &self.shared,
                )?)
            } else {
                None
            };
            let check = batch.check(
                self.params,
                c.index,
                "precheck",
                model,
                quantized,
                (platform, &self.shared),
            )?;
            chains.push((i, [pruned, quantized, Some(check)]));
        }
        let results = self.cx.submit(batch.specs)?;
        let mut admitted = Vec::new();
        for (i, chain) in chains {
            match self.verdict(&results, chain)? {
                None => admitted.push(i),
                Some((status, reason)) => self.candidates[i].set(status, format!("before training: {reason}")),
            }
            if let Some(report) = self.check_report(&results, chain[2])? {
                self.candidates[i].resources = report.resources;
            }
        }
        Ok(admitted)
    }

    /// A chain's outcome: `None` when every stage succeeded and the check
    /// passed, else the status and reason of the first that did not.
    fn verdict(
        &self,
        results: &[ChildResult],
        chain: [Option<usize>; 3],
    ) -> Result<Option<(Status, String)>, ActionError> {
        let [prune, quantize, check] = chain;
        for (stage, child) in [("prune", prune), ("quantize", quantize)] {
            if let Some(r) = child.map(|i| &results[i])
                && !succeeded(r)
            {
                return Ok(Some((Status::RejectedIncompatible, failure(stage, r))));
            }
        }
        let Some(r) = check.map(|i| &results[i]) else {
            return Ok(None);
        };
        Ok(match r.status {
            ChildStatus::Rejected => {
                let status = match self.check_report(results, check)?.and_then(|c| c.misfit) {
                    Some(Misfit::TooBig) => Status::RejectedTooBig,
                    _ => Status::RejectedIncompatible,
                };
                Some((status, r.reason.clone().unwrap_or_default()))
            }
            _ if succeeded(r) => None,
            _ => Some((Status::RejectedIncompatible, failure("check", r))),
        })
    }

    fn check_report(&self, results: &[ChildResult], check: Option<usize>) -> Result<Option<Report>, ActionError> {
        let Some(blob) = check.and_then(|i| results[i].outputs.get(CHECK)) else {
            return Ok(None);
        };
        let report = serde_json::from_slice(&self.cx.read_artifact(blob)?)
            .map_err(|e| ActionError::new(format!("unreadable {CHECK}: {e}")))?;
        Ok(Some(report))
    }

    /// Without a platform, the sizes the model IR gives.
    fn host_resources(&self, i: usize) -> Result<BTreeMap<String, f64>, ActionError> {
        let model = Model::from_json(&self.cx.read_artifact(&blob(self.candidates[i].blobs.model)?)?)
            .map_err(|e| ActionError::new(e.to_string()))?;
        let counts = kflow_model::counts(&model).map_err(|e| ActionError::new(e.to_string()))?;
        let layers = counts.layers.iter().filter(|t| t.macs > 0).count();
        Ok([
            ("params", counts.total.params as f64),
            ("macs", counts.total.macs as f64),
            ("layers", layers as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect())
    }

    /// Trains `indices` to `epochs` (rung `rung`), from their initial
    /// weights: epochs an earlier rung trained come from the cache.
    fn train(&mut self, indices: &[usize], rung: usize, epochs: u32) -> Result<(), ActionError> {
        self.rung = rung;
        let mut batch = Batch::default();
        for &i in indices {
            let c = &self.candidates[i];
            let blobs = (blob(c.blobs.model)?, blob(c.blobs.init)?);
            batch.train(self.params, c.index, rung, epochs, blobs, &self.shared)?;
        }
        let results = self.cx.submit(batch.specs)?;
        for (&i, result) in indices.iter().zip(&results) {
            self.read_trained(i, rung, epochs, result)?;
        }
        Ok(())
    }

    fn read_trained(&mut self, i: usize, rung: usize, epochs: u32, result: &ChildResult) -> Result<(), ActionError> {
        if !succeeded(result) {
            self.candidates[i].set(Status::Crashed, failure("train", result));
            return Ok(());
        }
        let meta = &result.metadata;
        let best: Option<EpochStats> = meta.get("best").and_then(|b| serde_json::from_value(b.clone()).ok());
        let walls: Vec<u64> = meta
            .get("epochs")
            .and_then(|e| e.as_array())
            .map(|e| e.iter().filter_map(|e| e.get("wall_ms")?.as_u64()).collect())
            .unwrap_or_default();
        self.epochs_seen += walls.len() as u64;
        let log: TrainLog = serde_json::from_slice(&self.cx.read_artifact(&output(result, LOG)?)?)
            .map_err(|e| ActionError::new(format!("unreadable {LOG}: {e}")))?;
        let c = &mut self.candidates[i];
        self.walls.insert(c.candidate.clone(), walls);
        c.rung = Some(rung);
        c.epochs = log.epochs.len() as u32;
        c.best = best;
        c.log = log.epochs;
        c.blobs.weights = Some(output(result, WEIGHTS)?);
        c.blobs.log = Some(output(result, LOG)?);
        if rung == 0 {
            c.first_rung_fitness = c.fitness();
        }
        if c.epochs < epochs {
            c.set(
                Status::Timeout,
                format!("training stopped after {} of {epochs} epochs: out of time", c.epochs),
            );
        } else {
            c.status = Status::Trained;
        }
        Ok(())
    }

    /// Successive halving: the best of the previous rung continue to
    /// `epochs`.
    pub fn promote(&mut self, rung: usize, epochs: u32) -> Result<(), ActionError> {
        let mut pool: Vec<usize> = (0..self.candidates.len())
            .filter(|&i| {
                let c = &self.candidates[i];
                c.status == Status::Trained && c.rung == Some(rung - 1)
            })
            .collect();
        pool.sort_by(|&a, &b| by_fitness(&self.candidates[a], &self.candidates[b]));
        pool.truncate(self.params.budget.promoted(pool.len(), self.params.keep));
        self.train(&pool, rung, epochs)?;
        self.report_progress();
        Ok(())
    }

    /// The candidates to deploy, best first: the last rung's Pareto fronts
    /// over the objectives, then (should deployments fail) the rest of the
    /// trained candidates, higher rungs and better fitness first. The first
    /// `keep` span the model families of the last rung (see
    /// `select::spread_families`).
    fn deploy_order(&self) -> (Vec<usize>, Vec<usize>) {
        let last = self.params.budget.rungs().len() - 1;
        let trained = |c: &Candidate| c.status == Status::Trained;
        let finalists: Vec<usize> = (0..self.candidates.len())
            .filter(|&i| trained(&self.candidates[i]) && self.candidates[i].rung == Some(last))
            .collect();
        let values: Vec<Vec<Option<f64>>> = finalists
            .iter()
            .map(|&i| {
                let c = &self.candidates[i];
                self.params.objectives.iter().map(|o| c.quantity(&o.name)).collect()
            })
            .collect();
        let front = select::front(&self.params.objectives, &values)
            .into_iter()
            .map(|k| finalists[k])
            .collect();
        let mut order: Vec<usize> = select::order(&self.params.objectives, &values)
            .into_iter()
            .map(|k| finalists[k])
            .collect();
        let mut rest: Vec<usize> = (0..self.candidates.len())
            .filter(|&i| trained(&self.candidates[i]) && !finalists.contains(&i))
            .collect();
        rest.sort_by(|&a, &b| {
            let (ca, cb) = (&self.candidates[a], &self.candidates[b]);
            cb.rung.cmp(&ca.rung).then(by_fitness(ca, cb))
        });
        select::spread_families(&mut order, self.params.keep, |i| self.candidates[i].family);
        order.extend(rest);
        (order, front)
    }

    /// Deploys the best candidates until `keep` of them made it through
    /// the whole chain; returns them best first, and the Pareto front.
    pub fn deploy(&mut self) -> Result<(Vec<Kept>, Vec<usize>), ActionError> {
        let (order, front) = self.deploy_order();
        let mut queue = order.into_iter();
        let mut kept = Vec::new();
        while kept.len() < self.params.keep {
            let next: Vec<usize> = queue.by_ref().take(self.params.keep - kept.len()).collect();
            if next.is_empty() {
                break;
            }
            self.cx.progress(&format!("deploying {}", self.names(&next)));
            let mut batch = Batch::default();
            let chains = next
                .iter()
                .map(|&i| self.deploy_chain(&mut batch, i))
                .collect::<Result<Vec<_>, _>>()?;
            let results = self.cx.submit(batch.specs)?;
            for (&i, chain) in next.iter().zip(chains) {
                match self.deployed(i, &chain, &results)? {
                    Ok(k) => kept.push(k),
                    Err((status, reason)) => self.candidates[i].set(status, format!("deployment: {reason}")),
                }
            }
        }
        for k in &kept {
            self.candidates[k.candidate].status = Status::Evaluated;
        }
        // Kept best first by the quality of what ships: with F1 the first
        // objective, the deployed network's validation F1 (quantization
        // costs some models more than others); ties keep the search's order.
        if self
            .params
            .objectives
            .first()
            .is_some_and(|o| o.name == "f1" && o.maximize)
        {
            kept.sort_by(|a, b| {
                let f1 = |k: &Kept| k.deployed_val_f1().unwrap_or(f64::NEG_INFINITY);
                f1(b).total_cmp(&f1(a))
            });
        }
        Ok((kept, front))
    }

    fn names(&self, indices: &[usize]) -> String {
        indices
            .iter()
            .map(|&i| self.candidates[i].candidate.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Plans the deploy chain of candidate `i` into `batch`.
    fn deploy_chain(&self, batch: &mut Batch, i: usize) -> Result<Chain, ActionError> {
        let c = &self.candidates[i];
        let (model, weights) = (blob(c.blobs.model)?, blob(c.blobs.weights)?);
        let pruned = batch.prune(
            self.params,
            c.index,
            "deploy",
            (From::Blob(model), From::Blob(weights)),
            true,
            &self.shared,
        )?;
        let (model, weights) = match pruned {
            Some(p) => (From::Child(p, MODEL), From::Child(p, WEIGHTS)),
            None => (From::Blob(model), From::Blob(weights)),
        };
        let mut chain = Chain {
            prune: pruned,
            ..Chain::default()
        };
        // Quantized for the deployment, with QAT when configured.
        let quantize = |batch: &mut Batch| {
            batch.quantize(
                self.params,
                c.index,
                "deploy",
                (model.clone(), weights.clone()),
                true,
                &self.shared,
            )
        };
        if let (Some(device), Some(platform)) = (self.accelerator(), self.shared.platform) {
            let q = quantize(&mut *batch)?;
            chain.quantize = Some(q);
            chain.check = Some(batch.check(
                self.params,
                c.index,
                "deploy",
                model.clone(),
                Some(q),
                (platform, &self.shared),
            )?);
            let synthesized = batch.synthesize(c.index, q, platform)?;
            chain.synthesize = Some(synthesized);
            let codegen = batch.codegen(c.index, synthesized);
            chain.codegen = Some(codegen);
            let flash = batch.flash(c.index, synthesized, codegen, self.params.device_url.clone())?;
            chain.flash = Some(flash);
            chain.evaluate_device =
                Some(batch.evaluate_device(c.index, (flash, synthesized, q), model.clone(), &self.shared)?);
            if let Some(url) = &self.params.cpu_device_url {
                let [codegen, flash, evaluate] = batch.c_inference(
                    c.index,
                    ("cpu", Some(SOFTWARE_BASELINE_WINDOWS)),
                    (q, CpuBoard::Fixed(url.clone())),
                    model.clone(),
                    (platform, &self.shared),
                )?;
                (chain.cpu_codegen, chain.cpu_flash, chain.cpu_evaluate) = (Some(codegen), Some(flash), Some(evaluate));
            }
            chain.evaluate = batch.evaluate(
                c.index,
                (model.clone(), weights.clone()),
                Some((q, device)),
                &self.shared,
            )?;
        } else {
            if let Some(platform) = self.shared.platform {
                chain.check = Some(batch.check(
                    self.params,
                    c.index,
                    "deploy",
                    model.clone(),
                    None,
                    (platform, &self.shared),
                )?);
                // C inference on the search's board, when it names one.
                if self.params.device_url.is_some() {
                    let q = quantize(&mut *batch)?;
                    let board = CpuBoard::Search(self.params.device_url.clone());
                    let [codegen, flash, evaluate] = batch.c_inference(
                        c.index,
                        ("deploy", None),
                        (q, board),
                        model.clone(),
                        (platform, &self.shared),
                    )?;
                    chain.quantize = Some(q);
                    (chain.cpu_codegen, chain.flash, chain.evaluate_device) =
                        (Some(codegen), Some(flash), Some(evaluate));
                }
            }
            chain.evaluate = batch.evaluate(c.index, (model.clone(), weights.clone()), None, &self.shared)?;
        }
        Ok(chain)
    }

    /// A deployed candidate, or why its deployment failed.
    #[allow(clippy::type_complexity)]
    fn deployed(
        &self,
        i: usize,
        chain: &Chain,
        results: &[ChildResult],
    ) -> Result<Result<Kept, (Status, String)>, ActionError> {
        let stages = [
            ("prune", chain.prune),
            ("quantize", chain.quantize),
            ("synthesize", chain.synthesize),
            ("codegen", chain.codegen),
            ("codegen", chain.cpu_codegen),
            ("evaluate", Some(chain.evaluate)),
        ];
        if let Some(verdict) = self.verdict(results, [None, None, chain.check])? {
            return Ok(Err(verdict));
        }
        // A board that fails is no fault of the candidate: the build stops
        // and says why, and a rerun resumes from the cached stages.
        let boards = [chain.flash, chain.evaluate_device, chain.cpu_flash, chain.cpu_evaluate];
        for child in boards.into_iter().flatten() {
            let r = &results[child];
            if !succeeded(r) {
                return Err(ActionError::new(format!(
                    "{}: {}",
                    r.id,
                    r.reason.as_deref().unwrap_or("failed")
                )));
            }
        }
        for (stage, child) in stages {
            if let Some(r) = child.map(|k| &results[k])
                && !succeeded(r)
            {
                return Ok(Err((Status::RejectedIncompatible, failure(stage, r))));
            }
        }
        let c = &self.candidates[i];
        let mut files: BTreeMap<&'static str, BlobRef> = BTreeMap::new();
        files.insert("genome.json", blob(c.blobs.genome)?);
        files.insert("model.json", blob(c.blobs.model)?);
        files.insert("weights.safetensors", blob(c.blobs.weights)?);
        files.insert("train_log.json", blob(c.blobs.log)?);
        let take =
            |files: &mut BTreeMap<&'static str, BlobRef>, child: Option<usize>, names: &[(&'static str, &str)]| {
                if let Some(r) = child.map(|k| &results[k]) {
                    for &(file, out) in names {
                        if let Some(b) = r.outputs.get(out) {
                            files.insert(file, *b);
                        }
                    }
                }
            };
        take(
            &mut files,
            chain.prune,
            &[("model.json", MODEL), ("weights.safetensors", WEIGHTS)],
        );
        take(
            &mut files,
            chain.quantize,
            &[
                ("quantized.safetensors", "quantized.safetensors"),
                ("quant.json", "quant.json"),
            ],
        );
        take(&mut files, chain.check, &[("check.json", CHECK)]);
        take(
            &mut files,
            chain.synthesize,
            &[("network.yaml", "network.yaml"), ("allocation.json", "allocation.json")],
        );
        let generated: Vec<(&'static str, &str)> = crate::codegen::FILES.iter().map(|&f| (f, f)).collect();
        take(&mut files, chain.codegen, &generated);
        let c_inference: Vec<(&'static str, &str)> = CPU_FILES.iter().map(|&f| (f, f)).collect();
        take(&mut files, chain.cpu_codegen, &c_inference);
        take(
            &mut files,
            Some(chain.evaluate),
            &[("metrics.json", "metrics.json"), ("model.onnx", "model.onnx")],
        );
        // The flash of an accelerator search's board, or of the C inference
        // on a CPU-only platform's, and the software baseline's.
        let flashed = [(chain.flash, FLASH), (chain.cpu_flash, CPU_FLASH)];
        for (child, record) in flashed {
            if let Some(r) = child.map(|k| &results[k]) {
                files.insert(record, output(r, FLASH)?);
                for name in [IMAGE, FIRMWARE] {
                    if let Some(b) = r.outputs.get(name) {
                        files.insert(name, *b);
                    }
                }
            }
        }
        if let Some(r) = chain.evaluate_device.map(|k| &results[k]) {
            files.insert(DEVICE_METRICS, output(r, "metrics.json")?);
        }
        if let Some(r) = chain.cpu_evaluate.map(|k| &results[k]) {
            files.insert(CPU_METRICS, output(r, "metrics.json")?);
        }
        let read = |file: &str| -> Result<serde_json::Value, ActionError> {
            serde_json::from_slice(&self.cx.read_artifact(&files[file])?)
                .map_err(|e| ActionError::new(format!("unreadable {file}: {e}")))
        };
        let metrics = read("metrics.json")?;
        let device_metrics = files
            .contains_key(DEVICE_METRICS)
            .then(|| read(DEVICE_METRICS))
            .transpose()?;
        let cpu_metrics = files.contains_key(CPU_METRICS).then(|| read(CPU_METRICS)).transpose()?;
        let resources = self
            .check_report(results, chain.check)?
            .map_or_else(|| c.resources.clone(), |r| r.resources);
        Ok(Ok(Kept {
            candidate: i,
            files,
            metrics,
            device_metrics,
            cpu_metrics,
            resources,
        }))
    }

    /// One line of progress: candidates by status, the rung, the best so
    /// far and the training rate.
    pub fn report_progress(&self) {
        let mut by_status: BTreeMap<Status, usize> = BTreeMap::new();
        for c in &self.candidates {
            *by_status.entry(c.status).or_default() += 1;
        }
        let counts: Vec<String> = by_status
            .iter()
            .filter(|(s, _)| **s != Status::Generated)
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        let best = self
            .candidates
            .iter()
            .filter(|c| c.fitness().is_some())
            .max_by(|a, b| by_fitness(b, a))
            .map(|c| format!("; best val F1 {:.3} ({})", c.fitness().unwrap_or(0.0), c.candidate))
            .unwrap_or_default();
        let rungs = self.params.budget.rungs();
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        self.cx.progress(&format!(
            "{} candidates: {}; rung {}/{} ({} epochs){best}; {:.2} epochs/s",
            self.candidates.len(),
            counts.join(", "),
            self.rung + 1,
            rungs.len(),
            rungs[self.rung.min(rungs.len() - 1)],
            self.epochs_seen as f64 / seconds
        ));
    }
}

/// The children of one deployment.
#[derive(Default)]
struct Chain {
    prune: Option<usize>,
    quantize: Option<usize>,
    check: Option<usize>,
    synthesize: Option<usize>,
    codegen: Option<usize>,
    flash: Option<usize>,
    evaluate_device: Option<usize>,
    /// C inference: of a CPU-only platform's model, or of an accelerator
    /// platform's on its core (with `cpu_flash` and `cpu_evaluate`).
    cpu_codegen: Option<usize>,
    cpu_flash: Option<usize>,
    cpu_evaluate: Option<usize>,
    evaluate: usize,
}

/// The part of `train_log.json` a search reads.
#[derive(serde::Deserialize)]
struct TrainLog {
    epochs: Vec<EpochStats>,
}

/// Better fitness first, then the earlier candidate.
fn by_fitness(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    let f = |c: &Candidate| c.fitness().unwrap_or(f64::NEG_INFINITY);
    f(b).total_cmp(&f(a)).then(a.index.cmp(&b.index))
}

fn blob(b: Option<BlobRef>) -> Result<BlobRef, ActionError> {
    b.ok_or_else(|| ActionError::new("a candidate's artifact is missing (a bug in the search)"))
}
