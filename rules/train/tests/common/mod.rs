//! Models, seeded weights and synthetic data for the training tests and the
//! throughput bench.
#![allow(dead_code)]

use kflow_model::{FORMAT, Layer, Model, Op, Task, Tensor, Weights};
use kflow_train::Data;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

pub fn layer(name: &str, op: Op) -> Layer {
    Layer {
        name: name.into(),
        inputs: vec![],
        op,
    }
}

pub fn model(task: Task, input: &[usize], layers: Vec<Layer>) -> Model {
    Model {
        format: FORMAT.into(),
        name: "test".into(),
        task,
        input: input.to_vec(),
        layers,
    }
}

/// `[C, L]` → conv(k3, pad 1) → BatchNorm → ReLU → max-pool 2 per block,
/// then flatten → linear to 2 logits.
pub fn cnn1d(input: [usize; 2], channels: &[usize]) -> Model {
    let mut layers = Vec::new();
    for (i, &c) in channels.iter().enumerate() {
        layers.push(layer(
            &format!("conv{i}"),
            Op::Conv1d {
                out_channels: c,
                kernel: 3,
                padding: 1,
                bias: true,
            },
        ));
        layers.push(layer(
            &format!("bn{i}"),
            Op::BatchNorm {
                eps: 1e-5,
                momentum: 0.1,
            },
        ));
        layers.push(layer(&format!("relu{i}"), Op::Relu));
        layers.push(layer(&format!("pool{i}"), Op::MaxPool { kernel: 2, stride: 2 }));
    }
    layers.push(layer("flatten", Op::Flatten));
    layers.push(layer(
        "fc",
        Op::Linear {
            out_features: 2,
            bias: true,
        },
    ));
    model(Task::Classifier { classes: 2 }, &input, layers)
}

/// A 1-D convolutional autoencoder (no downsampling: the IR has no 1-D upsampling).
pub fn autoencoder1d(channels: usize) -> Model {
    model(
        Task::Autoencoder,
        &[channels, 16],
        vec![
            layer(
                "enc",
                Op::Conv1d {
                    out_channels: 8,
                    kernel: 3,
                    padding: 1,
                    bias: true,
                },
            ),
            layer("act", Op::Relu),
            layer(
                "dec",
                Op::Conv1d {
                    out_channels: channels,
                    kernel: 3,
                    padding: 1,
                    bias: true,
                },
            ),
        ],
    )
}

