//! The AutoML search (`[[automl]]`) end to end through the real `kflow`
//! binary, on a small dataset and spaces these tests write: rejections
//! before training, successive halving that never retrains an epoch,
//! reruns that replay what did not change, searches that share candidates
//! across platforms, and artifacts that do not depend on `--jobs`.

mod common;

use std::collections::BTreeSet;

use common::Ws;
use serde_json::Value;

const SPACES: &str = r#"
[[space]]
name = "forecast"
family = "forecaster"
blocks = { min = 0, max = 1 }
filters = [8, 16]
kernel = [2, 3, 5]
activation = ["relu"]
batchnorm = [false]
out_kernel = [1, 3]
predict = ["telemetry"]

[[space]]
name = "cnn"
family = "cnn"
blocks = { min = 1, max = 2 }
conv = ["conv1d", "conv2d"]
filters = [8, 16, 64]
kernel = [1, 3]
padding = [0, 1]
pool = ["none", "max"]
activation = ["relu"]
batchnorm = [false]
linear_layers = { min = 0, max = 1 }
linear_units = [16]
classes = 2
"#;

/// A CPU-only microcontroller.
const MCU: &str = r#"
[[platform]]
name = "mcu"
cpu = "cortex-m4f"
cpu_clock_mhz = 120
flash_kb = 1024
ram_kb = 128
"#;

/// Platforms as the repository declares them, with `weight_limit` as a
/// constraint of the MAX78002.
fn platforms(weight_limit: u64) -> String {
    format!(
        r#"
[[platform]]
name = "max78002"
accelerator = "max78002"
cpu = "cortex-m4f"
cpu_clock_mhz = 120
flash_kb = 2560
ram_kb = 64
constraints = ["weight_bytes <= {weight_limit}"]

[[platform]]
name = "max78000"
accelerator = "max78000"
cpu = "cortex-m4f"
cpu_clock_mhz = 100
flash_kb = 512
ram_kb = 128
"#
    )
}

/// A search of 10 candidates on `platform`, keeping `keep`.
fn search(name: &str, platform: &str, keep: usize) -> String {
    format!(
        r#"
[[automl]]
name = "{name}"
dataset = "//data:small"
platform = "//platforms:{platform}"
space = ["//spaces:forecast", "//spaces:cnn"]
strategy = {{ kind = "evolution", candidates = 10, batch = 5, population = 5, sample = 2, seed = 11 }}
budget = {{ kind = "successive_halving", min_epochs = 1, max_epochs = 4, eta = 2 }}
train = {{ lr = 0.002 }}
prune = {{ kind = "channels", amount = 0.25, epochs = 1 }}
constraints = ["macs <= 10_000"]
keep = {keep}
"#
    )
}

fn workspace(weight_limit: u64, keep: usize) -> Ws {
    let ws = Ws::new();
    ws.small_dataset(30_000, 5);
    ws.package("spaces", SPACES);
    ws.package("platforms", &platforms(weight_limit));
    ws.package(
        "s",
        &format!("{}{}", search("a2", "max78002", keep), search("a0", "max78000", keep)),
    );
    ws
}

fn json(ws: &Ws, target: &str, name: &str) -> Value {
    serde_json::from_str(&ws.read_output("s", target, name)).expect("JSON output")
}

/// Executed epoch actions of the searches, by id.
fn executed_epochs(report: &common::Report) -> BTreeSet<String> {
    report
        .ids("executed")
        .into_iter()
        .filter(|id| id.starts_with("target//s:") && id.ends_with("/epoch"))
        .collect()
}

/// Keys of every epoch action of a build.
fn epoch_keys(report: &common::Report) -> BTreeSet<String> {
    report
        .actions()
        .iter()
        .filter(|a| a["id"].as_str().is_some_and(|id| id.ends_with("/epoch")))
        .filter_map(|a| a["key"].as_str().map(str::to_owned))
        .collect()
}

/// A fixed model for a search to beat: evaluated on the simulated
/// accelerator and checked against the platform.
const FIXED: &str = r#"
[[evaluate]]
name = "eval"
model = ":cnn"
weights = ":train"
dataset = "//data:small"
quantized = ":q"
device = "max78002"

[[check]]
name = "check"
model = ":cnn"
platform = "//platforms:max78002"
"#;

