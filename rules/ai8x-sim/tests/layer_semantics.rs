//! Single behaviours of the public API: validation errors that name the
//! layer, and layer semantics small enough to check by hand.

use kflow_ai8x_sim::{
    Activation, Device, EltwiseOp, Layer, LayerWeights, Network, Op, OutputWidth, Shape, SimError, SimOptions, Source,
    Tensor, WeightBits, macs, output_shapes, simulate, simulate_all,
};

fn conv2d(cin: usize, cout: usize) -> Layer {
    Layer::new(
        Op::Conv2d {
            kernel: 3,
            pad: 1,
            depthwise: false,
        },
        cin,
        cout,
    )
}

fn net(input: Shape, layers: Vec<Layer>) -> Network {
    Network {
        device: Device::Max78002,
        input,
        layers,
    }
}

fn zeros(shape: Shape) -> Tensor<i8> {
    Tensor {
        shape,
        data: vec![0; shape.len()],
    }
}

fn layer_of(e: SimError) -> usize {
    match e {
        SimError::Layer { layer, .. } => layer,
        other => panic!("not a layer error: {other}"),
    }
}

#[test]
fn wrong_weight_count_names_the_layer() {
    let n = net(Shape::new(2, 4, 4), vec![conv2d(2, 3), conv2d(3, 1)]);
    let w = vec![
        LayerWeights {
            weight: vec![0; 54],
            bias: None,
        },
        LayerWeights {
            weight: vec![0; 26],
            bias: None,
        },
    ];
    let e = simulate(&n, &w, &zeros(n.input), SimOptions::default()).unwrap_err();
    assert!(e.to_string().contains("layer 1"), "{e}");
    assert!(e.to_string().contains("27"), "{e}");
}

#[test]
fn weights_outside_their_bit_width_are_rejected() {
    let layer = Layer {
        weight_bits: WeightBits::Four,
        ..conv2d(1, 1)
    };
    let mut weight = vec![0; 9];
    weight[4] = 8;
    let n = net(Shape::new(1, 3, 3), vec![layer]);
    let e = simulate(
        &n,
        &[LayerWeights { weight, bias: None }],
        &zeros(n.input),
        SimOptions::default(),
    );
    assert!(e.unwrap_err().to_string().contains("weight 4 is 8"));
}

#[test]
fn wrong_input_length_is_an_error_not_a_panic() {
    let n = net(Shape::new(1, 3, 3), vec![conv2d(1, 1)]);
    let input = Tensor {
        shape: n.input,
        data: vec![0; 8],
    };
    let e = simulate(
        &n,
        &[LayerWeights {
            weight: vec![0; 9],
            bias: None,
        }],
        &input,
        SimOptions::default(),
    );
    assert_eq!(
        e.unwrap_err(),
        SimError::InputShape {
            shape: n.input,
            expected: 9,
            actual: 8
        }
    );
}

#[test]
fn reading_a_32_bit_output_is_rejected() {
    let first = Layer {
        output_width: OutputWidth::ThirtyTwo,
        ..conv2d(1, 1)
    };
    let n = net(Shape::new(1, 3, 3), vec![first, conv2d(1, 1)]);
    assert_eq!(layer_of(output_shapes(&n).unwrap_err()), 1);
}

#[test]
fn conv2d_kernels_other_than_1_and_3_are_rejected() {
    let n = net(
        Shape::new(1, 8, 8),
        vec![Layer::new(
            Op::Conv2d {
                kernel: 5,
                pad: 2,
                depthwise: false,
            },
            1,
            1,
        )],
    );
    assert!(output_shapes(&n).unwrap_err().to_string().contains("1×1 or 3×3"));
}

#[test]
fn binary_weights_need_a_max78002_and_exclude_1_bit_layers() {
    let binary = Layer {
        weight_bits: WeightBits::Binary,
        ..conv2d(1, 1)
    };
    let one = Layer {
        weight_bits: WeightBits::One,
        ..conv2d(1, 1)
    };
    let mut n = net(Shape::new(1, 3, 3), vec![binary.clone()]);
    n.device = Device::Max78000;
    assert_eq!(layer_of(output_shapes(&n).unwrap_err()), 0);
    let mixed = net(Shape::new(1, 3, 3), vec![binary, one]);
    assert_eq!(layer_of(output_shapes(&mixed).unwrap_err()), 1);
}

#[test]
fn max78002_rejects_a_fused_element_wise_op_with_bias() {
    let layer = Layer {
        inputs: vec![Source::Input, Source::Input],
        eltwise: Some(EltwiseOp::Add),
        ..conv2d(1, 1)
    };
    let n = net(Shape::new(1, 3, 3), vec![layer]);
    let w = [LayerWeights {
        weight: vec![0; 9],
        bias: Some(vec![1]),
    }];
    let e = simulate(&n, &w, &zeros(n.input), SimOptions::default()).unwrap_err();
    assert!(e.to_string().contains("element-wise"), "{e}");
}

