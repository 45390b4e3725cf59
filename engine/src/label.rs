//! Labels (`cell//package/path:name`) and target patterns (`cell//pkg:`,
//! `cell//pkg/...`, `cell//...`), in the manner of Buck2.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The name of one target: `cell//package:name`. The package is a
/// `/`-separated path relative to the cell root, empty for the root package.
///
/// Held as one shared string with the positions of `//` and `:`, so that
/// cloning, hashing and comparing a label (done for every target of every
/// build) is one pointer copy or one string comparison.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label {
    text: Arc<str>,
    slashes: u32,
    colon: u32,
}

/// The package a label is written in: relative labels (`:name`, `//pkg:name`)
/// are resolved against it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PackageRef<'a> {
    pub cell: &'a str,
    pub package: &'a str,
}

/// A set of targets named on the command line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `cell//pkg:name`
    Target(Label),
    /// `cell//pkg:` — every target of one package.
    Package { cell: String, package: String },
    /// `cell//pkg/...` or `cell//...` — every target at or below a package.
    Recursive { cell: String, package: String },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid label `{input}`: {reason}")]
pub struct LabelError {
    pub input: String,
    pub reason: String,
}

impl Label {
    /// Builds a label from parts that are already known to be valid.
    pub fn new(cell: &str, package: &str, name: &str) -> Result<Label, LabelError> {
        let text = format!("{cell}//{package}:{name}");
        let fail = |reason: String| LabelError {
            input: text.clone(),
            reason,
        };
        check_cell(cell).map_err(fail)?;
        check_package(package).map_err(fail)?;
        check_name(name).map_err(fail)?;
        Ok(Label::from_checked(cell, package, name))
    }

    fn from_checked(cell: &str, package: &str, name: &str) -> Label {
        Label {
            text: Arc::from(format!("{cell}//{package}:{name}")),
            slashes: cell.len() as u32,
            colon: (cell.len() + 2 + package.len()) as u32,
        }
    }

    /// Parses a label written inside `base` (graph files) or on the command
    /// line with `base` as the current package. `base` is `None` when there
    /// is no current package; then `:name` is an error.
    pub fn parse(input: &str, default_cell: &str, base: Option<PackageRef>) -> Result<Label, LabelError> {
        let fail = |reason: &str| LabelError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input.is_empty() {
            return Err(fail("a label cannot be empty"));
        }
        if let Some(name) = input.strip_prefix(':') {
            let base = base.ok_or_else(|| fail("`:name` needs a current package; write `cell//package:name`"))?;
            check_name(name).map_err(|r| fail(&r))?;
            return Ok(Label::from_checked(base.cell, base.package, name));
        }
        let (cell, rest) =
            split_cell(input).ok_or_else(|| fail("expected `cell//package:name`, `//package:name` or `:name`"))?;
        let cell = match cell {
            "" => base.as_ref().map_or(default_cell, |b| b.cell),
            c => c,
        };
        check_cell(cell).map_err(|r| fail(&r))?;
        let (package, name) = rest
            .split_once(':')
            .ok_or_else(|| fail("missing `:name` after the package (a target pattern is not allowed here)"))?;
        check_package(package).map_err(|r| fail(&r))?;
        check_name(name).map_err(|r| fail(&r))?;
        Ok(Label::from_checked(cell, package, name))
    }

    pub fn cell(&self) -> &str {
        &self.text[..self.slashes as usize]
    }

    pub fn package(&self) -> &str {
        &self.text[self.slashes as usize + 2..self.colon as usize]
    }

    pub fn name(&self) -> &str {
        &self.text[self.colon as usize + 1..]
    }

    /// The whole label, `cell//package:name`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The whole label as a shared string, for maps keyed by label text.
    pub fn shared(&self) -> Arc<str> {
        self.text.clone()
    }

