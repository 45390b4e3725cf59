//! Magnitude pruning of a float model.
//!
//! Unstructured pruning zeroes the smallest weights of each convolution and
//! linear layer: the network keeps its shape (and its accelerator
//! resources), but zeros compress and quantize exactly. Channel-structured
//! pruning removes whole output channels of convolutions (those with the
//! smallest L1 norm), together with their batch-norm parameters and the
//! input channels of the layer that reads them, so the network really gets
//! narrower: fewer processors, passes and kernel memory.

use kflow_model::{Model, Op, Source, Tensor, Weights, infer_shapes};
use serde::{Deserialize, Serialize};

use crate::error::QuantError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneKind {
    Unstructured,
    Channels,
}

/// What was removed, per layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneReport {
    pub kind: PruneKind,
    pub amount: f64,
    pub layers: Vec<LayerPrune>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerPrune {
    pub layer: String,
    /// Weights (unstructured) or output channels (channels) before and after.
    pub before: usize,
    pub after: usize,
}

/// Prunes `amount` (0 ≤ amount < 1) of every prunable layer.
pub fn prune(
    model: &Model,
    weights: &Weights,
    kind: PruneKind,
    amount: f64,
) -> Result<(Model, Weights, PruneReport), QuantError> {
    if !(0.0..1.0).contains(&amount) {
        return Err(QuantError::Options(format!(
            "prune amount must be in [0, 1), not {amount}"
        )));
    }
    weights.check(model)?;
    let (model, weights, layers) = match kind {
        PruneKind::Unstructured => unstructured(model, weights, amount),
        PruneKind::Channels => channels(model, weights, amount)?,
    };
    Ok((model, weights, PruneReport { kind, amount, layers }))
}

fn is_operator(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv1d { .. } | Op::Conv2d { .. } | Op::ConvTranspose2d { .. } | Op::Linear { .. }
    )
}

fn unstructured(model: &Model, weights: &Weights, amount: f64) -> (Model, Weights, Vec<LayerPrune>) {
    let mut out = weights.clone();
    let mut report = Vec::new();
    for layer in model.layers.iter().filter(|l| is_operator(&l.op)) {
        let name = format!("{}.weight", layer.name);
        let Some(t) = out.tensors.get_mut(&name) else {
            continue;
        };
        let n = t.data.len();
        let remove = ((n as f64) * amount).floor() as usize;
        // Sorting indices by magnitude (ties by position) makes the choice
        // deterministic.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| t.data[a].abs().total_cmp(&t.data[b].abs()).then(a.cmp(&b)));
        for &i in &order[..remove] {
            t.data[i] = 0.0;
        }
        let after = t.data.iter().filter(|v| **v != 0.0).count();
        report.push(LayerPrune {
            layer: layer.name.clone(),
            before: n,
            after,
        });
    }
    (model.clone(), out, report)
}

/// How a layer's output channels reach the one layer that consumes them.
struct Chain {
    producer: usize,
    /// Batch norms on the way (their per-channel tensors shrink too).
    batch_norms: Vec<usize>,
    consumer: usize,
    /// Set when a flatten lies on the way: values per channel at the
    /// consumer's input.
    per_channel: usize,
}

/// The chain from convolution `i` to the next operator, if the channels
/// flow there through channel-wise layers only and nothing else reads them.
fn chain(model: &Model, shapes: &kflow_model::Shapes, i: usize) -> Option<Chain> {
    let mut batch_norms = Vec::new();
    let mut per_channel = 1;
    let mut at = i;
    loop {
        let readers: Vec<usize> = shapes
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.sources.contains(&Source::Layer(at)))
            .map(|(j, _)| j)
            .collect();
        let [next] = readers.as_slice() else {
            return None;
        };
        let next = *next;
        match model.layers[next].op {
            Op::BatchNorm { .. } => batch_norms.push(next),
            Op::Relu | Op::Abs | Op::MaxPool { .. } | Op::AvgPool { .. } => {}
            Op::Flatten => {
                let input = shapes.layers[next].input();
                per_channel = input.iter().skip(1).product();
            }
            Op::Conv1d { .. } | Op::Conv2d { .. } | Op::Linear { .. } => {
                return Some(Chain {
                    producer: i,
                    batch_norms,
                    consumer: next,
                    per_channel,
                });
            }
            Op::ConvTranspose2d { .. } | Op::Add => return None,
        }
        at = next;
    }
}

