//! The page: `report.html` (self-contained: the plots inline, CSS in the
//! head, no network access) and `report.md` (the plots as `.svg` files
//! beside it), from the same numbers.

use std::fmt::Write as _;

use crate::numbers::{KeptRow, Numbers};
use crate::plots::Plot;

const CSS: &str = "body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222;line-height:1.4}\
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}\
th{background:#f4f4f4}td.l,th.l{text-align:left}figure{margin:1.5em 0}figcaption{color:#555;font-size:.9em}\
.ratio{font-size:2.6em;font-weight:bold;color:#2c7a2c}code{background:#f4f4f4;padding:0 .2em}\
@media print{figure{page-break-inside:avoid}}";

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(ch),
        }
    }
    out
}

/// Rows of a confusion matrix, for both pages: (actual class, counts).
fn confusion_rows(c: &[[u64; 2]; 2]) -> [(&'static str, u64, u64); 2] {
    [("normal", c[0][0], c[0][1]), ("anomaly", c[1][0], c[1][1])]
}

const LAYER_HEADER: [&str; 8] = [
    "layer",
    "operator",
    "input C×H×W",
    "output C×H×W",
    "processors",
    "kernel columns",
    "weight bytes",
    "MACs",
];

fn layer_cells(l: &crate::data::LayerUse) -> [String; 8] {
    let shape = |s: [u32; 3]| format!("{}×{}×{}", s[0], s[1], s[2]);
    [
        l.name.clone(),
        l.op.clone(),
        shape(l.input),
        shape(l.output),
        l.processors.to_string(),
        l.kernel_columns.to_string(),
        l.weight_bytes.to_string(),
        l.macs.to_string(),
    ]
}

/// A table whose first two columns are labels (left-aligned).
fn table_html(h: &mut String, open: &str, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    h.push_str(open);
    h.push_str("<tr>");
    for head in header {
        let _ = write!(h, "<th>{head}</th>");
    }
    h.push_str("</tr>\n");
    for row in rows {
        h.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if i < 2 { " class=\"l\"" } else { "" };
            let _ = write!(h, "<td{class}>{}</td>", escape(cell));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
}

/// The same table in Markdown.
fn table_markdown(m: &mut String, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = write!(m, "| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(m, "| {} |", row.join(" | "));
    }
}

/// The plot `file`, inline, when it was drawn.
fn figure_html(h: &mut String, plots: &[Plot], file: &str) {
    if let Some(p) = plots.iter().find(|p| p.file == file) {
        let id = file.trim_end_matches(".svg");
        let _ = writeln!(
            h,
            "<figure id=\"{id}\">{}<figcaption>{}</figcaption></figure>",
            p.svg,
            escape(&p.title)
        );
    }
}

/// The plot `file`, by reference, when it was drawn.
fn figure_markdown(m: &mut String, plots: &[Plot], file: &str) {
    if let Some(p) = plots.iter().find(|p| p.file == file) {
        let _ = write!(m, "![{}]({})\n\n", p.title, p.file);
    }
}

fn kept_html(h: &mut String, slot: usize, k: &KeptRow, plots: &[Plot]) {
    let _ = writeln!(
        h,
        "<h2 id=\"kept-{slot}\">Kept model {slot}: {}</h2>",
        escape(&k.candidate)
    );
    for (title, matrix) in [
        ("float model", &k.confusion_float),
        ("as deployed", &k.confusion_target),
    ] {
        let Some(c) = matrix else { continue };
        let _ = writeln!(
            h,
            "<table class=\"confusion\"><caption>Test confusion matrix, {title}</caption>\
             <tr><th class=\"l\">actual \\ predicted</th><th>normal</th><th>anomaly</th></tr>"
        );
        for (actual, normal, anomaly) in confusion_rows(c) {
            let _ = writeln!(
                h,
                "<tr><th class=\"l\">{actual}</th><td>{normal}</td><td>{anomaly}</td></tr>"
            );
        }
        h.push_str("</table>\n");
    }
    figure_html(h, plots, &crate::roc_plot(slot));
    match &k.resources {
        Some(r) => {
            table_html(
                h,
                "<table class=\"architecture\"><caption>Architecture, as placed on the accelerator</caption>",
                &LAYER_HEADER,
                r.layers.iter().map(|l| layer_cells(l).to_vec()),
            );
            figure_html(h, plots, &crate::layers_plot(slot));
            figure_html(h, plots, &crate::resources_plot(slot));
        }
        None => h.push_str("<p>No placement on an accelerator was recorded for this model.</p>\n"),
    }
}

fn kept_markdown(m: &mut String, slot: usize, k: &KeptRow, plots: &[Plot]) {
    let _ = write!(m, "## Kept model {slot}: {}\n\n", k.candidate);
    for (title, matrix) in [
        ("float model", &k.confusion_float),
        ("as deployed", &k.confusion_target),
    ] {
        let Some(c) = matrix else { continue };
        let _ = write!(
            m,
            "Test confusion matrix, {title}:\n\n| actual \\ predicted | normal | anomaly |\n|---|---|---|\n"
        );
        for (actual, normal, anomaly) in confusion_rows(c) {
            let _ = writeln!(m, "| {actual} | {normal} | {anomaly} |");
        }
        m.push('\n');
    }
    figure_markdown(m, plots, &crate::roc_plot(slot));
    if let Some(r) = &k.resources {
        table_markdown(m, &LAYER_HEADER, r.layers.iter().map(|l| layer_cells(l).to_vec()));
        m.push('\n');
        figure_markdown(m, plots, &crate::layers_plot(slot));
        figure_markdown(m, plots, &crate::resources_plot(slot));
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The rows of the tables, as text cells: (header, cells per row).
fn stats_rows(n: &Numbers) -> Vec<(String, String)> {
    let s = &n.stats;
    let mut rows = vec![
        (
            "platform".to_owned(),
            n.platform.clone().unwrap_or_else(|| "host".into()),
        ),
        ("candidates".to_owned(), s.candidates.to_string()),
    ];
    rows.extend(s.counts.iter().map(|(k, v)| (format!("  {k}"), v.to_string())));
    rows.extend([
        ("training epochs, all candidates".to_owned(), s.epochs.to_string()),
        ("strategy".to_owned(), s.strategy.to_string()),
        ("budget".to_owned(), s.budget.to_string()),
        ("batch of proposals".to_owned(), s.batch.to_string()),
        ("seed".to_owned(), s.seed.to_string()),
        ("objectives".to_owned(), s.objectives.join(", ")),
    ]);
    rows
}

const KEPT_HEADER: [&str; 9] = [
    "model",
    "family",
    "float F1",
    "target F1",
    "on-board F1",
    "ROC AUC",
    "accelerator µs",
    "weights (B)",
    "Cortex-M µs",
];

/// The fixed baseline's row of the kept models' table.
fn fixed_cells(f: &crate::data::Fixed) -> [String; 9] {
    [
        format!("baseline {}", f.targets.join(" + ")),
        "fixed".to_owned(),
        num(f.f1_float, 3),
        num(f.f1, 3),
        num(None, 3),
        num(f.roc_auc, 3),
        num(f.latency_us, 2),
        num(f.weight_bytes, 0),
        num(None, 1),
    ]
}

/// The kept models' table: the kept models, best first, then the fixed
/// baseline.
fn kept_table(n: &Numbers) -> impl Iterator<Item = Vec<String>> + '_ {
    n.kept
        .iter()
        .map(|k| kept_cells(k).to_vec())
        .chain(n.fixed.iter().map(|f| fixed_cells(f).to_vec()))
}

fn kept_cells(k: &KeptRow) -> [String; 9] {
    [
        k.candidate.clone(),
        k.family.clone(),
        num(k.f1_float, 3),
        num(k.f1_target, 3),
        num(k.f1_board, 3),
        num(k.roc_auc, 3),
        num(k.latency_us, 2),
        num(k.weight_bytes, 0),
        num(k.cpu_us, 1),
    ]
}

const NOT_YET: &str = "Wall times and cache statistics are not in this report, so that two builds of one \
search give the same bytes: `kflow build` prints them, and `--build-report` records them.";

pub fn html(n: &Numbers, plots: &[Plot]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kflow report: {t}</title><style>{CSS}</style></head><body>\n\
         <h1>AutoML search: <code>{t}</code></h1>\n<p class=\"sub\">Reproduce: <code>{c}</code></p>\n",
        t = escape(&n.target),
        c = escape(&n.stats.command)
    );
    if let Some(best) = n.kept.iter().find(|k| k.speedup.is_some()) {
        let _ = writeln!(
            h,
            "<p>The CNN accelerator runs <b>{}</b> <span class=\"ratio\" id=\"speedup\">{:.0}×</span> faster than the same quantized model as C on the Cortex-M core without it.</p>",
            escape(&best.candidate),
            best.speedup.unwrap_or_default()
        );
    }
    h.push_str("<h2>Search</h2>\n<table id=\"stats\">\n");
    for (k, v) in stats_rows(n) {
        let _ = writeln!(
            h,
            "<tr><th class=\"l\">{}</th><td class=\"l\">{}</td></tr>",
            escape(&k),
            escape(&v)
        );
    }
    h.push_str("</table>\n");
    if let Some(missing) = &n.stats.missing {
        let _ = writeln!(h, "<p>{}</p>", escape(missing));
    }
    h.push_str("<h2>Kept models</h2>\n");
    table_html(&mut h, "<table id=\"kept\">", &KEPT_HEADER, kept_table(n));
    h.push_str("<h2>Plots</h2>\n");
    for file in &crate::FILES[3..] {
        figure_html(&mut h, plots, file);
    }
    for (i, k) in n.kept.iter().enumerate() {
        kept_html(&mut h, i + 1, k, plots);
    }
    h.push_str("<h2>Why candidates were rejected</h2>\n<table id=\"rejections\"><tr><th class=\"l\">reason</th><th>candidates</th></tr>\n");
    for r in &n.rejections {
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td></tr>",
            escape(&r.reason),
            r.candidates
        );
    }
    let _ = write!(h, "</table>\n<p>{NOT_YET}</p>\n</body></html>\n");
    h
}

pub fn markdown(n: &Numbers, plots: &[Plot]) -> String {
    let mut m = String::new();
    let _ = write!(
        m,
        "# AutoML search: `{}`\n\nReproduce: `{}`\n\n",
        n.target, n.stats.command
    );
    if let Some(best) = n.kept.iter().find(|k| k.speedup.is_some()) {
        let _ = write!(
            m,
            "The CNN accelerator runs {} **{:.0}×** faster than the same quantized model as C on the Cortex-M core without it.\n\n",
            best.candidate,
            best.speedup.unwrap_or_default()
        );
    }
    m.push_str("## Search\n\n| | |\n|---|---|\n");
    for (k, v) in stats_rows(n) {
        let _ = writeln!(m, "| {} | {} |", k.trim(), v.replace('|', "\\|"));
    }
    if let Some(missing) = &n.stats.missing {
        let _ = writeln!(m, "\n{missing}");
    }
    m.push_str("\n## Kept models\n\n");
    table_markdown(&mut m, &KEPT_HEADER, kept_table(n));
    m.push_str("\n## Plots\n\n");
    for file in &crate::FILES[3..] {
        figure_markdown(&mut m, plots, file);
    }
    for (i, k) in n.kept.iter().enumerate() {
        kept_markdown(&mut m, i + 1, k, plots);
    }
    m.push_str("## Why candidates were rejected\n\n| reason | candidates |\n|---|---|\n");
    for r in &n.rejections {
        let _ = writeln!(m, "| {} | {} |", r.reason.replace('|', "\\|"), r.candidates);
    }
    let _ = write!(m, "\n{NOT_YET}\n");
    m
}
