//! `kflow ai8x` (check, simulate, synthesize) on files kflow's own pipeline
//! writes and on networks written by hand, and the `ai8x_synthesize` rule.

mod common;

use std::path::{Path, PathBuf};

use common::Ws;
use ndarray::{Array2, ArrayD};

/// A trained, quantized and synthesized small CNN for the MAX78002.
fn synthesized(ws: &Ws) -> PathBuf {
    ws.small_dataset(20_000, 1).repository_package("platforms");
    ws.package(
        "m",
        r#"
[[model]]
name = "cnn"
input = [17, 16]
task = { kind = "classifier", classes = 2 }
seed = 7
layers = [
    { name = "conv0", op = "conv1d", out_channels = 8, kernel = 3, padding = 1 },
    { name = "act0", op = "relu" },
    { name = "pool0", op = "avg_pool", kernel = 2, stride = 2 },
    { name = "conv1", op = "conv1d", out_channels = 8, kernel = 3, padding = 1 },
    { name = "act1", op = "relu" },
    { name = "flatten", op = "flatten" },
    { name = "out", op = "linear", out_features = 2 },
]

[[train]]
name = "train"
model = ":cnn"
dataset = "//data:small"
epochs = 1

[[quantize]]
name = "q"
model = ":cnn"
weights = ":train"
dataset = "//data:small"

[[ai8x_synthesize]]
name = "synth"
quantized = ":q"
platform = "//platforms:max78002"

[[codegen]]
name = "deploy"
synthesized = ":synth"
"#,
    );
    let first = ws.build_ok(&["//m:synth", "//m:deploy", "//m:q"]);
    assert!(first.count("executed") > 0);
    assert_eq!(ws.build_ok(&["//m:synth", "//m:deploy", "//m:q"]).count("executed"), 0);
    ws.out_dir().join("m/synth")
}

fn args(dir: &Path, device: &str) -> Vec<String> {
    vec![
        "--device".into(),
        device.into(),
        "--network".into(),
        dir.join("network.yaml").display().to_string(),
        "--weights".into(),
        dir.join("weights.safetensors").display().to_string(),
    ]
}

fn run(ws: &Ws, words: &[&str], rest: &[String]) -> common::Run {
    let mut all: Vec<&str> = words.to_vec();
    all.extend(rest.iter().map(String::as_str));
    ws.run(&all)
}

#[test]
fn check_simulate_and_synthesize_what_the_pipeline_synthesized() {
    let ws = Ws::new();
    let dir = synthesized(&ws);
    let yaml = std::fs::read_to_string(dir.join("network.yaml")).expect("network.yaml");
    for key in ["pad:", "output_shift:", "quantization:", "processors:", "out_offset:"] {
        assert!(yaml.contains(key), "`{key}` is explicit:\n{yaml}");
    }

    let mut check_args = args(&dir, "max78002");
    check_args.extend(["--input-shape".into(), "17,16".into()]);
    let check = run(&ws, &["ai8x", "check"], &check_args);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);
    assert!(check.stdout.contains("fits the max78002"), "{}", check.stdout);
    assert!(
        check.stdout.contains("accelerator:") && check.stdout.contains("cycles"),
        "{}",
        check.stdout
    );

    // The same files on the smaller device: its data memory is too small
    // for the MAX78002's offsets.
    let mut small = args(&dir, "max78000");
    small.extend(["--input-shape".into(), "17,16".into()]);
    let check = run(&ws, &["ai8x", "check"], &small);
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert!(
        check.stdout.contains("layer 0 (conv1d)") && check.stdout.contains("limit"),
        "{}",
        check.stdout
    );

    let input = ws.root().join("x.npy");
    let x = Array2::from_shape_fn((17, 16), |(c, t)| (((c * 16 + t) % 200) as i32 - 100) as i8);
    ndarray_npy::write_npy(&input, &x).expect("write x.npy");
    let output = ws.root().join("y.npy");
    let mut sim_args = args(&dir, "max78002");
    sim_args.extend([
        "--input".into(),
        input.display().to_string(),
        "--output".into(),
        output.display().to_string(),
    ]);
    let sim = run(&ws, &["ai8x", "simulate"], &sim_args);
    assert_eq!(sim.code, 0, "{}", sim.stderr);
    let y: ArrayD<i32> = ndarray_npy::read_npy(&output).expect("a 32-bit output");
    assert_eq!(y.shape(), &[2, 1, 1]);
    // Bit-exact means repeatable.
    let again = ws.root().join("y2.npy");
    let pos = sim_args.iter().position(|a| a == "--output").expect("--output") + 1;
    sim_args[pos] = again.display().to_string();
    assert_eq!(run(&ws, &["ai8x", "simulate"], &sim_args).code, 0);
    assert_eq!(std::fs::read(&output).ok(), std::fs::read(&again).ok());

    let out_dir = ws.root().join("synth-out");
    let mut synth_args = args(&dir, "max78002");
    synth_args.extend([
        "--input".into(),
        input.display().to_string(),
        "--out".into(),
        out_dir.display().to_string(),
    ]);
    let synth = run(&ws, &["ai8x", "synthesize"], &synth_args);
    assert_eq!(synth.code, 0, "{}", synth.stderr);
    // Synthesizing an allocated network again changes nothing.
    assert_eq!(std::fs::read_to_string(out_dir.join("network.yaml")).ok(), Some(yaml));
    // And it generates what the `codegen` rule generates.
    for file in ["cnn_model.c", "cnn_model.h", "cnn_model.bin", "zephyr/module.yml"] {
        assert_eq!(
            std::fs::read(out_dir.join(file)).ok(),
            std::fs::read(ws.output("m", "deploy", file)).ok(),
            "{file}"
        );
    }
}

