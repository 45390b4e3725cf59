//! kflow's generated C inference (`kflow-cm-codegen`) on the Cortex-M4 of
//! QEMU's `mps2-an386` board, in instructions, which the firmware
//! (`kflow-cm-firmware`) counts exactly for each inference. QEMU counts
//! instructions, not cycles.
//!
//! Default mode: for conv1d, conv2d 3×3 and linear layers of several
//! sizes, a one-layer network with seeded int8 weights is generated,
//! built into the firmware, booted through kflow's
//! `qemu://mps2-an386?firmware=PATH` transport, flashed and run; its
//! instructions per MAC are compared with a naive C implementation of the
//! same layer (plain nested loops, int32 accumulation, the same
//! requantization and activation) that reads the same `model.bin`,
//! compiled by the same `kflow_cm_firmware::build`. Every output of both
//! must be `kflow_ai8x_sim::simulate`'s, byte for byte.
//!
//! `--fit`: measures many networks (the seeded random ai8x networks of
//! `rules/ai8x/tests/random_network`, larger seeded chains of every layer
//! kind, and the layers above), fits the linear model of
//! `kflow_ai8x::timing::SoftwareModel` to three of every four by least
//! squares on relative residuals, reports its quality on the fourth, and
//! prints the coefficients as the Rust constant `M4_SOFTWARE`.
//! `--seeds A..B` chooses the random networks (default 0..400).
//!
//! Needs `qemu-system-arm` and `arm-none-eabi-gcc`; without them it says
//! so and exits.

#[allow(dead_code)] // The generator's YAML text and feature names are for other tests.
#[path = "../rules/ai8x/tests/random_network/mod.rs"]
mod random_network;

use std::fmt::Write as _;
use std::ops::Range;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kflow_ai8x::timing::{M4_SOFTWARE, SoftwareKind, SoftwareLayer, SoftwareModel};
use kflow_ai8x_sim::{
    Activation, Device, Layer, LayerWeights, Network, Op, Output, OutputWidth, Pool, PoolKind, Shape, SimOptions,
    Source, Tensor,
};
use kflow_device::{Client, DeviceUrl, LinkTimeouts, RetryPolicy};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Inputs run per network in the kernel comparison; the counts vary a
/// little with the data (activation and saturation branches), so the
/// table shows their mean.
const KERNEL_INPUTS: usize = 3;
/// Two emulators at a time: the machine has two cores.
const WORKERS: usize = 2;
/// Larger seeded chains in the fit.
const SCALED_NETWORKS: u64 = 60;
/// Every `HOLD_OUT`-th network is kept out of the fit and judges it.
const HOLD_OUT: usize = 4;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for tool in [kflow_cm_firmware::COMPILER, kflow_cm_firmware::QEMU] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            println!(
                "{tool} is not installed: nothing measured (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)"
            );
            return Ok(());
        }
    }
    if args.iter().any(|a| a == "--fit") {
        let seeds = match args.iter().position(|a| a == "--seeds") {
            Some(i) => parse_range(args.get(i + 1).ok_or("--seeds A..B")?)?,
            None => 0..400,
        };
        fit(seeds)
    } else {
        kernels()
    }
}

fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (a, b) = text.split_once("..").ok_or("--seeds A..B")?;
    let parse = |s: &str| s.parse::<u64>().map_err(|e| format!("--seeds {text}: {e}"));
    Ok(parse(a)?..parse(b)?)
}

// ---------------------------------------------------------------------------
// Networks

/// A network with its weights, as the simulator and the code generator
/// take them.
struct Case {
    name: String,
    net: Network,
    weights: Vec<LayerWeights>,
    options: SimOptions,
}

/// `output_shift` that brings a dot product of `fan_in` products of
/// uniform int8 values to a standard deviation of about 50 after the
/// shift, so that outputs are spread rather than saturated.
fn shift_for(fan_in: usize) -> i32 {
    let spread = (fan_in.max(1) as f64).sqrt() * 110.0;
    (7 - spread.log2().round() as i32).clamp(-15, 15)
}

/// Seeded weights (full int8 range) and biases for every layer of `net`.
fn seeded_weights(net: &Network, rng: &mut ChaCha8Rng) -> Result<Vec<LayerWeights>, String> {
    let geometry = geometry(net)?;
    Ok(net
        .layers
        .iter()
        .zip(&geometry)
        .map(|(l, g)| {
            let len = match l.op {
                Op::None => 0,
                Op::Conv1d { kernel, .. } => l.out_channels * l.in_channels * kernel,
                Op::Conv2d {
                    kernel,
                    depthwise: true,
                    ..
                } => l.out_channels * kernel * kernel,
                Op::Conv2d { kernel, .. } => l.out_channels * l.in_channels * kernel * kernel,
                Op::ConvTranspose2d { .. } => l.in_channels * l.out_channels * 9,
                Op::Linear { .. } => l.out_channels * g.pooled.len(),
            };
            LayerWeights {
                weight: (0..len).map(|_| rng.random::<i8>()).collect(),
                bias: (l.op != Op::None).then(|| (0..l.out_channels).map(|_| rng.random::<i8>()).collect()),
            }
        })
        .collect())
}

