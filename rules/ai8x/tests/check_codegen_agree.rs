//! `kflow ai8x check` and the code generator agree: every random network
//! the checker accepts becomes a program, C code, and that C compiles with
//! the host's gcc. A run covers seeds 0..400; another range runs with
//!
//! ```text
//! AGREE_SEEDS=10000..12000 cargo test -p kflow-ai8x --test check_codegen_agree -- --nocapture
//! ```

mod random_network;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kflow_ai8x::Device;

const SHIM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ai8x-codegen/tests/data/shim.h");

/// Generates and compiles the network of `seed` if the checker accepts it:
/// `Ok(None)` when it does not, what it exercises when it does, `Err` with
/// the refusal otherwise.
fn agree(seed: u64) -> Result<Option<BTreeSet<String>>, String> {
    let Some(case) = random_network::case(seed) else {
        return Ok(None);
    };
    let report = kflow_ai8x::check(case.device, &case.network, &case.weights, case.input);
    let Some(allocation) = report.allocation.filter(|_| report.passed) else {
        return Ok(None);
    };
    let program = kflow_ai8x::codegen::program(&allocation, &case.values).map_err(|e| format!("program: {e}"))?;
    let generated = kflow_ai8x_codegen::generate(&program).map_err(|e| format!("generate: {e}"))?;
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in &generated.files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let (base, stride) = match case.device {
        Device::Max78000 => (0x5010_0000u32, 0x40_0000u32),
        Device::Max78002 => (0x5100_0000, 0x100_0000),
    };
    let output = Command::new("gcc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "-I."])
        .args(["-DCNN_MODEL_EMBED_WEIGHTS", "-include", SHIM])
        .arg(format!("-DSHIM_CTL_BASE=0x{base:08x}u"))
        .arg(format!("-DSHIM_QUADRANT_STRIDE=0x{stride:08x}u"))
        .args(["cnn_model.c", "-o", "cnn_model.o"])
        .current_dir(dir.path())
        .output()
        .expect("cannot run gcc: install the Debian package gcc");
    if !output.status.success() {
        return Err(format!("gcc: {}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(Some(random_network::features(&allocation)))
}

#[test]
fn codegen_refuses_nothing_the_checker_accepts() {
    let seeds = random_network::seeds("AGREE_SEEDS", 0..400);
    let next = AtomicU64::new(seeds.start);
    let accepted = AtomicU64::new(0);
    let covered: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let refused = Mutex::new(Vec::new());
    // Two workers: every accepted network runs gcc.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    match agree(seed) {
                        Ok(Some(features)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            let mut covered = covered.lock().unwrap();
                            for f in features {
                                *covered.entry(f).or_default() += 1;
                            }
                        }
                        Ok(None) => {}
                        Err(why) => refused.lock().unwrap().push((seed, why)),
                    }
                }
            });
        }
    });
    let mut refused = refused.into_inner().unwrap();
    refused.sort();
    let accepted = accepted.into_inner();
    println!(
        "seeds {seeds:?}: {} accepted by the checker, {} of them refused by codegen",
        accepted + refused.len() as u64,
        refused.len()
    );
    println!("accepted networks with:");
    for (feature, n) in covered.into_inner().unwrap() {
        println!("  {n:5}  {feature}");
    }
    for (seed, why) in &refused {
        println!("seed {seed}: {why}");
    }
    if let Some((seed, _)) = refused.first() {
        let case = random_network::case(*seed).unwrap();
        println!(
            "seed {seed} ({:?}, input {:?}):\n{}",
            case.device, case.input, case.yaml
        );
    }
    assert!(accepted > 0, "the checker accepted no network");
    assert!(refused.is_empty(), "{} refusals", refused.len());
}
