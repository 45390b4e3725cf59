//! Standard output for results (query answers, explanations, JSON).
//! Progress and errors go to stderr.

use std::fmt::Display;
use std::io::Write;

/// Writes one line. When the reader has gone away (`kflow query ... | head`)
/// there is nobody left to tell, so kflow exits quietly, as Unix tools do.
pub fn line(text: impl Display) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}