/// A one-layer network of `op` with ReLU and an output shift for its fan-in.
fn one_layer(name: &str, input: Shape, op: Op, out_channels: usize, seed: u64) -> Result<Case, String> {
    let fan_in = match op {
        Op::Conv1d { kernel, .. } => input.channels * kernel,
        Op::Conv2d { kernel, .. } => input.channels * kernel * kernel,
        _ => input.len(),
    };
    let net = Network {
        device: Device::Max78002,
        input,
        layers: vec![Layer {
            activation: Activation::Relu,
            output_shift: shift_for(fan_in),
            ..Layer::new(op, input.channels, out_channels)
        }],
    };
    let weights = seeded_weights(&net, &mut ChaCha8Rng::seed_from_u64(seed))?;
    Ok(Case {
        name: name.to_owned(),
        net,
        weights,
        options: SimOptions::default(),
    })
}

/// The layers of the kernel comparison.
fn kernel_cases() -> Result<Vec<Case>, String> {
    let conv1d = |k, pad| Op::Conv1d { kernel: k, pad };
    let conv2d = Op::Conv2d {
        kernel: 3,
        pad: 1,
        depthwise: false,
    };
    let linear = Op::Linear { flatten: false };
    let mut cases = Vec::new();
    for (i, (c_in, c_out, len, k, pad)) in [(17, 32, 16, 3, 1), (32, 32, 64, 3, 1), (64, 64, 128, 5, 2)]
        .into_iter()
        .enumerate()
    {
        let name = format!("conv1d {c_in}→{c_out}, length {len}, k{k} pad {pad}");
        cases.push(one_layer(
            &name,
            Shape::one_d(c_in, len),
            conv1d(k, pad),
            c_out,
            100 + i as u64,
        )?);
    }
    for (i, (c_in, c_out, side)) in [(3, 16, 32), (16, 32, 16), (32, 64, 8), (64, 64, 16)]
        .into_iter()
        .enumerate()
    {
        let name = format!("conv2d 3×3 {c_in}→{c_out}, {side}×{side}, pad 1");
        cases.push(one_layer(
            &name,
            Shape::new(c_in, side, side),
            conv2d,
            c_out,
            200 + i as u64,
        )?);
    }
    for (i, (c_in, c_out)) in [(64, 10), (256, 64), (512, 128)].into_iter().enumerate() {
        let name = format!("linear {c_in}→{c_out}");
        cases.push(one_layer(&name, Shape::new(c_in, 1, 1), linear, c_out, 300 + i as u64)?);
    }
    Ok(cases)
}

/// A seeded chain of 1 to 4 layers, larger than the random ai8x networks,
/// so that the fit sees the MAC-dominated sizes a real model has: conv1d
/// stacks, or 2-D stacks of conv2d (3×3 or 1×1), depthwise conv2d,
/// convtranspose2d and pooling-only layers, with fused pooling, and now and
/// then a flattening linear layer at the end. `None` when the simulator
/// refuses the drawn network.
fn scaled_case(seed: u64) -> Option<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ca1_ed00);
    let one_d = rng.random_bool(0.4);
    let input = if one_d {
        Shape::one_d(rng.random_range(1..=64), rng.random_range(8..=128))
    } else {
        let side = rng.random_range(4..=32);
        Shape::new(
            rng.random_range(1..=32),
            side,
            rng.random_range((side / 2).max(2)..=side),
        )
    };
    let depth = rng.random_range(1..=4);
    let mut layers = Vec::new();
    let mut shape = input;
    for i in 0..depth {
        let pool = (rng.random_bool(0.3) && shape.height >= 4 && (one_d || shape.width >= 4)).then(|| Pool {
            kind: if rng.random_bool(0.5) {
                PoolKind::Max
            } else {
                PoolKind::Avg
            },
            size: if one_d { [2, 1] } else { [2, 2] },
            stride: 2,
        });
        let c = shape.channels;
        let out_c = rng.random_range(4..=64);
        let last = i + 1 == depth;
        let (op, out_c, fan_in) = if last && i > 0 && rng.random_bool(0.25) {
            (Op::Linear { flatten: true }, rng.random_range(2..=32), shape.len())
        } else if one_d {
            let k = rng.random_range(1..=9);
            let pad = rng.random_range(0..=(k - 1).min(2));
            (Op::Conv1d { kernel: k, pad }, out_c, c * k)
        } else {
            match rng.random_range(0..10) {
                0..=4 => (
                    Op::Conv2d {
                        kernel: 3,
                        pad: 1,
                        depthwise: false,
                    },
                    out_c,
                    c * 9,
                ),
                5 => (
                    Op::Conv2d {
                        kernel: 1,
                        pad: 0,
                        depthwise: false,
                    },
                    out_c,
                    c,
                ),
                6 | 7 => (
                    Op::Conv2d {
                        kernel: 3,
                        pad: 1,
                        depthwise: true,
                    },
                    c,
                    9,
                ),
                8 if shape.height <= 16 && shape.width <= 16 => (Op::ConvTranspose2d { pad: 1 }, out_c, c * 9 / 4),
                _ => (Op::None, c, 0),
            }
        };
        let pool = if op == Op::None {
            Some(pool.unwrap_or(Pool {
                kind: PoolKind::Max,
                size: [2, 2],
                stride: 2,
            }))
        } else {
            pool
        };
        let mut layer = Layer {
            pool,
            ..Layer::new(op, c, out_c)
        };
        if op != Op::None {
            layer.activation = if rng.random_bool(0.8) {
                Activation::Relu
            } else {
                Activation::None
            };
            layer.output_shift = shift_for(fan_in);
            if last && rng.random_bool(0.3) {
                layer.output_width = OutputWidth::ThirtyTwo;
            }
        }
        layers.push(layer);
        let net = Network {
            device: Device::Max78002,
            input,
            layers: layers.clone(),
        };
        shape = *kflow_ai8x_sim::output_shapes(&net).ok()?.last()?;
    }
    let net = Network {
        device: Device::Max78002,
        input,
        layers,
    };
    let weights = seeded_weights(&net, &mut rng).ok()?;
    Some(Case {
        name: format!("chain {seed}"),
        net,
        weights,
        options: SimOptions::default(),
    })
}

