//! Random networks of every layer kind the ai8x toolchain accepts (the
//! seeded generator of rules/ai8x/tests): whatever the checker passes, the
//! generated C writes the simulator's output byte for byte, and compiles
//! for the Cortex-M4. A run covers seeds 0..200; another range runs with
//!
//! ```text
//! CM_SEEDS=1000..3000 cargo test -p kflow-cm-codegen --test random_networks -- --nocapture
//! ```

mod common;
#[allow(dead_code)] // The generator's YAML text is for other tests.
#[path = "../../ai8x/tests/random_network/mod.rs"]
mod random_network;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Kernels, Noise, Program, arm_compile, expected, have_arm_gcc};
use kflow_ai8x_sim::SimOptions;
use kflow_cm_codegen::{CodegenError, generate};

enum Outcome {
    /// The seed draws no network the checker passes.
    Skipped,
    Identical,
    Refused(String),
}

fn compare(seed: u64, arm: bool) -> Result<Outcome, String> {
    let Some(case) = random_network::case(seed) else {
        return Ok(Outcome::Skipped);
    };
    let report = kflow_ai8x::check(case.device, &case.network, &case.weights, case.input);
    let Some(allocation) = report.allocation.filter(|_| report.passed) else {
        return Ok(Outcome::Skipped);
    };
    let layers: Vec<kflow_ai8x::HwLayer> = allocation.layers.iter().map(|a| a.layer.clone()).collect();
    let (net, weights) = kflow_ai8x::sim::to_sim(case.device, &layers, case.input, &case.values);
    // Both pooling conventions, on alternate seeds.
    let options = SimOptions {
        avg_pool_rounding: seed % 2 == 1,
    };
    let generated = match generate(&net, &weights, options) {
        Ok(g) => g,
        Err(CodegenError::Unsupported { what, missing, .. }) => {
            return Ok(Outcome::Refused(format!("{what}: {missing}")));
        }
        Err(e) => return Err(format!("generate: {e}")),
    };
    // The portable kernels and the M4's (emulated), on alternate pairs of seeds.
    let kernels = if (seed / 2).is_multiple_of(2) {
        Kernels::Portable
    } else {
        Kernels::EmulatedDsp
    };
    let program = Program::build(&generated, kernels)?;
    let mut noise = Noise::new(seed);
    for k in 0..2 {
        let input = noise.int8s(net.input.len());
        let got = program.run(&input)?;
        if got != expected(&net, &weights, &input, options) {
            return Err(format!("input {k}: the C output differs from the simulator's"));
        }
    }
    if arm {
        arm_compile(&generated)?;
    }
    Ok(Outcome::Identical)
}

#[test]
fn generated_c_equals_the_simulator_on_random_networks() {
    let seeds = random_network::seeds("CM_SEEDS", 0..200);
    let arm = have_arm_gcc();
    if !arm {
        println!("arm-none-eabi-gcc is not installed: skipped the Cortex-M4 builds");
    }
    let next = AtomicU64::new(seeds.start);
    let (skipped, identical) = (AtomicU64::new(0), AtomicU64::new(0));
    let refused: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let failed = Mutex::new(Vec::new());
    // Two workers: every network runs gcc twice.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    match compare(seed, arm) {
                        Ok(Outcome::Skipped) => {
                            skipped.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Outcome::Identical) => {
                            identical.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Outcome::Refused(why)) => *refused.lock().unwrap().entry(why).or_default() += 1,
                        Err(why) => failed.lock().unwrap().push((seed, why)),
                    }
                }
            });
        }
    });
    let refused = refused.into_inner().unwrap();
    let mut failed = failed.into_inner().unwrap();
    failed.sort();
    let refused_total: u64 = refused.values().sum();
    let identical = identical.into_inner();
    println!(
        "seeds {seeds:?}: {} without a network the checker passes; {} compared, {identical} identical, {refused_total} refused, {} failed",
        skipped.into_inner(),
        identical + failed.len() as u64,
        failed.len()
    );
    for (why, n) in &refused {
        println!("  refused {n}: {why}");
    }
    for (seed, why) in &failed {
        println!("  seed {seed}: {why}");
    }
    assert!(
        failed.is_empty(),
        "{} seeds failed, first: {:?}",
        failed.len(),
        failed.first()
    );
}
