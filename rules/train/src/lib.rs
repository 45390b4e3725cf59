//! kflow's training on CPU with candle: the model IR run forward from its
//! weights, cross-entropy or MSE, AdamW, and one epoch at a time from a
//! checkpoint, so that the engine can cache each epoch as an action.
//!
//! - `network.rs`: the IR checked against the weights and run as candle ops;
//! - `kernels/`: custom ops where candle is slow or differs from PyTorch
//!   (im2col convolution, bias, BatchNorm, ReLU, pooling);
//! - `epoch.rs`: one epoch (shuffle, mini-batches, AdamW, validation);
//! - `adamw.rs`, `shuffle.rs`, `checkpoint.rs`: the update, the order, the
//!   state between epochs;
//! - `grid.rs`: activations rounded as the hardware rounds them, for
//!   quantization-aware training;
//! - `evaluate.rs`: evaluation-mode outputs, scores and metrics;
//! - `forecast.rs`: which outputs of a forecaster are scored, against what;
//! - `threads.rs`: why results do not depend on thread counts;
//! - `machine.rs`: the machine class they do depend on.

mod adamw;
mod checkpoint;
mod data;
mod epoch;
mod error;
mod evaluate;
mod forecast;
mod grid;
mod hyper;
mod kernels;
mod machine;
mod network;
mod shuffle;
mod threads;

pub use checkpoint::{CHECKPOINT_FORMAT, Checkpoint};
pub use data::Data;
pub use epoch::{EpochStats, View, WeightView, train_epoch, train_epoch_viewed, validate_viewed};
pub use error::TrainError;
pub use evaluate::{forward, scores};
pub use grid::{ActivationGrid, Grid};
pub use hyper::Hyper;
pub use machine::arithmetic_class;