/// One layer's data flow, as kflow-cm-codegen lays it out.
struct Geometry {
    /// One operand (or the concatenation), after `in_dim`.
    operand: Shape,
    operands: usize,
    /// What the operator reads.
    pooled: Shape,
    output: Shape,
}

fn geometry(net: &Network) -> Result<Vec<Geometry>, String> {
    let outputs = kflow_ai8x_sim::output_shapes(net).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, (l, &output)) in net.layers.iter().zip(&outputs).enumerate() {
        let sources = if l.inputs.is_empty() {
            vec![if i == 0 { Source::Input } else { Source::Layer(i - 1) }]
        } else {
            l.inputs.clone()
        };
        let shape_of = |s: &Source| match *s {
            Source::Input => net.input,
            Source::Layer(j) => outputs[j],
        };
        let first = shape_of(&sources[0]);
        let (mut operand, operands) = match l.eltwise {
            Some(_) => (first, sources.len()),
            None => (
                Shape {
                    channels: sources.iter().map(|s| shape_of(s).channels).sum(),
                    ..first
                },
                1,
            ),
        };
        if let Some([rows, columns]) = l.in_dim {
            operand.height = rows;
            operand.width = columns;
        }
        let pooled = match &l.pool {
            Some(p) => Shape::new(
                operand.channels,
                (operand.height - p.size[0]) / p.stride + 1,
                (operand.width - p.size[1]) / p.stride + 1,
            ),
            None => operand,
        };
        out.push(Geometry {
            operand,
            operands,
            pooled,
            output,
        });
    }
    Ok(out)
}

/// The latency model's view of every layer, from the simulator's network
/// (the random ai8x networks check it against `SoftwareLayer::of`, which
/// kflow's software baseline uses), with the input elements of each layer
/// for the simpler model the issue proposed.
fn software_layers(net: &Network) -> Result<Vec<(SoftwareLayer, u64)>, String> {
    let layers: Vec<(SoftwareLayer, u64)> = net
        .layers
        .iter()
        .zip(geometry(net)?)
        .map(|(l, g)| {
            let sources = if l.inputs.is_empty() { 1 } else { l.inputs.len() };
            let inputs = (g.operand.len() * g.operands) as u64;
            let assembled = match l.pool {
                Some(p) => (g.pooled.len() * p.size[0] * p.size[1] * g.operands) as u64,
                None if l.eltwise.is_some() || sources > 1 || l.op == Op::None => inputs,
                None => 0,
            };
            let outputs = g.output.len() as u64;
            let pixels = g.output.pixels() as u64;
            let rows = l.out_channels as u64;
            let dot = |kind, pixels, n: usize, width: Option<usize>| {
                let width = width.map(|w| w as u64);
                SoftwareLayer::of_dot_products(kind, pixels, rows, n as u64, width, assembled, outputs)
            };
            let c = g.pooled.channels;
            let layer = match l.op {
                Op::None => SoftwareLayer::pool_only(assembled, outputs),
                Op::Conv1d { kernel, .. } => dot(SoftwareKind::Conv1d, pixels, c * kernel, Some(kernel)),
                Op::Conv2d {
                    kernel,
                    depthwise: true,
                    ..
                } => dot(SoftwareKind::Depthwise, pixels, kernel * kernel, Some(kernel)),
                Op::Conv2d { kernel, .. } => dot(SoftwareKind::Conv2d, pixels, c * kernel * kernel, Some(kernel)),
                Op::ConvTranspose2d { .. } => dot(SoftwareKind::ConvTranspose2d, pixels, c * 9, Some(3)),
                Op::Linear { .. } => dot(SoftwareKind::Linear, 1, g.pooled.len(), None),
            };
            (layer, inputs)
        })
        .collect();
    let total: u64 = layers.iter().map(|(l, _)| l.macs).sum();
    let simulator = kflow_ai8x_sim::macs(net).map_err(|e| e.to_string())?;
    if total != simulator {
        return Err(format!("{total} MACs counted, the simulator counts {simulator}"));
    }
    Ok(layers)
}

// ---------------------------------------------------------------------------
// Measuring on the board

