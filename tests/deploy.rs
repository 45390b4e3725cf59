//! From a trained model towards a device, end to end through the real
//! `kflow` binary: pruning, quantization, platforms and checks.

mod common;

use common::Ws;
use serde_json::Value;

/// A dataset, a small CNN trained for one epoch, and the repository's
/// platforms.
fn graphs(ws: &Ws, extra: &str) {
    ws.small_dataset(20_000, 1).repository_package("platforms");
    ws.package(
        "m",
        &format!(
            r#"
[[model]]
name = "cnn"
input = [17, 16]
task = {{ kind = "classifier", classes = 2 }}
seed = 7
layers = [
    {{ name = "conv0", op = "conv1d", out_channels = 8, kernel = 3, padding = 1, bias = false }},
    {{ name = "bn0", op = "batch_norm" }},
    {{ name = "act0", op = "relu" }},
    {{ name = "conv1", op = "conv1d", out_channels = 8, kernel = 3, padding = 1 }},
    {{ name = "act1", op = "relu" }},
    {{ name = "pool1", op = "max_pool", kernel = 2, stride = 2 }},
    {{ name = "flatten", op = "flatten" }},
    {{ name = "out", op = "linear", out_features = 2 }},
]

[[train]]
name = "train"
model = ":cnn"
dataset = "//data:small"
epochs = 1
{extra}"#
        ),
    );
}

fn json(ws: &Ws, target: &str, name: &str) -> Value {
    serde_json::from_str(&ws.read_output("m", target, name)).expect("JSON output")
}

#[test]
fn pruned_model_is_quantized_into_accelerator_layers() {
    let ws = Ws::new();
    graphs(
        &ws,
        r#"
[[prune]]
name = "pruned"
model = ":cnn"
weights = ":train"
kind = "channels"
amount = 0.25
dataset = "//data:small"
epochs = 1

[[quantize]]
name = "quantized"
model = ":pruned"
weights = ":pruned"
dataset = "//data:small"
layer_bits = { conv1 = 4 }
"#,
    );
    ws.build_ok(&["//m:quantized", "//m:pruned"]);
    let report = json(&ws, "pruned", "prune.json");
    let widths: Vec<(u64, u64)> = report["prune"]["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["before"].as_u64().expect("before"),
                l["after"].as_u64().expect("after"),
            )
        })
        .collect();
    assert_eq!(widths, vec![(8, 6), (8, 6)]);
    assert_eq!(report["fine_tune"].as_array().map(Vec::len), Some(1));

    let quant = json(&ws, "quantized", "quant.json");
    let layers = quant["layers"].as_array().expect("layers");
    let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().expect("name")).collect();
    assert_eq!(names, vec!["conv0", "conv1", "pool1", "out"]);
    assert_eq!(layers[1]["weight_bits"], 4);
    assert_eq!(layers[3]["output_width"], 32);
    assert_eq!(layers[2]["op"], "passthrough");
    let bytes = std::fs::read(ws.output("m", "quantized", "quantized.safetensors")).expect("weights");
    // safetensors: an 8-byte header length, then a JSON header naming int8
    // tensors by layer index.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).expect("header");
    assert_eq!(header["0.weight"]["dtype"], "I8");
    assert_eq!(header["0.weight"]["shape"], serde_json::json!([6, 17, 3]));
    assert_eq!(header["1.weight"]["shape"], serde_json::json!([6, 6, 3]));
    assert_eq!(header["3.weight"]["shape"], serde_json::json!([2, 48]));
    assert!(header.get("2.weight").is_none(), "a pooling layer has no weights");
}

