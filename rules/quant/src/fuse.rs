//! Fusion: kflow's model IR as the accelerator's layers.
//!
//! One hardware layer (spec §2.1) pools its input, runs one operator and
//! applies one activation; batch norm has no hardware of its own and is
//! folded into the operator's weights. So the IR is cut into groups of the
//! shape `[pool] [flatten] operator [batch_norm] [activation]`; a pool with
//! no operator after it becomes a pooling-only (passthrough) layer, and an
//! element-wise `add` a layer of its own. Flatten and pooling cannot share a
//! layer (spec §2.5), so a pool before a flatten stays a layer of its own.

use kflow_model::{Model, Op, Source, Tensor, Weights, infer_shapes};
use serde::{Deserialize, Serialize};

use crate::error::QuantError;

/// The operator of a hardware layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HwOp {
    Conv1d {
        kernel: usize,
        padding: usize,
    },
    Conv2d {
        kernel: usize,
        padding: usize,
    },
    ConvTranspose2d {
        kernel: usize,
        padding: usize,
        stride: usize,
        output_padding: usize,
    },
    Linear,
    /// No operator: pooling only, or an element-wise operation.
    Passthrough,
}

impl HwOp {
    pub fn has_weights(self) -> bool {
        !matches!(self, HwOp::Passthrough)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    Max,
    Avg,
}

/// Pooling before the operator: a square window over the spatial
/// dimensions, no padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub kind: PoolKind,
    pub kernel: usize,
    pub stride: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    None,
    Relu,
    Abs,
}

/// Where a hardware layer reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HwSource {
    Input,
    Layer(usize),
}

/// One accelerator layer, with float weights (batch norm folded in).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FusedLayer {
    /// The IR layer that gives the layer its name: the operator, or the
    /// pool or `add` of a passthrough layer.
    pub name: String,
    /// The IR layers folded into this one, in order.
    pub ir_layers: Vec<String>,
    pub sources: Vec<HwSource>,
    #[serde(flatten)]
    pub op: HwOp,
    pub pool: Option<Pool>,
    /// Element-wise sum of `sources` (two or more operands).
    pub eltwise_add: bool,
    pub flatten: bool,
    pub activation: Activation,
    /// Per operand, before pooling.
    pub input_shape: Vec<usize>,
    /// After pooling (and flatten), what the operator sees.
    pub operator_input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// PyTorch layout; absent for passthrough layers.
    #[serde(skip)]
    pub weight: Option<Tensor>,
    #[serde(skip)]
    pub bias: Option<Tensor>,
}

impl FusedLayer {
    pub fn in_channels(&self) -> usize {
        self.input_shape.first().copied().unwrap_or(0)
    }

    pub fn out_channels(&self) -> usize {
        self.output_shape.first().copied().unwrap_or(0)
    }
}

/// A model as accelerator layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fused {
    pub input: Vec<usize>,
    pub layers: Vec<FusedLayer>,
}

/// What is being gathered into the next hardware layer.
#[derive(Default)]
struct Group {
    pool: Option<(usize, Pool)>,
    flatten: Option<usize>,
    operator: Option<usize>,
    batch_norm: Option<usize>,
    activation: Option<(usize, Activation)>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.pool.is_none() && self.flatten.is_none() && self.operator.is_none()
    }
}

/// Fuses `model` (with its float `weights`) into accelerator layers.
pub fn fuse(model: &Model, weights: &Weights) -> Result<Fused, QuantError> {
    let shapes = infer_shapes(model)?;
    weights.check(model)?;
    let mut fuser = Fuser {
        model,
        weights,
        shapes: &shapes,
        layers: Vec::new(),
        produced_by: vec![None; model.layers.len()],
        group: Group::default(),
        group_source: HwSource::Input,
    };
    for i in 0..model.layers.len() {
        fuser.take(i)?;
    }
    fuser.close_group()?;
    // Every value a later layer reads must be a hardware layer's output.
    for (i, ls) in shapes.layers.iter().enumerate() {
        for source in &ls.sources {
            if let Source::Layer(j) = *source
                && j + 1 != i
                && fuser.produced_by[j].is_none()
            {
                return Err(fuser.unmappable(
                    j,
                    format!(
                        "its output is read by `{}` but is inside a fused layer; only a whole layer's output can be shared",
                        model.layers[i].name
                    ),
                ));
            }
        }
    }
    Ok(Fused {
        input: model.input.clone(),
        layers: fuser.layers,
    })
}

struct Fuser<'a> {
    model: &'a Model,
    weights: &'a Weights,
    shapes: &'a kflow_model::Shapes,
    layers: Vec<FusedLayer>,
    /// For each IR layer whose output is a hardware layer's output: that
    /// layer.
    produced_by: Vec<Option<usize>>,
    group: Group,
    /// Where the open group reads from.
    group_source: HwSource,
}