fn expected(case: &Case, input: &[u8]) -> Result<Vec<u8>, String> {
    let tensor = Tensor::new(case.net.input, input.iter().map(|&b| b as i8).collect()).ok_or("input length")?;
    Ok(
        match kflow_ai8x_sim::simulate(&case.net, &case.weights, &tensor, case.options).map_err(|e| e.to_string())? {
            Output::Int8(t) => t.data.iter().map(|&v| v as u8).collect(),
            Output::Int32(t) => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
    )
}

/// Builds the firmware around `model_c`, boots it in QEMU through kflow's
/// transport, flashes `model_bin`, runs `inputs` and returns the
/// instruction count of each, after checking every output against the
/// simulator's.
fn measure(
    case: &Case,
    model_c: &str,
    model_h: &str,
    model_bin: &[u8],
    inputs: &[Vec<u8>],
) -> Result<Vec<u64>, String> {
    let firmware = kflow_cm_firmware::build(kflow_cm_firmware::Target::Mps2An386, model_c, model_h)
        .map_err(|e| format!("{}: {e}", case.name))?;
    if !firmware.warnings.is_empty() {
        return Err(format!("{}: the compiler warned:\n{}", case.name, firmware.warnings));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let elf = dir.path().join("firmware.elf");
    std::fs::write(&elf, &firmware.elf).map_err(|e| e.to_string())?;
    let url: DeviceUrl = format!("qemu://mps2-an386?firmware={}", elf.display())
        .parse()
        .map_err(|e| format!("{e}"))?;
    let transport = kflow_device::open(&url, LinkTimeouts::default()).map_err(|e| e.to_string())?;
    // The naive kernels of the largest layers run for seconds of QEMU time.
    let policy = RetryPolicy {
        response_timeout: Duration::from_secs(120),
        ..RetryPolicy::default()
    };
    let mut client = Client::new(transport, policy);
    client
        .flash(model_bin, |_| {})
        .map_err(|e| format!("{}: flash: {e}", case.name))?;
    let mut counts = Vec::new();
    for (k, input) in inputs.iter().enumerate() {
        let inference = client.infer(input).map_err(|e| format!("{}: infer: {e}", case.name))?;
        if inference.output != expected(case, input)? {
            return Err(format!(
                "{}: input {k}: the board's output differs from the simulator's",
                case.name
            ));
        }
        counts.push(
            inference
                .statistics
                .instructions
                .ok_or_else(|| format!("{}: the board counted no instructions", case.name))?,
        );
    }
    Ok(counts)
}

fn inputs(case: &Case, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..case.net.input.len()).map(|_| rng.random::<u8>()).collect())
        .collect()
}

/// Runs `job` on every index on `WORKERS` threads; results in index order.
fn parallel<T: Send>(n: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = job(i);
                    results.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });
    results.into_inner().unwrap().into_iter().flatten().collect()
}

// ---------------------------------------------------------------------------
// The naive peer

/// `model.c` for a one-layer conv1d, conv2d (not depthwise) or linear
/// network without pooling: plain nested loops over the weights of the
/// generated `model.bin`, int32 accumulation, then the accelerator's
/// rounding shift, clamp and activation, with the generated `model.h`'s
/// interface.
fn naive_model_c(case: &Case) -> Result<String, String> {
    let [l] = case.net.layers.as_slice() else {
        return Err("the naive peer takes one layer".into());
    };
    let g = geometry(&case.net)?.remove(0);
    if l.pool.is_some() || l.eltwise.is_some() || l.in_dim.is_some() {
        return Err("the naive peer pools nothing".into());
    }
    let w = &case.weights[0];
    // model.bin: a 32-byte header, the weights, the int32 biases (×128),
    // each table 4-byte aligned.
    let bias_offset = 32 + w.weight.len().next_multiple_of(4);
    let n = 7 - (l.output_shift + 8 - l.weight_bits.bits());
    let mut c = String::new();
    c.push_str("/* A naive reference: plain loops over the generated model.bin. */\n");
    c.push_str("#include <stddef.h>\n#include <stdint.h>\n\n#include \"model.h\"\n\n");
    let _ = writeln!(c, "#define IC {}", g.pooled.channels);
    let _ = writeln!(c, "#define IH {}", g.pooled.height);
    let _ = writeln!(c, "#define IW {}", g.pooled.width);
    let _ = writeln!(c, "#define OC {}", g.output.channels);
    let _ = writeln!(c, "#define OH {}", g.output.height);
    let _ = writeln!(c, "#define OW {}", g.output.width);
    let _ = writeln!(c, "#define W_AT 32\n#define B_AT {bias_offset}");
    let _ = writeln!(c, "#define HAS_BIAS {}", u8::from(w.bias.is_some()));
    let _ = writeln!(c, "#define SHIFT {n}");
    let _ = writeln!(c, "#define RELU {}", u8::from(l.activation == Activation::Relu));
    let _ = writeln!(c, "#define ABS {}", u8::from(l.activation == Activation::Abs));
    let _ = writeln!(c, "#define WIDE {}", u8::from(l.output_width == OutputWidth::ThirtyTwo));
    c.push_str(kflow_cm_codegen::CHECK_WEIGHTS);
    c.push_str(NAIVE_COMMON);
    match l.op {
        Op::Conv1d { kernel, pad } => {
            let _ = writeln!(c, "#define K {kernel}\n#define PAD {pad}");
            c.push_str(NAIVE_CONV1D);
        }
        Op::Conv2d {
            kernel,
            pad,
            depthwise: false,
        } => {
            let _ = writeln!(c, "#define K {kernel}\n#define PAD {pad}");
            c.push_str(NAIVE_CONV2D);
        }
        Op::Linear { .. } => c.push_str(NAIVE_LINEAR),
        _ => return Err("the naive peer has no such layer".into()),
    }
    Ok(c)
}

