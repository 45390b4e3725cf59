//! Hand-built networks of every layer kind: the generated C, compiled with
//! the host's gcc, writes the simulator's output byte for byte, on random
//! inputs and on saturating ones; the same model.c compiles for the
//! Cortex-M4 without warnings.

mod common;

use common::{Kernels, Noise, Program, arm_compile, expected, have_arm_gcc, random_weights};
use kflow_ai8x_sim::{
    Activation, Device, EltwiseOp, Layer, LayerWeights, Network, Op, OutputWidth, Pool, PoolKind, Shape, SimOptions,
    Source, WeightBits,
};
use kflow_cm_codegen::{CodegenError, generate};

fn agree_with(net: &Network, weights: &[LayerWeights], options: SimOptions) {
    let generated = generate(net, weights, options).expect("generate");
    let n = net.input.len();
    let mut noise = Noise::new(n as u64);
    let mut inputs = vec![vec![127i8; n], vec![-128i8; n], vec![0i8; n]];
    inputs.extend((0..3).map(|_| noise.int8s(n)));
    // Small values keep outputs away from saturation, so rounding shows.
    inputs.push((0..n).map(|_| noise.range(-4, 4) as i8).collect());
    for kernels in [Kernels::Portable, Kernels::EmulatedDsp] {
        let program = Program::build(&generated, kernels).unwrap_or_else(|e| panic!("{e}\n{}", generated.model_c));
        for (k, input) in inputs.iter().enumerate() {
            let got = program.run(input).expect("run");
            assert_eq!(
                got,
                expected(net, weights, input, options),
                "{kernels:?} kernels, input {k}"
            );
        }
    }
    if have_arm_gcc() {
        arm_compile(&generated).unwrap();
    } else {
        println!("arm-none-eabi-gcc is not installed: skipped the Cortex-M4 build");
    }
}

fn agree(net: &Network, weights: &[LayerWeights]) {
    agree_with(net, weights, SimOptions::default())
}

fn network(input: Shape, layers: Vec<Layer>) -> Network {
    Network {
        device: Device::Max78002,
        input,
        layers,
    }
}

fn with_bias(net: &Network, seed: u64) -> Vec<LayerWeights> {
    random_weights(net, &mut Noise::new(seed), |_| true)
}

#[test]
fn conv2d_3x3_with_padding_relu_and_bias() {
    let layer = Layer {
        activation: Activation::Relu,
        output_shift: -3,
        ..Layer::new(
            Op::Conv2d {
                kernel: 3,
                pad: 1,
                depthwise: false,
            },
            3,
            5,
        )
    };
    let net = network(Shape::new(3, 6, 7), vec![layer]);
    agree(&net, &with_bias(&net, 1));
}