#[test]
fn a_search_rejects_before_training_halves_in_rungs_and_deploys_what_it_keeps() {
    let ws = workspace(1_000_000, 2);
    ws.quantized_cnn("fixed", FIXED);
    ws.package(
        "s",
        &format!(
            "{}baseline = [\"//fixed:eval\", \"//fixed:check\"]\n",
            search("a2", "max78002", 2)
        ),
    );
    let report = ws.build_ok(&["//s:a2"]);
    let summary = json(&ws, "a2", "summary.json");
    let counts = &summary["counts"];
    let total: u64 = counts
        .as_object()
        .expect("counts")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(total, 10, "{summary}");
    let rejected =
        counts["rejected-too-big"].as_u64().unwrap_or(0) + counts["rejected-incompatible"].as_u64().unwrap_or(0);
    assert!(
        rejected > 0,
        "the MAC budget rejects some candidates before training: {summary}"
    );
    assert_eq!(counts["evaluated"], 2, "{summary}");

    // No rejected candidate trained.
    let candidates = json(&ws, "a2", "candidates.json");
    let candidates = candidates.as_array().expect("a list");
    for c in candidates {
        let status = c["status"].as_str().expect("status");
        if status.starts_with("rejected") {
            let name = c["candidate"].as_str().expect("name");
            assert_eq!(c["epochs"], 0, "{c}");
            assert!(
                c["reason"].as_str().is_some_and(|r| r.contains("before training")),
                "{c}"
            );
            assert!(
                report
                    .all_ids()
                    .iter()
                    .all(|id| !id.contains(&format!("[{name}]/rung-"))),
                "{name} was rejected but trained"
            );
        }
    }

    // Successive halving: the epochs executed are exactly the epochs the
    // rungs add, each once; a promoted candidate resumes from its cached
    // checkpoint.
    let epochs = executed_epochs(&report);
    let trained_epochs: u64 = candidates.iter().map(|c| c["epochs"].as_u64().expect("epochs")).sum();
    assert_eq!(epochs.len() as u64, trained_epochs, "{epochs:#?}");
    assert_eq!(summary["search"]["epochs"].as_u64(), Some(trained_epochs));
    let first_epochs = epochs.iter().filter(|id| id.contains("[epoch-1]")).count();
    let trained = candidates.iter().filter(|c| c["epochs"].as_u64() > Some(0)).count();
    assert_eq!(first_epochs, trained, "no candidate starts training twice");
    let rungs = summary["search"]["rungs"].as_array().expect("rungs");
    assert_eq!(rungs.len(), 3, "rungs of 1, 2 and 4 epochs: {summary}");
    let promoted = report
        .ids("cached")
        .into_iter()
        .filter(|id| id.contains("/rung-1/") && id.ends_with("[epoch-1]/epoch"))
        .count();
    assert!(promoted > 0, "rung 1 resumes from rung 0's epochs");

    // Each kept model has its deployment files.
    for k in [1, 2] {
        for file in [
            "network.yaml",
            "cnn_model.c",
            "cnn_model.bin",
            "model.onnx",
            "metrics.json",
            "zephyr/module.yml",
        ] {
            assert!(
                ws.output("s", "a2", &format!("kept/{k}/{file}")).is_file(),
                "kept/{k}/{file}"
            );
        }
    }
    let kept = summary["kept"].as_array().expect("kept");
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0]["dir"], "kept/1");
    for k in kept {
        assert!(k["f1"].as_f64().is_some() && k["f1_float"].as_f64().is_some(), "{k}");
        assert!(k["latency_us"].as_f64().is_some_and(|l| l > 0.0), "{k}");
    }
    assert!(summary["zscore"]["f1"].as_f64().is_some(), "{summary}");
    let fixed = &summary["baseline"];
    assert_eq!(
        fixed["targets"],
        serde_json::json!(["target//fixed:eval", "target//fixed:check"])
    );
    for field in ["f1", "f1_float", "val_f1", "latency_us", "weight_bytes"] {
        assert!(fixed[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {fixed}");
    }

    // The report: every plot drawn, inline in the page, the numbers beside.
    let html = std::fs::read_to_string(ws.output("s", "a2", "report/report.html")).expect("report.html");
    for plot in ["training", "status", "pareto_latency", "pareto_memory"] {
        let svg = std::fs::read_to_string(ws.output("s", "a2", &format!("report/{plot}.svg"))).expect(plot);
        assert!(svg.starts_with("<svg") && svg.contains("<text"), "{plot}");
        assert!(html.contains(svg.trim()), "{plot} is not in report.html");
    }
    assert!(
        html.contains("fixed baseline target//fixed:eval + target//fixed:check"),
        "the baseline on the Pareto plots"
    );
    let numbers = json(&ws, "a2", "report/report.json");
    assert_eq!(numbers["fixed"], *fixed);
    assert_eq!(numbers["stats"]["command"], "kflow build target//s:a2", "{numbers}");
    assert_eq!(
        numbers["training"].as_array().map(Vec::len),
        Some(candidates.iter().filter(|c| c["epochs"].as_u64() > Some(0)).count())
    );
    let path = ws.run(&["report", "path", "//s:a2"]);
    assert_eq!(path.code, 0, "{}", path.stderr);
    assert!(
        path.stdout.trim_end().ends_with("kflow-out/s/a2/report/report.html"),
        "{}",
        path.stdout
    );
    let none = ws.run(&["report", "path", "//platforms:max78002"]);
    assert!(none.code != 0 && none.stderr.contains("no report"), "{}", none.stderr);
    let built = ws.run(&["build", "//s:a2"]);
    assert!(
        built.stderr.contains("report: kflow-out/s/a2/report/report.html"),
        "{}",
        built.stderr
    );

    let again = ws.build_ok(&["//s:a2"]);
    assert_eq!(again.count("executed"), 0, "{:?}", again.ids("executed"));
}

#[test]
fn changing_keep_or_the_weight_limit_retrains_nothing_and_explain_says_why() {
    let ws = workspace(1_000_000, 2);
    let first = ws.build_ok(&["//s:a2"]);
    let trained = epoch_keys(&first);

    ws.package(
        "s",
        &format!("{}{}", search("a2", "max78002", 1), search("a0", "max78000", 1)),
    );
    let fewer = ws.build_ok(&["//s:a2"]);
    assert!(executed_epochs(&fewer).is_empty(), "{:?}", executed_epochs(&fewer));
    assert_eq!(
        fewer.ids("executed"),
        BTreeSet::from(["target//s:a2".to_owned(), "target//s:a2[report]/report".to_owned()])
    );
    let explain = ws.run(&["explain", "//s:a2"]);
    assert_eq!(explain.code, 0, "{}", explain.stderr);
    assert!(explain.stdout.contains("param `keep` 2 → 1"), "{}", explain.stdout);
    assert!(
        !ws.output("s", "a2", "kept/2/metrics.json").exists(),
        "the second slot is gone"
    );

    // A tighter weight limit on the platform: the checks run again, and
    // nothing trained before trains again.
    ws.package("platforms", &platforms(3_000));
    let tighter = ws.build_ok(&["//s:a2"]);
    let rechecked: Vec<String> = tighter
        .ids("executed")
        .into_iter()
        .chain(tighter.ids("rejected"))
        .filter(|id| id.ends_with("precheck/check"))
        .collect();
    assert!(!rechecked.is_empty(), "the pre-training checks see the new limit");
    let retrained: BTreeSet<String> = epoch_keys(&tighter)
        .intersection(&trained)
        .filter(|key| {
            tighter
                .actions()
                .iter()
                .any(|a| a["key"] == key.as_str() && a["status"] == "executed")
        })
        .cloned()
        .collect();
    assert!(retrained.is_empty(), "epochs trained again: {retrained:?}");
    let summary = json(&ws, "a2", "summary.json");
    assert!(
        summary["counts"]["rejected-too-big"].as_u64() > Some(0),
        "the limit rejects more: {summary}"
    );
    // Every action that ran has its reason.
    let explain = ws.run(&["explain", "//s:a2"]);
    let lines: Vec<&str> = explain.stdout.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("executed") {
            let reason = lines.get(i + 1).unwrap_or(&"");
            assert!(reason.starts_with("  "), "no reason for `{line}`:\n{}", explain.stdout);
        }
    }
    assert!(explain.stdout.contains("platform.json"), "{}", explain.stdout);
}

