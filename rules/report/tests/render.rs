//! The report of a real search's records (`anomaly_smoke`-sized, written
//! here so that the test needs no build): every file, every plot with its
//! title, axis labels and legend, and the same bytes twice.

use serde_json::json;

fn records() -> (Vec<u8>, Vec<u8>) {
    let log = |losses: &[(f64, f64)]| {
        losses
            .iter()
            .enumerate()
            .map(|(i, (t, v))| json!({"epoch": i + 1, "train_loss": t, "val_loss": v, "val_metric": v, "val_f1": 0.4, "samples": 100}))
            .collect::<Vec<_>>()
    };
    let candidates = json!([
        {"candidate": "cand-0", "index": 0, "family": "forecaster", "status": "evaluated",
         "resources": {"latency_us": 3.2, "weight_bytes": 6192.0}, "rung": 1, "epochs": 2,
         "best": {"epoch": 2, "train_loss": 0.0001, "val_loss": 0.0002, "val_metric": 0.0002, "val_f1": 0.49, "samples": 100},
         "log": log(&[(0.001, 0.002), (0.0001, 0.0002)])},
        {"candidate": "cand-1", "index": 1, "family": "cnn", "status": "trained",
         "resources": {"latency_us": 6.6, "weight_bytes": 6708.0}, "rung": 0, "epochs": 1,
         "best": {"epoch": 1, "train_loss": 0.12, "val_loss": 0.2, "val_metric": 0.0, "val_f1": 0.21, "samples": 100},
         "log": log(&[(0.12, 0.2)])},
        {"candidate": "cand-2", "index": 2, "family": "cnn", "status": "rejected-incompatible",
         "reason": "before training: layer 2 (mlp): flattened pixels: 272, limit 256 (C11 flatten); constraint `macs <= 150_000` does not hold",
         "resources": {"latency_us": 160.0, "weight_bytes": 418586.0}, "rung": null, "epochs": 0, "best": null, "log": []},
        {"candidate": "cand-3", "index": 3, "family": "cnn", "status": "rejected-too-big",
         "reason": "before training: constraint `macs <= 150_000` does not hold",
         "resources": {}, "rung": null, "epochs": 0, "best": null, "log": []}
    ]);
    let summary = json!({
        "platform": "max78002",
        "search": {"strategy": {"kind": "evolution"}, "seed": 1234, "candidates": 4, "batch": 2,
                   "budget": {"kind": "successive_halving", "min_epochs": 1, "max_epochs": 2, "eta": 2},
                   "rungs": [{"epochs": 1, "candidates": 2}, {"epochs": 2, "candidates": 1}], "epochs": 3},
        "counts": {"evaluated": 1, "trained": 1, "rejected-incompatible": 1, "rejected-too-big": 1},
        "objectives": ["f1:max"],
        "pareto_front": ["cand-0"],
        "zscore": {"f1": 0.06, "roc_auc": 0.37},
        "baseline": {"targets": ["//m:base_eval", "//m:base_check"], "f1": 0.449, "f1_float": 0.447,
                     "roc_auc": 0.84, "val_f1": 0.45, "latency_us": 21.0, "weight_bytes": 18824.0},
        "kept": [{"candidate": "cand-0", "family": "forecaster", "f1": 0.669, "f1_float": 0.704, "roc_auc": 0.81,
                  "val_f1": 0.49, "latency_us": 3.195, "weight_bytes": 6192.0,
                  "device": {"url": "sim://max78002", "f1": 0.669, "latency_us": 3.195, "matches_simulator": true},
                  "cpu": {"url": "qemu://mps2-an386", "latency_us": 1839.6, "instructions": 176605.0,
                          "accelerator_us": 3.195, "accelerator_speedup": 575.8}}]
    });
    (
        serde_json::to_vec(&summary).unwrap(),
        serde_json::to_vec(&candidates).unwrap(),
    )
}

/// The kept model's metrics and placement, as the `report` rule gives them.
fn details() -> Vec<kflow_report::KeptDetail> {
    let layer = |name: &str, columns: u32| kflow_report::LayerUse {
        name: name.to_owned(),
        op: "conv1d".to_owned(),
        input: [17, 16, 1],
        output: [48, 10, 1],
        processors: 17,
        kernel_columns: columns,
        weight_bytes: 5712,
        bias_bytes: 48,
        macs: 57120,
        data_bytes: 41000,
    };
    vec![kflow_report::KeptDetail {
        metrics: Some(json!({
            "quality": {"confusion": [[19920, 125], [396, 619]], "roc_auc": 0.849,
                        "roc": [[0.0, 0.0], [0.01, 0.6], [1.0, 1.0]]},
            "accelerator": {"quality": {"confusion": [[19927, 118], [445, 570]], "roc_auc": 0.807,
                                        "roc": [[0.0, 0.0], [0.02, 0.55], [1.0, 1.0]]}}
        })),
        resources: Some(kflow_report::ResourceUse {
            device: "MAX78002".to_owned(),
            kernel_columns: [vec![40; 17], vec![2; 31], vec![0; 16]].concat(),
            kernel_columns_limit: vec![2048; 64],
            bias_bytes: vec![48, 10, 0, 0],
            bias_bytes_limit: 2048,
            data_bytes_limit: 131072,
            layers: vec![layer("conv0", 38), layer("out", 2)],
        }),
    }]
}