/// One 1x1 convolution per output shift reads the input; a passthrough
/// concatenates them all, so that one program covers every shift.
/// `model.bin` belongs to its `model.c`: the weights of a network with the
/// same shapes but other shifts, or a damaged header, are refused.
#[test]
fn weights_of_another_network_are_refused() {
    let net = |shift| {
        let layer = Layer {
            output_shift: shift,
            ..Layer::new(
                Op::Conv2d {
                    kernel: 3,
                    pad: 1,
                    depthwise: false,
                },
                2,
                4,
            )
        };
        network(Shape::new(2, 5, 5), vec![layer])
    };
    let (a, b) = (net(0), net(1));
    let weights = with_bias(&a, 3);
    let ga = generate(&a, &weights, SimOptions::default()).expect("generate");
    let gb = generate(&b, &weights, SimOptions::default()).expect("generate");
    assert_ne!(ga.model_id, gb.model_id);
    assert_eq!(ga.model_bin.len(), gb.model_bin.len());
    let program = Program::build(&ga, Kernels::Portable).expect("build");
    let input = vec![1i8; a.input.len()];
    assert_eq!(
        program.run(&input),
        Ok(expected(&a, &weights, &input, SimOptions::default()))
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let other = dir.path().join("other.bin");
    std::fs::write(&other, &gb.model_bin).expect("write");
    assert!(
        program.run_with(&other, &input).is_err(),
        "weights of another model ran"
    );
    let mut damaged = ga.model_bin.clone();
    damaged[9] ^= 1; // the length field
    std::fs::write(&other, &damaged).expect("write");
    assert!(program.run_with(&other, &input).is_err(), "a damaged header ran");
}

#[test]
fn conv2d_every_output_shift_and_activation() {
    for activation in [Activation::None, Activation::Relu, Activation::Abs] {
        let mut layers: Vec<Layer> = (-15..=15)
            .map(|shift| Layer {
                inputs: vec![Source::Input],
                activation,
                output_shift: shift,
                ..Layer::new(
                    Op::Conv2d {
                        kernel: 1,
                        pad: 0,
                        depthwise: false,
                    },
                    4,
                    3,
                )
            })
            .collect();
        let shifts = layers.len();
        layers.push(Layer {
            inputs: (0..shifts).map(Source::Layer).collect(),
            ..Layer::new(Op::None, 3 * shifts, 3 * shifts)
        });
        let net = network(Shape::new(4, 3, 3), layers);
        agree(&net, &with_bias(&net, 100));
    }
}

#[test]
fn conv2d_padding_two_and_depthwise() {
    let layers = vec![
        Layer {
            output_shift: -2,
            ..Layer::new(
                Op::Conv2d {
                    kernel: 3,
                    pad: 2,
                    depthwise: true,
                },
                4,
                4,
            )
        },
        Layer {
            activation: Activation::Abs,
            ..Layer::new(
                Op::Conv2d {
                    kernel: 3,
                    pad: 0,
                    depthwise: true,
                },
                4,
                4,
            )
        },
    ];
    let net = network(Shape::new(4, 5, 4), layers);
    agree(&net, &with_bias(&net, 2));
}

#[test]
fn conv1d_kernels_and_padding_with_max_pool() {
    let layers = vec![
        Layer {
            pool: Some(Pool {
                kind: PoolKind::Max,
                size: [2, 1],
                stride: 2,
            }),
            activation: Activation::Relu,
            output_shift: -1,
            ..Layer::new(Op::Conv1d { kernel: 5, pad: 2 }, 3, 6)
        },
        Layer::new(Op::Conv1d { kernel: 9, pad: 0 }, 6, 2),
        Layer::new(Op::Conv1d { kernel: 1, pad: 0 }, 2, 3),
    ];
    let net = network(Shape::one_d(3, 23), layers);
    agree(&net, &with_bias(&net, 3));
}

#[test]
fn convtranspose2d_every_padding() {
    for pad in 0..=2 {
        let layer = Layer {
            output_shift: -2,
            ..Layer::new(Op::ConvTranspose2d { pad }, 3, 2)
        };
        let net = network(Shape::new(3, 4, 3), vec![layer]);
        agree(&net, &with_bias(&net, 4 + pad as u64));
    }
}

#[test]
fn linear_flatten_with_32_bit_output() {
    let layers = vec![
        Layer {
            activation: Activation::Relu,
            ..Layer::new(
                Op::Conv2d {
                    kernel: 3,
                    pad: 1,
                    depthwise: false,
                },
                2,
                4,
            )
        },
        Layer {
            output_width: OutputWidth::ThirtyTwo,
            ..Layer::new(Op::Linear { flatten: true }, 4, 5)
        },
    ];
    let net = network(Shape::new(2, 3, 5), layers);
    agree(&net, &with_bias(&net, 5));
}

#[test]
fn linear_after_average_pool_to_one_pixel() {
    let layers = vec![
        Layer {
            pool: Some(Pool {
                kind: PoolKind::Avg,
                size: [4, 4],
                stride: 4,
            }),
            output_shift: 1,
            ..Layer::new(Op::Linear { flatten: false }, 6, 3)
        },
        Layer::new(Op::Linear { flatten: false }, 3, 2),
    ];
    let net = network(Shape::new(6, 4, 4), layers);
    agree(&net, &with_bias(&net, 6));
}

#[test]
fn average_pool_truncates_or_rounds_as_the_simulator_is_told() {
    let layer = Layer {
        pool: Some(Pool {
            kind: PoolKind::Avg,
            size: [3, 2],
            stride: 1,
        }),
        ..Layer::new(Op::None, 3, 3)
    };
    let net = network(Shape::new(3, 5, 6), vec![layer]);
    let weights = vec![LayerWeights::default()];
    for avg_pool_rounding in [false, true] {
        agree_with(&net, &weights, SimOptions { avg_pool_rounding });
    }
}

fn eltwise_network(op: EltwiseOp, pool_first: bool, operands: usize) -> Network {
    let conv = |shift| Layer {
        inputs: vec![Source::Input],
        output_shift: shift,
        ..Layer::new(
            Op::Conv2d {
                kernel: 1,
                pad: 0,
                depthwise: false,
            },
            2,
            3,
        )
    };
    let mut layers: Vec<Layer> = (0..operands).map(|k| conv(k as i32 - 1)).collect();
    layers.push(Layer {
        inputs: (0..operands).map(Source::Layer).collect(),
        eltwise: Some(op),
        pool_first,
        pool: Some(Pool {
            kind: PoolKind::Max,
            size: [2, 2],
            stride: 1,
        }),
        output_shift: -1,
        activation: Activation::Relu,
        ..Layer::new(
            Op::Conv2d {
                kernel: 3,
                pad: 1,
                depthwise: false,
            },
            3,
            2,
        )
    });
    network(Shape::new(2, 4, 5), layers)
}

#[test]
fn eltwise_ops_fused_into_conv2d_pool_first_and_after() {
    for op in [EltwiseOp::Add, EltwiseOp::Sub, EltwiseOp::Xor, EltwiseOp::Or] {
        for (pool_first, operands) in [(true, 3), (false, 2)] {
            let net = eltwise_network(op, pool_first, operands);
            // The MAX78002 fuses no element-wise op with a biased convolution.
            let last = net.layers.len() - 1;
            let weights = random_weights(&net, &mut Noise::new(8), |i| i != last);
            agree(&net, &weights);
        }
    }
}

#[test]
fn passthrough_eltwise_with_avg_pool_last() {
    let mut net = eltwise_network(EltwiseOp::Sub, false, 2);
    let last = net.layers.len() - 1;
    net.layers[last] = Layer {
        inputs: vec![Source::Layer(0), Source::Layer(1)],
        eltwise: Some(EltwiseOp::Sub),
        pool_first: false,
        pool: Some(Pool {
            kind: PoolKind::Avg,
            size: [2, 3],
            stride: 2,
        }),
        ..Layer::new(Op::None, 3, 3)
    };
    let weights = random_weights(&net, &mut Noise::new(9), |i| i != last);
    agree(&net, &weights);
}

#[test]
fn concatenation_of_input_and_layers_with_in_dim() {
    let layers = vec![
        Layer::new(
            Op::Conv2d {
                kernel: 3,
                pad: 1,
                depthwise: false,
            },
            2,
            3,
        ),
        Layer {
            inputs: vec![Source::Input],
            ..Layer::new(
                Op::Conv2d {
                    kernel: 1,
                    pad: 0,
                    depthwise: false,
                },
                2,
                1,
            )
        },
        // 2 + 3 + 1 channels of 4x6 pixels, read as 3x8.
        Layer {
            inputs: vec![Source::Input, Source::Layer(0), Source::Layer(1)],
            in_dim: Some([3, 8]),
            activation: Activation::Relu,
            ..Layer::new(
                Op::Conv2d {
                    kernel: 3,
                    pad: 1,
                    depthwise: false,
                },
                6,
                4,
            )
        },
        Layer {
            inputs: vec![Source::Layer(2)],
            in_dim: Some([24, 1]),
            ..Layer::new(Op::None, 4, 4)
        },
        Layer::new(Op::Conv1d { kernel: 3, pad: 1 }, 4, 2),
    ];
    let net = network(Shape::new(2, 4, 6), layers);
    agree(&net, &with_bias(&net, 10));
}

#[test]
fn low_bit_weights() {
    for bits in [WeightBits::One, WeightBits::Two, WeightBits::Four, WeightBits::Binary] {
        let layers = vec![
            Layer {
                weight_bits: bits,
                output_shift: 2,
                ..Layer::new(
                    Op::Conv2d {
                        kernel: 3,
                        pad: 1,
                        depthwise: false,
                    },
                    3,
                    4,
                )
            },
            Layer {
                weight_bits: bits,
                ..Layer::new(Op::Linear { flatten: true }, 4, 3)
            },
        ];
        let net = network(Shape::new(3, 3, 3), layers);
        agree(&net, &with_bias(&net, 11));
    }
}

#[test]
fn conv2d_with_32_bit_output_and_a_dead_32_bit_layer() {
    let layers = vec![
        Layer::new(
            Op::Conv2d {
                kernel: 3,
                pad: 1,
                depthwise: false,
            },
            3,
            4,
        ),
        Layer {
            output_width: OutputWidth::ThirtyTwo,
            ..Layer::new(
                Op::Conv2d {
                    kernel: 1,
                    pad: 0,
                    depthwise: false,
                },
                4,
                2,
            )
        },
        Layer {
            inputs: vec![Source::Layer(0)],
            output_width: OutputWidth::ThirtyTwo,
            ..Layer::new(
                Op::Conv2d {
                    kernel: 3,
                    pad: 0,
                    depthwise: false,
                },
                4,
                3,
            )
        },
    ];
    let net = network(Shape::new(3, 5, 5), layers);
    agree(&net, &with_bias(&net, 12));
}

#[test]
fn many_channels_in_one_layer() {
    let layers = vec![
        Layer {
            output_shift: -4,
            ..Layer::new(
                Op::Conv2d {
                    kernel: 3,
                    pad: 1,
                    depthwise: false,
                },
                70,
                130,
            )
        },
        Layer {
            output_shift: -4,
            ..Layer::new(
                Op::Conv2d {
                    kernel: 1,
                    pad: 0,
                    depthwise: false,
                },
                130,
                5,
            )
        },
    ];
    let net = network(Shape::new(70, 3, 3), layers);
    agree(&net, &with_bias(&net, 13));
}

#[test]
fn wrong_weight_count_is_an_error_naming_the_layer() {
    let net = network(
        Shape::new(2, 3, 3),
        vec![Layer::new(
            Op::Conv2d {
                kernel: 3,
                pad: 1,
                depthwise: false,
            },
            2,
            2,
        )],
    );
    let weights = vec![LayerWeights {
        weight: vec![1; 5],
        bias: None,
    }];
    let err = generate(&net, &weights, SimOptions::default()).unwrap_err();
    assert!(matches!(err, CodegenError::Weights { layer: 0, .. }), "{err}");
    assert!(err.to_string().contains("needs 36"), "{err}");
}

#[test]
fn a_network_the_simulator_refuses_is_refused() {
    let net = network(
        Shape::new(2, 3, 3),
        vec![Layer::new(
            Op::Conv2d {
                kernel: 5,
                pad: 1,
                depthwise: false,
            },
            2,
            2,
        )],
    );
    let err = generate(&net, &[LayerWeights::default()], SimOptions::default()).unwrap_err();
    assert!(matches!(err, CodegenError::Network(_)), "{err}");
}
