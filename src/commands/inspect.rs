//! Commands that look at the graph or at past builds without building:
//! `explain`, `query`, `graph`, `targets`.

use std::collections::BTreeSet;
use std::path::Path;

use kflow_engine::action_graph::ActionGraph;
use kflow_engine::explain::{self, status_counts};
use kflow_engine::query;
use kflow_engine::{Diagnostic, Label, Pattern, Workspace};

use super::open_workspace;
use crate::Failure;
use crate::cli::{ExplainArgs, GraphArgs, GraphFormat, OutputFormat, QueryArgs, ReportCommand, TargetsArgs};

fn single_label(ws: &Workspace, cwd: &Path, text: &str) -> Result<Label, Failure> {
    match ws.parse_patterns(cwd, &[text.to_owned()])?.pop() {
        Some(Pattern::Target(label)) => {
            ws.resolve(&[Pattern::Target(label.clone())])?;
            Ok(label)
        }
        _ => Err(Diagnostic::new(format!("`{text}` is a pattern; name one target (`cell//pkg:name`)")).into()),
    }
}

/// `kflow report open|path TARGET`.
pub fn report(cwd: &Path, command: ReportCommand) -> Result<(), Failure> {
    let (args, open) = match command {
        ReportCommand::Open(args) => (args, true),
        ReportCommand::Path(args) => (args, false),
    };
    let ws = open_workspace(cwd)?;
    let label = single_label(&ws, cwd, &args.target)?;
    let page = ws.target_out_dir(&label)?.join("report").join("report.html");
    if !page.is_file() {
        return Err(Failure::Build(Some(format!(
            "no report at {}: `[[automl]]` targets write one when they are built (`kflow build {label}`)",
            page.display()
        ))));
    }
    crate::output::line(page.display());
    if open && let Err(e) = opener::open_browser(&page) {
        eprintln!("no browser opened ({e}); open the file above");
    }
    Ok(())
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Build(Some(e.to_string())))?;
    crate::output::line(text);
    Ok(())
}

pub fn explain(cwd: &Path, args: ExplainArgs) -> Result<(), Failure> {
    let ws = open_workspace(cwd)?;
    let label = single_label(&ws, cwd, &args.target)?;
    // The target and its dependencies as the graph is now; if the graph no
    // longer loads, the target alone.
    let scope: BTreeSet<String> = match ws.load(std::slice::from_ref(&label)) {
        Ok(graph) => graph.labels().map(Label::to_string).collect(),
        Err(_) => BTreeSet::from([label.to_string()]),
    };
    let explanation =
        explain::explain(&ws.out_dir(), &label, &scope).map_err(|e| Failure::Build(Some(e.to_string())))?;
    if args.output == OutputFormat::Json {
        return print_json(&explanation);
    }
    let counts = status_counts(&explanation.actions)
        .into_iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    crate::output::line(format_args!(
        "build {} of {}: {} actions ({counts})",
        explanation.build.build,
        explanation.build.targets.join(" "),
        explanation.actions.len()
    ));
    for action in &explanation.actions {
        crate::output::line(format_args!("{:<14} {}", action.status.as_str(), action.id));
        for reason in &action.reasons {
            crate::output::line(format_args!("{:<14}   {reason}", ""));
        }
    }
    Ok(())
}

pub fn query(cwd: &Path, args: QueryArgs) -> Result<(), Failure> {
    let ws = open_workspace(cwd)?;
    let expr = query::parse(&args.expr)?;
    let labels = query::evaluate(&ws, cwd, &expr)?;
    print_targets(&ws, &labels, args.output)
}

pub fn targets(cwd: &Path, args: TargetsArgs) -> Result<(), Failure> {
    let ws = open_workspace(cwd)?;
    let patterns = if args.patterns.is_empty() {
        ws.config()?
            .cells
            .keys()
            .map(|cell| Pattern::Recursive {
                cell: cell.clone(),
                package: String::new(),
            })
            .collect()
    } else {
        ws.parse_patterns(cwd, &args.patterns)?
    };
    let labels: BTreeSet<Label> = ws.resolve(&patterns)?.into_iter().collect();
    print_targets(&ws, &labels, args.output)
}

fn print_targets(ws: &Workspace, labels: &BTreeSet<Label>, output: OutputFormat) -> Result<(), Failure> {
    match output {
        OutputFormat::Json => print_json(&query::describe_targets(ws, labels)),
        OutputFormat::Text => {
            for label in labels {
                crate::output::line(label);
            }
            Ok(())
        }
    }
}

pub fn graph(cwd: &Path, args: GraphArgs) -> Result<(), Failure> {
    let ws = open_workspace(cwd)?;
    let patterns = ws.parse_patterns(cwd, &args.targets)?;
    let roots = ws.resolve(&patterns)?;
    let targets = ws.load(&roots)?;
    let actions = ActionGraph::build(ws.db(), &targets)?;
    match args.format {
        GraphFormat::Dot => {
            crate::output::line(actions.to_dot().trim_end());
            Ok(())
        }
        GraphFormat::Json => print_json(&actions.to_json()),
    }
}