impl Fuser<'_> {
    fn unmappable(&self, layer: usize, why: impl Into<String>) -> QuantError {
        let l = &self.model.layers[layer];
        QuantError::Unmappable {
            index: layer,
            name: l.name.clone(),
            op: l.op.kind(),
            why: why.into(),
        }
    }

    /// The hardware source of IR source `s`.
    fn hw_source(&self, at: usize, s: Source) -> Result<HwSource, QuantError> {
        match s {
            Source::Input => Ok(HwSource::Input),
            Source::Layer(j) => self.produced_by[j].map(HwSource::Layer).ok_or_else(|| {
                self.unmappable(
                    at,
                    format!(
                        "it reads `{}`, which is inside a fused layer",
                        self.model.layers[j].name
                    ),
                )
            }),
        }
    }

    fn take(&mut self, i: usize) -> Result<(), QuantError> {
        let layer = &self.model.layers[i];
        let ls = &self.shapes.layers[i];
        let reads_previous = match ls.sources.as_slice() {
            [Source::Input] => i == 0,
            [Source::Layer(j)] => *j + 1 == i,
            _ => false,
        };
        if !reads_previous {
            // A layer that reads anything but the previous layer's output
            // starts a new hardware layer from a finished one.
            self.close_group()?;
            if !matches!(layer.op, Op::Add) {
                let [source] = ls.sources.as_slice() else {
                    return Err(self.unmappable(i, "it has several inputs"));
                };
                self.group_source = self.hw_source(i, *source)?;
            }
        }
        let g = &self.group;
        match &layer.op {
            Op::MaxPool { kernel, stride } | Op::AvgPool { kernel, stride } => {
                if g.operator.is_some() || g.pool.is_some() || g.flatten.is_some() {
                    self.close_group()?;
                }
                let kind = if matches!(layer.op, Op::MaxPool { .. }) {
                    PoolKind::Max
                } else {
                    PoolKind::Avg
                };
                let pool = Pool {
                    kind,
                    kernel: *kernel,
                    stride: *stride,
                };
                self.group.pool = Some((i, pool));
            }
            Op::Flatten => {
                if g.operator.is_some() || g.flatten.is_some() {
                    self.close_group()?;
                }
                if self.group.pool.is_some() {
                    // Flatten cannot share a layer with pooling (spec §2.5).
                    self.close_group()?;
                }
                self.group.flatten = Some(i);
            }
            Op::Conv1d { .. } | Op::Conv2d { .. } | Op::ConvTranspose2d { .. } | Op::Linear { .. } => {
                if g.operator.is_some() {
                    self.close_group()?;
                }
                if self.group.flatten.is_some() && !matches!(layer.op, Op::Linear { .. }) {
                    return Err(self.unmappable(i, "only a linear layer can follow a flatten"));
                }
                self.group.operator = Some(i);
            }
            Op::BatchNorm { .. } => {
                if g.operator.is_none() || g.batch_norm.is_some() || g.activation.is_some() {
                    return Err(self.unmappable(
                        i,
                        "batch norm folds into the convolution or linear layer right before it, and there is none",
                    ));
                }
                self.group.batch_norm = Some(i);
            }
            Op::Relu | Op::Abs => {
                let activation = if matches!(layer.op, Op::Relu) {
                    Activation::Relu
                } else {
                    Activation::Abs
                };
                if g.operator.is_none() {
                    return Err(self.unmappable(
                        i,
                        "an activation needs a convolution or linear layer before it (passthrough layers have none, spec §2.9)",
                    ));
                }
                if g.activation.is_some() {
                    return Err(self.unmappable(i, "a hardware layer applies one activation"));
                }
                self.group.activation = Some((i, activation));
            }
            Op::Add => {
                self.close_group()?;
                let sources = ls
                    .sources
                    .iter()
                    .map(|s| self.hw_source(i, *s))
                    .collect::<Result<Vec<_>, _>>()?;
                let shape = ls.input().to_vec();
                self.push(
                    &[i],
                    FusedLayer {
                        name: layer.name.clone(),
                        ir_layers: vec![layer.name.clone()],
                        sources,
                        op: HwOp::Passthrough,
                        pool: None,
                        eltwise_add: true,
                        flatten: false,
                        activation: Activation::None,
                        input_shape: shape.clone(),
                        operator_input_shape: shape.clone(),
                        output_shape: shape,
                        weight: None,
                        bias: None,
                    },
                );
            }
        }
        Ok(())
    }

    fn push(&mut self, members: &[usize], layer: FusedLayer) {
        let index = self.layers.len();
        self.layers.push(layer);
        if let Some(&last) = members.last() {
            self.produced_by[last] = Some(index);
        }
        self.group_source = HwSource::Layer(index);
    }

    /// Turns the open group into a hardware layer.
    fn close_group(&mut self) -> Result<(), QuantError> {
        let g = std::mem::take(&mut self.group);
        if g.is_empty() {
            return Ok(());
        }
        let mut members: Vec<usize> = [g.pool.map(|p| p.0), g.flatten, g.operator, g.batch_norm]
            .into_iter()
            .flatten()
            .chain(g.activation.map(|a| a.0))
            .collect();
        members.sort_unstable();
        let (Some(&first), Some(&last)) = (members.first(), members.last()) else {
            return Ok(());
        };
        if g.operator.is_none() && g.flatten.is_some() {
            return Err(self.unmappable(first, "a flatten must be followed by a linear layer"));
        }
        let input_shape = self.shapes.layers[first].input().to_vec();
        let operator_input_shape = match g.operator {
            Some(op) => self.shapes.layers[op].input().to_vec(),
            None => self.shapes.layers[last].output.clone(),
        };
        let output_shape = self.shapes.layers[last].output.clone();
        let (op, weight, bias, name) = match g.operator {
            None => {
                let name_at = g.pool.map_or(first, |p| p.0);
                (HwOp::Passthrough, None, None, self.model.layers[name_at].name.clone())
            }
            Some(o) => {
                let (weight, bias) = self.folded(o, g.batch_norm)?;
                (
                    hw_op(&self.model.layers[o].op),
                    Some(weight),
                    bias,
                    self.model.layers[o].name.clone(),
                )
            }
        };
        let layer = FusedLayer {
            name,
            ir_layers: members.iter().map(|&m| self.model.layers[m].name.clone()).collect(),
            sources: vec![self.group_source],
            op,
            pool: g.pool.map(|p| p.1),
            eltwise_add: false,
            flatten: g.flatten.is_some(),
            activation: g.activation.map_or(Activation::None, |a| a.1),
            input_shape,
            operator_input_shape,
            output_shape,
            weight,
            bias,
        };
        self.push(&members, layer);
        Ok(())
    }

    /// The operator's weight and bias with batch norm `bn` folded in:
    /// `w' = w·γ/σ`, `b' = (b − μ)·γ/σ + β` with `σ = √(var + eps)`. The
    /// factor is 1, as kflow trains with plain batch norm (spec §3.11).
    fn folded(&self, op: usize, bn: Option<usize>) -> Result<(Tensor, Option<Tensor>), QuantError> {
        let name = &self.model.layers[op].name;
        let get = |layer: &str, param: &str| {
            self.weights
                .get(&format!("{layer}.{param}"))
                .ok_or_else(|| QuantError::MissingTensor(format!("{layer}.{param}")))
        };
        let mut weight = get(name, "weight")?.clone();
        let bias = self.weights.get(&format!("{name}.bias")).cloned();
        let Some(bn) = bn else {
            return Ok((weight, bias));
        };
        let bn_layer = &self.model.layers[bn];
        let Op::BatchNorm { eps, .. } = bn_layer.op else {
            return Ok((weight, bias));
        };
        let [gamma, beta, mean, var] =
            ["weight", "bias", "running_mean", "running_var"].map(|p| get(&bn_layer.name, p));
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        let channels = gamma.data.len();
        let scale: Vec<f64> = (0..channels)
            .map(|c| f64::from(gamma.data[c]) / (f64::from(var.data[c]) + eps).sqrt())
            .collect();
        // The output channel is dimension 0, except for a transposed
        // convolution's `[in, out, kh, kw]`.
        let transposed = matches!(self.model.layers[op].op, Op::ConvTranspose2d { .. });
        let shape = weight.shape.clone();
        let per_out: usize = shape.iter().skip(if transposed { 2 } else { 1 }).product();
        for (k, w) in weight.data.iter_mut().enumerate() {
            let c = if transposed {
                (k / per_out) % shape[1]
            } else {
                k / per_out
            };
            *w = (f64::from(*w) * scale[c]) as f32;
        }
        let folded_bias = (0..channels)
            .map(|c| {
                let b = bias.as_ref().map_or(0.0, |b| f64::from(b.data[c]));
                ((b - f64::from(mean.data[c])) * scale[c] + f64::from(beta.data[c])) as f32
            })
            .collect();
        Ok((weight, Some(Tensor::new(vec![channels], folded_bias))))
    }
}

fn hw_op(op: &Op) -> HwOp {
    match *op {
        Op::Conv1d { kernel, padding, .. } => HwOp::Conv1d { kernel, padding },
        Op::Conv2d { kernel, padding, .. } => HwOp::Conv2d { kernel, padding },
        Op::ConvTranspose2d {
            kernel,
            padding,
            stride,
            output_padding,
            ..
        } => HwOp::ConvTranspose2d {
            kernel,
            padding,
            stride,
            output_padding,
        },
        _ => HwOp::Linear,
    }
}
