//! The simulated board configured from kflow's generated registers and
//! weight stream, flashed and run over the in-process transport,
//! reproduces kflow's simulator on the original network and ADI's
//! expected output, on every izer reference case kflow generates code for,
//! and reports the cycles `kflow-ai8x`'s timing model gives the allocation.

mod cases;

use kflow_ai8x_board::connect;
use kflow_device::{DeviceUrl, LinkTimeouts, RetryPolicy, SimBoard};

#[test]
fn every_generated_reference_case_runs_bit_exact_on_the_simulated_board() {
    let mut compared = 0;
    let mut against_adi = 0;
    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    for name in cases::names() {
        let case = match cases::load(&name) {
            Ok(case) => case,
            Err(why) => {
                skipped.push(format!("{name}: {why}"));
                continue;
            }
        };
        let board = match case.program.device {
            kflow_ai8x_codegen::Device::Max78000 => SimBoard::Max78000,
            kflow_ai8x_codegen::Device::Max78002 => SimBoard::Max78002,
        };
        let mut client = connect(&DeviceUrl::Sim(board), LinkTimeouts::default(), RetryPolicy::default()).unwrap();
        let bytes = case.image.to_bytes().unwrap();
        if let Err(e) = client.flash(&bytes, |_| {}) {
            failures.push(format!("{name}: flash: {e}"));
            continue;
        }
        let inference = match client.infer(&case.input) {
            Ok(inference) => inference,
            Err(e) => {
                failures.push(format!("{name}: infer: {e}"));
                continue;
            }
        };
        compared += 1;
        if inference.output != case.simulated {
            failures.push(format!("{name}: the board's output differs from kflow's simulator"));
            continue;
        }
        if let Some(expected) = &case.expected {
            against_adi += 1;
            if &inference.output != expected {
                failures.push(format!("{name}: the board's output differs from ADI's expected.npy"));
            }
        }
        // The cycle model on what the board decoded equals it on the
        // allocation the code was generated from.
        if inference.statistics.cycles != Some(case.cycles) {
            failures.push(format!(
                "{name}: {:?} cycles on the board, {} from the allocation",
                inference.statistics.cycles, case.cycles
            ));
        }
        assert!(inference.statistics.time_us.is_some_and(|t| t > 0), "{name}");
    }
    println!(
        "{compared} cases run on the board ({against_adi} against ADI's output); {} not generated:",
        skipped.len()
    );
    for s in &skipped {
        println!("  {s}");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared >= 50, "only {compared} cases ran");
}
