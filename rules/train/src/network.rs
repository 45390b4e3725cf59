//! The model IR as a candle computation: checked once against the weights'
//! shapes, then run forward on batches in training or evaluation mode.
//!
//! Activations carry a leading batch dimension: `[B, C, L]`, `[B, C, H, W]`
//! or `[B, F]`. Numerics follow PyTorch's modules (`Conv1d`, `Conv2d`,
//! `ConvTranspose2d`, `Linear`, `BatchNorm{1,2}d`, `MaxPool`, `AvgPool`),
//! because the ONNX export of the same weights must agree with `forward`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use kflow_model::{ForecastMask, Model, Op, Task, Weights};

use crate::TrainError;
use crate::checkpoint::is_trainable;
use crate::grid::{ActivationGrid, Grid};
use crate::kernels::batch_norm::{BatchNormTrain, Moments};
use crate::kernels::bias::ChannelBias;
use crate::kernels::fake_quant::FakeQuant;
use crate::kernels::im2col::Im2Col;
use crate::kernels::pool::{Pool, PoolKind};
use crate::kernels::relu::Relu;

/// Whether BatchNorm normalizes with batch statistics (and reports them, so
/// that the caller can update the running ones) or with running statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Train,
    Eval,
}

/// One BatchNorm layer's running statistics and how they are updated.
#[derive(Clone, Debug)]
pub(crate) struct Norm {
    pub mean: String,
    pub var: String,
    pub momentum: f64,
}

/// A BatchNorm layer's batch statistics from one training-mode forward
/// pass, filled in when the pass runs the layer.
pub(crate) struct BatchStats {
    pub norm: usize,
    pub moments: Arc<Mutex<Moments>>,
}

enum Kind {
    /// 1-D and 2-D alike: im2col, then one matrix product.
    Conv {
        weight: usize,
        bias: Option<usize>,
        kernel: usize,
        padding: usize,
    },
    ConvTranspose2d {
        weight: usize,
        bias: Option<usize>,
        padding: usize,
        stride: usize,
        output_padding: usize,
    },
    Linear {
        weight: usize,
        bias: Option<usize>,
    },
    Flatten,
    BatchNorm {
        weight: usize,
        bias: usize,
        norm: usize,
        eps: f64,
    },
    Pool(Pool),
    Add,
    Relu,
    Abs,
}

struct Node {
    /// Where the inputs come from: `0` is the model input, `i + 1` layer `i`.
    inputs: Vec<usize>,
    kind: Kind,
}

/// A model checked against its weights, ready to run.
pub(crate) struct Network {
    pub task: Task,
    /// Per-sample input shape.
    pub input: Vec<usize>,
    /// Per-sample output shape.
    pub output: Vec<usize>,
    nodes: Vec<Node>,
    /// The trainable tensors' names; `forward` takes their values in this order.
    pub params: Vec<String>,
    pub norms: Vec<Norm>,
    /// A forecaster's masked weights, with the index of their tensor in
    /// `params`: kept at zero by every update.
    pub mask: Option<(usize, ForecastMask)>,
    /// Where activations are rounded (quantization-aware training): the
    /// input, then each node's output.
    input_grid: Option<Grid>,
    grids: Vec<Option<Grid>>,
}

/// Resolves a layer's tensors by name and checks their shapes.
struct Planner<'w> {
    weights: &'w Weights,
    params: Vec<String>,
}

