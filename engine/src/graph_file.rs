//! Parsing one `BUILD.toml`: one array of tables per rule kind, every table a
//! target with a `name`. Everything is checked against the rules' schemas
//! here, so a typo is reported with its file, line and column before any
//! planning happens.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use crate::attrs::{self, Attr, Attrs};
use crate::diagnostic::{Diagnostic, Location};
use crate::label::{self, PackageRef};
use crate::registry::RuleRegistry;

/// One declared target, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetDecl {
    pub name: String,
    pub kind: String,
    pub attrs: Attrs,
    /// The span of the target's `name` value, where target-level errors point.
    pub span: Range<usize>,
}

/// The parsed contents of one `BUILD.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub cell: String,
    pub package: String,
    pub path: PathBuf,
    pub display: String,
    pub source: Arc<str>,
    /// Sorted by name.
    pub targets: Vec<TargetDecl>,
}

impl Package {
    pub fn target(&self, name: &str) -> Option<&TargetDecl> {
        self.targets
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.targets[i])
    }

    pub fn location(&self, span: Range<usize>) -> Location {
        Location {
            path: self.path.clone(),
            display: self.display.clone(),
            source: self.source.clone(),
            span,
        }
    }
}

/// Where a package file lives, for messages and label resolution.
pub struct PackageFile<'a> {
    pub cell: &'a str,
    pub package: &'a str,
    pub path: PathBuf,
    pub display: String,
    pub default_cell: &'a str,
}

pub fn parse(file: PackageFile<'_>, text: &str, rules: &RuleRegistry) -> Result<Package, Diagnostic> {
    let source: Arc<str> = Arc::from(text);
    let at = |span: Range<usize>| {
        Some(Location {
            path: file.path.clone(),
            display: file.display.clone(),
            source: source.clone(),
            span,
        })
    };
    let doc = DeTable::parse(text).map_err(|e| {
        Diagnostic::new(format!(
            "invalid TOML in `{}`: {}",
            file.display,
            e.message().trim_end()
        ))
        .at(e.span().and_then(at))
    })?;
    let base = PackageRef {
        cell: file.cell,
        package: file.package,
    };
    let mut targets: Vec<TargetDecl> = Vec::new();
    for (kind, tables) in doc.get_ref().iter() {
        let kind_name = kind.get_ref().as_ref();
        let Some(rule) = rules.get(kind_name) else {
            return Err(Diagnostic::new(format!("unknown rule kind `{kind_name}`"))
                .at(at(kind.span()))
                .with_label("not a rule")
                .suggest(kind_name, rules.names())
                .with_note(format!("known rules: {}", rules.names().collect::<Vec<_>>().join(", "))));
        };
        let DeValue::Array(items) = tables.get_ref() else {
            return Err(Diagnostic::new(format!(
                "`{kind_name}` must be an array of tables, found {}",
                attrs::describe_value(tables.get_ref())
            ))
            .at(at(kind.span()))
            .with_help(format!("declare each target with a `[[{kind_name}]]` header")));
        };
        for item in items.iter() {
            let DeValue::Table(table) = item.get_ref() else {
                return Err(Diagnostic::new(format!("each `{kind_name}` entry must be a table"))
                    .at(at(item.span()))
                    .with_help(format!("declare each target with a `[[{kind_name}]]` header")));
            };
            let name_value = table.iter().find(|(k, _)| k.get_ref() == "name").map(|(_, v)| v);
            let Some(name_value) = name_value else {
                return Err(Diagnostic::new(format!("a `{kind_name}` target has no `name`"))
                    .at(at(item.span()))
                    .with_help("add `name = \"...\"` to the table"));
            };
            let name = name_value
                .get_ref()
                .as_str()
                .ok_or_else(|| Diagnostic::new("`name` must be a string").at(at(name_value.span())))?;
            label::check_name(name).map_err(|reason| {
                Diagnostic::new(format!("invalid target name `{name}`: {reason}")).at(at(name_value.span()))
            })?;
            let mut checked = Attrs::default();
            for (key, value) in table.iter() {
                let key_name = key.get_ref().as_ref();
                if key_name == "name" {
                    continue;
                }
                let Some(spec) = rule.attrs().iter().find(|s| s.name == key_name) else {
                    return Err(
                        Diagnostic::new(format!("unknown attribute `{key_name}` for rule `{kind_name}`"))
                            .at(at(key.span()))
                            .with_label("unknown attribute")
                            .suggest(key_name, rule.attrs().iter().map(|s| s.name))
                            .with_note(format!(
                                "`{kind_name}` accepts: name, {}",
                                rule.attrs().iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                            )),
                    );
                };
                let value_checked = attrs::check_value(spec, value, file.default_cell, base.clone()).map_err(|e| {
                    let d = Diagnostic::new(e.message).at(at(e.span));
                    match e.help {
                        Some(h) => d.with_help(h),
                        None => d,
                    }
                })?;
                checked.insert(
                    key_name.to_owned(),
                    Attr {
                        value: value_checked,
                        span: value.span(),
                    },
                );
            }
            if let Some(missing) = rule
                .attrs()
                .iter()
                .find(|s| s.required && checked.get(s.name).is_none())
            {
                return Err(Diagnostic::new(format!(
                    "target `{name}` ({kind_name}) lacks the required attribute `{}`",
                    missing.name
                ))
                .at(at(name_value.span()))
                .with_note(format!("`{}`: {}", missing.name, missing.doc)));
            }
            targets.push(TargetDecl {
                name: name.to_owned(),
                kind: kind_name.to_owned(),
                attrs: checked,
                span: name_value.span(),
            });
        }
    }
    targets.sort_by(|a, b| a.name.cmp(&b.name).then(a.span.start.cmp(&b.span.start)));
    if let Some(pair) = targets.windows(2).find(|w| w[0].name == w[1].name) {
        let (first, second) = (&pair[0], &pair[1]);
        let (line, _) = crate::diagnostic::line_col(text, first.span.start);
        return Err(Diagnostic::new(format!("duplicate target name `{}`", second.name))
            .at(at(second.span.clone()))
            .with_label("declared again here")
            .with_note(format!("first declared at {}:{line}", file.display)));
    }
    Ok(Package {
        cell: file.cell.to_owned(),
        package: file.package.to_owned(),
        path: file.path,
        display: file.display,
        source,
        targets,
    })
}