#[test]
fn total_shift_outside_plus_minus_15_is_rejected() {
    let n = net(
        Shape::new(1, 3, 3),
        vec![Layer {
            output_shift: 16,
            ..conv2d(1, 1)
        }],
    );
    assert!(output_shapes(&n).unwrap_err().to_string().contains("total shift of 16"));
}

#[test]
fn passthrough_takes_no_activation() {
    let layer = Layer {
        activation: Activation::Relu,
        ..Layer::new(Op::None, 1, 1)
    };
    assert!(output_shapes(&net(Shape::new(1, 3, 3), vec![layer])).is_err());
}

#[test]
fn an_empty_network_is_an_error() {
    assert_eq!(
        output_shapes(&net(Shape::new(1, 1, 1), vec![])).unwrap_err(),
        SimError::NoLayers
    );
}

#[test]
fn conv_transpose_2d_with_pad_1_doubles_height_and_width() {
    let n = net(
        Shape::new(2, 5, 3),
        vec![Layer::new(Op::ConvTranspose2d { pad: 1 }, 2, 4)],
    );
    assert_eq!(output_shapes(&n).unwrap(), vec![Shape::new(4, 10, 6)]);
}

#[test]
fn thirty_two_bit_output_is_the_raw_accumulator_with_128_bias() {
    let layer = Layer {
        output_width: OutputWidth::ThirtyTwo,
        output_shift: 5,
        ..Layer::new(Op::Linear { flatten: false }, 2, 1)
    };
    let n = net(Shape::new(2, 1, 1), vec![layer]);
    let w = [LayerWeights {
        weight: vec![-128, 127],
        bias: Some(vec![-3]),
    }];
    let input = Tensor {
        shape: n.input,
        data: vec![-128, 127],
    };
    let out = simulate(&n, &w, &input, SimOptions::default()).unwrap();
    assert_eq!(out.as_int32().unwrap().data, vec![128 * 128 + 127 * 127 - 3 * 128]);
}

#[test]
fn flatten_reads_features_in_channel_major_order() {
    // Weight 1 on feature c·H·W + h·W + w = 1·4 + 0·2 + 1 = 5, i.e. channel 1, pixel (0, 1);
    // S = 7 makes the output the accumulator itself.
    let layer = Layer {
        output_shift: 7,
        ..Layer::new(Op::Linear { flatten: true }, 2, 1)
    };
    let n = net(Shape::new(2, 2, 2), vec![layer]);
    let mut weight = vec![0; 8];
    weight[5] = 1;
    let input = Tensor {
        shape: n.input,
        data: (10..18).collect(),
    };
    let out = simulate(
        &n,
        &[LayerWeights { weight, bias: None }],
        &input,
        SimOptions::default(),
    )
    .unwrap();
    assert_eq!(out.as_int8().unwrap().data, vec![15]);
}

#[test]
fn avg_pool_rounding_option_changes_only_half_way_averages() {
    let pool = kflow_ai8x_sim::Pool {
        kind: kflow_ai8x_sim::PoolKind::Avg,
        size: [2, 1],
        stride: 2,
    };
    let layer = Layer {
        pool: Some(pool),
        ..Layer::new(Op::None, 1, 1)
    };
    let n = net(Shape::one_d(1, 6), vec![layer]);
    let input = Tensor {
        shape: n.input,
        data: vec![-1, -2, 1, 2, 4, 6],
    };
    let run = |avg_pool_rounding| {
        let out = simulate(&n, &[LayerWeights::default()], &input, SimOptions { avg_pool_rounding }).unwrap();
        out.as_int8().unwrap().data.clone()
    };
    assert_eq!(run(false), vec![-1, 1, 5]);
    assert_eq!(run(true), vec![-2, 2, 5]);
}

#[test]
fn simulate_all_returns_every_layer_and_macs_count_padding() {
    let n = net(Shape::new(2, 4, 4), vec![conv2d(2, 3), conv2d(3, 1)]);
    let w = vec![
        LayerWeights {
            weight: vec![1; 54],
            bias: None,
        },
        LayerWeights {
            weight: vec![1; 27],
            bias: None,
        },
    ];
    let all = simulate_all(&n, &w, &zeros(n.input), SimOptions::default()).unwrap();
    assert_eq!(
        all.iter().map(|o| o.shape()).collect::<Vec<_>>(),
        vec![Shape::new(3, 4, 4), Shape::new(1, 4, 4)]
    );
    assert_eq!(macs(&n).unwrap(), (3 * 16 * 2 * 9 + 16 * 3 * 9) as u64);
}