const NAIVE_COMMON: &str = r#"
/* The accelerator's output step: a right shift rounding half up (the
 * arithmetic shift of gcc), or a saturating left shift; clamp; activation. */
static void store(void *out, int at, int32_t acc)
{
    int32_t v;
#if WIDE
    ((int32_t *)out)[at] = acc;
    return;
#endif
#if SHIFT > 0
    v = (acc + (1 << (SHIFT - 1))) >> SHIFT;
#else
    v = acc < -128 ? -128 : (acc > 127 ? 127 : acc);
    v *= 1 << -SHIFT;
#endif
    v = v < -128 ? -128 : (v > 127 ? 127 : v);
#if RELU
    v = v < 0 ? 0 : v;
#endif
#if ABS
    v = v < 0 ? -v : v;
    v = v > 127 ? 127 : v;
#endif
    ((int8_t *)out)[at] = (int8_t)v;
}
"#;

const NAIVE_CONV1D: &str = r#"
int kflow_infer(const void *weights, const int8_t *input, void *output)
{
    const int8_t *w = (const int8_t *)weights + W_AT;
    const int32_t *bias = (const int32_t *)(const void *)((const uint8_t *)weights + B_AT);
    int o, x, c, k;
    if (weights == NULL || input == NULL || output == NULL) {
        return -1;
    }
    (void)bias;
    for (o = 0; o < OC; o++) {
        for (x = 0; x < OH; x++) {
            int32_t acc = HAS_BIAS ? bias[o] : 0;
            for (c = 0; c < IC; c++) {
                for (k = 0; k < K; k++) {
                    const int ix = x + k - PAD;
                    if (ix >= 0 && ix < IH) {
                        acc += (int32_t)w[(o * IC + c) * K + k] * input[c * IH + ix];
                    }
                }
            }
            store(output, o * OH + x, acc);
        }
    }
    return 0;
}
"#;

const NAIVE_CONV2D: &str = r#"
int kflow_infer(const void *weights, const int8_t *input, void *output)
{
    const int8_t *w = (const int8_t *)weights + W_AT;
    const int32_t *bias = (const int32_t *)(const void *)((const uint8_t *)weights + B_AT);
    int o, y, x, c, ky, kx;
    if (weights == NULL || input == NULL || output == NULL) {
        return -1;
    }
    (void)bias;
    for (o = 0; o < OC; o++) {
        for (y = 0; y < OH; y++) {
            for (x = 0; x < OW; x++) {
                int32_t acc = HAS_BIAS ? bias[o] : 0;
                for (c = 0; c < IC; c++) {
                    for (ky = 0; ky < K; ky++) {
                        const int iy = y + ky - PAD;
                        if (iy < 0 || iy >= IH) {
                            continue;
                        }
                        for (kx = 0; kx < K; kx++) {
                            const int ix = x + kx - PAD;
                            if (ix >= 0 && ix < IW) {
                                acc += (int32_t)w[((o * IC + c) * K + ky) * K + kx] * input[(c * IH + iy) * IW + ix];
                            }
                        }
                    }
                }
                store(output, (o * OH + y) * OW + x, acc);
            }
        }
    }
    return 0;
}
"#;

const NAIVE_LINEAR: &str = r#"
int kflow_infer(const void *weights, const int8_t *input, void *output)
{
    const int8_t *w = (const int8_t *)weights + W_AT;
    const int32_t *bias = (const int32_t *)(const void *)((const uint8_t *)weights + B_AT);
    const int n = IC * IH * IW;
    int o, i;
    if (weights == NULL || input == NULL || output == NULL) {
        return -1;
    }
    (void)bias;
    for (o = 0; o < OC; o++) {
        int32_t acc = HAS_BIAS ? bias[o] : 0;
        for (i = 0; i < n; i++) {
            acc += (int32_t)w[o * n + i] * input[i];
        }
        store(output, o, acc);
    }
    return 0;
}
"#;

// ---------------------------------------------------------------------------
// Default mode: generated against naive

