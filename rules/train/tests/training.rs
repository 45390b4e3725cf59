//! Training behaviour: learning, resuming, determinism, scores, errors.

mod common;

use common::*;
use kflow_model::Model;
use kflow_train::{Checkpoint, Hyper, TrainError, forward, scores, train_epoch};

fn epochs(model: &Model, seed: u64, train: &Split, val: &Split, hyper: &Hyper, n: u32) -> (Checkpoint, Vec<f64>, f64) {
    let mut checkpoint = Checkpoint::fresh(init(model, seed));
    let mut losses = Vec::new();
    let mut metric = 0.0;
    for _ in 0..n {
        let (next, stats) = train_epoch(model, checkpoint, &train.data(), &val.data(), hyper).unwrap();
        assert_eq!(stats.epoch, next.epochs_done);
        losses.push(stats.train_loss);
        metric = stats.val_metric;
        checkpoint = next;
    }
    (checkpoint, losses, metric)
}

#[test]
fn cnn_classifier_learns_a_separable_task() {
    let model = cnn1d([4, 32], &[8, 16]);
    let (train, val) = (bumps(512, 4, 32, 1), bumps(256, 4, 32, 2));
    let hyper = Hyper {
        batch_size: 32,
        lr: 3e-3,
        ..Hyper::default()
    };
    let (checkpoint, losses, f1) = epochs(&model, 7, &train, &val, &hyper, 4);
    assert!(losses[3] < losses[0] * 0.5, "training loss did not fall: {losses:?}");
    assert!(f1 > 0.9, "validation F1 {f1}");
    assert_eq!(checkpoint.step, 4 * 16);
}

#[test]
fn autoencoder_reconstruction_error_falls() {
    let model = autoencoder1d(2);
    let (train, val) = (waves(256, 2, 16, 3), waves(64, 2, 16, 4));
    let hyper = Hyper {
        batch_size: 16,
        lr: 3e-3,
        ..Hyper::default()
    };
    let mut checkpoint = Checkpoint::fresh(init(&model, 1));
    let mut mse = Vec::new();
    for _ in 0..4 {
        let (next, stats) = train_epoch(&model, checkpoint, &train.data(), &val.data(), &hyper).unwrap();
        assert_eq!(stats.val_loss, stats.val_metric);
        mse.push(stats.val_metric);
        checkpoint = next;
    }
    assert!(
        mse.windows(2).all(|w| w[1] < w[0]) && mse[3] < mse[0] * 0.8,
        "validation MSE did not fall: {mse:?}"
    );
}

#[test]
fn two_dimensional_autoencoder_trains_through_pool_and_transposed_conv() {
    let model = autoencoder2d();
    let (train, val) = (waves(128, 8, 8, 5), waves(32, 8, 8, 6));
    // waves() gives [N, 8 rows, 8]; the model reads it as [1, 8, 8].
    let hyper = Hyper {
        batch_size: 16,
        lr: 1e-2,
        ..Hyper::default()
    };
    let (_, losses, _) = epochs(&model, 2, &train, &val, &hyper, 3);
    assert!(losses[2] < losses[0], "training loss did not fall: {losses:?}");
}

#[test]
fn two_epochs_equal_one_then_a_resumed_one_byte_for_byte() {
    let model = cnn1d([4, 32], &[8, 16]);
    let (train, val) = (bumps(200, 4, 32, 1), bumps(64, 4, 32, 2));
    let hyper = Hyper {
        batch_size: 32,
        ..Hyper::default()
    };
    let (straight, _, _) = epochs(&model, 3, &train, &val, &hyper, 2);

    let (one, _, _) = epochs(&model, 3, &train, &val, &hyper, 1);
    let saved = one.to_safetensors().unwrap();
    let loaded = Checkpoint::from_safetensors(&saved).unwrap();
    assert_eq!(loaded, one);
    let (resumed, stats) = train_epoch(&model, loaded, &train.data(), &val.data(), &hyper).unwrap();
    assert_eq!(stats.epoch, 2);
    assert_eq!(resumed.to_safetensors().unwrap(), straight.to_safetensors().unwrap());
}

#[test]
fn same_inputs_give_the_same_bytes_run_to_run() {
    let model = autoencoder2d();
    let (train, val) = (waves(64, 8, 8, 5), waves(16, 8, 8, 6));
    let hyper = Hyper {
        batch_size: 16,
        ..Hyper::default()
    };
    let run = || {
        let (c, stats) = train_epoch(
            &model,
            Checkpoint::fresh(init(&model, 9)),
            &train.data(),
            &val.data(),
            &hyper,
        )
        .unwrap();
        (c.to_safetensors().unwrap(), serde_json::to_string(&stats).unwrap())
    };
    assert_eq!(run(), run());
}

