//! The report of an AutoML search, from what the `automl` rule records
//! (`summary.json`, `candidates.json`): plots as SVG (plotters), one
//! self-contained HTML page, the same as Markdown, and `report.json`, the
//! numbers behind every plot. A pure function of its inputs: the same
//! search gives the same bytes (no wall-clock times; those are in the
//! build report).
//!
//! - `data.rs`: the records as read;
//! - `numbers.rs`: what every plot and table shows, derived once;
//! - `plots.rs`: the SVG plots;
//! - `page.rs`: HTML and Markdown.

mod data;
mod numbers;
mod page;
mod plots;

use thiserror::Error;

pub use data::{Candidate, Fixed, KeptDetail, LayerUse, ResourceUse, Summary};
pub use numbers::Numbers;

/// The files of every report, plots included, whatever the search
/// recorded (a plot with nothing to show is drawn empty).
pub const FILES: [&str; 9] = [
    "report.html",
    "report.md",
    "report.json",
    "training.svg",
    "status.svg",
    "pareto_latency.svg",
    "pareto_memory.svg",
    "quality.svg",
    "latency.svg",
];

/// The per-model plot of the `slot`-th kept model (1-based): its use of
/// the accelerator's kernel memory.
pub fn resources_plot(slot: usize) -> String {
    format!("resources_{slot}.svg")
}

/// The per-model plot of the `slot`-th kept model's layers: each one's
/// share of the device's memories.
pub fn layers_plot(slot: usize) -> String {
    format!("layers_{slot}.svg")
}

/// The per-model plot of the `slot`-th kept model's test ROC curves.
pub fn roc_plot(slot: usize) -> String {
    format!("roc_{slot}.svg")
}

/// The files of the report of a search that keeps `keep` models.
pub fn files(keep: usize) -> Vec<String> {
    FILES
        .iter()
        .map(|f| (*f).to_owned())
        .chain((1..=keep).flat_map(|slot| [roc_plot(slot), resources_plot(slot), layers_plot(slot)]))
        .collect()
}

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("unreadable {file}: {message}")]
    Input { file: &'static str, message: String },
    #[error("plot {plot}: {message}")]
    Plot { plot: String, message: String },
}

/// The report's files, by name: [`files`] of the kept models it has.
pub struct Report {
    pub files: Vec<(String, Vec<u8>)>,
}

/// The report of the search `target`, from its `summary.json`,
/// `candidates.json` and what there is of each kept model, in rank order:
/// the files are [`files`]`(kept.len())`.
pub fn render(target: &str, summary: &[u8], candidates: &[u8], kept: &[KeptDetail]) -> Result<Report, ReportError> {
    let summary: Summary = serde_json::from_slice(summary).map_err(|e| ReportError::Input {
        file: "summary.json",
        message: e.to_string(),
    })?;
    let candidates: Vec<Candidate> = serde_json::from_slice(candidates).map_err(|e| ReportError::Input {
        file: "candidates.json",
        message: e.to_string(),
    })?;
    let numbers = Numbers::new(target, &summary, &candidates, kept);
    let plots = plots::all(&numbers)?;
    let json = serde_json::to_vec_pretty(&numbers).map_err(|e| ReportError::Input {
        file: "report.json",
        message: e.to_string(),
    })?;
    let mut written = vec![
        ("report.html".to_owned(), page::html(&numbers, &plots).into_bytes()),
        ("report.md".to_owned(), page::markdown(&numbers, &plots).into_bytes()),
        ("report.json".to_owned(), json),
    ];
    for name in files(kept.len()).into_iter().skip(3) {
        let svg = plots
            .iter()
            .find(|p| p.file == name)
            .map(|p| p.svg.clone().into_bytes())
            .unwrap_or_else(|| empty_svg(&name));
        written.push((name, svg));
    }
    Ok(Report { files: written })
}

/// A plot the search has nothing for (no Cortex-M runs: no latency plot).
fn empty_svg(name: &str) -> Vec<u8> {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"860\" height=\"60\"><text x=\"10\" y=\"30\" font-family=\"sans-serif\">{name}: nothing to plot in this search</text></svg>\n"
    )
    .into_bytes()
}