fn kernels() -> Result<(), String> {
    let cases = kernel_cases()?;
    let started = Instant::now();
    let rows = parallel(cases.len(), |i| -> Result<(u64, f64, f64), String> {
        let case = &cases[i];
        let generated =
            kflow_cm_codegen::generate(&case.net, &case.weights, case.options).map_err(|e| e.to_string())?;
        let inputs = inputs(case, KERNEL_INPUTS, 1000 + i as u64);
        let ours = measure(
            case,
            &generated.model_c,
            &generated.model_h,
            &generated.model_bin,
            &inputs,
        )?;
        let naive = measure(
            case,
            &naive_model_c(case)?,
            &generated.model_h,
            &generated.model_bin,
            &inputs,
        )?;
        let macs = kflow_ai8x_sim::macs(&case.net).map_err(|e| e.to_string())?;
        let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64;
        Ok((macs, mean(&ours), mean(&naive)))
    });
    println!(
        "kflow's generated C against a naive C loop, one layer each, arm-none-eabi-gcc -O2 -mcpu=cortex-m4, \
         QEMU mps2-an386 (instructions, exact; mean of {KERNEL_INPUTS} inputs, every output equal to the simulator's)\n"
    );
    println!(
        "| layer | MACs | instructions, generated | instructions, naive | instr/MAC generated | instr/MAC naive | naive / generated |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (case, row) in cases.iter().zip(rows) {
        let (macs, ours, naive) = row?;
        println!(
            "| {} | {macs} | {ours:.0} | {naive:.0} | {:.2} | {:.2} | {:.2} |",
            case.name,
            ours / macs as f64,
            naive / macs as f64,
            naive / ours
        );
    }
    println!("\n{} cases in {:.0?}", cases.len(), started.elapsed());
    Ok(())
}

// ---------------------------------------------------------------------------
// --fit: the software latency model

struct Sample {
    name: String,
    layers: Vec<SoftwareLayer>,
    /// Each layer's input elements (one operand times the operands).
    inputs: Vec<u64>,
    instructions: f64,
}

const COLUMNS: [&str; 13] = [
    "conv1d_per_simd_mac",
    "conv2d_per_simd_mac",
    "depthwise_per_simd_mac",
    "conv_transpose2d_per_simd_mac",
    "linear_per_simd_mac",
    "per_tail_mac",
    "per_call",
    "per_gathered",
    "per_field_row",
    "per_assembled",
    "per_output",
    "per_layer",
    "per_inference",
];

fn kind_column(kind: SoftwareKind) -> Option<usize> {
    match kind {
        SoftwareKind::Conv1d => Some(0),
        SoftwareKind::Conv2d => Some(1),
        SoftwareKind::Depthwise => Some(2),
        SoftwareKind::ConvTranspose2d => Some(3),
        SoftwareKind::Linear => Some(4),
        SoftwareKind::PoolOnly => None,
    }
}

/// The features of `SoftwareModel`, summed over a network's layers.
fn row(s: &Sample) -> [f64; 13] {
    let mut r = [0.0; 13];
    for l in &s.layers {
        if let Some(at) = kind_column(l.kind) {
            r[at] += l.simd_macs as f64;
        }
        r[5] += l.tail_macs as f64;
        r[6] += l.calls as f64;
        r[7] += l.gathered as f64;
        r[8] += l.field_rows as f64;
        r[9] += l.assembled as f64;
        r[10] += l.outputs as f64;
        r[11] += 1.0;
    }
    r[12] = 1.0;
    r
}

/// The issue's first proposal, for comparison: per layer
/// `a_kind·MACs + b·outputs + c·inputs + d`, plus `e`.
fn basic_row(s: &Sample) -> [f64; 9] {
    let mut r = [0.0; 9];
    for (l, &inputs) in s.layers.iter().zip(&s.inputs) {
        if let Some(at) = kind_column(l.kind) {
            r[at] += l.macs as f64;
        }
        r[5] += l.outputs as f64;
        r[6] += inputs as f64;
        r[7] += 1.0;
    }
    r[8] = 1.0;
    r
}

fn model_of(c: &[f64; 13]) -> SoftwareModel {
    SoftwareModel {
        conv1d_per_simd_mac: c[0],
        conv2d_per_simd_mac: c[1],
        depthwise_per_simd_mac: c[2],
        conv_transpose2d_per_simd_mac: c[3],
        linear_per_simd_mac: c[4],
        per_tail_mac: c[5],
        per_call: c[6],
        per_gathered: c[7],
        per_field_row: c[8],
        per_assembled: c[9],
        per_output: c[10],
        per_layer: c[11],
        per_inference: c[12],
    }
}

/// Least squares `min Σ ((a_i·x − y_i) / y_i)²`: relative residuals, so
/// that a network of a few hundred instructions counts as much as one of
/// millions, solved by nalgebra's SVD on columns scaled to unit norm; a
/// column with no data (a kind no network has) or `excluded` gets 0.
fn least_squares<const N: usize>(rows: &[([f64; N], f64)], excluded: &[bool; N]) -> Result<[f64; N], String> {
    let m = rows.len();
    let norm = |j: usize| rows.iter().map(|(r, y)| (r[j] / y).powi(2)).sum::<f64>().sqrt();
    let used: Vec<(usize, f64)> = (0..N)
        .filter(|&j| !excluded[j])
        .map(|j| (j, norm(j)))
        .filter(|&(_, n)| n > 0.0)
        .collect();
    if m < used.len() {
        return Err(format!("{m} networks for {} coefficients", used.len()));
    }
    let a = nalgebra::DMatrix::from_fn(m, used.len(), |i, k| {
        let (j, n) = used[k];
        rows[i].0[j] / rows[i].1 / n
    });
    let b = nalgebra::DVector::from_element(m, 1.0);
    let svd = a.svd(true, true);
    if svd.rank(1e-10) < used.len() {
        return Err("the features are linearly dependent".to_owned());
    }
    let solution = svd.solve(&b, 1e-12)?;
    let mut x = [0.0; N];
    for (k, &(j, n)) in used.iter().enumerate() {
        x[j] = solution[k] / n;
    }
    Ok(x)
}

