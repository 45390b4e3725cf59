//! The numbers behind every plot (`report.json`), derived once from the
//! search's records so that the plots, the page and the JSON agree.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::data::{Baseline, Candidate, Epoch, Fixed, KeptDetail, ResourceUse, Rung, Summary};

/// The statuses in the order a candidate goes through them.
pub const STATUSES: [&str; 7] = [
    "evaluated",
    "trained",
    "generated",
    "rejected-too-big",
    "rejected-incompatible",
    "crashed",
    "timeout",
];

#[derive(Clone, Debug, Serialize)]
pub struct Numbers {
    pub target: String,
    pub platform: Option<String>,
    pub stats: Stats,
    pub training: Vec<Curve>,
    pub rungs: Vec<Rung>,
    pub status_by_batch: Vec<BatchCounts>,
    pub rejections: Vec<Rejection>,
    pub candidates: Vec<Point>,
    /// The z-score detector on the test split.
    pub zscore: Option<Baseline>,
    /// The fixed model the search is meant to beat.
    pub fixed: Option<Fixed>,
    pub kept: Vec<KeptRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub candidates: usize,
    pub counts: BTreeMap<String, u64>,
    pub epochs: u64,
    pub seed: u64,
    pub batch: usize,
    pub strategy: serde_json::Value,
    pub budget: serde_json::Value,
    pub objectives: Vec<String>,
    /// The command that rebuilds this search.
    pub command: String,
    pub missing: Option<String>,
}

