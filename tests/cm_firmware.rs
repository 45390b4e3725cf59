//! C inference on an emulated Cortex-M4, through the real `kflow` binary:
//! the baseline CNN, trained briefly and quantized to int8, generated as C,
//! linked into kflow's firmware, flashed to `qemu://mps2-an386` over the
//! device protocol and evaluated there on every validation and test window
//! of `anomaly_smoke`'s dataset; each output equals the simulator's, and
//! the instructions one inference executes are the same in every run. The
//! same C, built for a Cortex-M7 (`qemu://mps2-an500`), computes the same
//! outputs and is timed at the STM32F746's clock.
//!
//! Needs `qemu-system-arm` and `arm-none-eabi-gcc` (scripts/test.sh
//! installs both); without them the test says so and passes, unless
//! `KFLOW_REQUIRE_QEMU` is set, as CI sets it.

mod common;

use std::path::Path;

use common::Ws;
use serde_json::Value;

const GRAPH: &str = r#"
[[train]]
name = "trained"
model = "//host:baseline_cnn"
dataset = "//datasets:cats_small"
epochs = 1
batch_size = 64
lr = 0.0005
seed = 7

[[quantize]]
name = "int8"
model = "//host:baseline_cnn"
weights = ":trained"
dataset = "//datasets:cats_small"

[[codegen]]
name = "c"
quantized = ":int8"

[[flash]]
name = "flashed"
code = ":c"
device = "qemu://mps2-an386"

[[evaluate_device]]
name = "on_m4"
flashed = ":flashed"
quantized = ":int8"
model = "//host:baseline_cnn"
dataset = "//datasets:cats_small"
platform = "//platforms:max32690"

[[flash]]
name = "flashed_m7"
code = ":c"
device = "qemu://mps2-an500"

[[evaluate_device]]
name = "on_m7"
flashed = ":flashed_m7"
quantized = ":int8"
model = "//host:baseline_cnn"
dataset = "//datasets:cats_small"
platform = "//platforms:stm32f746"
windows = 100
"#;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON")
}

#[test]
fn the_firmware_in_qemu_computes_the_simulators_outputs_on_every_window() {
    if !common::qemu_tools_present() {
        return;
    }
    let ws = Ws::new();
    for package in ["datasets", "host", "platforms"] {
        ws.repository_package(package);
    }
    ws.package("m", GRAPH);
    ws.build_ok(&["//m:on_m4", "//m:flashed", "//m:on_m7", "//m:flashed_m7"]);
    let metrics_path = ws.output("m", "on_m4", "metrics.json");
    let metrics = read_json(&metrics_path);
    assert_eq!(metrics["matches_simulator"], true, "{metrics}");
    assert_eq!(metrics["mismatched_windows"], 0, "{metrics}");
    let test_windows = metrics["test_windows_compared"].as_u64().expect("test windows");
    assert!(test_windows > 1000, "{metrics}");
    assert!(metrics["windows_compared"].as_u64() > Some(test_windows), "{metrics}");
    let latency = &metrics["latency"];
    let instructions = latency["instructions"]["median"].as_f64().expect("instructions");
    // A fixed network with no data-dependent loops: every window executes
    // the same count, up to the branches of ReLU and saturation.
    assert!(instructions > 100_000.0, "{metrics}");
    assert!(
        latency["instructions"]["p90"].as_f64() < Some(instructions * 1.01),
        "{metrics}"
    );
    assert_eq!(latency["clock_mhz"], 120.0, "{metrics}");
    let us = latency["us"]["median"].as_f64().expect("time");
    let cycles = latency["cycles"]["median"].as_f64().expect("cycles");
    assert!((us - cycles / 120.0).abs() < 1e-6 * us, "{metrics}");
    let flash = read_json(&ws.output("m", "flashed", "flash.json"));
    assert_eq!(flash["device"], "qemu://mps2-an386", "{flash}");
    assert_eq!(flash["board"], "mps2-an386", "{flash}");

    // The Cortex-M7: the same outputs, its own build, its clock and CPI.
    let m7 = read_json(&ws.output("m", "on_m7", "metrics.json"));
    assert_eq!(m7["matches_simulator"], true, "{m7}");
    assert_eq!(m7["windows_compared"], 200, "{m7}");
    let m7_latency = &m7["latency"];
    assert_eq!(m7_latency["clock_mhz"], 216.0, "{m7}");
    let m7_instructions = m7_latency["instructions"]["median"].as_f64().expect("instructions");
    assert!(
        (m7_instructions / instructions - 1.0).abs() < 0.1,
        "M7 {m7_instructions} against M4 {instructions} instructions"
    );
    let m7_cycles = m7_latency["cycles"]["median"].as_f64().expect("cycles");
    assert!((m7_cycles - m7_instructions * 0.85).abs() < 1.0, "{m7}");
    let flash_m7 = read_json(&ws.output("m", "flashed_m7", "flash.json"));
    assert_eq!(flash_m7["board"], "mps2-an500", "{flash_m7}");
    assert_ne!(flash_m7["firmware"], flash["firmware"], "{flash_m7}");

    // A second build executes nothing.
    let again = ws.build_ok(&["//m:on_m4", "//m:flashed", "//m:on_m7", "//m:flashed_m7"]);
    assert!(again.ids("executed").is_empty(), "{:?}", again.ids("executed"));

    // On a fresh emulator every count is the same again.
    let before = std::fs::read(&metrics_path).expect("metrics");
    let rerun = ws.build_ok(&["//m:on_m4", "--rerun-devices"]);
    assert!(
        rerun.ids("executed").contains("target//m:on_m4"),
        "{:?}",
        rerun.ids("executed")
    );
    assert_eq!(std::fs::read(&metrics_path).expect("metrics"), before);
}
