//! End to end: a small quantized network through `kflow-cm-codegen`, the
//! firmware built for it, QEMU, kflow's device client; every output byte
//! for byte the simulator's, the instruction count the same on every run.

mod common;

use std::time::Instant;

use common::{Board, tools_or_skip};
use kflow_ai8x_sim::{
    Activation, Device, Layer, LayerWeights, Network, Op, Output, OutputWidth, Pool, PoolKind, Shape, SimOptions,
    Tensor, simulate,
};
use kflow_cm_firmware::Target;
use kflow_device::ErrorCode;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn conv(in_channels: usize, out_channels: usize, pool: bool, shift: i32) -> Layer {
    Layer {
        activation: Activation::Relu,
        output_shift: shift,
        pool: pool.then_some(Pool {
            kind: PoolKind::Max,
            size: [2, 2],
            stride: 2,
        }),
        ..Layer::new(
            Op::Conv2d {
                kernel: 3,
                pad: 1,
                depthwise: false,
            },
            in_channels,
            out_channels,
        )
    }
}

/// A CNN classifier: two 3x3 convolutions with max pooling, then a linear
/// layer with 32-bit outputs (`shift` varies the first layer).
fn cnn(shift: i32) -> Network {
    Network {
        device: Device::Max78002,
        input: Shape::new(3, 12, 12),
        layers: vec![
            conv(3, 8, true, shift),
            conv(8, 8, true, -1),
            Layer {
                output_width: OutputWidth::ThirtyTwo,
                ..Layer::new(Op::Linear { flatten: true }, 8, 10)
            },
        ],
    }
}

/// A 1-D network with int8 outputs.
fn conv1d() -> Network {
    Network {
        device: Device::Max78002,
        input: Shape::one_d(4, 32),
        layers: vec![
            Layer {
                activation: Activation::Relu,
                output_shift: -2,
                ..Layer::new(Op::Conv1d { kernel: 5, pad: 2 }, 4, 8)
            },
            Layer::new(Op::Conv1d { kernel: 3, pad: 0 }, 8, 4),
        ],
    }
}

fn weights(net: &Network, rng: &mut ChaCha8Rng) -> Vec<LayerWeights> {
    let shapes = kflow_ai8x_sim::output_shapes(net).unwrap();
    net.layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let input = if i == 0 { net.input } else { shapes[i - 1] };
            let len = match l.op {
                Op::Conv2d { kernel, .. } => l.out_channels * l.in_channels * kernel * kernel,
                Op::Conv1d { kernel, .. } => l.out_channels * l.in_channels * kernel,
                Op::Linear { flatten: true } => l.out_channels * input.len(),
                _ => unreachable!(),
            };
            LayerWeights {
                weight: (0..len).map(|_| rng.random_range(-40i32..40) as i8).collect(),
                bias: Some((0..l.out_channels).map(|_| rng.random::<i8>()).collect()),
            }
        })
        .collect()
}

fn expected(net: &Network, weights: &[LayerWeights], input: &[u8]) -> Vec<u8> {
    let data = input.iter().map(|&b| b as i8).collect();
    let tensor = Tensor::new(net.input, data).unwrap();
    match simulate(net, weights, &tensor, SimOptions::default()).unwrap() {
        Output::Int8(t) => t.data.iter().map(|&v| v as u8).collect(),
        Output::Int32(t) => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

#[test]
fn generated_networks_match_the_simulator_on_the_board() {
    if !tools_or_skip("generated_networks_match_the_simulator_on_the_board") {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (target, net) in Target::ALL.into_iter().flat_map(|t| [(t, cnn(-2)), (t, conv1d())]) {
        let w = weights(&net, &mut rng);
        let generated = kflow_cm_codegen::generate(&net, &w, SimOptions::default()).unwrap();
        let started = Instant::now();
        let firmware = kflow_cm_firmware::build(target, &generated.model_c, &generated.model_h).unwrap();
        println!(
            "{}: firmware build: {:?}, {} bytes of ELF",
            target.machine(),
            started.elapsed(),
            firmware.elf.len()
        );
        assert_eq!(firmware.model_id, generated.model_id);
        assert_eq!(
            firmware.warnings, "",
            "the firmware and model.c compile without warnings"
        );

        let started = Instant::now();
        let (board, mut client) = Board::start(target, &firmware.elf);
        let info = client.device_info().unwrap();
        println!("boot and first answer: {:?}", started.elapsed());
        assert_eq!(info.firmware_version, firmware.version);

        // The weights of a network that differs only in a shift are another
        // model's: refused.
        if net.layers.len() == 3 {
            let other = kflow_cm_codegen::generate(&cnn(-3), &w, SimOptions::default()).unwrap();
            assert_ne!(other.model_id, generated.model_id);
            assert_eq!(other.model_bin.len(), generated.model_bin.len());
            let err = client.flash(&other.model_bin, |_| {}).unwrap_err();
            assert_eq!(err.device_error().map(|e| e.code), Some(ErrorCode::Refused), "{err}");
            println!("refused: {err}");
        }

        let started = Instant::now();
        client.flash(&generated.model_bin, |_| {}).unwrap();
        println!("flash of {} bytes: {:?}", generated.model_bin.len(), started.elapsed());

        let mut count = None;
        let started = Instant::now();
        for k in 0..20 {
            let input: Vec<u8> = (0..net.input.len()).map(|_| rng.random::<u8>()).collect();
            let inference = client.infer(&input).unwrap();
            assert_eq!(inference.output, expected(&net, &w, &input), "input {k}");
            let instructions = inference.statistics.instructions.expect("an instruction count");
            assert_eq!(client.infer(&input).unwrap(), inference, "the same input again");
            // The generated kernels branch on data only in activations and
            // pooling: record the count, and require it per input run twice.
            count.get_or_insert(instructions);
        }
        println!(
            "40 inferences: {:?}; instructions of the first: {}",
            started.elapsed(),
            count.unwrap_or(0)
        );

        // A second QEMU run counts the same for the same input.
        let input: Vec<u8> = (0..net.input.len()).map(|i| (i * 7) as u8).collect();
        let first = client.infer(&input).unwrap().statistics;
        drop(client);
        drop(board);
        let (_board, mut client) = Board::start(target, &firmware.elf);
        client.flash(&generated.model_bin, |_| {}).unwrap();
        assert_eq!(client.infer(&input).unwrap().statistics, first);
    }
}