/// One candidate's training losses, epoch by epoch.
#[derive(Clone, Debug, Serialize)]
pub struct Curve {
    pub candidate: String,
    pub family: String,
    pub status: String,
    pub epochs: Vec<Epoch>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BatchCounts {
    /// 0-based batch of proposals.
    pub batch: usize,
    pub counts: BTreeMap<String, u64>,
}

/// Candidates rejected for one kind of reason.
#[derive(Clone, Debug, Serialize)]
pub struct Rejection {
    pub reason: String,
    pub candidates: u64,
}

/// A trained candidate on the quality/resource plane.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub candidate: String,
    pub family: String,
    pub val_f1: f64,
    pub latency_us: Option<f64>,
    pub weight_bytes: Option<f64>,
    pub on_front: bool,
    pub kept: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct KeptRow {
    pub candidate: String,
    pub family: String,
    pub f1_float: Option<f64>,
    pub f1_target: Option<f64>,
    pub f1_board: Option<f64>,
    pub roc_auc: Option<f64>,
    pub latency_us: Option<f64>,
    pub weight_bytes: Option<f64>,
    pub board: Option<String>,
    pub matches_simulator: Option<bool>,
    pub cpu_us: Option<f64>,
    pub cpu_instructions: Option<f64>,
    pub accelerator_us: Option<f64>,
    pub speedup: Option<f64>,
    /// `[[true normal, false alarm], [missed, detected]]` on the test split:
    /// of the float model, and as deployed (the accelerator's).
    pub confusion_float: Option<[[u64; 2]; 2]>,
    pub confusion_target: Option<[[u64; 2]; 2]>,
    /// Test ROC curves (`[fpr, tpr]`) with their AUC: float, as deployed.
    pub roc_float: Option<Roc>,
    pub roc_target: Option<Roc>,
    pub resources: Option<ResourceUse>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Roc {
    pub auc: Option<f64>,
    pub curve: Vec<[f64; 2]>,
}

fn roc(metrics: &serde_json::Value, quality: &str) -> Option<Roc> {
    let q = metrics.pointer(quality)?;
    let curve: Vec<[f64; 2]> = serde_json::from_value(q.get("roc")?.clone()).ok()?;
    (!curve.is_empty()).then(|| Roc {
        auc: q.get("roc_auc").and_then(serde_json::Value::as_f64),
        curve,
    })
}

fn confusion(metrics: &serde_json::Value, pointer: &str) -> Option<[[u64; 2]; 2]> {
    serde_json::from_value(metrics.pointer(pointer)?.clone()).ok()
}

impl Numbers {
    pub fn new(target: &str, summary: &Summary, candidates: &[Candidate], details: &[KeptDetail]) -> Numbers {
        let kept_names: Vec<&str> = summary.kept.iter().map(|k| k.candidate.as_str()).collect();
        let training = candidates
            .iter()
            .filter(|c| !c.log.is_empty())
            .map(|c| Curve {
                candidate: c.candidate.clone(),
                family: c.family.clone(),
                status: c.status.clone(),
                epochs: c.log.clone(),
            })
            .collect();
        let batch = summary.search.batch.max(1);
        let mut by_batch: BTreeMap<usize, BTreeMap<String, u64>> = BTreeMap::new();
        for c in candidates {
            *by_batch
                .entry(c.index as usize / batch)
                .or_default()
                .entry(c.status.clone())
                .or_default() += 1;
        }
        let status_by_batch = by_batch
            .into_iter()
            .map(|(batch, counts)| BatchCounts { batch, counts })
            .collect();
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        for c in candidates.iter().filter(|c| c.status.starts_with("rejected")) {
            let mut kinds: Vec<String> = c.reason.as_deref().map(reason_kinds).unwrap_or_default();
            kinds.dedup();
            if kinds.is_empty() {
                kinds.push(c.status.clone());
            }
            for kind in kinds {
                *reasons.entry(kind).or_default() += 1;
            }
        }
        let mut rejections: Vec<Rejection> = reasons
            .into_iter()
            .map(|(reason, candidates)| Rejection { reason, candidates })
            .collect();
        rejections.sort_by(|a, b| b.candidates.cmp(&a.candidates).then_with(|| a.reason.cmp(&b.reason)));
        let points = candidates
            .iter()
            .filter_map(|c| {
                Some(Point {
                    candidate: c.candidate.clone(),
                    family: c.family.clone(),
                    val_f1: c.best.as_ref()?.val_f1,
                    latency_us: c.resources.get("latency_us").copied(),
                    weight_bytes: c.resources.get("weight_bytes").copied(),
                    on_front: summary.pareto_front.contains(&c.candidate),
                    kept: kept_names.contains(&c.candidate.as_str()),
                })
            })
            .collect();
        let kept = summary
            .kept
            .iter()
            .enumerate()
            .map(|(i, k)| (k, details.get(i).cloned().unwrap_or_default()))
            .map(|(k, detail)| KeptRow {
                candidate: k.candidate.clone(),
                family: k.family.clone(),
                f1_float: k.f1_float,
                f1_target: k.f1,
                f1_board: k.device.as_ref().and_then(|d| d.f1),
                roc_auc: k.roc_auc,
                latency_us: k.latency_us,
                weight_bytes: k.weight_bytes,
                board: k.device.as_ref().and_then(|d| d.url.clone()),
                matches_simulator: k.device.as_ref().and_then(|d| d.matches_simulator),
                cpu_us: k.cpu.as_ref().and_then(|c| c.latency_us),
                cpu_instructions: k.cpu.as_ref().and_then(|c| c.instructions),
                accelerator_us: k.cpu.as_ref().and_then(|c| c.accelerator_us),
                speedup: k.cpu.as_ref().and_then(|c| c.accelerator_speedup),
                confusion_float: detail.metrics.as_ref().and_then(|m| confusion(m, "/quality/confusion")),
                confusion_target: detail
                    .metrics
                    .as_ref()
                    .and_then(|m| confusion(m, "/accelerator/quality/confusion")),
                roc_float: detail.metrics.as_ref().and_then(|m| roc(m, "/quality")),
                roc_target: detail.metrics.as_ref().and_then(|m| roc(m, "/accelerator/quality")),
                resources: detail.resources,
            })
            .collect();
        Numbers {
            target: target.to_owned(),
            platform: summary.platform.clone(),
            stats: Stats {
                candidates: summary.search.candidates,
                counts: summary.counts.clone(),
                epochs: summary.search.epochs,
                seed: summary.search.seed,
                batch: summary.search.batch,
                strategy: summary.search.strategy.clone(),
                budget: summary.search.budget.clone(),
                objectives: summary.objectives.clone(),
                command: format!("kflow build {target}"),
                missing: summary.missing.clone(),
            },
            training,
            rungs: summary.search.rungs.clone(),
            status_by_batch,
            rejections,
            candidates: points,
            zscore: summary.zscore.clone(),
            fixed: summary.baseline.clone(),
            kept,
        }
    }
}

/// The kinds of reason in a rejection: each `; `-separated part, by the
/// rule it cites in its last parentheses (`(C11 flatten)`) or else with
/// its numbers blanked, so that candidates rejected for the same rule
/// count together.
pub fn reason_kinds(reason: &str) -> Vec<String> {
    let reason = reason.strip_prefix("before training: ").unwrap_or(reason);
    reason
        .split("; ")
        .map(|part| {
            let part = part.trim();
            if let Some(open) = part.ends_with(')').then(|| part.rfind('(')).flatten() {
                return part[open + 1..part.len() - 1].to_owned();
            }
            let mut kind = String::new();
            let mut in_number = false;
            for ch in part.chars() {
                let digit = ch.is_ascii_digit() || (in_number && matches!(ch, '_' | '.' | ','));
                if digit && !in_number {
                    kind.push('N');
                }
                in_number = digit;
                if !digit {
                    kind.push(ch);
                }
            }
            kind
        })
        .filter(|k| !k.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_by_the_rule_they_cite_or_without_their_numbers() {
        let r = "before training: layer 2 (mlp): flattened pixels: 272, limit 256 (C11 flatten); \
                 constraint `macs <= 150_000` does not hold; needs 120 kB, has 64 kB";
        assert_eq!(
            reason_kinds(r),
            [
                "C11 flatten",
                "constraint `macs <= N` does not hold",
                "needs N kB, has N kB"
            ]
        );
    }
}