#[test]
fn a_second_platform_retrains_only_the_candidates_new_to_it() {
    let ws = workspace(1_000_000, 1);
    let first = ws.build_ok(&["//s:a2"]);
    let trained = epoch_keys(&first);
    let second = ws.build_ok(&["//s:a0"]);
    let shared = second
        .ids("cached")
        .into_iter()
        .filter(|id| id.ends_with("/train"))
        .count();
    assert!(shared > 0, "the candidates both platforms admit come from the cache");
    for a in second.actions() {
        let (Some(id), Some(key)) = (a["id"].as_str(), a["key"].as_str()) else {
            continue;
        };
        if id.ends_with("/epoch") && a["status"] == "executed" {
            assert!(!trained.contains(key), "{id} was trained for the MAX78002 already");
        }
    }
}

#[test]
fn two_cold_builds_of_the_smoke_search_at_any_jobs_give_identical_artifacts() {
    let digests = |jobs: &str| {
        let ws = Ws::new();
        for package in ["datasets", "host", "spaces", "platforms", "max78002"] {
            ws.repository_package(package);
        }
        let report = ws.build_ok(&["//max78002:anomaly_smoke", "--jobs", jobs]);
        report.output_digests()
    };
    let one = digests("1");
    assert_eq!(one, digests("2"));
    assert!(one.len() > 40, "{} actions", one.len());
}

