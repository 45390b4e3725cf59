//! `codegen` with `quantized`: C99 inference of a quantized network for a
//! Cortex-M without an accelerator, built through the real binary, compiled
//! with the host's gcc and run on every test window of the dataset: its
//! outputs equal the bit-exact simulator's, byte for byte. The same sources
//! compile warning-free for the Cortex-M4 (scripts/test.sh installs its
//! compiler).

mod common;

use std::process::Command;

use common::Ws;
use kflow_ai8x_sim::{Output, SimOptions};

/// Reads model.bin, then runs `kflow_infer` on every input of a file of
/// back-to-back inputs and writes the outputs back to back (int32 outputs
/// in the host's order).
const MAIN: &str = r#"#include <stdio.h>
#include <stdint.h>
#include "model.h"

static int32_t weights[(KFLOW_WEIGHTS_BYTES + 3) / 4];
static int8_t in[KFLOW_INPUT_LEN];
static int32_t out[(KFLOW_OUTPUT_BYTES + 3) / 4];

int main(void)
{
    FILE *f = fopen("model.bin", "rb");
    if (!f || fread(weights, 1, KFLOW_WEIGHTS_BYTES, f) != KFLOW_WEIGHTS_BYTES) return 3;
    fclose(f);
    if (kflow_check_weights(weights, KFLOW_WEIGHTS_BYTES) != 0) return 6;
    while (fread(in, 1, sizeof in, stdin) == sizeof in) {
        if (kflow_infer(weights, in, out) != 0) return 4;
        if (fwrite(out, 1, KFLOW_OUTPUT_BYTES, stdout) != KFLOW_OUTPUT_BYTES) return 5;
    }
    return 0;
}
"#;

#[test]
fn c_inference_of_a_quantized_model_equals_the_simulator_on_every_test_window() {
    let ws = Ws::new();
    ws.small_dataset(12_000, 5);
    ws.quantized_cnn(
        "m",
        r#"
[[codegen]]
name = "cortex_m"
quantized = ":q"
"#,
    );
    ws.build_ok(&["//m:cortex_m", "//m:q", "//data:small"]);
    let dir = tempfile::tempdir().expect("temp dir");
    for file in ["model.c", "model.h", "model.bin"] {
        std::fs::copy(ws.output("m", "cortex_m", file), dir.path().join(file)).expect("copy");
    }
    std::fs::write(dir.path().join("main.c"), MAIN).expect("write main.c");
    let exe = dir.path().join("infer");
    let gcc = Command::new("gcc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-o"])
        .arg(&exe)
        .args(["main.c", "model.c"])
        .current_dir(dir.path())
        .output()
        .expect("run gcc");
    assert!(gcc.status.success(), "{}", String::from_utf8_lossy(&gcc.stderr));
    common::compile_c(
        "arm-none-eabi-gcc",
        &["-mcpu=cortex-m4", "-mthumb", "-O2", "-std=c99"],
        (dir.path(), "model.c"),
        &dir.path().join("m4.o"),
    );

    let read = |target: &str, file: &str| {
        std::fs::read(ws.output(if target == "small" { "data" } else { "m" }, target, file)).expect("output")
    };
    let q = kflow_quant::Quantized::from_files(&read("q", "quant.json"), &read("q", "quantized.safetensors"))
        .expect("quantized model");
    let test = kflow_data::Split::from_safetensors(&read("small", "test.safetensors")).expect("test split");
    let (net, weights) = kflow_quant::to_sim(&q, kflow_ai8x::Device::Max78002);
    let per = test.shape[1] * test.shape[2];
    let (mut inputs, mut expected) = (Vec::new(), Vec::new());
    for window in test.x.chunks(per) {
        let input = kflow_quant::sample_input(&net, window).expect("input");
        inputs.extend(input.data.iter().map(|&v| v as u8));
        match kflow_ai8x_sim::simulate(&net, &weights, &input, SimOptions::default()).expect("simulate") {
            Output::Int8(t) => expected.extend(t.data.iter().map(|&v| v as u8)),
            Output::Int32(t) => expected.extend(t.data.iter().flat_map(|v| v.to_ne_bytes())),
        }
    }
    std::fs::write(dir.path().join("inputs.bin"), &inputs).expect("write inputs");
    let run = Command::new(&exe)
        .current_dir(dir.path())
        .stdin(std::fs::File::open(dir.path().join("inputs.bin")).expect("inputs"))
        .output()
        .expect("run the C inference");
    assert!(run.status.success(), "exit {:?}", run.status);
    assert!(test.len() > 100, "{} test windows", test.len());
    assert_eq!(run.stdout.len(), expected.len());
    let first = run.stdout.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(
        first, None,
        "the C inference differs from the simulator at output byte {first:?}"
    );
}

#[test]
fn codegen_needs_exactly_one_of_synthesized_and_quantized() {
    let ws = Ws::new();
    ws.package("m", "[[codegen]]\nname = \"nothing\"\n");
    let build = ws.build(&["//m:nothing"]);
    assert_eq!(build.run.code, 2, "{}", build.run.stderr);
    assert!(
        build.run.stderr.contains("graphs/m/BUILD.toml") && build.run.stderr.contains("not both or neither"),
        "{}",
        build.run.stderr
    );
}
