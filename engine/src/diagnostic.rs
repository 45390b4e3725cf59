//! Errors in graph files: a message, where it is (file, byte span, line and
//! column), and what to do about it. The CLI renders these with a snippet of
//! the file; the library only records them.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// A place in a graph file.
#[derive(Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, absolute.
    pub path: PathBuf,
    /// The file as the user should see it (relative to the workspace).
    pub display: String,
    /// The file's text, so that a renderer can show the snippet as it was
    /// when the error was found.
    pub source: Arc<str>,
    pub span: Range<usize>,
}

impl Location {
    /// 1-based line and column (in characters) of the start of the span.
    pub fn line_col(&self) -> (usize, usize) {
        line_col(&self.source, self.span.start)
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.line_col();
        write!(f, "{}:{line}:{col}", self.display)
    }
}

/// A user-facing error about the graph: exit code 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    /// Boxed: diagnostics travel in `Result`s everywhere and should stay small.
    pub location: Option<Box<Location>>,
    /// Short text shown under the underlined span.
    pub label: Option<String>,
    pub help: Option<String>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            location: None,
            label: None,
            help: None,
            notes: Vec::new(),
        }
    }

    pub fn at(mut self, location: Option<Location>) -> Diagnostic {
        self.location = location.map(Box::new);
        self
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// Adds "did you mean `x`?" when one of `candidates` is close to `wrong`.
    pub fn suggest<'a>(self, wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Diagnostic {
        match nearest(wrong, candidates) {
            Some(best) => self.with_help(format!("did you mean `{best}`?")),
            None => self,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(loc) = &self.location {
            let (line, col) = loc.line_col();
            write!(f, "\n  --> {}:{line}:{col}", loc.display)?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        for note in &self.notes {
            write!(f, "\n  note: {note}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// 1-based line and character column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The candidate closest to `wrong` by edit distance, if it is close enough
/// to be a plausible typo.
pub fn nearest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(wrong, c), !c.starts_with(wrong), c))
        .filter(|(d, _, c)| *d <= (wrong.len().max(c.len()) / 3).max(1))
        .min()
        .map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // `=` after a two-byte character is the fourth character.
        assert_eq!(line_col(text, text.find("= 2").unwrap()), (2, 4));
    }

    #[test]
    fn nearest_suggests_close_names_only() {
        let keys = ["sparsity", "srcs", "outs", "cmd"];
        assert_eq!(nearest("sparsty", keys), Some("sparsity"));
        assert_eq!(nearest("src", keys), Some("srcs"));
        assert_eq!(nearest("completely_different", keys), None);
        // A one-letter name still gets a suggestion, preferring extensions.
        assert_eq!(nearest("y", ["x", "yy"]), Some("yy"));
    }
}
