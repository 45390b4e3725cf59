//! Training arithmetic checked against PyTorch's documented formulas, by
//! hand, without PyTorch: BatchNorm's running statistics, and the epoch's
//! loss over the batches of `Hyper::sample_order`.

mod common;

use common::{layer, model};
use kflow_model::{Op, Task, Weights};
use kflow_train::{Checkpoint, Data, Hyper, train_epoch};

/// An autoencoder that is one BatchNorm over `[2, 3]` windows.
fn batch_norm_only(momentum: f64) -> kflow_model::Model {
    model(
        Task::Autoencoder,
        &[2, 3],
        vec![layer("bn", Op::BatchNorm { eps: 1e-5, momentum })],
    )
}

#[test]
fn batch_norm_running_statistics_follow_pytorch() {
    // torch.nn.BatchNorm1d in training mode: running = (1 − momentum) ·
    // running + momentum · batch statistic, where the variance is the
    // unbiased one (over N · L values, divided by N · L − 1); starting at
    // mean 0 and variance 1.
    let momentum = 0.25;
    let model = batch_norm_only(momentum);
    #[rustfmt::skip]
    let x: Vec<f32> = vec![
        1.0, 2.0, 3.0,    -1.0, 0.5, 0.0,
        4.0, -2.0, 0.5,   2.0, 2.0, 2.5,
        0.0, 1.0, 1.5,    -3.0, 1.0, 0.25,
        2.5, 3.0, -1.0,   0.75, -0.5, 1.0,
    ];
    let data = Data {
        x: &x,
        shape: [4, 2, 3],
        y: &[],
        held_out: &[],
    };
    // One batch of all four windows per epoch.
    let hyper = Hyper {
        batch_size: 4,
        ..Hyper::default()
    };
    // Weight 1, bias 0, running mean 0 and variance 1, as PyTorch starts.
    let mut checkpoint = Checkpoint::fresh(Weights::init(&model, 1).unwrap());
    let (mut mean, mut var) = ([0.0f64; 2], [1.0f64; 2]);
    for _ in 0..3 {
        checkpoint = train_epoch(&model, checkpoint, &data, &data, &hyper).unwrap().0;
        // The batch statistics do not depend on the weights the step changes.
        for c in 0..2 {
            let values: Vec<f64> = (0..4)
                .flat_map(|n| x[(n * 2 + c) * 3..][..3].iter().map(|&v| f64::from(v)))
                .collect();
            let count = values.len() as f64;
            let batch_mean = values.iter().sum::<f64>() / count;
            let unbiased = values.iter().map(|v| (v - batch_mean).powi(2)).sum::<f64>() / (count - 1.0);
            mean[c] = (1.0 - momentum) * mean[c] + momentum * batch_mean;
            var[c] = (1.0 - momentum) * var[c] + momentum * unbiased;
        }
        let got = |name: &str| checkpoint.weights.get(name).unwrap().data.clone();
        for (c, (&m, &v)) in got("bn.running_mean").iter().zip(&got("bn.running_var")).enumerate() {
            assert!(
                (f64::from(m) - mean[c]).abs() < 1e-6,
                "channel {c}: running mean {m}, expected {}",
                mean[c]
            );
            assert!(
                (f64::from(v) - var[c]).abs() < 1e-6,
                "channel {c}: running var {v}, expected {}",
                var[c]
            );
        }
    }
}

#[test]
fn epoch_loss_is_the_weighted_mean_over_the_batches_of_sample_order_without_a_lone_last_sample() {
    // PyTorch's `F.cross_entropy`/`F.mse_loss` average over a batch. Nine
    // samples in batches of 4, 4 and 1: the lone last one is skipped
    // (BatchNorm has no variance over it) and the epoch reports
    // Σ loss_b · n_b / Σ n_b over the two others. With a learning rate too
    // small for f32 the weights stay put, so each batch's loss follows from
    // the initial ones. The batches are cut from `Hyper::sample_order`,
    // which the PyTorch bench is given: another grouping would change the
    // batch statistics and so the loss.
    let model = batch_norm_only(0.1);
    let x: Vec<f32> = (0..9 * 6).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
    let data = Data {
        x: &x,
        shape: [9, 2, 3],
        y: &[],
        held_out: &[],
    };
    let hyper = Hyper {
        batch_size: 4,
        lr: 1e-300,
        weight_decay: 0.0,
        ..Hyper::default()
    };
    let weights = Weights::init(&model, 1).unwrap();
    let (_, stats) = train_epoch(&model, Checkpoint::fresh(weights), &data, &data, &hyper).unwrap();
    assert_eq!(stats.samples, 8);
    // BatchNorm with weight 1, bias 0 on a batch: x̂ = (x − μ) / √(σ² + ε);
    // the autoencoder's loss is mean((x̂ − x)²) over the batch.
    let order = hyper.sample_order(9, 1);
    let mut weighted = 0.0;
    for batch in order.chunks(4).filter(|b| b.len() >= 2) {
        let mut sum = 0.0;
        for c in 0..2 {
            let values: Vec<f64> = batch
                .iter()
                .flat_map(|&n| x[(n as usize * 2 + c) * 3..][..3].iter().map(|&v| f64::from(v)))
                .collect();
            let count = values.len() as f64;
            let mu = values.iter().sum::<f64>() / count;
            let var = values.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / count;
            sum += values
                .iter()
                .map(|v| ((v - mu) / (var + 1e-5).sqrt() - v).powi(2))
                .sum::<f64>();
        }
        weighted += sum / (batch.len() * 6) as f64 * batch.len() as f64;
    }
    let expected = weighted / 8.0;
    assert!(
        (stats.train_loss - expected).abs() < 1e-5 * expected,
        "epoch loss {}, expected {expected}",
        stats.train_loss
    );
}