struct Quality {
    r2: f64,
    max_relative: f64,
    worst: String,
    mean_relative: f64,
    /// Max relative error over networks of at least `LARGE` instructions.
    max_relative_large: f64,
}

/// Networks this large are what a latency objective compares.
const LARGE: f64 = 100_000.0;

fn quality(samples: &[&Sample], predict: impl Fn(&Sample) -> f64) -> Quality {
    let mean = samples.iter().map(|s| s.instructions).sum::<f64>() / samples.len() as f64;
    let (mut ss_res, mut ss_tot, mut max_relative, mut sum_relative) = (0.0, 0.0, 0.0, 0.0);
    let mut max_relative_large: f64 = 0.0;
    let mut worst = String::new();
    for s in samples {
        let predicted = predict(s);
        ss_res += (predicted - s.instructions).powi(2);
        ss_tot += (s.instructions - mean).powi(2);
        let relative = (predicted - s.instructions).abs() / s.instructions;
        sum_relative += relative;
        if s.instructions >= LARGE {
            max_relative_large = max_relative_large.max(relative);
        }
        if relative > max_relative {
            max_relative = relative;
            worst = format!("{}: {:.0} measured, {predicted:.0} predicted", s.name, s.instructions);
        }
    }
    Quality {
        r2: 1.0 - ss_res / ss_tot,
        max_relative,
        worst,
        mean_relative: sum_relative / samples.len() as f64,
        max_relative_large,
    }
}

fn print_quality(name: &str, q: &Quality) {
    println!(
        "  {name}: R² {:.4}, mean relative error {:.1} %, max {:.1} % ({}); max on networks of ≥ {LARGE:.0} instructions {:.1} %",
        q.r2,
        100.0 * q.mean_relative,
        100.0 * q.max_relative,
        q.worst,
        100.0 * q.max_relative_large
    );
}

enum Job {
    Random(u64),
    Scaled(u64),
    Kernel(usize),
}

/// The case of a random ai8x network, and the software layers of its
/// allocation, or `None` when the checker or the code generator refuses it.
fn random_case(seed: u64) -> Result<Option<(Case, Vec<SoftwareLayer>)>, String> {
    let Some(case) = random_network::case(seed) else {
        return Ok(None);
    };
    let report = kflow_ai8x::check(case.device, &case.network, &case.weights, case.input);
    let Some(allocation) = report.allocation.filter(|_| report.passed) else {
        return Ok(None);
    };
    let hw: Vec<kflow_ai8x::HwLayer> = allocation.layers.iter().map(|a| a.layer.clone()).collect();
    let (net, weights) = kflow_ai8x::sim::to_sim(case.device, &hw, case.input, &case.values);
    let layers: Vec<SoftwareLayer> = hw.iter().map(SoftwareLayer::of).collect();
    Ok(Some((
        Case {
            name: format!("random {seed}"),
            net,
            weights,
            options: SimOptions::default(),
        },
        layers,
    )))
}

