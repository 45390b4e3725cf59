//! The simulated board configured from the generated code of a random
//! network computes what kflow's simulator computes on that network as
//! the checker resolved it, bit for bit, and reports the cycles
//! `kflow-ai8x`'s timing model gives the allocation. A network the board
//! refuses or disagrees on is a failure; when kflow's code generator packed
//! weights that its own placement does not read back, the failure says so
//! (no board could run them). A run covers seeds 0..300; another range
//! runs with
//!
//! ```text
//! BOARD_SEEDS=10000..12000 cargo test -p kflow-ai8x-board --test random_networks_on_board -- --nocapture
//! ```

#[path = "../../ai8x/tests/random_network/mod.rs"]
mod random_network;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kflow_ai8x::Allocation;
use kflow_ai8x_board::memory::Memories;
use kflow_ai8x_board::{ModelImage, SimBoard, output_bytes};
use kflow_ai8x_codegen::{InputLayout, Program};
use kflow_ai8x_sim::{SimOptions, Tensor};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How one seed went.
enum Outcome {
    /// The checker rejects the network, or there is none.
    NotAccepted,
    /// kflow's code generator does not take what the checker accepts
    /// (`check_codegen_agree` of `kflow-ai8x` owns that property).
    NotGenerated(String),
    Compared(BTreeSet<String>),
}

/// The layers whose weights `program`'s packing does not give back when
/// read by the same placement (`unpack_parameters`), by how many weights.
fn lost_weights(program: &Program) -> Result<Option<String>, String> {
    let blob = kflow_ai8x_codegen::model_blob(program).map_err(|e| format!("model blob: {e}"))?;
    let memories = Memories::load(program.device, &blob).map_err(|e| format!("memories: {e}"))?;
    let unpacked =
        kflow_ai8x_codegen::unpack_parameters(program, |p, c| memories.kernels.get(&(p, c)).copied(), &memories.bias)
            .map_err(|e| format!("unpack: {e}"))?;
    let lost: Vec<String> = program
        .layers
        .iter()
        .zip(&unpacked)
        .filter_map(|(l, (w, _))| {
            let n = l.weights.iter().zip(w).filter(|(a, b)| a != b).count();
            (n > 0).then(|| {
                format!(
                    "{} ({}-bit, {} → {} channels on {} processors): {n} of {} weights",
                    l.name,
                    l.weight_bits,
                    l.input.channels,
                    l.out_channels,
                    l.processors.count_ones(),
                    l.weights.len()
                )
            })
        })
        .collect();
    Ok((!lost.is_empty()).then(|| lost.join("; ")))
}

/// Runs the network of `seed` on the board and on kflow's simulator; `Err`
/// says how they disagree.
fn compare(seed: u64) -> Result<Outcome, String> {
    let Some(case) = random_network::case(seed) else {
        return Ok(Outcome::NotAccepted);
    };
    let report = kflow_ai8x::check(case.device, &case.network, &case.weights, case.input);
    let Some(allocation) = report.allocation.filter(|_| report.passed) else {
        return Ok(Outcome::NotAccepted);
    };
    let program = match kflow_ai8x::codegen::program(&allocation, &case.values) {
        Ok(program) => program,
        Err(e) => return Ok(Outcome::NotGenerated(format!("program: {}", e.why))),
    };
    let generated = match kflow_ai8x_codegen::generate(&program) {
        Ok(generated) => generated,
        Err(e) => return Ok(Outcome::NotGenerated(format!("generate: {e}"))),
    };
    match run_on_board(seed, &case, &allocation, &program, &generated) {
        Ok(()) => Ok(Outcome::Compared(random_network::features(&allocation))),
        Err(why) => Err(match lost_weights(&program)? {
            Some(lost) => format!("{why}; kflow-ai8x-codegen packed weights it does not read back: {lost}"),
            None => why,
        }),
    }
}

