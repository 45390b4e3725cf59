//! The report of `target//max78002:anomaly_smoke` in a real browser:
//! headless Chromium loads `report.html` from disk (no network), and the
//! DOM it builds holds every plot, drawn, with its title, axis labels and
//! legend; its screenshot is kept as a test artifact.
//!
//! Needs `chromium` (scripts/test.sh installs it); without it the test says
//! so and passes, unless `KFLOW_REQUIRE_CHROMIUM` is set, as CI sets it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Ws;

/// Each plot: its figure id and texts its SVG must carry (title, axis
/// labels, a legend entry).
const PLOTS: [(&str, &[&str]); 9] = [
    (
        "training",
        &[
            "Training losses",
            "epochs trained",
            "loss (log scale",
            "validation solid",
            "rung boundary",
        ],
    ),
    (
        "status",
        &["Candidates by status", "batch of proposals", "candidates", "trained ("],
    ),
    (
        "pareto_latency",
        &[
            "accelerator latency",
            "(µs, log scale)",
            "validation F1",
            "Pareto front",
            "kept (deployed)",
        ],
    ),
    (
        "pareto_memory",
        &["weight memory", "(bytes, log scale)", "validation F1", "Pareto front"],
    ),
    (
        "latency",
        &[
            "Cortex-M core",
            "time per inference (µs",
            "CNN accelerator",
            "Cortex-M, C inference",
        ],
    ),
    (
        "quality",
        &["Test F1", "kept model", "test F1", "float (host", "on the board"],
    ),
    (
        "roc_1",
        &[
            "ROC curve",
            "false-positive rate",
            "true-positive rate",
            "float (AUC",
            "as deployed (AUC",
        ],
    ),
    (
        "layers_1",
        &[
            "each layer against the",
            "share of the device memory",
            "kernel memory",
            "bias memory",
            "data memory",
        ],
    ),
    (
        "resources_1",
        &[
            "kernel memory per processor",
            "processor",
            "9-byte columns",
            "available",
        ],
    ),
];

fn browser() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("KFLOW_REQUIRE_CHROMIUM").is_none(),
            "chromium is missing and KFLOW_REQUIRE_CHROMIUM is set"
        );
        println!("chromium is not installed: skipped");
    }
    found
}

fn headless(browser: &str, page: &Path, args: &[&str]) -> common::Run {
    let mut cmd = Command::new(browser);
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .args(args)
        .arg(format!("file://{}", page.display()));
    let run = common::run_with_timeout(&mut cmd, Duration::from_secs(180));
    assert_eq!(run.code, 0, "{browser} {args:?}:\n{}", run.stderr);
    run
}

#[test]
fn the_smoke_searchs_report_renders_every_plot_in_headless_chromium() {
    let Some(browser) = browser() else { return };
    if !common::qemu_tools_present() {
        return;
    }
    let ws = Ws::new();
    for package in ["datasets", "host", "spaces", "platforms", "max78002"] {
        ws.repository_package(package);
    }
    ws.build_ok(&["//max78002:anomaly_smoke"]);
    let page = ws.output("max78002", "anomaly_smoke", "report/report.html");

    let dom = headless(browser, &page, &["--dump-dom"]).stdout;
    assert!(dom.contains("target//max78002:anomaly_smoke"), "{dom}");
    for (id, texts) in PLOTS {
        let start = dom
            .find(&format!("<figure id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no figure `{id}` in the DOM"));
        let figure = &dom[start..start + dom[start..].find("</figure>").expect("a closed figure")];
        assert!(figure.contains("<svg"), "{id}: no SVG");
        let marks = ["<path", "<polyline", "<rect", "<circle", "<line"]
            .iter()
            .map(|m| figure.matches(m).count())
            .sum::<usize>();
        assert!(marks > 10, "{id}: only {marks} marks drawn");
        for text in texts {
            assert!(figure.contains(text), "{id}: no {text:?}");
        }
    }

    let shot = ws.root().join("report.png");
    headless(
        browser,
        &page,
        &["--window-size=1000,3400", &format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(png.len() > 50_000, "a nearly blank screenshot: {} bytes", png.len());
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    std::fs::write(&kept, &png).expect("keep the screenshot");
    println!("screenshot: {}", kept.display());
}
