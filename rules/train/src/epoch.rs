//! One training epoch: the unit the engine caches, so that a higher epoch
//! budget continues from the checkpoint of a lower one and early stopping
//! is decided between epochs by the caller.

use candle_core::{Device, Tensor, Var};
use kflow_model::{Forecast, Model, Task, Tensor as ModelTensor, Weights};
use serde::{Deserialize, Serialize};

use crate::adamw::AdamStep;
use crate::evaluate::validate;
use crate::grid::ActivationGrid;
use crate::network::{Mode, Network};
use crate::shuffle::permutation;
use crate::{Checkpoint, Data, Hyper, TrainError};

/// What one epoch did, for the training log (the caller adds wall time,
/// which is kept out of here so that this stays a pure function).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based; equals the checkpoint's `epochs_done` afterwards.
    pub epoch: u32,
    /// Mean training loss over the samples of the epoch, as the weights
    /// changed during it.
    pub train_loss: f64,
    /// Mean validation loss at the end of the epoch (evaluation mode).
    pub val_loss: f64,
    /// Classifier: F1 of class 1 at argmax; autoencoder, forecaster:
    /// validation MSE.
    pub val_metric: f64,
    /// F1 of the anomaly scores at the threshold that maximizes it on the
    /// validation split (what evaluation chooses), for every task alike; 0
    /// when the split has no labels.
    #[serde(default)]
    pub val_f1: f64,
    /// Training samples the epoch updated the weights with.
    pub samples: u64,
}

/// A trainable tensor's value and AdamW moments, as flat f32 buffers that
/// the update loop can work on in place.
struct Slot {
    shape: Vec<usize>,
    value: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// Trains one more epoch: shuffles the training samples with a permutation
/// seeded by `(hyper.seed, epoch)`, takes mini-batches in that order (a final
/// batch of one sample is skipped: BatchNorm has no variance over it),
/// updates with AdamW, with BatchNorm in training mode (batch statistics;
/// running statistics updated with the layer's momentum), then evaluates
/// the validation split in evaluation mode.
///
/// Same inputs give the same bytes, on any thread count (see `threads.rs`).
pub fn train_epoch(
    model: &Model,
    checkpoint: Checkpoint,
    train: &Data,
    val: &Data,
    hyper: &Hyper,
) -> Result<(Checkpoint, EpochStats), TrainError> {
    train_epoch_viewed(model, checkpoint, train, val, hyper, View::default())
}

/// What the forward pass sees of the weights, when not the weights
/// themselves. Quantization-aware training shows it the quantized values
/// and applies their gradients to the float weights (the straight-through
/// estimator); validation sees the same view. A view returns every tensor
/// it was given, with the same shapes.
pub type WeightView<'a> = dyn Fn(&Weights) -> Result<Weights, String> + Sync + 'a;

/// What the forward pass and validation see, where it is not the float
/// network itself.
#[derive(Clone, Copy, Default)]
pub struct View<'a> {
    pub weights: Option<&'a WeightView<'a>>,
    /// Activations rounded as the hardware rounds them.
    pub activations: Option<&'a ActivationGrid>,
}

/// [`train_epoch`], with the forward pass and validation seeing `view`.
pub fn train_epoch_viewed(
    model: &Model,
    checkpoint: Checkpoint,
    train: &Data,
    val: &Data,
    hyper: &Hyper,
    view: View<'_>,
) -> Result<(Checkpoint, EpochStats), TrainError> {
    hyper.check()?;
    let net = planned(model, &checkpoint.weights, view)?;
    train.check("train", model)?;
    val.check("val", model)?;
    crate::threads::run(|| run_epoch(&net, checkpoint, train, val, hyper, view.weights))
}

/// The validation loss, metric and F1 that [`train_epoch_viewed`] reports
/// after an epoch, of `weights` as they are.
pub fn validate_viewed(
    model: &Model,
    weights: &Weights,
    val: &Data,
    view: View<'_>,
) -> Result<(f64, f64, f64), TrainError> {
    let net = planned(model, weights, view)?;
    val.check("val", model)?;
    let seen = match view.weights {
        Some(view) => view(weights).map_err(TrainError::View)?,
        None => weights.clone(),
    };
    crate::threads::run(|| validate(&net, &seen, val))
}