/// Configures the board from the generated files of `program` and runs a
/// random input of `seed` on it and on kflow's simulator; `Err` says how
/// they disagree.
fn run_on_board(
    seed: u64,
    case: &random_network::Case,
    allocation: &Allocation,
    program: &Program,
    generated: &kflow_ai8x_codegen::Generated,
) -> Result<(), String> {
    let image = ModelImage::new(
        program,
        generated.files["cnn_model.regs"].clone(),
        generated.files["cnn_model.bin"].clone(),
    )
    .map_err(|e| format!("model image: {e}"))?;
    let loaded = SimBoard::configure(program.device, &image.to_bytes().map_err(|e| e.to_string())?)
        .map_err(|refusal| format!("configure: {refusal}"))?;

    let layers: Vec<kflow_ai8x::HwLayer> = allocation.layers.iter().map(|a| a.layer.clone()).collect();
    let (network, weights) = kflow_ai8x::sim::to_sim(case.device, &layers, case.input, &case.values);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let input: Vec<i8> = (0..network.input.len())
        .map(|_| rng.random_range(-128..=127i32) as i8)
        .collect();
    let words: Vec<u8> = InputLayout::new(program)
        .pack(&input)
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let tensor = Tensor::new(network.input, input).ok_or("input tensor of the wrong size")?;
    // The board runs with the simulator's default options.
    let simulated = kflow_ai8x_sim::simulate(&network, &weights, &tensor, SimOptions::default())
        .map_err(|e| format!("kflow's simulator: {e}"))?;
    let expected = output_bytes(&simulated, program.layers.last().map(|l| l.output_width));
    let output = loaded.run(&words).map_err(|e| format!("run: {e}"))?;
    if output != expected {
        let first = output.iter().zip(&expected).position(|(a, b)| a != b);
        return Err(format!(
            "the board's output ({} bytes) differs from kflow's simulator ({} bytes){}",
            output.len(),
            expected.len(),
            first.map_or(String::new(), |i| format!(
                " first at byte {i}: {} on the board, {} simulated",
                output[i] as i8, expected[i] as i8
            ))
        ));
    }
    let cycles = kflow_ai8x::timing::accelerator(allocation).cycles;
    if loaded.cycles != cycles {
        return Err(format!(
            "{} cycles on the board, {cycles} from the allocation",
            loaded.cycles
        ));
    }
    Ok(())
}

#[test]
fn board_matches_kflow_simulator_and_timing_on_every_generated_random_network() {
    let seeds = random_network::seeds("BOARD_SEEDS", 0..300);
    let next = AtomicU64::new(seeds.start);
    let compared = AtomicU64::new(0);
    let covered: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let not_generated: Mutex<BTreeMap<String, Vec<u64>>> = Mutex::new(BTreeMap::new());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    match compare(seed) {
                        Ok(Outcome::NotAccepted) => {}
                        Ok(Outcome::NotGenerated(why)) => {
                            not_generated.lock().unwrap().entry(why).or_default().push(seed);
                        }
                        Ok(Outcome::Compared(features)) => {
                            compared.fetch_add(1, Ordering::Relaxed);
                            let mut covered = covered.lock().unwrap();
                            for f in features {
                                *covered.entry(f).or_default() += 1;
                            }
                        }
                        Err(why) => failures.lock().unwrap().push((seed, why)),
                    }
                }
            });
        }
    });
    let compared = compared.into_inner();
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    println!(
        "seeds {seeds:?}: {compared} networks compared on the board, {} failed",
        failures.len()
    );
    for (why, seeds) in not_generated.into_inner().unwrap() {
        println!(
            "accepted by the checker, not generated by kflow ({}): {why} (seeds {seeds:?})",
            seeds.len()
        );
    }
    println!("compared networks with:");
    for (feature, n) in covered.into_inner().unwrap() {
        println!("  {n:5}  {feature}");
    }
    for (seed, why) in &failures {
        println!("seed {seed}: {why}");
    }
    if let Some((seed, _)) = failures.first() {
        let case = random_network::case(*seed).unwrap();
        println!(
            "seed {seed} ({:?}, input {:?}):\n{}",
            case.device, case.input, case.yaml
        );
    }
    assert!(compared > 0, "no network reached the board");
    assert!(failures.is_empty(), "{} failures", failures.len());
}