/// A 2-D autoencoder through every 2-D op: conv, BatchNorm, average pool,
/// transposed convolution back to the input size.
pub fn autoencoder2d() -> Model {
    model(
        Task::Autoencoder,
        &[1, 8, 8],
        vec![
            layer(
                "enc",
                Op::Conv2d {
                    out_channels: 4,
                    kernel: 3,
                    padding: 1,
                    bias: false,
                },
            ),
            layer(
                "bn",
                Op::BatchNorm {
                    eps: 1e-5,
                    momentum: 0.1,
                },
            ),
            layer("act", Op::Relu),
            layer("down", Op::AvgPool { kernel: 2, stride: 2 }),
            layer(
                "up",
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

pub fn uniform(rng: &mut ChaCha8Rng) -> f32 {
    (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32
}

/// PyTorch's default initialization, seeded: weights and biases uniform in
/// ±1/√fan_in; BatchNorm at identity.
pub fn init(model: &Model, seed: u64) -> Weights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut weights = Weights::default();
    let mut shape = model.input.clone();
    let mut add = |weights: &mut Weights, name: String, dims: Vec<usize>, fan_in: usize| {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let n = dims.iter().product();
        let data = (0..n).map(|_| (2.0 * uniform(&mut rng) - 1.0) * bound).collect();
        weights.insert(name, Tensor::new(dims, data));
    };
    for l in &model.layers {
        let name = &l.name;
        match l.op {
            Op::Conv1d {
                out_channels,
                kernel,
                padding,
                bias,
            } => {
                let fan_in = shape[0] * kernel;
                add(
                    &mut weights,
                    format!("{name}.weight"),
                    vec![out_channels, shape[0], kernel],
                    fan_in,
                );
                if bias {
                    add(&mut weights, format!("{name}.bias"), vec![out_channels], fan_in);
                }
                shape = vec![out_channels, shape[1] + 2 * padding + 1 - kernel];
            }
            Op::Conv2d {
                out_channels,
                kernel,
                padding,
                bias,
            } => {
                let fan_in = shape[0] * kernel * kernel;
                add(
                    &mut weights,
                    format!("{name}.weight"),
                    vec![out_channels, shape[0], kernel, kernel],
                    fan_in,
                );
                if bias {
                    add(&mut weights, format!("{name}.bias"), vec![out_channels], fan_in);
                }
                let o = |v: usize| v + 2 * padding + 1 - kernel;
                shape = vec![out_channels, o(shape[1]), o(shape[2])];
            }
            Op::ConvTranspose2d {
                out_channels,
                kernel,
                padding,
                stride,
                output_padding,
                bias,
            } => {
                // PyTorch's fan-in of a transposed convolution's weight [in, out, k, k] is out·k·k.
                let fan_in = out_channels * kernel * kernel;
                add(
                    &mut weights,
                    format!("{name}.weight"),
                    vec![shape[0], out_channels, kernel, kernel],
                    fan_in,
                );
                if bias {
                    add(&mut weights, format!("{name}.bias"), vec![out_channels], fan_in);
                }
                let o = |v: usize| (v - 1) * stride + kernel + output_padding - 2 * padding;
                shape = vec![out_channels, o(shape[1]), o(shape[2])];
            }
            Op::Linear { out_features, bias } => {
                add(
                    &mut weights,
                    format!("{name}.weight"),
                    vec![out_features, shape[0]],
                    shape[0],
                );
                if bias {
                    add(&mut weights, format!("{name}.bias"), vec![out_features], shape[0]);
                }
                shape = vec![out_features];
            }
            Op::BatchNorm { .. } => {
                let c = shape[0];
                weights.insert(format!("{name}.weight"), Tensor::new(vec![c], vec![1.0; c]));
                weights.insert(format!("{name}.bias"), Tensor::zeros(vec![c]));
                weights.insert(format!("{name}.running_mean"), Tensor::zeros(vec![c]));
                weights.insert(format!("{name}.running_var"), Tensor::new(vec![c], vec![1.0; c]));
            }
            Op::MaxPool { kernel, stride } | Op::AvgPool { kernel, stride } => {
                for v in &mut shape[1..] {
                    *v = (*v - kernel) / stride + 1;
                }
            }
            Op::Flatten => shape = vec![shape.iter().product()],
            Op::Add | Op::Relu | Op::Abs => {}
        }
    }
    weights
}

/// An owned split; `data()` borrows it the way the engine would.
pub struct Split {
    pub x: Vec<f32>,
    pub shape: [usize; 3],
    pub y: Vec<u8>,
}

impl Split {
    pub fn data(&self) -> Data<'_> {
        Data {
            x: &self.x,
            shape: self.shape,
            y: &self.y,
            held_out: &[],
        }
    }
}

/// Noise windows; every other one (label 1) carries a bump of a fixed
/// shape at a random position in its first two channels.
pub fn bumps(n: usize, channels: usize, width: usize, seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * channels * width);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i % 2) as u8;
        let at = (uniform(&mut rng) * (width - 8) as f32) as usize;
        for c in 0..channels {
            for t in 0..width {
                let noise = uniform(&mut rng) - 0.5;
                let bump = if label == 1 && c < 2 && (at..at + 8).contains(&t) {
                    1.5
                } else {
                    0.0
                };
                x.push(noise + bump);
            }
        }
        y.push(label);
    }
    Split {
        x,
        shape: [n, channels, width],
        y,
    }
}

/// Smooth windows (sums of two sines of random phase per channel), for the
/// autoencoders; `width` values per channel, `rows` of them in 2-D.
pub fn waves(n: usize, channels: usize, width: usize, seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * channels * width);
    for _ in 0..n {
        for _ in 0..channels {
            let (p, q) = (
                uniform(&mut rng) * std::f32::consts::TAU,
                uniform(&mut rng) * std::f32::consts::TAU,
            );
            for t in 0..width {
                let t = t as f32;
                x.push((0.4 * t + p).sin() + 0.5 * (0.9 * t + q).sin());
            }
        }
    }
    Split {
        x,
        shape: [n, channels, width],
        y: vec![0; n],
    }
}
