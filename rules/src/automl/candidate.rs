//! What a search knows of each candidate, and what `candidates.json` says
//! of it.

use std::collections::BTreeMap;

use kflow_engine::BlobRef;
use kflow_search::Genome;
use kflow_train::EpochStats;
use serde::Serialize;

/// Where a candidate ended (SPEC.md §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Generated, and not taken further (the same network as an earlier
    /// candidate).
    Generated,
    /// The platform cannot run it, or a stage before training failed on it.
    RejectedIncompatible,
    /// It exceeds a memory or a constraint of the platform.
    RejectedTooBig,
    /// Trained, and not among the models kept.
    Trained,
    /// Training failed (a diverged loss, an error).
    Crashed,
    /// Training ran out of its time budget before its epochs.
    Timeout,
    /// Kept: deployed and evaluated.
    Evaluated,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Generated,
        Status::RejectedIncompatible,
        Status::RejectedTooBig,
        Status::Trained,
        Status::Crashed,
        Status::Timeout,
        Status::Evaluated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Generated => "generated",
            Status::RejectedIncompatible => "rejected-incompatible",
            Status::RejectedTooBig => "rejected-too-big",
            Status::Trained => "trained",
            Status::Crashed => "crashed",
            Status::Timeout => "timeout",
            Status::Evaluated => "evaluated",
        }
    }
}

/// One candidate's record; the blobs are what later stages read.
#[derive(Serialize)]
pub struct Candidate {
    pub candidate: String,
    pub index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub genome: Option<Genome>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The exact resources of the network as compiled for the platform
    /// before training (pruned and quantized as it would be after).
    pub resources: BTreeMap<String, f64>,
    /// The last rung it trained in (0-based), and its epochs then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rung: Option<usize>,
    pub epochs: u32,
    /// The best epoch's validation results at the last rung.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best: Option<EpochStats>,
    /// Every epoch's losses at the last rung (its wall time is kept in the
    /// build's records, not here).
    pub log: Vec<EpochStats>,
    #[serde(skip)]
    pub blobs: Blobs,
    /// Validation F1 after the first rung: what evolution learns from, the
    /// same whatever later rungs find.
    #[serde(skip)]
    pub first_rung_fitness: Option<f64>,
}

/// The artifacts of a candidate, as its stages produce them.
#[derive(Default)]
pub struct Blobs {
    pub model: Option<BlobRef>,
    pub init: Option<BlobRef>,
    pub genome: Option<BlobRef>,
    /// The best weights and the log of the last rung it trained in.
    pub weights: Option<BlobRef>,
    pub log: Option<BlobRef>,
}

impl Candidate {
    pub fn new(index: u64) -> Candidate {
        Candidate {
            candidate: name(index),
            index,
            family: None,
            genome: None,
            status: Status::Generated,
            reason: None,
            resources: BTreeMap::new(),
            rung: None,
            epochs: 0,
            best: None,
            log: Vec::new(),
            blobs: Blobs::default(),
            first_rung_fitness: None,
        }
    }

    pub fn set(&mut self, status: Status, reason: impl Into<String>) {
        self.status = status;
        self.reason = Some(reason.into());
    }

    /// Validation F1 at the best epoch: what rungs and evolution rank by.
    pub fn fitness(&self) -> Option<f64> {
        self.best.as_ref().map(|b| b.val_f1)
    }

    /// The value of an objective's quantity, if the candidate has one.
    pub fn quantity(&self, name: &str) -> Option<f64> {
        match name {
            "f1" => self.fitness(),
            "val_loss" => self.best.as_ref().map(|b| b.val_loss),
            other => self.resources.get(other).copied(),
        }
    }
}

/// A candidate's name in identities and records: `cand-17`.
pub fn name(index: u64) -> String {
    format!("cand-{index}")
}

/// Counts by status, every status present.
pub fn counts(candidates: &[Candidate]) -> BTreeMap<&'static str, usize> {
    Status::ALL
        .iter()
        .map(|s| (s.as_str(), candidates.iter().filter(|c| c.status == *s).count()))
        .collect()
}