fn fit(seeds: Range<u64>) -> Result<(), String> {
    let started = Instant::now();
    let kernel_cases = kernel_cases()?;
    let mut jobs: Vec<Job> = seeds.clone().map(Job::Random).collect();
    jobs.extend((0..SCALED_NETWORKS).map(Job::Scaled));
    jobs.extend((0..kernel_cases.len()).map(Job::Kernel));
    // The features kflow's baseline computes from an allocation must be
    // the ones measured here from the simulator's network; checked before
    // the slow part.
    for seed in seeds.clone() {
        if let Some((case, from_allocation)) = random_case(seed)? {
            let from_sim: Vec<SoftwareLayer> = software_layers(&case.net)?.into_iter().map(|(l, _)| l).collect();
            if from_sim != from_allocation {
                return Err(format!(
                    "{}: the allocation's layers {from_allocation:?} differ from the simulator's {from_sim:?}",
                    case.name
                ));
            }
        }
    }
    let refused = AtomicUsize::new(0);
    let results = parallel(jobs.len(), |i| -> Result<Option<Sample>, String> {
        let case = match &jobs[i] {
            Job::Random(seed) => match random_case(*seed)? {
                Some((case, _)) => case,
                None => return Ok(None),
            },
            Job::Scaled(seed) => match scaled_case(*seed) {
                Some(case) => case,
                None => return Ok(None),
            },
            Job::Kernel(k) => {
                let c = &kernel_cases[*k];
                Case {
                    name: c.name.clone(),
                    net: c.net.clone(),
                    weights: c.weights.clone(),
                    options: c.options,
                }
            }
        };
        let generated = match kflow_cm_codegen::generate(&case.net, &case.weights, case.options) {
            Ok(g) => g,
            Err(kflow_cm_codegen::CodegenError::Unsupported { .. }) => {
                refused.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => return Err(format!("{}: {e}", case.name)),
        };
        let counts = measure(
            &case,
            &generated.model_c,
            &generated.model_h,
            &generated.model_bin,
            &inputs(&case, 1, 2000 + i as u64),
        )?;
        let (layers, inputs) = software_layers(&case.net)?.into_iter().unzip();
        Ok(Some(Sample {
            name: case.name.clone(),
            layers,
            inputs,
            instructions: counts[0] as f64,
        }))
    });
    let mut samples = Vec::new();
    for r in results {
        if let Some(s) = r? {
            samples.push(s);
        }
    }
    // Every HOLD_OUT-th network is held out.
    let split = |held: bool| -> Vec<&Sample> {
        samples
            .iter()
            .enumerate()
            .filter(|(i, _)| (i % HOLD_OUT == HOLD_OUT - 1) == held)
            .map(|(_, s)| s)
            .collect()
    };
    let (train, held) = (split(false), split(true));
    let rows: Vec<([f64; 13], f64)> = train.iter().map(|s| (row(s), s.instructions)).collect();
    // No cost is negative: a column whose coefficient comes out below 0
    // (the few depthwise layers, whose per-MAC cost the per-call cost
    // already carries) is dropped and the rest fitted again.
    let mut excluded = [false; 13];
    let coefficients = loop {
        let c = least_squares(&rows, &excluded)?;
        match (0..13).filter(|&j| c[j] < 0.0).min_by(|&a, &b| c[a].total_cmp(&c[b])) {
            Some(j) => {
                println!(
                    "{} came out {}: fitted again without it",
                    COLUMNS[j],
                    format_coefficient(c[j])
                );
                excluded[j] = true;
            }
            None => break c,
        }
    };
    let model = model_of(&coefficients);
    let basic_rows: Vec<([f64; 9], f64)> = train.iter().map(|s| (basic_row(s), s.instructions)).collect();
    let basic = least_squares(&basic_rows, &[false; 9])?;
    let basic_predict = |s: &Sample| basic_row(s).iter().zip(&basic).map(|(x, c)| x * c).sum::<f64>();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for s in &samples {
        for l in &s.layers {
            *kinds.entry(format!("{:?}", l.kind)).or_default() += 1;
        }
    }
    let largest = samples.iter().map(|s| s.instructions).fold(0.0, f64::max);
    let smallest = samples.iter().map(|s| s.instructions).fold(f64::INFINITY, f64::min);
    let large = samples.iter().filter(|s| s.instructions >= LARGE).count();
    println!(
        "measured {} networks in {:.0?} (random ai8x seeds {seeds:?}, {SCALED_NETWORKS} seeded chains, {} kernel layers; \
         {} refused by the code generator), {smallest:.0} to {largest:.0} instructions, {large} of them ≥ {LARGE:.0}",
        samples.len(),
        started.elapsed(),
        kernel_cases.len(),
        refused.into_inner()
    );
    println!("layers by kind: {kinds:?}");
    println!(
        "fitted on {} networks, held out {} (every {HOLD_OUT}th)\n",
        train.len(),
        held.len()
    );
    println!(
        "kflow_ai8x::timing::SoftwareModel (SIMD and tail MACs, kernel calls, gathered elements and rows, assembled inputs, outputs, layers):"
    );
    print_quality("fit", &quality(&train, |s| model.instructions(&s.layers)));
    print_quality("held out", &quality(&held, |s| model.instructions(&s.layers)));
    let mut worst: Vec<(f64, &Sample)> = held
        .iter()
        .map(|s| ((model.instructions(&s.layers) - s.instructions) / s.instructions, *s))
        .collect();
    worst.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()));
    for (error, s) in worst.iter().take(5) {
        let kinds: Vec<String> = s.layers.iter().map(|l| format!("{:?} {}", l.kind, l.macs)).collect();
        println!(
            "    {:+.1} % {}: {:.0} instructions; layers (kind, MACs): {}",
            100.0 * error,
            s.name,
            s.instructions,
            kinds.join(", ")
        );
    }
    println!("the issue's first form (MACs by kind, outputs, inputs, layers):");
    print_quality("fit", &quality(&train, basic_predict));
    print_quality("held out", &quality(&held, basic_predict));
    println!(
        "  coefficients: {}",
        basic
            .iter()
            .map(|&c| format_coefficient(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("the constants now in kflow_ai8x::timing:");
    print_quality("held out", &quality(&held, |s| M4_SOFTWARE.instructions(&s.layers)));
    println!("\npub const M4_SOFTWARE: SoftwareModel = SoftwareModel {{");
    for (name, value) in COLUMNS.iter().zip(coefficients) {
        println!("    {name}: {},", format_coefficient(value));
    }
    println!("}};");
    Ok(())
}

/// Four significant digits: the fit is no better.
fn format_coefficient(v: f64) -> String {
    if v == 0.0 {
        return "0.0".into();
    }
    let digits = (3 - v.abs().log10().floor() as i32).max(1) as usize;
    let text = format!("{v:.digits$}");
    if text.contains('.') { text } else { format!("{text}.0") }
}