    pub fn package_ref(&self) -> PackageRef<'_> {
        PackageRef {
            cell: self.cell(),
            package: self.package(),
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TryFrom<String> for Label {
    type Error = LabelError;
    fn try_from(s: String) -> Result<Label, LabelError> {
        Label::from_shared(Arc::from(s))
    }
}

impl Label {
    /// Reads a label kflow stored itself (saved graphs hold thousands):
    /// only its shape is checked, and it is not copied.
    pub(crate) fn from_stored(text: Arc<str>) -> Option<Label> {
        let slashes = text.find("//")?;
        let colon = text[slashes + 2..].find(':')? + slashes + 2;
        Some(Label {
            slashes: slashes as u32,
            colon: colon as u32,
            text,
        })
    }

    /// Reads a label from any stored text: it must be absolute, and is
    /// checked like any other without being copied.
    pub fn from_shared(text: Arc<str>) -> Result<Label, LabelError> {
        let fail = |reason: String| LabelError {
            input: text.to_string(),
            reason,
        };
        let slashes = text
            .find("//")
            .filter(|&i| i > 0)
            .ok_or_else(|| fail("a stored label must be absolute (`cell//package:name`)".to_owned()))?;
        let colon = text[slashes + 2..]
            .find(':')
            .map(|i| i + slashes + 2)
            .ok_or_else(|| fail("missing `:name`".to_owned()))?;
        check_cell(&text[..slashes]).map_err(fail)?;
        check_package(&text[slashes + 2..colon]).map_err(fail)?;
        check_name(&text[colon + 1..]).map_err(fail)?;
        Ok(Label {
            slashes: slashes as u32,
            colon: colon as u32,
            text,
        })
    }
}

impl From<Label> for String {
    fn from(l: Label) -> String {
        l.to_string()
    }
}

impl Pattern {
    /// Parses a command-line pattern. `base` is the package of the current
    /// directory, if any.
    pub fn parse(input: &str, default_cell: &str, base: Option<PackageRef>) -> Result<Pattern, LabelError> {
        let fail = |reason: &str| LabelError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input.starts_with(':') {
            return Label::parse(input, default_cell, base).map(Pattern::Target);
        }
        let (cell, rest) = split_cell(input).ok_or_else(|| {
            fail("expected a label or a pattern such as `cell//pkg:`, `cell//pkg/...` or `cell//...`")
        })?;
        let cell = match cell {
            "" => base.as_ref().map_or(default_cell, |b| b.cell).to_owned(),
            c => c.to_owned(),
        };
        check_cell(&cell).map_err(|r| fail(&r))?;
        if rest == "..." {
            return Ok(Pattern::Recursive {
                cell,
                package: String::new(),
            });
        }
        if let Some(package) = rest.strip_suffix("/...") {
            check_package(package).map_err(|r| fail(&r))?;
            return Ok(Pattern::Recursive {
                cell,
                package: package.to_owned(),
            });
        }
        match rest.split_once(':') {
            Some((package, "")) => {
                check_package(package).map_err(|r| fail(&r))?;
                Ok(Pattern::Package {
                    cell,
                    package: package.to_owned(),
                })
            }
            Some(_) => Label::parse(input, default_cell, base).map(Pattern::Target),
            None => Err(fail(
                "missing `:name`, `:` (all targets of the package) or `/...` (recursive)",
            )),
        }
    }

    pub fn cell(&self) -> &str {
        match self {
            Pattern::Target(l) => l.cell(),
            Pattern::Package { cell, .. } | Pattern::Recursive { cell, .. } => cell,
        }
    }

    /// Whether the package `package` (of this pattern's cell) holds targets
    /// this pattern names.
    pub fn covers_package(&self, package: &str) -> bool {
        match self {
            Pattern::Target(l) => l.package() == package,
            Pattern::Package { package: p, .. } => p == package,
            Pattern::Recursive { package: p, .. } => {
                p.is_empty()
                    || package == p
                    || package
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }

    pub fn matches(&self, label: &Label) -> bool {
        match self {
            Pattern::Target(l) => l == label,
            _ => label.cell() == self.cell() && self.covers_package(label.package()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Target(l) => l.fmt(f),
            Pattern::Package { cell, package } => write!(f, "{cell}//{package}:"),
            Pattern::Recursive { cell, package } if package.is_empty() => write!(f, "{cell}//..."),
            Pattern::Recursive { cell, package } => write!(f, "{cell}//{package}/..."),
        }
    }
}

fn split_cell(input: &str) -> Option<(&str, &str)> {
    input.split_once("//")
}

fn check_cell(cell: &str) -> Result<(), String> {
    if cell.is_empty() {
        return Err("the cell name is empty".to_owned());
    }
    match cell
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some(c) => Err(format!("character `{c}` is not allowed in a cell name")),
        None => Ok(()),
    }
}

fn check_package(package: &str) -> Result<(), String> {
    if package.is_empty() {
        return Ok(());
    }
    if package.starts_with('/') || package.ends_with('/') {
        return Err("a package path cannot start or end with `/`".to_owned());
    }
    for segment in package.split('/') {
        match segment {
            "" => return Err("a package path cannot contain `//`".to_owned()),
            "." | ".." => return Err(format!("`{segment}` is not allowed in a package path")),
            "..." => return Err("`...` is only allowed at the end of a pattern".to_owned()),
            _ => {}
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+')))
        {
            return Err(format!("character `{c}` is not allowed in a package path"));
        }
    }
    Ok(())
}

/// Target names become directory names under `kflow-out/`, so they are kept
/// to a portable alphabet and cannot be hidden or relative names.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the target name is empty".to_owned());
    }
    if name.starts_with('.') {
        return Err("a target name cannot start with `.`".to_owned());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | '=' | ',' | '@' | '~')))
    {
        Some(c) => Err(format!("character `{c}` is not allowed in a target name")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Option<PackageRef<'static>> {
        Some(PackageRef {
            cell: "target",
            package: "max78002",
        })
    }

    #[test]
    fn absolute_label_round_trips() {
        let l = Label::parse("target//max78002:anomaly", "other", None).unwrap();
        assert_eq!((l.cell(), l.package(), l.name()), ("target", "max78002", "anomaly"));
        assert_eq!(l.to_string(), "target//max78002:anomaly");
    }

    #[test]
    fn cell_relative_label_takes_the_current_cell() {
        let l = Label::parse("//datasets:cats", "default", base()).unwrap();
        assert_eq!(l.to_string(), "target//datasets:cats");
        let l = Label::parse("//datasets:cats", "default", None).unwrap();
        assert_eq!(l.to_string(), "default//datasets:cats");
    }

    #[test]
    fn package_relative_label_takes_the_current_package() {
        let l = Label::parse(":baseline", "x", base()).unwrap();
        assert_eq!(l.to_string(), "target//max78002:baseline");
    }

    #[test]
    fn root_package_label_is_valid() {
        let l = Label::parse("target//:all", "x", None).unwrap();
        assert_eq!(l.package(), "");
        assert_eq!(l.to_string(), "target//:all");
    }

    #[test]
    fn nested_package_label_is_valid() {
        let l = Label::parse("target//a/b-c/d_e:t.1", "x", None).unwrap();
        assert_eq!(l.package(), "a/b-c/d_e");
    }

    #[test]
    fn malformed_labels_are_rejected() {
        for bad in [
            "",
            "target",
            "target//pkg",
            "target//pkg:",
            ":",
            "target//pkg:a:b",
            "target//../pkg:a",
            "target//pkg/./x:a",
            "target//pkg//x:a",
            "target///pkg:a",
            "target//pkg/:a",
            "tar get//pkg:a",
            "target//pk g:a",
            "target//pkg:.hidden",
            "target//pkg:a/b",
            "target//pkg/...:a",
        ] {
            assert!(Label::parse(bad, "target", base()).is_err(), "accepted `{bad}`");
        }
    }

    #[test]
    fn colon_label_without_current_package_is_rejected() {
        let err = Label::parse(":x", "target", None).unwrap_err();
        assert!(err.reason.contains("current package"), "{err}");
    }

    #[test]
    fn patterns_parse_each_form() {
        let p = |s| Pattern::parse(s, "target", None).unwrap();
        assert_eq!(
            p("target//a:b"),
            Pattern::Target(Label::parse("target//a:b", "t", None).unwrap())
        );
        assert_eq!(
            p("target//a/b:"),
            Pattern::Package {
                cell: "target".into(),
                package: "a/b".into()
            }
        );
        assert_eq!(
            p("target//a/..."),
            Pattern::Recursive {
                cell: "target".into(),
                package: "a".into()
            }
        );
        assert_eq!(
            p("//..."),
            Pattern::Recursive {
                cell: "target".into(),
                package: "".into()
            }
        );
        assert_eq!(p("target//a/...").to_string(), "target//a/...");
        assert_eq!(p("target//...").to_string(), "target//...");
        assert_eq!(p("target//a:").to_string(), "target//a:");
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        for bad in [
            "target",
            "target//a",
            "target//a/..../",
            "target//.../a",
            "target//a/...:x",
            "x y//...",
        ] {
            assert!(Pattern::parse(bad, "target", None).is_err(), "accepted `{bad}`");
        }
    }

    #[test]
    fn recursive_pattern_matches_subpackages_only_on_segment_boundaries() {
        let p = Pattern::parse("target//max/...", "target", None).unwrap();
        assert!(p.covers_package("max"));
        assert!(p.covers_package("max/sub"));
        assert!(!p.covers_package("max78002"));
        assert!(!p.covers_package(""));
        let all = Pattern::parse("target//...", "target", None).unwrap();
        assert!(all.covers_package(""));
        assert!(all.covers_package("a/b"));
    }

    #[test]
    fn pattern_matches_only_its_cell() {
        let p = Pattern::parse("target//...", "target", None).unwrap();
        assert!(p.matches(&Label::parse("target//a:b", "t", None).unwrap()));
        assert!(!p.matches(&Label::parse("other//a:b", "t", None).unwrap()));
    }

    #[test]
    fn label_serializes_as_string() {
        let l = Label::parse("target//a:b", "t", None).unwrap();
        assert_eq!(serde_json::to_string(&l).unwrap(), "\"target//a:b\"");
        let back: Label = serde_json::from_str("\"target//a:b\"").unwrap();
        assert_eq!(back, l);
        assert!(serde_json::from_str::<Label>("\":b\"").is_err());
    }
}
