//! Every parser of what a user or a device can send, fed mutated inputs
//! (proptest on stable Rust): graph files, the model IR, ai8x network
//! YAML, safetensors (model weights, int8 weights, datasets, quantized
//! networks), CATS CSV, and `.npy` inputs through `kflow ai8x simulate`.
//! Each starts from a valid file and applies random edits (bit flips,
//! interesting bytes, insertions, deletions, truncation, spliced copies);
//! JSON inputs also get values swapped for extremes. Nothing may panic:
//! every input is parsed or refused with an error, and what parses is
//! used as its caller would use it.
//!
//! Cases per parser: `KFLOW_FUZZ_CASES` (default 256, what CI runs). A
//! long run: `KFLOW_FUZZ_CASES=100000 cargo test --release --test
//! fuzz_parsers`. A failure prints the smallest input proptest found.

mod common;

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("KFLOW_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// One edit of a byte string; positions wrap around its length.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Truncate(usize),
    /// Copies `len` bytes from one place over another (repeats structure).
    Splice(usize, usize, usize),
}

/// Bytes that mean something to the formats under test.
const INTERESTING: &[u8] = b"\0\xff\"'[]{}=,:;\n\r\t -09.eE#\\";

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![any::<u8>(), prop::sample::select(INTERESTING)];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, 1 << bit)),
        (any::<usize>(), byte.clone()).prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<usize>(), byte).prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Edit::Delete(at, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>(), 1usize..64).prop_map(|(from, to, n)| Edit::Splice(from, to, n)),
    ]
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match *e {
            Edit::Flip(i, bit) if !b.is_empty() => {
                let i = at(i, b.len());
                b[i] ^= bit;
            }
            Edit::Set(i, v) if !b.is_empty() => {
                let i = at(i, b.len());
                b[i] = v;
            }
            Edit::Insert(i, v) => {
                let i = at(i, b.len() + 1);
                b.insert(i, v);
            }
            Edit::Delete(i, n) if !b.is_empty() => {
                let i = at(i, b.len());
                b.drain(i..(i + n).min(b.len()));
            }
            Edit::Truncate(i) => b.truncate(at(i, b.len() + 1)),
            Edit::Splice(from, to, n) if !b.is_empty() => {
                let (from, to) = (at(from, b.len()), at(to, b.len()));
                let piece: Vec<u8> = b[from..(from + n).min(b.len())].to_vec();
                let end = (to + piece.len()).min(b.len());
                b.splice(to..end, piece);
            }
            _ => {}
        }
    }
    b
}

/// Mutated copies of `seeds`.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(seeds), prop::collection::vec(edit(), 0..8)).prop_map(|(seed, edits)| apply(&seed, &edits))
}

/// JSON documents with one value (chosen by `pick`) replaced by an extreme.
fn json_extremes(seed: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let extremes = prop::sample::select(vec![
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(u32::MAX),
        serde_json::json!(u64::MAX),
        serde_json::json!(i64::MIN),
        serde_json::json!(1e308),
        serde_json::json!(""),
        serde_json::json!([]),
        serde_json::json!({}),
        serde_json::Value::Null,
        serde_json::json!(1_000_000_000),
    ]);
    (any::<usize>(), extremes).prop_map(move |(pick, value)| {
        let mut doc: serde_json::Value = serde_json::from_str(seed).unwrap_or_default();
        let mut nodes = 0;
        let n = pick % count(&doc).max(1);
        replace_nth(&mut doc, n, &mut nodes, &value);
        serde_json::to_vec(&doc).unwrap_or_default()
    })
}