impl Planner<'_> {
    fn tensor(&self, layer: &str, op: &'static str, name: &str, shape: &[usize]) -> Result<String, TrainError> {
        let full = format!("{layer}.{name}");
        let tensor = self
            .weights
            .get(&full)
            .ok_or_else(|| TrainError::layer(layer, op, format!("the weights have no `{full}`")))?;
        if tensor.shape != shape {
            return Err(TrainError::layer(
                layer,
                op,
                format!("`{full}` has shape {:?}, the layer needs {shape:?}", tensor.shape),
            ));
        }
        if tensor.data.len() != shape.iter().product::<usize>() {
            return Err(TrainError::layer(
                layer,
                op,
                format!("`{full}` has {} values", tensor.data.len()),
            ));
        }
        Ok(full)
    }

    fn param(&mut self, layer: &str, op: &'static str, name: &str, shape: &[usize]) -> Result<usize, TrainError> {
        let full = self.tensor(layer, op, name, shape)?;
        if !is_trainable(&full) {
            return Err(TrainError::layer(
                layer,
                op,
                format!("`{full}` is not a trainable tensor name"),
            ));
        }
        self.params.push(full);
        Ok(self.params.len() - 1)
    }

    fn bias(&mut self, layer: &str, op: &'static str, bias: bool, out: usize) -> Result<Option<usize>, TrainError> {
        if bias {
            self.param(layer, op, "bias", &[out]).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl Network {
    /// Checks `model` against `weights` (names and shapes of every tensor,
    /// each layer's input shape, and the output the task needs) and plans
    /// its computation.
    pub(crate) fn plan(model: &Model, weights: &Weights) -> Result<Network, TrainError> {
        let net = Network::plan_layers(model, weights)?;
        let output = &net.output;
        let problem = match model.task {
            Task::Classifier { classes } if classes < 2 => {
                format!("a classifier needs 2 or more classes, not {classes}")
            }
            Task::Classifier { classes } if output[..] != [classes] => {
                format!(
                    "a classifier of {classes} classes must end in [{classes}] logits, the last layer gives {output:?}"
                )
            }
            Task::Autoencoder if *output != model.input => {
                format!(
                    "an autoencoder must end in the input's shape {:?}, the last layer gives {output:?}",
                    model.input
                )
            }
            Task::Forecaster { from_channel } => match (model.input.as_slice(), output.as_slice()) {
                ([c, l], [oc, ol]) if from_channel < *c && *oc == c - from_channel && (2..=*l).contains(ol) => {
                    return Ok(net);
                }
                _ => format!(
                    "a forecaster of channels {from_channel}.. of input {:?} must end in [channels, 2..=length], the last layer gives {output:?}",
                    model.input
                ),
            },
            _ => return Ok(net),
        };
        Err(TrainError::Model(problem))
    }

    /// [`Network::plan`] without the task's check of the output shape.
    fn plan_layers(model: &Model, weights: &Weights) -> Result<Network, TrainError> {
        if !(2..=3).contains(&model.input.len()) || model.input.contains(&0) {
            return Err(TrainError::Model(format!(
                "input shape {:?}: expected [C, L] or [C, H, W] with no zero dimension",
                model.input
            )));
        }
        if model.layers.is_empty() {
            return Err(TrainError::Model("the model has no layers".into()));
        }
        let mut planner = Planner {
            weights,
            params: Vec::new(),
        };
        let mut norms = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        // Per-sample shapes of the model input (slot 0) and each layer's output.
        let mut shapes: Vec<Vec<usize>> = vec![model.input.clone()];
        let mut nodes = Vec::with_capacity(model.layers.len());
        for (i, layer) in model.layers.iter().enumerate() {
            let (name, op) = (layer.name.as_str(), layer.op.kind());
            let fail = |message: String| TrainError::layer(name, op, message);
            let inputs: Vec<usize> = if layer.inputs.is_empty() {
                vec![i]
            } else {
                layer
                    .inputs
                    .iter()
                    .map(|input| {
                        index
                            .get(input.as_str())
                            .copied()
                            .ok_or_else(|| fail(format!("input `{input}` is not the name of an earlier layer")))
                    })
                    .collect::<Result<_, _>>()?
            };
            match (&layer.op, inputs.len()) {
                (Op::Add, n) if n < 2 => return Err(fail("`add` needs two or more inputs".into())),
                (Op::Add, _) | (_, 1) => {}
                (_, n) => return Err(fail(format!("{n} inputs; only `add` takes more than one"))),
            }
            let shape = shapes[inputs[0]].clone();
            let rank_error = |expected: &str| fail(format!("input of shape {shape:?}, expected {expected}"));
            let (kind, out_shape) = match layer.op {
                Op::Conv1d {
                    out_channels,
                    kernel,
                    padding,
                    bias,
                } => {
                    let [c, l] = shape[..] else {
                        return Err(rank_error("[C, L]"));
                    };
                    let weight = planner.param(name, op, "weight", &[out_channels, c, kernel])?;
                    let bias = planner.bias(name, op, bias, out_channels)?;
                    let out = (l + 2 * padding).checked_sub(kernel).map(|v| v + 1);
                    let out = out.filter(|&v| v > 0).ok_or_else(|| {
                        fail(format!(
                            "kernel {kernel} is longer than the padded input ({l} + 2·{padding})"
                        ))
                    })?;
                    (
                        Kind::Conv {
                            weight,
                            bias,
                            kernel,
                            padding,
                        },
                        vec![out_channels, out],
                    )
                }
                Op::Conv2d {
                    out_channels,
                    kernel,
                    padding,
                    bias,
                } => {
                    let [c, h, w] = shape[..] else {
                        return Err(rank_error("[C, H, W]"));
                    };
                    let weight = planner.param(name, op, "weight", &[out_channels, c, kernel, kernel])?;
                    let bias = planner.bias(name, op, bias, out_channels)?;
                    let extent = |v: usize| (v + 2 * padding).checked_sub(kernel).map(|o| o + 1);
                    let (Some(oh), Some(ow)) = (extent(h), extent(w)) else {
                        return Err(fail(format!(
                            "kernel {kernel} is larger than the padded input {shape:?}"
                        )));
                    };
                    (
                        Kind::Conv {
                            weight,
                            bias,
                            kernel,
                            padding,
                        },
                        vec![out_channels, oh, ow],
                    )
                }
                Op::ConvTranspose2d {
                    out_channels,
                    kernel,
                    padding,
                    stride,
                    output_padding,
                    bias,
                } => {
                    let [c, h, w] = shape[..] else {
                        return Err(rank_error("[C, H, W]"));
                    };
                    if stride == 0 || output_padding >= stride {
                        return Err(fail(format!(
                            "stride {stride} and output_padding {output_padding}: need stride >= 1 and output_padding < stride"
                        )));
                    }
                    let weight = planner.param(name, op, "weight", &[c, out_channels, kernel, kernel])?;
                    let bias = planner.bias(name, op, bias, out_channels)?;
                    let extent = |v: usize| ((v - 1) * stride + kernel + output_padding).checked_sub(2 * padding);
                    let (Some(oh), Some(ow)) = (extent(h), extent(w)) else {
                        return Err(fail(format!("padding {padding} removes the whole output")));
                    };
                    if oh == 0 || ow == 0 {
                        return Err(fail(format!("padding {padding} removes the whole output")));
                    }
                    (
                        Kind::ConvTranspose2d {
                            weight,
                            bias,
                            padding,
                            stride,
                            output_padding,
                        },
                        vec![out_channels, oh, ow],
                    )
                }
                Op::Linear { out_features, bias } => {
                    let [f] = shape[..] else {
                        return Err(rank_error("[F]; add a `flatten` before it"));
                    };
                    let weight = planner.param(name, op, "weight", &[out_features, f])?;
                    let bias = planner.bias(name, op, bias, out_features)?;
                    (Kind::Linear { weight, bias }, vec![out_features])
                }
                Op::Flatten => (Kind::Flatten, vec![shape.iter().product()]),
                Op::BatchNorm { eps, momentum } => {
                    let Some(&c) = shape.first() else {
                        return Err(rank_error("[C, ...]"));
                    };
                    if !(eps.is_finite() && eps > 0.0 && (0.0..=1.0).contains(&momentum)) {
                        return Err(fail(format!(
                            "eps {eps} and momentum {momentum}: need eps > 0 and momentum in [0, 1]"
                        )));
                    }
                    let weight = planner.param(name, op, "weight", &[c])?;
                    let bias = planner.param(name, op, "bias", &[c])?;
                    let mean = planner.tensor(name, op, "running_mean", &[c])?;
                    let var = planner.tensor(name, op, "running_var", &[c])?;
                    norms.push(Norm { mean, var, momentum });
                    (
                        Kind::BatchNorm {
                            weight,
                            bias,
                            norm: norms.len() - 1,
                            eps,
                        },
                        shape.clone(),
                    )
                }
                Op::MaxPool { kernel, stride } | Op::AvgPool { kernel, stride } => {
                    let kind = if matches!(layer.op, Op::MaxPool { .. }) {
                        PoolKind::Max
                    } else {
                        PoolKind::Avg
                    };
                    if shape.len() < 2 || shape.len() > 3 {
                        return Err(rank_error("[C, L] or [C, H, W]"));
                    }
                    if kernel == 0 || stride == 0 || shape[1..].iter().any(|&v| v < kernel) {
                        return Err(fail(format!(
                            "window {kernel} with stride {stride} does not fit the input {shape:?}"
                        )));
                    }
                    let mut out = shape.clone();
                    for v in &mut out[1..] {
                        *v = (*v - kernel) / stride + 1;
                    }
                    (Kind::Pool(Pool { kind, kernel, stride }), out)
                }
                Op::Add => {
                    if let Some(&other) = inputs.iter().find(|&&j| shapes[j] != shape) {
                        return Err(fail(format!("inputs of shapes {shape:?} and {:?}", shapes[other])));
                    }
                    (Kind::Add, shape.clone())
                }
                Op::Relu => (Kind::Relu, shape.clone()),
                Op::Abs => (Kind::Abs, shape.clone()),
            };
            if out_shape.contains(&0) {
                return Err(fail(format!("output shape {out_shape:?} has a zero dimension")));
            }
            if index.insert(name, i + 1).is_some() {
                return Err(fail("another layer has the same name".into()));
            }
            shapes.push(out_shape);
            nodes.push(Node { inputs, kind });
        }
        let output = shapes.pop().unwrap_or_default();
        let mask = ForecastMask::of(model)
            .and_then(|mask| Some((planner.params.iter().position(|p| *p == mask.tensor)?, mask)));
        let grids = vec![None; nodes.len()];
        Ok(Network {
            task: model.task,
            input: model.input.clone(),
            output,
            nodes,
            params: planner.params,
            norms,
            mask,
            input_grid: None,
            grids,
        })
    }

    /// Rounds activations to `grid` in every forward pass from now on.
    /// `model` is the one the network was planned from.
    pub(crate) fn round_activations(&mut self, model: &Model, grid: &ActivationGrid) -> Result<(), TrainError> {
        let invalid = |what: &str| TrainError::Model(format!("activation grid of {what}: the step must be positive"));
        if grid.input.is_some_and(|g| !g.is_valid()) {
            return Err(invalid("the input"));
        }
        self.input_grid = grid.input;
        self.grids = vec![None; self.nodes.len()];
        for (name, g) in &grid.layers {
            let i = model.layers.iter().position(|l| &l.name == name).ok_or_else(|| {
                TrainError::Model(format!("activation grid of `{name}`: the model has no such layer"))
            })?;
            if !g.is_valid() {
                return Err(invalid(&format!("`{name}`")));
            }
            self.grids[i] = Some(*g);
        }
        Ok(())
    }

    /// Runs the network on a batch `x` of shape `[B, ...input]`. `params`
    /// are the trainable tensors in [`Network::params`] order; `running` the
    /// running `(mean, var)` of each BatchNorm, used in [`Mode::Eval`] only.
    /// In [`Mode::Train`] the batch statistics of every BatchNorm are returned.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        params: &[Tensor],
        running: &[(Tensor, Tensor)],
        mode: Mode,
    ) -> Result<(Tensor, Vec<BatchStats>), TrainError> {
        let mut values: Vec<Tensor> = Vec::with_capacity(self.nodes.len() + 1);
        values.push(match self.input_grid {
            Some(g) => x.contiguous()?.apply_op1(FakeQuant(g))?,
            None => x.clone(),
        });
        let mut stats = Vec::new();
        for (node, grid) in self.nodes.iter().zip(&self.grids) {
            let x = &values[node.inputs[0]];
            let y = match node.kind {
                Kind::Conv {
                    weight,
                    bias,
                    kernel,
                    padding,
                } => conv(x, &params[weight], bias.map(|b| &params[b]), Im2Col { kernel, padding })?,
                Kind::ConvTranspose2d {
                    weight,
                    bias,
                    padding,
                    stride,
                    output_padding,
                } => {
                    let y = x.conv_transpose2d(&params[weight], padding, output_padding, stride, 1)?;
                    let (b, c) = (y.dim(0)?, y.dim(1)?);
                    let rest = y.elem_count() / (b * c).max(1);
                    add_bias(
                        &y.reshape((b, c, rest))?,
                        bias.map(|b| &params[b]),
                        false,
                        y.dims().to_vec(),
                    )?
                }
                Kind::Linear { weight, bias } => {
                    let y = x.matmul(&params[weight].t()?)?;
                    let (b, f) = y.dims2()?;
                    add_bias(&y.reshape((b, f, 1))?, bias.map(|b| &params[b]), false, vec![b, f])?
                }
                Kind::Flatten => x.flatten_from(1)?,
                Kind::BatchNorm {
                    weight,
                    bias,
                    norm,
                    eps,
                } => {
                    let (w, b) = (&params[weight], &params[bias]);
                    match mode {
                        Mode::Train => {
                            let moments = Arc::new(Mutex::new(Moments::default()));
                            let op = BatchNormTrain {
                                eps,
                                moments: moments.clone(),
                            };
                            let y = x.contiguous()?.apply_op3(w, b, op)?;
                            stats.push(BatchStats { norm, moments });
                            y
                        }
                        Mode::Eval => {
                            let (mean, var) = running.get(norm).ok_or_else(|| {
                                TrainError::Model("running statistics missing for a BatchNorm".into())
                            })?;
                            batch_norm_eval(x, w, b, mean, var, eps)?
                        }
                    }
                }
                Kind::Pool(pool) => pool.apply(x)?,
                Kind::Add => {
                    let mut sum = x.clone();
                    for &i in &node.inputs[1..] {
                        sum = (sum + &values[i])?;
                    }
                    sum
                }
                Kind::Relu => x.contiguous()?.apply_op1(Relu)?,
                Kind::Abs => x.abs()?,
            };
            values.push(match grid {
                Some(g) => y.contiguous()?.apply_op1(FakeQuant(*g))?,
                None => y,
            });
        }
        let out = values
            .pop()
            .ok_or_else(|| TrainError::Model("the model has no layers".into()))?;
        Ok((out, stats))
    }
}

/// A convolution as im2col and one matrix product with the weight viewed
/// as `[out, C·k(·k)]`; the bias op also moves the product's channel
/// dimension inside the batch one.
fn conv(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, im2col: Im2Col) -> candle_core::Result<Tensor> {
    let positions = im2col.output_positions(x.dims())?;
    let batch = x.dim(0)?;
    let cols = im2col.apply(x)?;
    let (patch, columns) = cols.dims2()?;
    let out_channels = weight.dim(0)?;
    let y = weight.reshape((out_channels, patch))?.matmul(&cols)?;
    let mut output = vec![batch, out_channels];
    output.extend(positions);
    add_bias(
        &y.reshape((out_channels, batch, columns / batch.max(1)))?,
        bias,
        true,
        output,
    )
}

/// Adds a per-channel bias (zero without one) to a 3-D `x` and gives it
/// the `output` shape; see [`ChannelBias`].
fn add_bias(
    x: &Tensor,
    bias: Option<&Tensor>,
    channels_outside: bool,
    output: Vec<usize>,
) -> candle_core::Result<Tensor> {
    let channels = output[1];
    let op = ChannelBias {
        channels_outside,
        output,
    };
    match bias {
        Some(b) => x.contiguous()?.apply_op2(b, op),
        None => x
            .contiguous()?
            .apply_op2(&Tensor::zeros(channels, DType::F32, &Device::Cpu)?, op),
    }
}

/// The shape that broadcasts a per-channel `[C]` vector over `[B, C, ...]`.
fn channel_shape(x: &Tensor) -> Vec<usize> {
    let mut shape = vec![1; x.rank()];
    shape[1] = x.dim(1).unwrap_or(1);
    shape
}

/// BatchNorm with running statistics: `(x − mean) / √(var + ε) · w + b`.
fn batch_norm_eval(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Tensor, TrainError> {
    let shape = channel_shape(x);
    let scale = (w / (var + eps)?.sqrt()?)?.reshape(shape.as_slice())?;
    let y = x
        .broadcast_sub(&mean.reshape(shape.as_slice())?)?
        .broadcast_mul(&scale)?;
    Ok(y.broadcast_add(&b.reshape(shape.as_slice())?)?)
}

#[cfg(test)]
mod tests;