#[test]
fn hand_written_invalid_networks_are_rejected_with_layer_and_limit() {
    let ws = Ws::new();
    let dir = synthesized(&ws);
    let yaml = std::fs::read_to_string(dir.join("network.yaml")).expect("network.yaml");
    let broken = [
        ("kernel_size: 3", "kernel_size: 9\n    dilation: 1", None),
        ("pad: 1", "pad: 3", Some("pad")),
        ("output_shift: ", "output_shift: 40 #", Some("shift")),
    ];
    for (from, to, word) in broken {
        let text = yaml.replacen(from, to, 1);
        let bad = ws.root().join("bad.yaml");
        std::fs::write(&bad, &text).expect("write");
        let mut a = args(&dir, "max78002");
        a[3] = bad.display().to_string();
        a.extend(["--input-shape".into(), "17,16".into()]);
        let r = run(&ws, &["ai8x", "check"], &a);
        if let Some(word) = word {
            assert_eq!(r.code, 1, "{from} -> {to}: {}\n{}", r.stdout, r.stderr);
            assert!(r.stdout.contains("error: layer 0"), "{}", r.stdout);
            assert!(r.stdout.contains("limit") && r.stdout.contains(word), "{}", r.stdout);
        } else {
            assert_ne!(r.code, 0, "{from} -> {to}: {}", r.stdout);
        }
    }
    // Not YAML at all: a usage error naming the file.
    let garbage = ws.root().join("garbage.yaml");
    std::fs::write(&garbage, "layers: [").expect("write");
    let mut a = args(&dir, "max78002");
    a[3] = garbage.display().to_string();
    a.extend(["--input-shape".into(), "17,16".into()]);
    let r = run(&ws, &["ai8x", "check"], &a);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("garbage.yaml"), "{}", r.stderr);
    // No input shape: the message says how to give one.
    let r = run(&ws, &["ai8x", "check"], &args(&dir, "max78002"));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--input-shape"), "{}", r.stderr);
}

#[test]
fn generated_c_compiles_for_host_and_cortex_m4_and_the_bin_holds_the_weights() {
    let ws = Ws::new();
    synthesized(&ws);
    let dir = ws.out_dir().join("m/deploy");
    for file in [
        "cnn_model.h",
        "cnn_model_weights.h",
        "zephyr/module.yml",
        "CMakeLists.txt",
        "Kconfig",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    common::compile_c("gcc", &["-std=c99"], (&dir, "cnn_model.c"), &ws.root().join("host.o"));
    common::compile_c(
        "arm-none-eabi-gcc",
        &["-mcpu=cortex-m4", "-mthumb", "-Os"],
        (&dir, "cnn_model.c"),
        &ws.root().join("m4.o"),
    );

    let blob = kflow_ai8x_codegen::parse_bin(&std::fs::read(dir.join("cnn_model.bin")).expect("cnn_model.bin"))
        .expect("the weight stream parses");
    let values =
        kflow_ai8x::int8_values(&std::fs::read(ws.output("m", "q", "quantized.safetensors")).expect("weights"))
            .expect("int8 weights");
    // Every non-zero weight byte is in the kernel stream once, every
    // non-zero bias byte in the bias stream.
    let mut stream_weights: Vec<i8> = blob
        .kernels
        .iter()
        .flat_map(|c| c.words.iter().flat_map(|w| w.to_be_bytes()))
        .map(|b| b as i8)
        .filter(|v| *v != 0)
        .collect();
    let mut weights: Vec<i8> = values
        .values()
        .flat_map(|l| l.weight.iter().copied())
        .filter(|v| *v != 0)
        .collect();
    stream_weights.sort_unstable();
    weights.sort_unstable();
    assert_eq!(stream_weights, weights);
    let mut stream_biases: Vec<i8> = blob
        .biases
        .iter()
        .flat_map(|c| c.words.iter().map(|w| *w as u8 as i8))
        .filter(|v| *v != 0)
        .collect();
    let mut biases: Vec<i8> = values
        .values()
        .flat_map(|l| l.bias.iter().flatten().copied())
        .filter(|v| *v != 0)
        .collect();
    stream_biases.sort_unstable();
    biases.sort_unstable();
    assert_eq!(stream_biases, biases);
}