fn count(v: &serde_json::Value) -> usize {
    1 + match v {
        serde_json::Value::Array(a) => a.iter().map(count).sum(),
        serde_json::Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

fn replace_nth(v: &mut serde_json::Value, n: usize, seen: &mut usize, with: &serde_json::Value) {
    if *seen == n {
        *v = with.clone();
        *seen += 1;
        return;
    }
    *seen += 1;
    match v {
        serde_json::Value::Array(a) => a.iter_mut().for_each(|c| replace_nth(c, n, seen, with)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|c| replace_nth(c, n, seen, with)),
        _ => {}
    }
}

/// Runs `test` (true when the input was accepted) on `strategy`'s inputs,
/// and checks that both accepted and refused inputs came up: the edits
/// reach past the parser's first check, and not every input survives.
fn run(name: &str, strategy: impl Strategy<Value = Vec<u8>>, test: impl Fn(&[u8]) -> bool) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let (accepted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&strategy, |input| {
        let counter = if test(&input) { &accepted } else { &refused };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{name}: {e}");
    }
    let (accepted, refused) = (accepted.into_inner(), refused.into_inner());
    assert!(
        accepted > 0 && refused > 0,
        "{name}: {accepted} accepted, {refused} refused"
    );
}

fn repo(path: &str) -> Vec<u8> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

const IZER: &str = "rules/ai8x/tests/data/izer-reference";
const IZER_CASES: [&str; 3] = ["000-conv1d", "001-conv2d", "002-pool"];

#[test]
fn graph_files() {
    let seeds = ["max78002", "host", "datasets", "spaces", "platforms"]
        .iter()
        .map(|p| repo(&format!("graphs/{p}/BUILD.toml")))
        .collect();
    let rules = kflow_rules::registry();
    run("graph files", mutated(seeds), |bytes| {
        let file = kflow_engine::graph_file::PackageFile {
            cell: "target",
            package: "p",
            path: "graphs/p/BUILD.toml".into(),
            display: "graphs/p/BUILD.toml".into(),
            default_cell: "target",
        };
        kflow_engine::graph_file::parse(file, &String::from_utf8_lossy(bytes), &rules).is_ok()
    });
}

const MODEL: &str = include_str!("fuzz/model.json");

fn use_model(bytes: &[u8]) -> bool {
    match kflow_model::Model::from_json(bytes) {
        Ok(model) => {
            let _ = kflow_model::infer_shapes(&model);
            kflow_model::counts(&model).is_ok()
        }
        Err(_) => false,
    }
}

#[test]
fn model_ir() {
    run("model IR", mutated(vec![MODEL.as_bytes().to_vec()]), use_model);
    run("model IR values", json_extremes(MODEL), use_model);
}

#[test]
fn ai8x_network_yaml() {
    let seeds = IZER_CASES
        .iter()
        .map(|c| repo(&format!("{IZER}/{c}/network.yaml")))
        .collect();
    run("ai8x YAML", mutated(seeds), |bytes| {
        kflow_ai8x::yaml::parse_network(&String::from_utf8_lossy(bytes)).is_ok()
    });
}

#[test]
fn safetensors_readers() {
    let ai8x: Vec<Vec<u8>> = IZER_CASES
        .iter()
        .map(|c| repo(&format!("{IZER}/{c}/weights.safetensors")))
        .collect();
    run("ai8x int8 weights", mutated(ai8x), |bytes| {
        kflow_ai8x::weights::Weights::from_safetensors(bytes).is_ok()
    });
    let weights = include_bytes!("fuzz/weights.safetensors").to_vec();
    run("model weights", mutated(vec![weights]), |bytes| {
        kflow_model::Weights::from_safetensors(bytes).is_ok()
    });
    let split = kflow_data::Split {
        x: (0..2 * 17 * 16).map(|i| i as f32 / 7.0).collect(),
        y: vec![0, 1],
        shape: [2, 17, 16],
    };
    let split_bytes = split.to_safetensors().expect("a split");
    run("dataset split", mutated(vec![split_bytes]), |bytes| {
        kflow_data::Split::from_safetensors(bytes).is_ok()
    });
    let quant = include_bytes!("fuzz/quant.json").to_vec();
    let quantized = include_bytes!("fuzz/quantized.safetensors").to_vec();
    run("quantized network", mutated(vec![quantized.clone()]), |bytes| {
        kflow_quant::Quantized::from_files(&quant, bytes).is_ok()
    });
    run("quantized network record", mutated(vec![quant.clone()]), |bytes| {
        kflow_quant::Quantized::from_files(bytes, &quantized).is_ok()
    });
}

#[test]
fn cats_csv() {
    let mut csv = Vec::new();
    let rows = (0..6).map(|i| kflow_data::OwnedRow {
        timestamp: format!("2024-01-01T00:00:0{i}"),
        values: [i as f32 * 0.5; kflow_data::NUM_CHANNELS],
        label: i % 3 == 0,
    });
    kflow_data::write_rows(&mut csv, rows).expect("a CSV");
    run("CATS CSV", mutated(vec![csv]), |bytes| {
        kflow_data::read_rows_from(bytes, Path::new("fuzz.csv"), None, |_| Ok(())).is_ok()
    });
}

/// `.npy` inputs through the command line, which reads them with
/// ndarray-npy and checks their shape against the network: fewer cases, as
/// each is a process.
#[test]
fn npy_inputs_of_ai8x_simulate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join(IZER).join(IZER_CASES[0]);
    let seeds = vec![repo(&format!("{IZER}/{}/input.npy", IZER_CASES[0]))];
    let config = Config {
        cases: (cases() / 16).max(8),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&mutated(seeds), |bytes| {
        let input = dir.path().join("input.npy");
        std::fs::write(&input, &bytes).expect("write the input");
        let mut cmd = common::kflow_in(dir.path(), dir.path());
        cmd.args(["ai8x", "simulate", "--device", "max78002", "--network"])
            .arg(case.join("network.yaml"))
            .arg("--weights")
            .arg(case.join("weights.safetensors"))
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(dir.path().join("output.npy"));
        // `finished` fails on a panic.
        let run = common::run_with_timeout(&mut cmd, std::time::Duration::from_secs(60));
        prop_assert!(
            run.code == 0 || run.code == 1 || run.code == 2,
            "exit {}: {}",
            run.code,
            run.stderr
        );
        Ok(())
    });
    if let Err(e) = outcome {
        panic!(".npy inputs: {e}");
    }
}
