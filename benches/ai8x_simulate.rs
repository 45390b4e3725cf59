//! Inferences per second of the baseline CNN on the bit-exact simulator:
//! the model of `graphs/host/BUILD.toml` fused, quantized for the MAX78002
//! (calibrated on seeded inputs) and run one window at a time, as
//! `evaluate` runs the test split; on one thread and on all cores (windows
//! in parallel, as independent inferences).

#[path = "common/baseline.rs"]
mod baseline;

use std::time::Instant;

use kflow_ai8x_sim::{SimOptions, Tensor};
use rayon::prelude::*;

const WINDOWS: usize = 4000;

fn main() -> Result<(), String> {
    let (model, seed) = baseline::baseline_model()?;
    let weights = kflow_model::Weights::init(&model, seed).map_err(|e| e.to_string())?;
    let fused = kflow_quant::fuse(&model, &weights).map_err(|e| e.to_string())?;
    let per: usize = model.input.iter().product();
    // A fixed pseudo-random stream in [-1, 1).
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let x: Vec<f32> = (0..WINDOWS * per)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let q = kflow_quant::quantize(&fused, &x[..256 * per], 256, &kflow_quant::QuantOptions::default())
        .map_err(|e| e.to_string())?;
    let (net, sim_weights) = kflow_quant::to_sim(&q, kflow_ai8x::Device::Max78002);
    let inputs: Vec<Tensor<i8>> = x
        .chunks_exact(per)
        .map(|w| Tensor::new(net.input, w.iter().map(|&v| kflow_quant::quantize_input(v)).collect()))
        .collect::<Option<_>>()
        .ok_or("input shape")?;
    let macs = kflow_ai8x_sim::macs(&net).map_err(|e| e.to_string())?;
    let run = |t: &Tensor<i8>| kflow_ai8x_sim::simulate(&net, &sim_weights, t, SimOptions::default());
    // Warm up caches and the thread pool.
    for t in &inputs[..100] {
        run(t).map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    for t in &inputs {
        run(t).map_err(|e| e.to_string())?;
    }
    let one = start.elapsed().as_secs_f64();
    let pool = rayon::ThreadPoolBuilder::new().build().map_err(|e| e.to_string())?;
    let threads = pool.current_num_threads();
    let start = Instant::now();
    pool.install(|| inputs.par_iter().try_for_each(|t| run(t).map(drop)))
        .map_err(|e| e.to_string())?;
    let all = start.elapsed().as_secs_f64();
    println!(
        "baseline CNN on the simulated MAX78002: {} layers, {macs} MACs per inference, {WINDOWS} windows",
        net.layers.len()
    );
    println!(
        "  1 thread:   {:>9.0} inferences/s ({:.1} µs each, {:.2} G MAC/s)",
        WINDOWS as f64 / one,
        one * 1e6 / WINDOWS as f64,
        macs as f64 * WINDOWS as f64 / one / 1e9
    );
    println!(
        "  {threads} threads:  {:>9.0} inferences/s ({:.2} G MAC/s)",
        WINDOWS as f64 / all,
        macs as f64 * WINDOWS as f64 / all / 1e9
    );
    Ok(())
}
