//! Rendering errors for people: graph diagnostics with a snippet of the
//! file, in the manner of rustc and cargo.

use std::io::{IsTerminal, Write};

use codespan_reporting::diagnostic::{Diagnostic as Report, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::termcolor::{Color, ColorChoice, ColorSpec, StandardStream, WriteColor};
use codespan_reporting::term::{self, Config};
use kflow_engine::Diagnostic;

use crate::cli::ColorMode;

pub fn color_choice(mode: ColorMode) -> ColorChoice {
    match mode {
        ColorMode::Always => ColorChoice::Always,
        ColorMode::Never => ColorChoice::Never,
        ColorMode::Auto if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() => {
            ColorChoice::Auto
        }
        ColorMode::Auto => ColorChoice::Never,
    }
}

/// Prints a graph diagnostic to stderr.
pub fn diagnostic(d: &Diagnostic, color: ColorMode) {
    let mut notes: Vec<String> = d.help.iter().map(|h| format!("help: {h}")).collect();
    notes.extend(d.notes.iter().cloned());
    let out = StandardStream::stderr(color_choice(color));
    let rendered = match &d.location {
        Some(loc) => {
            let file = SimpleFile::new(loc.display.clone(), loc.source.to_string());
            let span = clamp(loc.span.clone(), loc.source.len());
            let mut label = Label::primary((), span);
            if let Some(text) = &d.label {
                label = label.with_message(text.clone());
            }
            let report = Report::error()
                .with_message(&d.message)
                .with_labels(vec![label])
                .with_notes(notes);
            term::emit_to_write_style(&mut out.lock(), &Config::default(), &file, &report).is_ok()
        }
        None => {
            let report = Report::<()>::error().with_message(&d.message).with_notes(notes);
            let file = SimpleFile::new(String::new(), String::new());
            term::emit_to_write_style(&mut out.lock(), &Config::default(), &file, &report).is_ok()
        }
    };
    if !rendered {
        eprintln!("error: {d}");
    }
}

/// Prints a plain error line (`error: ...`) to stderr.
pub fn error(message: &str, color: ColorMode) {
    let out = StandardStream::stderr(color_choice(color));
    let mut lock = out.lock();
    let mut red = ColorSpec::new();
    red.set_bold(true).set_fg(Some(Color::Red));
    // Nothing sensible can be done if stderr itself fails.
    let _ = lock.set_color(&red);
    let _ = write!(lock, "error");
    let _ = lock.reset();
    let _ = writeln!(lock, ": {message}");
}

/// Spans that end past the file (an error at end of input) or are empty
/// still need something to underline.
fn clamp(span: std::ops::Range<usize>, len: usize) -> std::ops::Range<usize> {
    let start = span.start.min(len);
    let end = span.end.clamp(start, len);
    start..end
}
