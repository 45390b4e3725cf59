//! The machine-learning stages on the host, end to end through the real
//! `kflow` binary: datasets, search spaces, training, ONNX Runtime
//! evaluation and search, on small graphs these tests write (the
//! repository's own graphs are built by `tests/repository.rs`).
//!
//! Evaluation needs ONNX Runtime's shared library (`scripts/test.sh`
//! installs the `onnxruntime` wheel when it is missing).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::Ws;
use serde_json::Value;

/// A small dataset, search space and models: seconds to build.
fn small_graphs(ws: &Ws, data_seed: u64, epochs: u32) {
    ws.small_dataset(40_000, data_seed);
    ws.package(
        "spaces",
        r#"
[[space]]
name = "cnn"
family = "cnn"
blocks = { min = 1, max = 2 }
conv = ["conv1d", "conv2d"]
filters = [4, 8]
kernel = [1, 3]
padding = [0, 1]
pool = ["none", "max", "avg"]
activation = ["relu", "abs"]
batchnorm = [true, false]
linear_layers = { min = 0, max = 1 }
linear_units = [16]
classes = 2
"#,
    );
    ws.package(
        "host",
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
    {{ name = "pool0", op = "max_pool", kernel = 2, stride = 2 }},
    {{ name = "flatten", op = "flatten" }},
    {{ name = "out", op = "linear", out_features = 2 }},
]

[[train]]
name = "train"
model = ":cnn"
dataset = "//data:small"
epochs = {epochs}
seed = 7

[[evaluate]]
name = "eval"
model = ":cnn"
weights = ":train"
dataset = "//data:small"

# 2-D convolutions, average pooling and an abs activation, so that the
# ONNX export of each is checked against candle.
[[model]]
name = "cnn2d"
input = [1, 17, 16]
task = {{ kind = "classifier", classes = 2 }}
seed = 3
layers = [
    {{ name = "conv0", op = "conv2d", out_channels = 4, kernel = 3, padding = 1 }},
    {{ name = "bn0", op = "batch_norm" }},
    {{ name = "act0", op = "abs" }},
    {{ name = "pool0", op = "avg_pool", kernel = 2, stride = 2 }},
    {{ name = "flatten", op = "flatten" }},
    {{ name = "hidden", op = "linear", out_features = 16 }},
    {{ name = "act1", op = "relu" }},
    {{ name = "out", op = "linear", out_features = 2 }},
]

[[train]]
name = "train2d"
model = ":cnn2d"
dataset = "//data:small"
epochs = 1
seed = 3

[[evaluate]]
name = "eval2d"
model = ":cnn2d"
weights = ":train2d"
dataset = "//data:small"

[[automl]]
name = "search"
space = "//spaces:cnn"
dataset = "//data:small"
strategy = {{ kind = "random", candidates = 3, seed = 42 }}
budget = {{ kind = "epochs", epochs = 1 }}
keep = 1
"#
        ),
    );
}

fn metrics(ws: &Ws, target: &str) -> Value {
    serde_json::from_str(&ws.read_output("host", target, "metrics.json")).expect("metrics.json is JSON")
}

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Train losses per epoch, from the materialized `train_log.json`.
fn train_losses(ws: &Ws, target: &str) -> Vec<f64> {
    let log: Value = serde_json::from_str(&ws.read_output("host", target, "train_log.json")).expect("JSON log");
    log["epochs"]
        .as_array()
        .expect("`epochs` is an array")
        .iter()
        .map(|e| e["train_loss"].as_f64().expect("train_loss"))
        .collect()
}

