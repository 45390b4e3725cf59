//! Each op against values worked out by hand on tiny tensors.

use candle_core::Device;
use kflow_model::{FORMAT, Layer, Tensor as ModelTensor};

use super::*;
use crate::evaluate::Evaluator;

fn layer(name: &str, op: Op) -> Layer {
    Layer {
        name: name.into(),
        inputs: vec![],
        op,
    }
}

fn reading(name: &str, inputs: &[&str], op: Op) -> Layer {
    Layer {
        name: name.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        op,
    }
}

fn model(input: &[usize], layers: Vec<Layer>) -> Model {
    Model {
        format: FORMAT.into(),
        name: "t".into(),
        task: Task::Autoencoder,
        input: input.to_vec(),
        layers,
    }
}

fn weights(tensors: &[(&str, &[usize], &[f32])]) -> Weights {
    let mut w = Weights::default();
    for (name, shape, data) in tensors {
        w.insert(*name, ModelTensor::new(shape.to_vec(), data.to_vec()));
    }
    w
}

/// Evaluation-mode outputs of `n` samples and the per-sample output shape.
fn run(model: &Model, weights: &Weights, x: &[f32], n: usize) -> (Vec<f32>, Vec<usize>) {
    let net = Network::plan_layers(model, weights).unwrap();
    let out = Evaluator::new(&net, weights).unwrap().outputs(x, n).unwrap();
    (out, net.output)
}

fn assert_close(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() <= 1e-5 * (1.0 + e.abs()), "{actual:?} vs {expected:?}");
    }
}

fn conv1d(out_channels: usize, kernel: usize, padding: usize, bias: bool) -> Op {
    Op::Conv1d {
        out_channels,
        kernel,
        padding,
        bias,
    }
}

#[test]
fn conv1d_pads_both_ends_and_adds_bias() {
    let m = model(&[1, 4], vec![layer("c", conv1d(1, 3, 1, true))]);
    let w = weights(&[("c.weight", &[1, 1, 3], &[1.0, 0.0, -1.0]), ("c.bias", &[1], &[0.5])]);
    // Two samples, to check that the batch dimension stays separate.
    let (out, shape) = run(&m, &w, &[1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 1.0, 0.0], 2);
    assert_eq!(shape, [1, 4]);
    assert_close(&out, &[-1.5, -1.5, -1.5, 3.5, 0.5, -0.5, 0.5, 1.5]);
}

#[test]
fn conv1d_sums_over_input_channels_per_output_channel() {
    let m = model(&[2, 2], vec![layer("c", conv1d(2, 1, 0, false))]);
    // weight [out, in, k]: out 0 = x0 + 10·x1, out 1 = −x0.
    let w = weights(&[("c.weight", &[2, 2, 1], &[1.0, 10.0, -1.0, 0.0])]);
    let (out, _) = run(&m, &w, &[1.0, 2.0, 3.0, 4.0], 1);
    assert_close(&out, &[31.0, 42.0, -1.0, -2.0]);
}

#[test]
fn conv2d_matches_hand_computed_windows() {
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let m = model(
        &[1, 3, 3],
        vec![layer(
            "c",
            Op::Conv2d {
                out_channels: 1,
                kernel: 2,
                padding: 0,
                bias: false,
            },
        )],
    );
    let w = weights(&[("c.weight", &[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0])]);
    let (out, shape) = run(&m, &w, &x, 1);
    assert_eq!(shape, [1, 2, 2]);
    assert_close(&out, &[37.0, 47.0, 67.0, 77.0]);

    let m = model(
        &[1, 3, 3],
        vec![layer(
            "c",
            Op::Conv2d {
                out_channels: 1,
                kernel: 3,
                padding: 1,
                bias: true,
            },
        )],
    );
    let w = weights(&[("c.weight", &[1, 1, 3, 3], &[1.0; 9]), ("c.bias", &[1], &[-1.0])]);
    let (out, _) = run(&m, &w, &x, 1);
    // Each output is the sum of its zero-padded 3×3 neighbourhood, minus 1.
    assert_close(&out, &[11.0, 20.0, 15.0, 26.0, 44.0, 32.0, 23.0, 38.0, 27.0]);
}

fn conv_transpose2d(out_channels: usize, kernel: usize, padding: usize, stride: usize, output_padding: usize) -> Op {
    Op::ConvTranspose2d {
        out_channels,
        kernel,
        padding,
        stride,
        output_padding,
        bias: true,
    }
}