#[test]
fn an_external_check_rejects_candidates_and_the_search_goes_on() {
    let ws = workspace(1_000_000, 1);
    // Rejects every forecaster: the model IR arrives as JSON on stdin.
    let check = "if grep -q forecaster; then echo no forecasters here >&2; exit 1; fi";
    let text = search("a2", "max78002", 1).replace("keep = 1", &format!("keep = 1\nchecks = ['{check}']"));
    ws.package("s", &text);
    let build = ws.build(&["//s:a2"]);
    assert_eq!(build.run.code, 0, "{}", build.run.stderr);
    let candidates = json(&ws, "a2", "candidates.json");
    let rejected: Vec<&Value> = candidates
        .as_array()
        .expect("list")
        .iter()
        .filter(|c| c["family"] == "forecaster")
        .collect();
    assert!(!rejected.is_empty(), "the search proposes forecasters: {candidates}");
    for c in rejected {
        assert_eq!(c["status"], "rejected-incompatible", "{c}");
        assert!(
            c["reason"].as_str().is_some_and(|r| r.contains("no forecasters here")),
            "{c}"
        );
    }
}

#[test]
fn a_bad_search_is_a_graph_error_at_its_attribute() {
    let ws = workspace(1_000_000, 1);
    ws.package("s", &search("a2", "max78002", 1).replace("eta = 2", "eta = 1"));
    let build = ws.build(&["//s:a2"]);
    assert_eq!(build.run.code, 2, "{}", build.run.stderr);
    assert!(
        build.run.stderr.contains("graphs/s/BUILD.toml:"),
        "{}",
        build.run.stderr
    );
    assert!(
        build.run.stderr.contains("`eta` must be at least 2"),
        "{}",
        build.run.stderr
    );

    ws.package(
        "s",
        &search("a2", "max78002", 1).replace("keep = 1", "keep = 1\nobjectives = [\"latency:min\"]"),
    );
    let build = ws.build(&["//s:a2"]);
    assert_eq!(build.run.code, 2, "{}", build.run.stderr);
    assert!(
        build.run.stderr.contains("did you mean `latency_us`"),
        "{}",
        build.run.stderr
    );

    ws.package(
        "s",
        &format!("{}baseline = \"//data:small\"\n", search("a2", "max78002", 1)),
    );
    let build = ws.build(&["//s:a2"]);
    assert_eq!(build.run.code, 2, "{}", build.run.stderr);
    assert!(
        build.run.stderr.contains("is neither an `[[evaluate]]`"),
        "{}",
        build.run.stderr
    );
}

#[test]
fn candidates_whose_training_diverges_are_recorded_as_crashed_and_the_build_succeeds() {
    let ws = workspace(1_000_000, 1);
    ws.package("s", &search("a2", "max78002", 1).replace("lr = 0.002", "lr = 1e30"));
    let build = ws.build(&["//s:a2"]);
    assert_eq!(build.run.code, 0, "{}", build.run.stderr);
    let summary = json(&ws, "a2", "summary.json");
    assert!(summary["counts"]["crashed"].as_u64() > Some(0), "{summary}");
    let candidates = json(&ws, "a2", "candidates.json");
    let crashed = candidates
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["status"] == "crashed")
        .expect("a crashed candidate");
    assert!(
        crashed["reason"].as_str().is_some_and(|r| r.contains("train")),
        "{crashed}"
    );
}