#[test]
fn the_seed_changes_the_order_and_so_the_weights() {
    let model = cnn1d([4, 32], &[8]);
    let (train, val) = (bumps(96, 4, 32, 1), bumps(32, 4, 32, 2));
    let run = |seed| {
        let hyper = Hyper {
            batch_size: 16,
            seed,
            ..Hyper::default()
        };
        let (c, _) = train_epoch(
            &model,
            Checkpoint::fresh(init(&model, 9)),
            &train.data(),
            &val.data(),
            &hyper,
        )
        .unwrap();
        c.to_safetensors().unwrap()
    };
    assert_ne!(run(0), run(1));
}

/// The model of the throughput bench: 17×32 windows, three conv blocks of
/// 16–32 channels, batch 64, big enough for candle's matmuls to go parallel.
fn bench_model() -> Model {
    cnn1d([17, 32], &[16, 32, 32])
}

fn train_in_pool(threads: usize) -> Vec<u8> {
    let model = bench_model();
    let (train, val) = (bumps(320, 17, 32, 1), bumps(64, 17, 32, 2));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let fresh = Checkpoint::fresh(init(&model, 4));
        let (c, _) = train_epoch(&model, fresh, &train.data(), &val.data(), &Hyper::default()).unwrap();
        c.to_safetensors().unwrap()
    })
}

#[test]
fn checkpoint_bytes_do_not_depend_on_the_callers_thread_pool() {
    assert_eq!(train_in_pool(1), train_in_pool(2));
}

/// Set by `checkpoint_bytes_do_not_depend_on_candles_thread_count` for the
/// child processes it starts.
const CHILD_OUTPUT: &str = "KFLOW_TRAIN_TEST_CHILD_OUTPUT";

#[test]
fn child_trains_and_writes_its_checkpoint() {
    if let Ok(path) = std::env::var(CHILD_OUTPUT) {
        std::fs::write(path, train_in_pool(1)).unwrap();
    }
}

#[test]
fn checkpoint_bytes_do_not_depend_on_candles_thread_count() {
    // candle reads its thread count from RAYON_NUM_THREADS on each matmul
    // (and sizes its worker pools from it), so each count needs a process.
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for threads in ["1", "2", "3"] {
        let path = dir.path().join(threads);
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_trains_and_writes_its_checkpoint", "--test-threads=1"])
            .env(CHILD_OUTPUT, &path)
            .env("RAYON_NUM_THREADS", threads)
            .env("CANDLE_NUM_THREADS", threads)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        outputs.push(std::fs::read(&path).unwrap());
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
}

#[test]
fn classifier_scores_are_the_softmax_of_the_logits() {
    let model = cnn1d([4, 32], &[8]);
    let weights = init(&model, 5);
    let split = bumps(10, 4, 32, 1);
    let logits = forward(&model, &weights, &split.x, 10).unwrap();
    let s = scores(&model, &weights, &split.data()).unwrap();
    for (pair, score) in logits.chunks(2).zip(&s) {
        let p1 = 1.0 / (1.0 + (pair[0] - pair[1]).exp());
        assert!((p1 - score).abs() < 1e-6, "{p1} vs {score}");
    }
}

#[test]
fn autoencoder_scores_are_per_sample_reconstruction_errors() {
    let model = autoencoder1d(2);
    let weights = init(&model, 5);
    let split = waves(3, 2, 16, 1);
    let out = forward(&model, &weights, &split.x, 3).unwrap();
    let s = scores(&model, &weights, &split.data()).unwrap();
    for ((reconstruction, input), score) in out.chunks(32).zip(split.x.chunks(32)).zip(&s) {
        let mse: f32 = reconstruction
            .iter()
            .zip(input)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            / 32.0;
        assert!((mse - score).abs() < 1e-5, "{mse} vs {score}");
    }
}

#[test]
fn bad_inputs_are_errors_that_name_the_problem() {
    let model = cnn1d([4, 32], &[8]);
    let fresh = || Checkpoint::fresh(init(&model, 1));
    let (train, val) = (bumps(16, 4, 32, 1), bumps(8, 4, 32, 2));

    let mut bad = bumps(16, 4, 32, 1);
    bad.y[3] = 2;
    let err = train_epoch(&model, fresh(), &bad.data(), &val.data(), &Hyper::default()).unwrap_err();
    assert!(matches!(err, TrainError::Data { split: "train", .. }), "{err}");

    let wrong = bumps(16, 4, 31, 1);
    let err = train_epoch(&model, fresh(), &train.data(), &wrong.data(), &Hyper::default()).unwrap_err();
    assert!(matches!(err, TrainError::Data { split: "val", .. }), "{err}");

    let hyper = Hyper {
        lr: f64::NAN,
        ..Hyper::default()
    };
    let err = train_epoch(&model, fresh(), &train.data(), &val.data(), &hyper).unwrap_err();
    assert!(matches!(err, TrainError::Hyper { name: "lr", .. }), "{err}");

    let hyper = Hyper {
        lr: 1e30,
        batch_size: 4,
        ..Hyper::default()
    };
    let err = train_epoch(&model, fresh(), &train.data(), &val.data(), &hyper).unwrap_err();
    assert!(matches!(err, TrainError::Diverged { .. }), "{err}");

    let mut stale = fresh();
    stale.step = 5;
    stale.first_moment = Default::default();
    let err = train_epoch(&model, stale, &train.data(), &val.data(), &Hyper::default()).unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint(_)), "{err}");
}