#[test]
fn evaluation_writes_metrics_that_onnx_runtime_and_candle_agree_on() {
    let ws = Ws::new();
    small_graphs(&ws, 1, 2);
    let report = ws.build_ok(&["//host:eval", "//host:eval2d", "//data:small"]);
    assert_eq!(report.count("failed"), 0);
    for target in ["eval", "eval2d"] {
        let m = metrics(&ws, target);
        for field in ["accuracy", "precision", "recall", "f1", "roc_auc"] {
            let v = m["quality"][field]
                .as_f64()
                .unwrap_or_else(|| panic!("quality.{field} in {m}"));
            assert!((0.0..=1.0).contains(&v), "quality.{field} = {v}");
        }
        let confusion = m["quality"]["confusion"].as_array().expect("confusion matrix");
        let total: u64 = confusion
            .iter()
            .flat_map(|row| row.as_array().expect("row").iter().map(|n| n.as_u64().expect("count")))
            .sum();
        let meta: Value = serde_json::from_str(&ws.read_output("data", "small", "meta.json")).expect("meta");
        let c = &meta["counts"]["test"];
        assert_eq!(
            total,
            c["negative"].as_u64().expect("count") + c["positive"].as_u64().expect("count"),
            "the confusion matrix covers the test split"
        );
        assert!(m["baseline"]["f1"].is_number(), "{m}");
        assert!(m["latency_us"]["median"].as_f64().expect("median latency") > 0.0);
        let diff = m["onnx_vs_candle_max_abs_diff"].as_f64().expect("cross-check");
        assert!(diff < 1e-4, "{target}: ONNX Runtime and candle differ by {diff}");
    }
    // The exported graph is a real ONNX file (protobuf with an opset import).
    let onnx = std::fs::read(ws.output("host", "eval", "model.onnx")).expect("model.onnx");
    assert!(onnx.windows(4).any(|w| w == b"Conv") && onnx.len() > 1000);
}

#[test]
fn second_build_executes_nothing_and_loss_falls() {
    let ws = Ws::new();
    small_graphs(&ws, 1, 3);
    let first = ws.build_ok(&["//host:eval", "//host:train"]);
    assert!(first.count("executed") > 0);
    let losses = train_losses(&ws, "train");
    assert_eq!(losses.len(), 3, "{losses:?}");
    assert!(losses[2] < losses[0], "training loss did not fall: {losses:?}");
    let second = ws.build_ok(&["//host:eval", "//host:train"]);
    assert_eq!(second.count("executed"), 0, "{:?}", second.ids("executed"));
    // Served whole: a cached training run is not opened up into its epochs.
    assert!(second.ids("cached").contains("target//host:train"));
}

#[test]
fn more_epochs_resume_training_and_a_new_data_seed_reruns_everything_downstream() {
    let ws = Ws::new();
    small_graphs(&ws, 1, 2);
    let first = ws.build_ok(&["//host:eval"]);
    let all = first.all_ids();

    small_graphs(&ws, 1, 3);
    let more = ws.build_ok(&["//host:eval"]);
    assert_eq!(
        more.ids("executed"),
        ids(&[
            "target//host:train",
            "target//host:train[epoch-3]/epoch",
            "target//host:eval"
        ]),
        "only the new epoch, the training summary and the evaluation run"
    );
    for epoch in [1, 2] {
        assert_eq!(
            more.status(&format!("target//host:train[epoch-{epoch}]/epoch")),
            "cached"
        );
    }
    // Resuming gives the same weights as training three epochs at once.
    let resumed = more.output_digest("target//host:train", "weights.safetensors");
    let fresh = Ws::new();
    small_graphs(&fresh, 1, 3);
    let direct = fresh.build_ok(&["//host:eval"]);
    assert_eq!(
        direct.output_digest("target//host:train", "weights.safetensors"),
        resumed
    );

    small_graphs(&ws, 2, 3);
    let reseeded = ws.build_ok(&["//host:eval"]);
    let model_only = ids(&["target//host:cnn"]);
    let expected: BTreeSet<String> = reseeded.all_ids().difference(&model_only).cloned().collect();
    assert_eq!(
        reseeded.ids("executed"),
        expected,
        "everything downstream of the data reruns"
    );
    assert_eq!(reseeded.ids("cached"), model_only);
    assert!(all.is_subset(&reseeded.all_ids()));
}