#[test]
fn checks_on_a_cpu_platform_accept_and_reject_with_reasons() {
    let ws = Ws::new();
    graphs(
        &ws,
        r#"
[[check]]
name = "fits"
model = ":cnn"
platform = "//platforms:stm32f746"
constraints = ["weight_bytes <= 1_000_000", "layers == 3"]

[[check]]
name = "too_strict"
model = ":cnn"
platform = "//platforms:max32690"
constraints = ["arena_bytes < 100"]
checks = ["grep -q '\"conv0\"' && { echo 'conv0 is not allowed' >&2; exit 3; }; exit 0"]
"#,
    );
    let b = ws.build(&["//m:fits", "//m:too_strict"]);
    let report = b.report.expect("a report");
    assert_eq!(report.status("target//m:fits"), "executed");
    assert_eq!(report.status("target//m:too_strict"), "rejected");
    let fits = json(&ws, "fits", "check.json");
    assert_eq!(fits["fits"], true, "{fits}");
    assert_eq!(fits["resources"]["layers"], 3.0);
    let strict = json(&ws, "too_strict", "check.json");
    let reasons: Vec<&str> = strict["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r.as_str().expect("text"))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("`arena_bytes < 100` does not hold"), "{reasons:?}");
    assert!(
        reasons[1].contains("exit 3") && reasons[1].contains("conv0 is not allowed"),
        "{reasons:?}"
    );
    // A rejection is a result: the next build serves it from the cache.
    let again = ws.build(&["//m:too_strict"]).report.expect("a report");
    assert_eq!(again.count("executed"), 0);
}

/// A check script is an input like any other: editing it reruns the check
/// (and only the check), on the `check` rule and through the platform.
#[test]
fn editing_a_check_file_reruns_the_checks_that_read_it() {
    let ws = Ws::new();
    graphs(
        &ws,
        r#"
[[check]]
name = "gated"
model = ":cnn"
platform = "//platforms:max32690"
checks = ["sh gate.sh"]
check_files = ["gate.sh"]

[[platform]]
name = "gated_mcu"
cpu = "cortex-m4f"
cpu_clock_mhz = 100.0
flash_kb = 2048
ram_kb = 512
checks = ["sh platform_gate.sh"]
check_files = ["platform_gate.sh"]

[[check]]
name = "on_gated_mcu"
model = ":cnn"
platform = ":gated_mcu"
"#,
    );
    // A check sees its own files and nothing else of the workspace, and
    // none of kflow's environment beyond PATH and HOME.
    let sandboxed = "cat > /dev/null; test -e gate.sh && test ! -e BUILD.toml && test -z \"$KFLOW_CACHE_DIR\"\n";
    ws.file("graphs/m/gate.sh", sandboxed).file(
        "graphs/m/platform_gate.sh",
        "cat > /dev/null; test -e platform_gate.sh\n",
    );
    let targets = ["//m:gated", "//m:on_gated_mcu"];
    let first = ws.build_ok(&targets);
    assert_eq!(first.status("target//m:gated"), "executed");
    assert_eq!(first.status("target//m:on_gated_mcu"), "executed");
    assert_eq!(ws.build_ok(&targets).count("executed"), 0);

    ws.file("graphs/m/gate.sh", "cat > /dev/null; echo 'gate closed' >&2; exit 4\n");
    let b = ws.build(&targets);
    let report = b.report.expect("a report");
    assert_eq!(report.status("target//m:gated"), "rejected");
    assert_eq!(report.status("target//m:on_gated_mcu"), "cached");
    let gated = json(&ws, "gated", "check.json");
    assert!(
        gated["reasons"][0].as_str().is_some_and(|r| r.contains("gate closed")),
        "{gated}"
    );

    ws.file(
        "graphs/m/platform_gate.sh",
        "cat > /dev/null; echo 'no room' >&2; exit 5\n",
    );
    let report = ws
        .build(&[targets[0], targets[1], "//m:gated_mcu"])
        .report
        .expect("a report");
    assert_eq!(report.status("target//m:on_gated_mcu"), "rejected");
    assert_ne!(report.status("target//m:gated"), "executed");
    let platform = json(&ws, "gated_mcu", "platform.json");
    assert!(
        platform["check_files"]["platform_gate.sh"]["digest"].is_string(),
        "{platform}"
    );
}

#[test]
fn a_bad_constraint_is_a_graph_error() {
    let ws = Ws::new();
    graphs(
        &ws,
        "[[check]]\nname = \"c\"\nmodel = \":cnn\"\nplatform = \"//platforms:max32690\"\nconstraints = [\"layers <=\"]\n",
    );
    let b = ws.build(&["//m:c"]);
    assert_eq!(b.run.code, 2, "{}", b.run.stderr);
    assert!(b.run.stderr.contains("graphs/m/BUILD.toml:"), "{}", b.run.stderr);
    assert!(b.run.stderr.contains("constraint `layers <=`"), "{}", b.run.stderr);
}

/// Quantization-aware fine-tuning through the binary: it logs its epochs,
/// a longer budget reruns only `quantize`, and binary weights are judged by
/// the accelerator each platform has.
#[test]
fn quantization_aware_fine_tuning_and_binary_weights() {
    let ws = Ws::new();
    let quantize = |epochs: u32| {
        format!(
            r#"
[[quantize]]
name = "qat"
model = ":cnn"
weights = ":train"
dataset = "//data:small"
weight_bits = 2
qat_epochs = {epochs}

[[quantize]]
name = "binary"
model = ":cnn"
weights = ":train"
dataset = "//data:small"
weight_bits = "binary"
# kflow cannot write a flatten layer with narrower weights (rules/ai8x/README.md).
layer_bits = {{ out = 8 }}

[[check]]
name = "binary_on_max78002"
model = ":cnn"
quantized = ":binary"
platform = "//platforms:max78002"

[[check]]
name = "binary_on_max78000"
model = ":cnn"
quantized = ":binary"
platform = "//platforms:max78000"
"#
        )
    };
    graphs(&ws, &quantize(1));
    let targets = ["//m:qat", "//m:binary_on_max78002", "//m:binary_on_max78000"];
    let first = ws.build(&targets).report.expect("a report");
    assert_eq!(first.status("target//m:binary_on_max78002"), "executed");
    assert_eq!(first.status("target//m:binary_on_max78000"), "rejected");
    let reasons = json(&ws, "binary_on_max78000", "check.json")["reasons"].to_string();
    assert!(reasons.contains("binary"), "{reasons}");

    let log = json(&ws, "qat", "qat.json");
    assert_eq!(log["epochs"].as_array().map(Vec::len), Some(1), "{log}");
    let quant = json(&ws, "qat", "quant.json");
    let layers = quant["layers"].as_array().expect("layers");
    // Batch norm was folded before fine-tuning: the first layer has no
    // `bn0` among its IR layers any more, and every operator has 2-bit
    // weights.
    assert_eq!(layers[0]["ir_layers"], serde_json::json!(["conv0", "act0"]));
    assert!(
        layers
            .iter()
            .filter(|l| l["op"] != "passthrough")
            .all(|l| l["weight_bits"] == 2)
    );

    graphs(&ws, &quantize(2));
    let again = ws.build(&targets).report.expect("a report");
    assert_eq!(
        again.ids("executed"),
        std::collections::BTreeSet::from(["target//m:qat".to_owned()])
    );
    let log = json(&ws, "qat", "qat.json");
    assert_eq!(log["epochs"].as_array().map(Vec::len), Some(2), "{log}");
    // The weights kept are the start's or an epoch's, whichever quantized
    // network validated best.
    let kept = log["kept_epoch"].as_u64().expect("kept_epoch");
    let f1 = |epoch: u64| match epoch {
        0 => log["start_val_f1"].as_f64(),
        e => log["epochs"][e as usize - 1]["val_f1"].as_f64(),
    };
    assert!((0..=2).all(|e| f1(e) <= f1(kept)), "{log}");

    // Bits outside 1, 2, 4, 8 and "binary" are a graph error at the file.
    graphs(&ws, &quantize(1).replace("weight_bits = 2", "weight_bits = 3"));
    let bad = ws.build(&["//m:qat"]);
    assert_eq!(bad.run.code, 2, "{}", bad.run.stderr);
    assert!(bad.run.stderr.contains("graphs/m/BUILD.toml"), "{}", bad.run.stderr);
    assert!(bad.run.stderr.contains("not 3"), "{}", bad.run.stderr);
}

/// Unstructured pruning with fine-tuning keeps the pruned weights at zero
/// and keeps the network deciding.
#[test]
fn unstructured_pruning_survives_fine_tuning() {
    let ws = Ws::new();
    graphs(
        &ws,
        r#"
[[prune]]
name = "sparse"
model = ":cnn"
weights = ":train"
amount = 0.5
dataset = "//data:small"
epochs = 2
"#,
    );
    ws.build_ok(&["//m:sparse"]);
    let report = json(&ws, "sparse", "prune.json");
    assert_eq!(report["fine_tune"].as_array().map(Vec::len), Some(2));
    let bytes = std::fs::read(ws.output("m", "sparse", "weights.safetensors")).expect("weights");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    for name in ["conv0.weight", "conv1.weight", "out.weight"] {
        let t = tensors.tensor(name).expect(name);
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let zeros = values.iter().filter(|v| **v == 0.0).count();
        assert!(
            zeros * 2 >= values.len(),
            "{name}: {zeros} of {} are zero",
            values.len()
        );
    }
}
