//! Training's bytes depend on the CPU (candle's `gemm` picks fused
//! multiply-adds on AVX2 machines and plain SSE arithmetic without them),
//! so the keys of the actions that train carry the CPU's class: one epoch
//! run natively and under `qemu-x86_64 -cpu Nehalem` (an x86-64 without
//! AVX) never shares a key when the bytes differ, while the dataset, which
//! no CPU feature shapes, keeps its key.
//!
//! Needs `qemu-x86_64` (Debian's `qemu-user`, which scripts/test.sh
//! installs); without it the test says so and passes, unless
//! `KFLOW_REQUIRE_QEMU` is set, as CI sets it.

#![cfg(target_arch = "x86_64")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Report, Ws, kflow_under, run_with_timeout};

/// One build of the training in a fresh workspace and cache, run by
/// `wrapper`: each action's key, and the trained weights' digest.
fn train_under(wrapper: &[&str]) -> (BTreeMap<String, String>, String) {
    let ws = Ws::new();
    ws.small_dataset(6_000, 5);
    ws.quantized_cnn("m", "");
    let report_path = ws.root().join("report.json");
    let mut cmd = kflow_under(wrapper, ws.root(), ws.cache_dir());
    cmd.args(["build", "//m:train", "--build-report"]).arg(&report_path);
    let run = run_with_timeout(&mut cmd, Duration::from_secs(600));
    assert_eq!(run.code, 0, "{wrapper:?}: {}", run.stderr);
    let report = Report(serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("JSON"));
    let keys = report
        .actions()
        .iter()
        .filter_map(|a| Some((a["id"].as_str()?.to_owned(), a["key"].as_str()?.to_owned())))
        .collect();
    (keys, report.output_digest("target//m:train", "weights.safetensors"))
}

fn qemu_user() -> bool {
    let found = std::process::Command::new("qemu-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("KFLOW_REQUIRE_QEMU").is_none(),
            "qemu-x86_64 is missing and KFLOW_REQUIRE_QEMU is set"
        );
        println!("qemu-x86_64 (qemu-user) is not installed: skipped");
    }
    found
}

#[test]
fn training_on_another_cpu_class_never_shares_a_key_with_different_bytes() {
    if !qemu_user() {
        return;
    }
    let (native_keys, native_weights) = train_under(&[]);
    let (old_keys, old_weights) = train_under(&["qemu-x86_64", "-cpu", "Nehalem"]);
    let epoch = "target//m:train[epoch-1]/epoch";
    assert_eq!(
        native_keys["target//data:small"], old_keys["target//data:small"],
        "the dataset does not depend on the CPU"
    );
    let has_fma = std::arch::is_x86_feature_detected!("fma");
    if has_fma {
        assert_ne!(
            native_weights, old_weights,
            "fused multiply-adds here and none on Nehalem round differently"
        );
    }
    // The soundness this test exists for: different bytes, different keys.
    if native_weights != old_weights {
        assert_ne!(native_keys[epoch], old_keys[epoch]);
    }
    // And the emulated CPU agrees with itself.
    let (again_keys, again_weights) = train_under(&["qemu-x86_64", "-cpu", "Nehalem"]);
    assert_eq!(
        (again_keys[epoch].as_str(), again_weights),
        (old_keys[epoch].as_str(), old_weights)
    );
}