#[test]
fn a_host_search_gives_identical_artifacts_from_separate_empty_caches_and_any_jobs() {
    let digests = |jobs: &str| {
        let ws = Ws::new();
        small_graphs(&ws, 1, 1);
        let report = ws.build_ok(&["//host:search", "--jobs", jobs]);
        assert!(report.count("executed") >= 7, "3 candidates, generated and trained");
        let candidates: Value =
            serde_json::from_str(&ws.read_output("host", "search", "candidates.json")).expect("candidates");
        assert_eq!(candidates.as_array().map(Vec::len), Some(3), "{candidates}");
        report.output_digests()
    };
    let one = digests("1");
    assert_eq!(one, digests("2"));
    assert!(one.values().map(|o| o.len()).sum::<usize>() > 10);
}

/// A CATS-format CSV of `rows` rows, with `edit` applied to its lines.
fn write_csv(ws: &Ws, rows: usize, edit: impl FnOnce(&mut Vec<String>)) {
    let channels = [
        "aimp", "amud", "arnd", "asin1", "asin2", "adbr", "adfl", "bed1", "bed2", "bfo1", "bfo2", "bso1", "bso2",
        "bso3", "ced1", "cfo1", "cso1",
    ];
    let mut lines = vec![format!("timestamp,{},y", channels.join(","))];
    for i in 0..rows {
        let values: Vec<String> = (0..channels.len())
            .map(|c| format!("{:.3}", (i * c) as f64 * 0.01))
            .collect();
        let label = u8::from(i % 50 < 5);
        lines.push(format!(
            "2023-01-01T00:{:02}:{:02},{},{label}",
            i / 60,
            i % 60,
            values.join(",")
        ));
    }
    edit(&mut lines);
    ws.file("graphs/data/rows.csv", &(lines.join("\n") + "\n"));
    ws.package(
        "data",
        "[[dataset]]\nname = \"from_csv\"\ncsv = [\"rows.csv\"]\nwindow = 8\nstride = 4\n",
    );
}

#[test]
fn a_csv_file_becomes_a_dataset() {
    let ws = Ws::new();
    write_csv(&ws, 400, |_| {});
    ws.build_ok(&["//data:from_csv"]);
    let meta: Value = serde_json::from_str(&ws.read_output("data", "from_csv", "meta.json")).expect("meta");
    assert_eq!(meta["windows"], 99, "(400 - 8) / 4 + 1 windows: {meta}");
}

#[test]
fn malformed_csv_fails_at_its_file_line_and_column() {
    type Edit = fn(&mut Vec<String>);
    let cases: [(&str, Edit, &str); 3] = [
        (
            "bad number",
            |lines| lines[3] = lines[3].replacen(",0.020,", ",0.0x0,", 1),
            "rows.csv:4:3",
        ),
        (
            "missing column",
            |lines| lines[0] = lines[0].replace(",amud", ""),
            "rows.csv:1:",
        ),
        ("wrong column count", |lines| lines[10].push_str(",7"), "rows.csv:11:"),
    ];
    for (what, edit, location) in cases {
        let ws = Ws::new();
        write_csv(&ws, 100, edit);
        let b = ws.build(&["//data:from_csv"]);
        assert_eq!(b.run.code, 1, "{what}: {}", b.run.stderr);
        let at = b.run.stderr.find(location);
        assert!(at.is_some(), "{what}: no `{location}` in:\n{}", b.run.stderr);
        let named = Path::new("graphs/data/rows.csv");
        assert!(
            b.run.stderr.contains(&*named.to_string_lossy()),
            "{what}: the message names the user's file, not the store's copy:\n{}",
            b.run.stderr
        );
    }
}

#[test]
fn invalid_search_space_is_located_at_load_time() {
    let ws = Ws::new();
    ws.package(
        "spaces",
        r#"[[space]]
name = "cnn"
family = "cnn"
blocks = { min = 1, max = 9 }
conv = ["conv1d"]
filters = [8]
kernel = [3]
padding = [1]
pool = ["max"]
activation = ["relu"]
batchnorm = [false]
linear_layers = { min = 0, max = 1 }
linear_units = [16]
classes = 2
"#,
    );
    let b = ws.build(&["//spaces:cnn"]);
    assert_eq!(b.run.code, 2, "{}", b.run.stderr);
    assert!(b.run.stderr.contains("graphs/spaces/BUILD.toml:4:"), "{}", b.run.stderr);
    assert!(b.run.stderr.contains("blocks"), "{}", b.run.stderr);
}