#[test]
fn cpu_only_and_host_searches_keep_models_evaluated_on_the_host() {
    let ws = workspace(1_000_000, 1);
    ws.package("cpu", MCU);
    let cpu = search("a2", "max78002", 1).replace("//platforms:max78002", "//cpu:mcu");
    let host = search("host", "max78002", 1)
        .replace("platform = \"//platforms:max78002\"\n", "")
        .replace("constraints = [\"macs <= 10_000\"]\n", "");
    ws.package("s", &format!("{cpu}{host}"));
    ws.build_ok(&["//s:a2", "//s:host"]);
    for target in ["a2", "host"] {
        let summary = json(&ws, target, "summary.json");
        let best = &summary["kept"][0];
        assert_eq!(best["f1"], best["f1_float"], "{summary}");
        assert!(ws.output("s", target, "kept/1/metrics.json").is_file());
        assert!(ws.output("s", target, "kept/1/model.onnx").is_file());
        assert!(
            !ws.output("s", target, "kept/1/network.yaml").exists(),
            "no accelerator, no YAML"
        );
    }
    assert!(
        ws.output("s", "a2", "kept/1/check.json").is_file(),
        "the MCU's memory fit"
    );
    let host = json(&ws, "host", "summary.json");
    assert_eq!(host["platform"], Value::Null);
    assert_eq!(
        host["counts"]["rejected-too-big"], 0,
        "nothing to fit on the host: {host}"
    );

    // Constraints need a platform to check them against.
    ws.package(
        "s",
        &search("host", "max78002", 1).replace("platform = \"//platforms:max78002\"\n", ""),
    );
    let build = ws.build(&["//s:host"]);
    assert_eq!(build.run.code, 2, "{}", build.run.stderr);
    assert!(build.run.stderr.contains("need a `platform`"), "{}", build.run.stderr);
}

/// Kept models as C inference on an emulated Cortex-M4 (kflow's firmware in
/// QEMU): a CPU-only platform's on its `device`, evaluated on every window;
/// an accelerator platform's also on `cpu_device`, for the speed-up.
#[test]
fn kept_models_run_as_c_inference_on_an_emulated_cortex_m4() {
    if !common::qemu_tools_present() {
        return;
    }
    let ws = workspace(1_000_000, 1);
    ws.package("cpu", MCU);
    let cpu = search("mcu", "max78002", 1).replace("//platforms:max78002", "//cpu:mcu");
    let accelerator = search("a2", "max78002", 1);
    ws.package(
        "s",
        &format!("{cpu}device = \"qemu://mps2-an386\"\n{accelerator}cpu_device = \"qemu://mps2-an386\"\n"),
    );
    ws.build_ok(&["//s:mcu", "//s:a2"]);

    let mcu = json(&ws, "mcu", "summary.json");
    let device = &mcu["kept"][0]["device"];
    assert_eq!(device["url"], "qemu://mps2-an386", "{mcu}");
    assert_eq!(device["matches_simulator"], true, "{mcu}");
    assert!(device["instructions"].as_f64() > Some(0.0), "{mcu}");
    assert!(device["f1"].as_f64().is_some(), "{mcu}");
    for file in [
        "model.c",
        "model.bin",
        "firmware.elf",
        "flash.json",
        "device_metrics.json",
    ] {
        assert!(ws.output("s", "mcu", &format!("kept/1/{file}")).is_file(), "{file}");
    }
    let metrics: Value = serde_json::from_str(&ws.read_output("s", "mcu", "kept/1/device_metrics.json")).expect("JSON");
    assert!(metrics["test_windows_compared"].as_u64() > Some(100), "{metrics}");

    let a2 = json(&ws, "a2", "summary.json");
    let software = &a2["kept"][0]["cpu"];
    assert_eq!(software["matches_simulator"], true, "{a2}");
    assert_eq!(software["windows_compared"], 128, "{a2}");
    assert!(software["accelerator_speedup"].as_f64() > Some(1.0), "{a2}");
    assert!(ws.output("s", "a2", "kept/1/cpu_metrics.json").is_file());

    let again = ws.build_ok(&["//s:mcu", "//s:a2"]);
    assert_eq!(again.count("executed"), 0, "{:?}", again.ids("executed"));
}

#[test]
fn a_grid_search_visits_every_network_of_a_small_space_once() {
    let ws = workspace(1_000_000, 1);
    ws.package(
        "g",
        r#"
[[space]]
name = "tiny"
family = "forecaster"
blocks = { min = 0, max = 1 }
filters = [8]
kernel = [2]
activation = ["relu"]
batchnorm = [false]
out_kernel = [2, 3]
predict = ["telemetry"]

[[automl]]
name = "grid"
dataset = "//data:small"
platform = "//platforms:max78002"
space = ":tiny"
strategy = { kind = "grid" }
budget = { kind = "epochs", epochs = 1 }
keep = 1
"#,
    );
    ws.build_ok(&["//g:grid"]);
    let candidates: Value = serde_json::from_str(&ws.read_output("g", "grid", "candidates.json")).expect("JSON");
    let genomes: BTreeSet<String> = candidates
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["genome"].to_string())
        .collect();
    // No block or one block, times two output kernels.
    assert_eq!(genomes.len(), 4, "{candidates}");
    assert_eq!(candidates.as_array().map(Vec::len), Some(4));
}