#[test]
fn conv_transpose2d_uses_in_out_layout_without_flipping() {
    // A 1×1 input spreads the kernel of each (in, out) pair onto the output.
    let m = model(&[2, 1, 1], vec![layer("t", conv_transpose2d(2, 2, 0, 1, 0))]);
    let kernel: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let w = weights(&[("t.weight", &[2, 2, 2, 2], &kernel), ("t.bias", &[2], &[0.0, 100.0])]);
    let (out, shape) = run(&m, &w, &[1.0, 10.0], 1);
    assert_eq!(shape, [2, 2, 2]);
    // out[o] = 1·w[0, o] + 10·w[1, o] + bias[o]
    let expected: Vec<f32> = (0..8)
        .map(|i| (i + 10 * (i + 8)) as f32 + if i < 4 { 0.0 } else { 100.0 })
        .collect();
    assert_close(&out, &expected);
}

#[test]
fn conv_transpose2d_strides_pads_and_output_pads_as_pytorch() {
    let m = model(&[1, 2, 2], vec![layer("t", conv_transpose2d(1, 2, 0, 2, 0))]);
    let w = weights(&[("t.weight", &[1, 1, 2, 2], &[1.0; 4]), ("t.bias", &[1], &[0.0])]);
    let (out, shape) = run(&m, &w, &[1.0, 2.0, 3.0, 4.0], 1);
    assert_eq!(shape, [1, 4, 4]);
    assert_close(&out, &[1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]);

    // kernel 3, stride 2, padding 1, output_padding 1: the usual "double the size".
    let m = model(&[1, 2, 2], vec![layer("t", conv_transpose2d(1, 3, 1, 2, 1))]);
    let w = weights(&[("t.weight", &[1, 1, 3, 3], &[1.0; 9]), ("t.bias", &[1], &[0.0])]);
    let (out, shape) = run(&m, &w, &[1.0, 2.0, 3.0, 4.0], 1);
    assert_eq!(shape, [1, 4, 4]);
    assert_close(&out, &[1., 3., 2., 2., 4., 10., 6., 6., 3., 7., 4., 4., 3., 7., 4., 4.]);
}

#[test]
fn flatten_is_channel_major_and_linear_is_x_times_weight_transposed() {
    let m = model(
        &[1, 3],
        vec![
            layer("f", Op::Flatten),
            layer(
                "l",
                Op::Linear {
                    out_features: 2,
                    bias: true,
                },
            ),
        ],
    );
    let w = weights(&[
        ("l.weight", &[2, 3], &[1.0, 0.0, -1.0, 2.0, 1.0, 0.0]),
        ("l.bias", &[2], &[0.5, -1.0]),
    ]);
    let (out, shape) = run(&m, &w, &[1.0, 2.0, 3.0], 1);
    assert_eq!(shape, [2]);
    assert_close(&out, &[-1.5, 3.0]);

    let m = model(&[2, 1, 2], vec![layer("f", Op::Flatten)]);
    let (out, shape) = run(&m, &Weights::default(), &[1.0, 2.0, 3.0, 4.0], 1);
    assert_eq!((out, shape), (vec![1.0, 2.0, 3.0, 4.0], vec![4]));
}

fn bn_weights() -> Weights {
    weights(&[
        ("n.weight", &[2], &[2.0, 1.0]),
        ("n.bias", &[2], &[0.0, 1.0]),
        ("n.running_mean", &[2], &[1.0, -1.0]),
        ("n.running_var", &[2], &[4.0, 0.25]),
    ])
}

#[test]
fn batch_norm_in_eval_mode_uses_running_statistics_per_channel() {
    let eps = 1e-5;
    let m = model(&[2, 2], vec![layer("n", Op::BatchNorm { eps, momentum: 0.1 })]);
    let x = [3.0, 5.0, 0.0, -2.0];
    let (out, _) = run(&m, &bn_weights(), &x, 1);
    let norm = |x: f32, mean: f32, var: f32, w: f32, b: f32| (x - mean) / (var + eps as f32).sqrt() * w + b;
    let expected = [
        norm(3.0, 1.0, 4.0, 2.0, 0.0),
        norm(5.0, 1.0, 4.0, 2.0, 0.0),
        norm(0.0, -1.0, 0.25, 1.0, 1.0),
        norm(-2.0, -1.0, 0.25, 1.0, 1.0),
    ];
    assert_close(&out, &expected);
}