fn file<'a>(report: &'a kflow_report::Report, name: &str) -> &'a str {
    let bytes = &report.files.iter().find(|(n, _)| *n == name).expect(name).1;
    std::str::from_utf8(bytes).unwrap()
}

#[test]
fn every_plot_has_its_title_axes_and_legend_and_the_page_holds_them() {
    let (summary, candidates) = records();
    let report = kflow_report::render("target//m:search", &summary, &candidates, &details()).unwrap();
    let names: Vec<String> = report.files.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, kflow_report::files(1));
    let expect = [
        (
            "training.svg",
            vec![
                "Training losses",
                "epochs trained",
                "loss (log scale",
                "forecaster (validation solid",
                "rung boundary",
            ],
        ),
        (
            "status.svg",
            vec![
                "Candidates by status",
                "batch of proposals",
                "candidates",
                "rejected-too-big (1)",
                "evaluated (1)",
            ],
        ),
        (
            "pareto_latency.svg",
            vec![
                "accelerator latency",
                "(µs, log scale)",
                "validation F1",
                "Pareto front",
                "kept (deployed)",
                "z-score detector",
                "fixed baseline //m:base_eval + //m:base_check",
            ],
        ),
        (
            "pareto_memory.svg",
            vec![
                "weight memory",
                "(bytes, log scale)",
                "Pareto front",
                "fixed baseline //m:base_eval",
            ],
        ),
        (
            "latency.svg",
            vec![
                "accelerator against the Cortex-M",
                "µs, log scale",
                "CNN accelerator",
                "Cortex-M, C inference",
                "576×",
                "cand-0",
            ],
        ),
        (
            "quality.svg",
            vec![
                "Test F1",
                "kept model",
                "test F1",
                "float (host",
                "quantized (simulated",
                "on the board",
            ],
        ),
        (
            "layers_1.svg",
            vec![
                "each layer against the memories of the MAX78002",
                "share of the device memory (%)",
                "kernel memory (of 2048 columns)",
                "bias memory (of 2048 bytes)",
                "data memory (of 131072 bytes)",
                "the limit (100%)",
                "conv0",
            ],
        ),
        (
            "roc_1.svg",
            vec![
                "ROC curve",
                "false-positive rate",
                "true-positive rate",
                "float (AUC 0.849)",
                "as deployed (AUC 0.807)",
                "chance",
            ],
        ),
        (
            "resources_1.svg",
            vec![
                "kernel memory per processor (MAX78002)",
                "processor",
                "9-byte columns",
                "available",
                "bias bytes per quadrant [48, 10, 0, 0] of 2048",
            ],
        ),
    ];
    let html = file(&report, "report.html");
    for (name, texts) in expect {
        let svg = file(&report, name);
        assert!(svg.starts_with("<svg"), "{name}");
        for text in texts {
            assert!(svg.contains(text), "{name} lacks {text:?}");
        }
        // Inline in the page, whole.
        assert!(html.contains(svg.trim()), "{name} is not in report.html");
        assert!(file(&report, "report.md").contains(&format!("]({name})")));
    }
    // The kept model: both confusion matrices and the layers as placed.
    for text in [
        "<td>19920</td><td>125</td>",
        "<td>445</td><td>570</td>",
        "<td class=\"l\">conv0</td>",
        "17×16×1",
        "<td class=\"l\">baseline //m:base_eval + //m:base_check</td><td class=\"l\">fixed</td><td>0.447</td><td>0.449</td>",
    ] {
        assert!(html.contains(text), "report.html lacks {text:?}");
    }
    assert!(html.contains("576×"), "the ratio, large");
    assert!(html.contains("kflow build target//m:search"));
    assert!(
        !html.contains("<link") && !html.contains("src=\"http"),
        "nothing fetched"
    );
    let numbers: serde_json::Value = serde_json::from_str(file(&report, "report.json")).unwrap();
    assert_eq!(
        numbers["rejections"][0]["reason"],
        "constraint `macs <= N` does not hold"
    );
    assert_eq!(numbers["rejections"][0]["candidates"], 2);
    assert_eq!(numbers["training"].as_array().map(Vec::len), Some(2));

    let again = kflow_report::render("target//m:search", &summary, &candidates, &details()).unwrap();
    assert!(again.files == report.files, "two renders differ");
    // Without the kept model's files: no placement plot, the rest as before.
    let bare = kflow_report::render("target//m:search", &summary, &candidates, &[]).unwrap();
    assert_eq!(bare.files.len(), kflow_report::FILES.len());
}

#[test]
fn unreadable_records_name_the_file() {
    let (summary, _) = records();
    let err = kflow_report::render("t", &summary, b"{", &[]).err().unwrap();
    assert!(err.to_string().contains("candidates.json"), "{err}");
}