fn channels(model: &Model, weights: &Weights, amount: f64) -> Result<(Model, Weights, Vec<LayerPrune>), QuantError> {
    let mut model = model.clone();
    let mut weights = weights.clone();
    let mut report = Vec::new();
    for i in 0..model.layers.len() {
        if !matches!(model.layers[i].op, Op::Conv1d { .. } | Op::Conv2d { .. }) {
            continue;
        }
        let shapes = infer_shapes(&model)?;
        let Some(chain) = chain(&model, &shapes, i) else {
            continue;
        };
        let name = model.layers[i].name.clone();
        let w = weights
            .get(&format!("{name}.weight"))
            .ok_or_else(|| QuantError::MissingTensor(format!("{name}.weight")))?;
        let out = w.shape[0];
        let per_out = w.data.len() / out.max(1);
        let remove = ((out as f64) * amount).floor() as usize;
        if remove == 0 || remove >= out {
            continue;
        }
        let norms: Vec<f64> = (0..out)
            .map(|o| {
                w.data[o * per_out..(o + 1) * per_out]
                    .iter()
                    .map(|v| f64::from(v.abs()))
                    .sum()
            })
            .collect();
        let mut order: Vec<usize> = (0..out).collect();
        order.sort_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(a.cmp(&b)));
        let mut keep: Vec<usize> = order[remove..].to_vec();
        keep.sort_unstable();
        apply(&mut model, &mut weights, &chain, &keep)?;
        report.push(LayerPrune {
            layer: name,
            before: out,
            after: keep.len(),
        });
    }
    Ok((model, weights, report))
}

/// Keeps only channels `keep` along the chain.
fn apply(model: &mut Model, weights: &mut Weights, chain: &Chain, keep: &[usize]) -> Result<(), QuantError> {
    let producer = model.layers[chain.producer].name.clone();
    select(weights, &format!("{producer}.weight"), 0, keep, 1)?;
    if weights.get(&format!("{producer}.bias")).is_some() {
        select(weights, &format!("{producer}.bias"), 0, keep, 1)?;
    }
    if let Op::Conv1d { out_channels, .. } | Op::Conv2d { out_channels, .. } = &mut model.layers[chain.producer].op {
        *out_channels = keep.len();
    }
    for &bn in &chain.batch_norms {
        let bn_name = model.layers[bn].name.clone();
        for param in ["weight", "bias", "running_mean", "running_var"] {
            select(weights, &format!("{bn_name}.{param}"), 0, keep, 1)?;
        }
    }
    let consumer = model.layers[chain.consumer].name.clone();
    select(weights, &format!("{consumer}.weight"), 1, keep, chain.per_channel)?;
    Ok(())
}

/// Keeps, along dimension `dim` of tensor `name`, the groups of `group`
/// consecutive indices whose group numbers are in `keep`.
fn select(weights: &mut Weights, name: &str, dim: usize, keep: &[usize], group: usize) -> Result<(), QuantError> {
    let t = weights
        .get(name)
        .ok_or_else(|| QuantError::MissingTensor(name.to_owned()))?;
    let outer: usize = t.shape[..dim].iter().product();
    let inner: usize = t.shape[dim + 1..].iter().product();
    let along = t.shape[dim];
    let kept: Vec<usize> = keep
        .iter()
        .flat_map(|&k| (k * group..(k + 1) * group).filter(move |&i| i < along))
        .collect();
    let mut data = Vec::with_capacity(outer * kept.len() * inner);
    for o in 0..outer {
        for &k in &kept {
            let start = (o * along + k) * inner;
            data.extend_from_slice(&t.data[start..start + inner]);
        }
    }
    let mut shape = t.shape.clone();
    shape[dim] = kept.len();
    weights.insert(name, Tensor::new(shape, data));
    Ok(())
}