fn planned(model: &Model, weights: &Weights, view: View<'_>) -> Result<Network, TrainError> {
    let mut net = Network::plan(model, weights)?;
    if let Some(grid) = view.activations {
        net.round_activations(model, grid)?;
    }
    Ok(net)
}

fn run_epoch(
    net: &Network,
    mut checkpoint: Checkpoint,
    train: &Data,
    val: &Data,
    hyper: &Hyper,
    view: Option<&WeightView<'_>>,
) -> Result<(Checkpoint, EpochStats), TrainError> {
    let epoch = checkpoint
        .epochs_done
        .checked_add(1)
        .ok_or_else(|| TrainError::Checkpoint("epochs_done is at its maximum".into()))?;
    let mut slots = load_slots(net, &checkpoint)?;
    let mut running: Vec<(Vec<f32>, Vec<f32>)> = net
        .norms
        .iter()
        .map(|norm| {
            let get = |name: &str| checkpoint.weights.get(name).map(|t| t.data.clone()).unwrap_or_default();
            (get(&norm.mean), get(&norm.var))
        })
        .collect();

    let device = Device::Cpu;
    let order = permutation(train.len(), hyper.seed, epoch);
    let mut step = checkpoint.step;
    let (mut loss_sum, mut samples) = (0.0f64, 0u64);
    for batch in order.chunks(hyper.batch_size) {
        if batch.len() < 2 {
            continue;
        }
        let mut shape = vec![batch.len()];
        shape.extend_from_slice(&net.input);
        let x = Tensor::from_vec(train.gather_x(batch), shape, &device)?;
        let seen = match view {
            Some(view) => Some(viewed(net, &slots, view)?),
            None => None,
        };
        let vars = slots
            .iter()
            .enumerate()
            .map(|(k, slot)| {
                let value = seen.as_ref().map_or(&slot.value, |seen| &seen[k]);
                Var::from_slice(value, slot.shape.as_slice(), &device)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let params: Vec<Tensor> = vars.iter().map(|var| var.as_tensor().clone()).collect();
        let (out, stats) = net.forward(&x, &params, &[], Mode::Train)?;
        let loss = match net.task {
            Task::Classifier { .. } => {
                let y = Tensor::from_vec(train.gather_y(batch), batch.len(), &device)?;
                candle_nn::loss::cross_entropy(&out, &y)?
            }
            Task::Autoencoder => (out - &x)?.sqr()?.mean_all()?,
            Task::Forecaster { from_channel } => {
                crate::forecast::loss(&Forecast::new(from_channel, &net.input, &net.output), &out, &x)?
            }
        };
        let loss_value = loss.to_scalar::<f32>()?;
        step += 1;
        if !loss_value.is_finite() {
            return Err(TrainError::Diverged {
                epoch,
                step,
                loss: loss_value,
            });
        }
        loss_sum += f64::from(loss_value) * batch.len() as f64;
        samples += batch.len() as u64;

        let grads = loss.backward()?;
        let update = AdamStep::new(hyper, step);
        for (slot, var) in slots.iter_mut().zip(&vars) {
            // PyTorch's optimizers skip a parameter that got no gradient.
            if let Some(grad) = grads.get(var.as_tensor()) {
                let grad = grad.flatten_all()?.to_vec1::<f32>()?;
                update.apply(&mut slot.value, &grad, &mut slot.m, &mut slot.v);
            }
        }
        if let Some((i, mask)) = &net.mask {
            mask.apply(&mut slots[*i].value);
        }
        for batch_stats in stats {
            let norm = &net.norms[batch_stats.norm];
            let (mean, var) = &mut running[batch_stats.norm];
            let moments = batch_stats
                .moments
                .lock()
                .map_err(|_| TrainError::Model("batch statistics lock poisoned".into()))?;
            let (batch_mean, batch_var) = (&moments.mean, &moments.var);
            // PyTorch keeps the unbiased variance as the running one.
            let unbias = moments.count as f32 / (moments.count - 1) as f32;
            let momentum = norm.momentum as f32;
            for (r, &b) in mean.iter_mut().zip(batch_mean) {
                *r = (1.0 - momentum) * *r + momentum * b;
            }
            for (r, &b) in var.iter_mut().zip(batch_var) {
                *r = (1.0 - momentum) * *r + momentum * b * unbias;
            }
        }
    }
    if samples == 0 {
        return Err(TrainError::data("train", "fewer than 2 samples: nothing to train on"));
    }

    for (name, slot) in net.params.iter().zip(slots) {
        let shape = slot.shape;
        checkpoint
            .weights
            .insert(name.clone(), ModelTensor::new(shape.clone(), slot.value));
        checkpoint
            .first_moment
            .insert(name.clone(), ModelTensor::new(shape.clone(), slot.m));
        checkpoint
            .second_moment
            .insert(name.clone(), ModelTensor::new(shape, slot.v));
    }
    for (norm, (mean, var)) in net.norms.iter().zip(running) {
        checkpoint
            .weights
            .insert(norm.mean.clone(), ModelTensor::new(vec![mean.len()], mean));
        checkpoint
            .weights
            .insert(norm.var.clone(), ModelTensor::new(vec![var.len()], var));
    }
    checkpoint.step = step;
    checkpoint.epochs_done = epoch;

    let (val_loss, val_metric, val_f1) = match view {
        Some(view) => validate(net, &view(&checkpoint.weights).map_err(TrainError::View)?, val)?,
        None => validate(net, &checkpoint.weights, val)?,
    };
    let stats = EpochStats {
        epoch,
        train_loss: loss_sum / samples as f64,
        val_loss,
        val_metric,
        val_f1,
        samples,
    };
    Ok((checkpoint, stats))
}

/// The values `view` shows for each slot, in slot order.
fn viewed(net: &Network, slots: &[Slot], view: &WeightView<'_>) -> Result<Vec<Vec<f32>>, TrainError> {
    let mut weights = Weights::default();
    for (name, slot) in net.params.iter().zip(slots) {
        weights.insert(name.clone(), ModelTensor::new(slot.shape.clone(), slot.value.clone()));
    }
    let mut seen = view(&weights).map_err(TrainError::View)?;
    net.params
        .iter()
        .zip(slots)
        .map(|(name, slot)| match seen.tensors.remove(name) {
            Some(t) if t.shape == slot.shape && t.data.len() == slot.value.len() => Ok(t.data),
            _ => Err(TrainError::View(format!(
                "the view of the weights lost or reshaped `{name}`"
            ))),
        })
        .collect()
}

/// The trainable tensors with their moments; a checkpoint that has taken no
/// step yet may omit moments (they are zero), one that has may not.
fn load_slots(net: &Network, checkpoint: &Checkpoint) -> Result<Vec<Slot>, TrainError> {
    net.params
        .iter()
        .map(|name| {
            let weight = checkpoint
                .weights
                .get(name)
                .ok_or_else(|| TrainError::Checkpoint(format!("the weights have no `{name}`")))?;
            let moment = |moments: &kflow_model::Weights, kind: &str| match moments.get(name) {
                Some(t) if t.shape == weight.shape && t.data.len() == weight.data.len() => Ok(t.data.clone()),
                Some(t) => Err(TrainError::Checkpoint(format!(
                    "the {kind} moment of `{name}` has shape {:?}, the tensor {:?}",
                    t.shape, weight.shape
                ))),
                None if checkpoint.step == 0 => Ok(vec![0.0; weight.data.len()]),
                None => Err(TrainError::Checkpoint(format!(
                    "no {kind} moment for `{name}` after {} steps; the checkpoint is incomplete",
                    checkpoint.step
                ))),
            };
            Ok(Slot {
                shape: weight.shape.clone(),
                value: weight.data.clone(),
                m: moment(&checkpoint.first_moment, "first")?,
                v: moment(&checkpoint.second_moment, "second")?,
            })
        })
        .collect()
}
