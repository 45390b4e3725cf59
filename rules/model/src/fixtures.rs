//! Small models the tests share.

use crate::ir::{FORMAT, Layer, Model, Op, Task};

pub fn layer(name: &str, op: Op) -> Layer {
    Layer {
        name: name.to_owned(),
        inputs: vec![],
        op,
    }
}

pub fn reading(name: &str, inputs: &[&str], op: Op) -> Layer {
    Layer {
        name: name.to_owned(),
        inputs: inputs.iter().map(|&i| i.to_owned()).collect(),
        op,
    }
}

pub fn model(task: Task, input: &[usize], layers: Vec<Layer>) -> Model {
    Model {
        format: FORMAT.to_owned(),
        name: "m".to_owned(),
        task,
        input: input.to_vec(),
        layers,
    }
}

pub fn conv1d(out_channels: usize, kernel: usize, padding: usize) -> Op {
    Op::Conv1d {
        out_channels,
        kernel,
        padding,
        bias: true,
    }
}

pub fn conv2d(out_channels: usize, kernel: usize, padding: usize) -> Op {
    Op::Conv2d {
        out_channels,
        kernel,
        padding,
        bias: true,
    }
}

pub fn linear(out_features: usize) -> Op {
    Op::Linear {
        out_features,
        bias: true,
    }
}

pub fn batch_norm() -> Op {
    Op::BatchNorm {
        eps: 1e-5,
        momentum: 0.1,
    }
}

/// `[2, 16]` → conv1d → batch_norm → relu → max_pool → flatten → linear → `[2]`.
pub fn cnn1d() -> Model {
    model(
        Task::Classifier { classes: 2 },
        &[2, 16],
        vec![
            layer("c0", conv1d(4, 3, 1)),
            layer("bn0", batch_norm()),
            layer("r0", Op::Relu),
            layer("p0", Op::MaxPool { kernel: 2, stride: 2 }),
            layer("flat", Op::Flatten),
            layer("fc", linear(2)),
        ],
    )
}

/// `[1, 8, 8]` → conv2d → relu → avg_pool → a residual conv2d block joined
/// by add → abs → flatten → linear → `[3]`.
pub fn cnn2d() -> Model {
    model(
        Task::Classifier { classes: 3 },
        &[1, 8, 8],
        vec![
            layer("c0", conv2d(4, 3, 0)),
            layer("r0", Op::Relu),
            layer("p0", Op::AvgPool { kernel: 2, stride: 2 }),
            layer(
                "c1",
                Op::Conv2d {
                    out_channels: 4,
                    kernel: 3,
                    padding: 1,
                    bias: false,
                },
            ),
            reading("sum", &["p0", "c1"], Op::Add),
            layer("a0", Op::Abs),
            layer("flat", Op::Flatten),
            layer("fc", linear(3)),
        ],
    )
}

/// `[1, 8, 8]` → conv2d → batch_norm → relu → max_pool → conv_transpose2d
/// (stride 2, padding 1, output padding 1) → `[1, 8, 8]`.
pub fn autoencoder() -> Model {
    model(
        Task::Autoencoder,
        &[1, 8, 8],
        vec![
            layer("e0", conv2d(4, 3, 1)),
            layer("bn0", batch_norm()),
            layer("r0", Op::Relu),
            layer("p0", Op::MaxPool { kernel: 2, stride: 2 }),
            layer(
                "d0",
                Op::ConvTranspose2d {
                    out_channels: 1,
                    kernel: 3,
                    padding: 1,
                    stride: 2,
                    output_padding: 1,
                    bias: true,
                },
            ),
        ],
    )
}