#[test]
fn batch_norm_in_train_mode_normalizes_over_batch_and_length() {
    let m = model(
        &[2, 2],
        vec![layer(
            "n",
            Op::BatchNorm {
                eps: 1e-5,
                momentum: 0.1,
            },
        )],
    );
    let w = bn_weights();
    let net = Network::plan_layers(&m, &w).unwrap();
    // Channel 0 sees 1, 3, 5, 7 over two samples; channel 1 sees 0, 0, 2, 2.
    let x = Tensor::from_slice(&[1.0f32, 3.0, 0.0, 0.0, 5.0, 7.0, 2.0, 2.0], (2, 2, 2), &Device::Cpu).unwrap();
    let params: Vec<Tensor> = net
        .params
        .iter()
        .map(|n| Tensor::from_slice(&w.get(n).unwrap().data, 2, &Device::Cpu).unwrap())
        .collect();
    let (y, stats) = net.forward(&x, &params, &[], Mode::Train).unwrap();
    assert_eq!(stats.len(), 1);
    let moments = stats[0].moments.lock().unwrap().clone();
    assert_eq!(moments.count, 4);
    assert_close(&moments.mean, &[4.0, 1.0]);
    assert_close(&moments.var, &[5.0, 1.0]);
    let s0 = 2.0 / (5.0f32 + 1e-5).sqrt();
    let s1 = 1.0 / (1.0f32 + 1e-5).sqrt();
    let expected = [-3.0 * s0, -s0, 1.0 - s1, 1.0 - s1, s0, 3.0 * s0, 1.0 + s1, 1.0 + s1];
    assert_close(&y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &expected);
}

#[test]
fn pools_are_one_dimensional_on_rank_two_activations() {
    let x = [1.0, 3.0, 2.0, 5.0, 4.0];
    let cases = [
        (Op::MaxPool { kernel: 2, stride: 2 }, vec![3.0, 5.0]),
        (Op::MaxPool { kernel: 3, stride: 1 }, vec![3.0, 5.0, 5.0]),
        (Op::AvgPool { kernel: 2, stride: 2 }, vec![2.0, 3.5]),
        (Op::AvgPool { kernel: 3, stride: 2 }, vec![2.0, 11.0 / 3.0]),
    ];
    for (op, expected) in cases {
        let m = model(&[1, 5], vec![layer("p", op)]);
        let (out, _) = run(&m, &Weights::default(), &x, 1);
        assert_close(&out, &expected);
    }
}

#[test]
fn pools_are_two_dimensional_on_rank_three_activations() {
    let x: Vec<f32> = (0..16).map(|v| ((v * 7) % 16) as f32).collect();
    // x = [[0, 7, 14, 5], [12, 3, 10, 1], [8, 15, 6, 13], [4, 11, 2, 9]]
    let m = model(&[1, 4, 4], vec![layer("p", Op::MaxPool { kernel: 2, stride: 2 })]);
    let (out, shape) = run(&m, &Weights::default(), &x, 1);
    assert_eq!(shape, [1, 2, 2]);
    assert_close(&out, &[12.0, 14.0, 15.0, 13.0]);
    let m = model(&[1, 4, 4], vec![layer("p", Op::AvgPool { kernel: 3, stride: 1 })]);
    let (out, _) = run(&m, &Weights::default(), &x, 1);
    assert_close(&out, &[75.0 / 9.0, 74.0 / 9.0, 71.0 / 9.0, 70.0 / 9.0]);
}

#[test]
fn add_sums_named_inputs_after_relu_and_abs() {
    let m = model(
        &[1, 3],
        vec![
            layer("r", Op::Relu),
            reading("a", &["r"], Op::Abs),
            reading("s", &["r", "a", "r"], Op::Add),
        ],
    );
    let (out, _) = run(&m, &Weights::default(), &[-1.0, 2.0, -3.0], 1);
    // relu = [0, 2, 0]; abs(relu) = relu; three of them.
    assert_close(&out, &[0.0, 6.0, 0.0]);

    let m = model(&[1, 3], vec![layer("a", Op::Abs)]);
    let (out, _) = run(&m, &Weights::default(), &[-1.0, 2.0, -3.0], 1);
    assert_close(&out, &[1.0, 2.0, 3.0]);
}

#[test]
fn mismatched_weights_name_the_layer_and_tensor() {
    let m = model(&[2, 8], vec![layer("c0", conv1d(4, 3, 1, true))]);
    let w = weights(&[("c0.weight", &[4, 3, 3], &[0.0; 36]), ("c0.bias", &[4], &[0.0; 4])]);
    let err = Network::plan_layers(&m, &w).err().unwrap().to_string();
    assert!(
        err.contains("c0") && err.contains("c0.weight") && err.contains("[4, 2, 3]"),
        "{err}"
    );

    let err = Network::plan_layers(&m, &Weights::default()).err().unwrap().to_string();
    assert!(err.contains("no `c0.weight`"), "{err}");

    let m = model(&[2, 8], vec![reading("s", &["nowhere"], Op::Relu)]);
    let err = Network::plan_layers(&m, &Weights::default()).err().unwrap().to_string();
    assert!(err.contains("nowhere"), "{err}");
}

#[test]
fn a_classifier_must_end_in_its_logits() {
    let mut m = model(&[1, 3], vec![layer("r", Op::Relu)]);
    m.task = Task::Classifier { classes: 2 };
    let err = Network::plan(&m, &Weights::default()).err().unwrap().to_string();
    assert!(err.contains("[2] logits"), "{err}");
}
