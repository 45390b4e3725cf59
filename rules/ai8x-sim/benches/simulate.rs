//! Throughput and per-layer overhead of the simulator, against numpy.
//!
//! - G MAC/s of a conv2d 3×3, 64→64 channels, 64×64 pixels, pad 1, 8-bit
//!   output, with rayon's default pool (every core) and with one thread;
//! - overhead per layer: a 100-layer chain of tiny conv2d layers
//!   (4→4 channels, 4×4 pixels), wall time per layer;
//! - numpy peer: `benches/numpy_conv.py` computes the same layer as one
//!   float32 GEMM through numpy's BLAS (im2col by stride tricks; exact, as
//!   every sum stays below 2^24), on the same data, with BLAS on one thread
//!   and on as many as rayon uses; its output is checked byte-identical and
//!   its speed reported as a ratio at each thread count. Skipped with a
//!   message when python3 or numpy is missing.
//!
//! Run with `cargo bench -p kflow-ai8x-sim --bench simulate`.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use kflow_ai8x_sim::{Activation, Device, Layer, LayerWeights, Network, Op, Shape, SimOptions, Tensor, macs, simulate};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/numpy_conv.py");
const SHIFT: i32 = -3;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (net, weights, input) = big_layer(&mut rng);
    let work = macs(&net).map_err(|e| e.to_string())? as f64;
    let threads = rayon::current_num_threads();
    let many = best_of(30, || {
        simulate(&net, &weights, &input, SimOptions::default()).map(|_| ())
    })?;
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| e.to_string())?;
    let one = single.install(|| {
        best_of(15, || {
            simulate(&net, &weights, &input, SimOptions::default()).map(|_| ())
        })
    })?;
    println!("conv2d 3x3 64->64 at 64x64 ({:.0} M MAC), best of runs:", work / 1e6);
    println!(
        "  {threads} threads: {:8.2} ms  {:6.2} G MAC/s",
        ms(many),
        work / many.as_secs_f64() / 1e9
    );
    println!(
        "  1 thread : {:8.2} ms  {:6.2} G MAC/s",
        ms(one),
        work / one.as_secs_f64() / 1e9
    );

    let (chain, chain_weights, chain_input) = tiny_chain(&mut rng, 100);
    let t = best_of(200, || {
        simulate(&chain, &chain_weights, &chain_input, SimOptions::default()).map(|_| ())
    })?;
    println!(
        "100-layer chain of 4->4 3x3 conv2d at 4x4: {:.2} us per layer",
        t.as_secs_f64() * 1e6 / 100.0
    );

    numpy_peer(&net, &weights, &input, &[(1, one), (threads, many)], work)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn best_of<E: ToString>(runs: usize, mut f: impl FnMut() -> Result<(), E>) -> Result<Duration, String> {
    f().map_err(|e| e.to_string())?;
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let start = Instant::now();
        f().map_err(|e| e.to_string())?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

fn random_i8(rng: &mut ChaCha8Rng, n: usize) -> Vec<i8> {
    (0..n).map(|_| rng.random::<i8>()).collect()
}

fn big_layer(rng: &mut ChaCha8Rng) -> (Network, Vec<LayerWeights>, Tensor<i8>) {
    let shape = Shape::new(64, 64, 64);
    let mut layer = Layer::new(
        Op::Conv2d {
            kernel: 3,
            pad: 1,
            depthwise: false,
        },
        64,
        64,
    );
    layer.output_shift = SHIFT;
    let net = Network {
        device: Device::Max78002,
        input: shape,
        layers: vec![layer],
    };
    let weights = vec![LayerWeights {
        weight: random_i8(rng, 64 * 64 * 9),
        bias: None,
    }];
    let input = Tensor {
        shape,
        data: random_i8(rng, shape.len()),
    };
    (net, weights, input)
}

fn tiny_chain(rng: &mut ChaCha8Rng, layers: usize) -> (Network, Vec<LayerWeights>, Tensor<i8>) {
    let shape = Shape::new(4, 4, 4);
    let layer = Layer {
        activation: Activation::Relu,
        output_shift: -2,
        ..Layer::new(
            Op::Conv2d {
                kernel: 3,
                pad: 1,
                depthwise: false,
            },
            4,
            4,
        )
    };
    let net = Network {
        device: Device::Max78002,
        input: shape,
        layers: vec![layer; layers],
    };
    let weights = (0..layers)
        .map(|_| LayerWeights {
            weight: random_i8(rng, 4 * 4 * 9),
            bias: Some(random_i8(rng, 4)),
        })
        .collect();
    let input = Tensor {
        shape,
        data: random_i8(rng, shape.len()),
    };
    (net, weights, input)
}

fn numpy_peer(
    net: &Network,
    weights: &[LayerWeights],
    input: &Tensor<i8>,
    ours: &[(usize, Duration)],
    work: f64,
) -> Result<(), String> {
    let folder = std::env::temp_dir().join(format!("kflow-ai8x-sim-bench-{}", std::process::id()));
    std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
    let result = compare_with_numpy(&folder, net, weights, input, ours, work);
    let _ = std::fs::remove_dir_all(&folder);
    result
}

fn compare_with_numpy(
    folder: &Path,
    net: &Network,
    weights: &[LayerWeights],
    input: &Tensor<i8>,
    ours: &[(usize, Duration)],
    work: f64,
) -> Result<(), String> {
    let bytes = |v: &[i8]| v.iter().map(|&b| b as u8).collect::<Vec<u8>>();
    std::fs::write(folder.join("input.bin"), bytes(&input.data)).map_err(|e| e.to_string())?;
    std::fs::write(folder.join("weight.bin"), bytes(&weights[0].weight)).map_err(|e| e.to_string())?;
    let expected = simulate(net, weights, input, SimOptions::default()).map_err(|e| e.to_string())?;
    let expected = expected.as_int8().map(|t| bytes(&t.data)).unwrap_or_default();
    println!("numpy peer (im2col + one float32 GEMM through BLAS):");
    for &(threads, mine) in ours {
        let Some(seconds) = run_numpy(folder, input.shape, threads)? else {
            return Ok(());
        };
        let theirs = std::fs::read(folder.join("numpy_out.bin")).map_err(|e| e.to_string())?;
        if theirs != expected {
            return Err("numpy's output differs from the simulator's".into());
        }
        println!(
            "  {threads} thread{}: {:8.2} ms  {:6.2} G MAC/s; outputs identical; kflow/numpy {:.2}x",
            if threads == 1 { " " } else { "s" },
            seconds * 1e3,
            work / seconds / 1e9,
            seconds / mine.as_secs_f64()
        );
    }
    Ok(())
}

/// Seconds of numpy's best run with BLAS on `threads` threads, or `None`
/// (after saying why) when python3 or numpy is missing.
fn run_numpy(folder: &Path, s: Shape, threads: usize) -> Result<Option<f64>, String> {
    let threads = threads.to_string();
    let spawned = Command::new("python3")
        .arg(SCRIPT)
        .arg(folder)
        .args([64, s.channels, s.height, s.width].map(|n| n.to_string()))
        .arg(SHIFT.to_string())
        .arg("30")
        .env("OMP_NUM_THREADS", &threads)
        .env("OPENBLAS_NUM_THREADS", &threads)
        .env("MKL_NUM_THREADS", &threads)
        .output();
    let out = match spawned {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            println!(
                "numpy peer skipped: python3 numpy_conv.py failed (is numpy installed? pip install numpy): {}",
                err.trim()
            );
            return Ok(None);
        }
        Err(e) => {
            println!("numpy peer skipped: cannot run python3: {e}");
            return Ok(None);
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("seconds ")?.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| format!("numpy peer printed no time: {stdout}"))
}