/// A network that sees nothing gives two equal logits (train and
/// validation loss ln 2), while the float weights underneath still move.
fn assert_silenced_yet_moved(stats: &kflow_train::EpochStats, moved: &Checkpoint, start: &Checkpoint) {
    for loss in [stats.val_loss, stats.train_loss] {
        assert!((loss - std::f64::consts::LN_2).abs() < 1e-6, "{loss}");
    }
    assert_ne!(moved.to_safetensors().unwrap(), start.to_safetensors().unwrap());
}

/// The small classifier and data the view tests train one epoch of.
fn view_case() -> (Model, Split, Split, Hyper) {
    let hyper = Hyper {
        batch_size: 32,
        ..Hyper::default()
    };
    (cnn1d([4, 32], &[8]), bumps(128, 4, 32, 1), bumps(64, 4, 32, 2), hyper)
}

/// The forward pass and validation see the view; the update lands on the
/// weights underneath (the straight-through estimator).
#[test]
fn a_weight_view_is_what_the_forward_pass_and_validation_see() {
    let (model, train, val, hyper) = view_case();
    let start = || Checkpoint::fresh(init(&model, 3));
    let run = |weights: Option<&kflow_train::WeightView<'_>>| {
        let view = kflow_train::View {
            weights,
            activations: None,
        };
        kflow_train::train_epoch_viewed(&model, start(), &train.data(), &val.data(), &hyper, view).unwrap()
    };
    // The identity view changes nothing, byte for byte.
    let identity = |w: &kflow_model::Weights| Ok(w.clone());
    let (plain, _) = train_epoch(&model, start(), &train.data(), &val.data(), &hyper).unwrap();
    let (viewed, _) = run(Some(&identity));
    assert_eq!(plain.to_safetensors().unwrap(), viewed.to_safetensors().unwrap());
    // A view that silences every parameter: two equal logits, so the
    // validation loss is ln 2, while the float weights still move.
    let silent = |w: &kflow_model::Weights| {
        let mut w = w.clone();
        w.tensors
            .values_mut()
            .for_each(|t| t.data.iter_mut().for_each(|v| *v = 0.0));
        Ok(w)
    };
    let (moved, stats) = run(Some(&silent));
    assert_silenced_yet_moved(&stats, &moved, &start());
    // A view that drops a tensor is an error, not a panic.
    let lossy = |_: &kflow_model::Weights| Ok(kflow_model::Weights::default());
    let view = kflow_train::View {
        weights: Some(&lossy),
        activations: None,
    };
    let err = kflow_train::train_epoch_viewed(&model, start(), &train.data(), &val.data(), &hyper, view)
        .expect_err("an error");
    assert!(matches!(err, TrainError::View(_)), "{err}");
}

/// Rounded activations are what the forward pass and validation see; the
/// gradient passes through the rounding where nothing was clipped.
#[test]
fn rounded_activations_are_what_the_forward_pass_sees() {
    let (model, train, val, hyper) = view_case();
    let start = || Checkpoint::fresh(init(&model, 3));
    let run = |grid: &kflow_train::ActivationGrid| {
        let view = kflow_train::View {
            weights: None,
            activations: Some(grid),
        };
        kflow_train::train_epoch_viewed(&model, start(), &train.data(), &val.data(), &hyper, view)
    };
    let last = model.layers.last().unwrap().name.clone();
    let grid = |layer: &str, step: f32| kflow_train::ActivationGrid {
        input: None,
        layers: [(
            layer.to_owned(),
            kflow_train::Grid {
                step,
                min: -1000,
                max: 1000,
            },
        )]
        .into(),
    };
    // Logits on a grid so coarse that they are all 0: the loss is ln 2,
    // yet the weights move (straight-through).
    let (moved, stats) = run(&grid(&last, 1e4)).unwrap();
    assert_silenced_yet_moved(&stats, &moved, &start());
    // A fine grid is close to the float network, not equal to it.
    let (plain, plain_stats) = train_epoch(&model, start(), &train.data(), &val.data(), &hyper).unwrap();
    let (fine, fine_stats) = run(&grid(&last, 1e-3)).unwrap();
    assert_ne!(plain.to_safetensors().unwrap(), fine.to_safetensors().unwrap());
    assert!((plain_stats.val_loss - fine_stats.val_loss).abs() < 1e-2 * plain_stats.val_loss);
    // A layer the model does not have is an error.
    let err = run(&grid("nowhere", 0.1)).expect_err("an error");
    assert!(err.to_string().contains("nowhere"), "{err}");
}
