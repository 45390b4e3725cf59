//! Target attributes: the schema a rule declares, and the values a graph
//! file gives, checked against it. Label-valued attributes are resolved here,
//! so the engine knows every target's dependencies without asking the rule.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::DeValue;

use crate::label::{Label, PackageRef};

/// The type of one attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrType {
    String,
    Int,
    /// A number; integers are accepted and widened.
    Float,
    Bool,
    StringList,
    IntList,
    BoolList,
    /// A table of strings, e.g. environment variables.
    StringMap,
    Label,
    LabelList,
    /// A label, or a list of labels; always read as a list.
    Labels,
    /// A list whose entries are files of the package (`data/x.csv`) or labels
    /// of targets whose outputs are used (`:gen`, `//pkg:t`).
    Sources,
    /// Any table, passed to the rule as is.
    Table,
    /// Any value.
    Any,
}

impl AttrType {
    fn describe(self) -> &'static str {
        match self {
            AttrType::String => "a string",
            AttrType::Int => "an integer",
            AttrType::Float => "a number",
            AttrType::Bool => "a boolean",
            AttrType::StringList => "a list of strings",
            AttrType::IntList => "a list of integers",
            AttrType::BoolList => "a list of booleans",
            AttrType::StringMap => "a table of strings",
            AttrType::Label => "a label string",
            AttrType::LabelList => "a list of label strings",
            AttrType::Labels => "a label string or a list of them",
            AttrType::Sources => "a list of file paths and labels",
            AttrType::Table => "a table",
            AttrType::Any => "a value",
        }
    }
}

/// One attribute a rule accepts.
#[derive(Clone, Copy, Debug)]
pub struct AttrSpec {
    pub name: &'static str,
    pub ty: AttrType,
    pub required: bool,
    pub doc: &'static str,
}

impl AttrSpec {
    pub const fn required(name: &'static str, ty: AttrType, doc: &'static str) -> AttrSpec {
        AttrSpec {
            name,
            ty,
            required: true,
            doc,
        }
    }

    pub const fn optional(name: &'static str, ty: AttrType, doc: &'static str) -> AttrSpec {
        AttrSpec {
            name,
            ty,
            required: false,
            doc,
        }
    }
}

/// An entry of a `Sources` attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A file, relative to the package directory, normalized (`a/b.txt`).
    File(String),
    /// The outputs of another target.
    Target(Label),
}

/// A checked attribute value.
#[derive(Clone, Debug)]
pub enum AttrValue {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<AttrValue>),
    Table(BTreeMap<String, AttrValue>),
    Label(Label),
    Source(Source),
}

impl PartialEq for AttrValue {
    fn eq(&self, other: &AttrValue) -> bool {
        use AttrValue::*;
        match (self, other) {
            (String(a), String(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            // Bitwise, so that equality is total (salsa compares results).
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Bool(a), Bool(b)) => a == b,
            (List(a), List(b)) => a == b,
            (Table(a), Table(b)) => a == b,
            (Label(a), Label(b)) => a == b,
            (Source(a), Source(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for AttrValue {}

impl AttrValue {
    /// The value as JSON: labels and sources become their strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            AttrValue::String(s) => Value::String(s.clone()),
            AttrValue::Int(i) => Value::from(*i),
            AttrValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::List(items) => Value::Array(items.iter().map(AttrValue::to_json).collect()),
            AttrValue::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
            AttrValue::Label(l) => Value::String(l.to_string()),
            AttrValue::Source(Source::File(f)) => Value::String(f.clone()),
            AttrValue::Source(Source::Target(l)) => Value::String(l.to_string()),
        }
    }
}

/// A value with the byte span it came from in its graph file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub value: AttrValue,
    pub span: Range<usize>,
}

/// The checked attributes of one target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    map: BTreeMap<String, Attr>,
}

impl Attrs {
    pub fn get(&self, name: &str) -> Option<&AttrValue> {
        self.map.get(name).map(|a| &a.value)
    }

    pub fn span(&self, name: &str) -> Option<Range<usize>> {
        self.map.get(name).map(|a| a.span.clone())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Attr)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(AttrValue::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Some(AttrValue::Int(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn float(&self, name: &str) -> Option<f64> {
        match self.get(name) {
            Some(AttrValue::Float(f)) => Some(*f),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name) {
            Some(AttrValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// A `StringList` attribute; empty when absent.
    pub fn strings(&self, name: &str) -> Vec<&str> {
        self.list(name)
            .filter_map(|v| match v {
                AttrValue::String(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    /// A `StringMap` attribute; empty when absent.
    pub fn string_map(&self, name: &str) -> BTreeMap<&str, &str> {
        match self.get(name) {
            Some(AttrValue::Table(t)) => t
                .iter()
                .filter_map(|(k, v)| match v {
                    AttrValue::String(s) => Some((k.as_str(), s.as_str())),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    /// A `Sources` attribute; empty when absent.
    pub fn sources(&self, name: &str) -> Vec<&Source> {
        self.list(name)
            .filter_map(|v| match v {
                AttrValue::Source(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// A `Label` or `LabelList` attribute; empty when absent.
    pub fn labels(&self, name: &str) -> Vec<&Label> {
        match self.get(name) {
            Some(AttrValue::Label(l)) => vec![l],
            _ => self
                .list(name)
                .filter_map(|v| match v {
                    AttrValue::Label(l) => Some(l),
                    _ => None,
                })
                .collect(),
        }
    }

    /// Every target these attributes name, with the span naming it.
    pub fn deps(&self) -> Vec<(Label, Range<usize>)> {
        fn walk(v: &AttrValue, span: &Range<usize>, out: &mut Vec<(Label, Range<usize>)>) {
            match v {
                AttrValue::Label(l) | AttrValue::Source(Source::Target(l)) => out.push((l.clone(), span.clone())),
                AttrValue::List(items) => items.iter().for_each(|i| walk(i, span, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        for attr in self.map.values() {
            walk(&attr.value, &attr.span, &mut out);
        }
        out
    }

    /// All attributes as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.map.iter().map(|(k, a)| (k.clone(), a.value.to_json())).collect())
    }

    fn list(&self, name: &str) -> impl Iterator<Item = &AttrValue> {
        match self.get(name) {
            Some(AttrValue::List(items)) => items.iter(),
            _ => [].iter(),
        }
    }

    pub(crate) fn insert(&mut self, name: String, attr: Attr) {
        self.map.insert(name, attr);
    }
}

/// Why a value did not check, and where.
pub(crate) struct AttrError {
    pub message: String,
    pub span: Range<usize>,
    pub help: Option<String>,
}

/// Checks one value against its declared type, resolving labels relative to
/// `package`.
pub(crate) fn check_value(
    spec: &AttrSpec,
    value: &Spanned<DeValue<'_>>,
    default_cell: &str,
    package: PackageRef<'_>,
) -> Result<AttrValue, AttrError> {
    let span = value.span();
    let mismatch = || AttrError {
        message: format!(
            "attribute `{}` must be {}, found {}",
            spec.name,
            spec.ty.describe(),
            describe_value(value.get_ref())
        ),
        span: span.clone(),
        help: None,
    };
    let label = |v: &Spanned<DeValue<'_>>| -> Result<Label, AttrError> {
        let s = v.get_ref().as_str().ok_or_else(mismatch)?;
        Label::parse(s, default_cell, Some(package.clone())).map_err(|e| AttrError {
            message: e.to_string(),
            span: v.span(),
            help: None,
        })
    };
    let list = || match value.get_ref() {
        DeValue::Array(items) => Ok(items.iter()),
        _ => Err(mismatch()),
    };
    Ok(match spec.ty {
        AttrType::String => AttrValue::String(value.get_ref().as_str().ok_or_else(mismatch)?.to_owned()),
        AttrType::Int => match value.get_ref() {
            DeValue::Integer(i) => AttrValue::Int(parse_int(i.as_str(), i.radix()).ok_or_else(|| AttrError {
                message: format!("attribute `{}`: integer out of range", spec.name),
                span: span.clone(),
                help: None,
            })?),
            _ => return Err(mismatch()),
        },
        AttrType::Float => match value.get_ref() {
            DeValue::Integer(i) => AttrValue::Float(parse_int(i.as_str(), i.radix()).ok_or_else(mismatch)? as f64),
            DeValue::Float(f) => AttrValue::Float(finite_float(spec.name, f.as_str(), span.clone())?),
            _ => return Err(mismatch()),
        },
        AttrType::Bool => AttrValue::Bool(value.get_ref().as_bool().ok_or_else(mismatch)?),
        AttrType::StringList => AttrValue::List(
            list()?
                .map(|v| {
                    v.get_ref()
                        .as_str()
                        .map(|s| AttrValue::String(s.to_owned()))
                        .ok_or_else(mismatch)
                })
                .collect::<Result<_, _>>()?,
        ),
        AttrType::IntList => AttrValue::List(
            list()?
                .map(|v| match v.get_ref() {
                    DeValue::Integer(i) => parse_int(i.as_str(), i.radix())
                        .map(AttrValue::Int)
                        .ok_or_else(mismatch),
                    _ => Err(mismatch()),
                })
                .collect::<Result<_, _>>()?,
        ),
        AttrType::BoolList => AttrValue::List(
            list()?
                .map(|v| v.get_ref().as_bool().map(AttrValue::Bool).ok_or_else(mismatch))
                .collect::<Result<_, _>>()?,
        ),
        AttrType::StringMap => match value.get_ref() {
            DeValue::Table(t) => AttrValue::Table(
                t.iter()
                    .map(|(k, v)| {
                        let s = v.get_ref().as_str().ok_or_else(mismatch)?;
                        Ok((k.get_ref().to_string(), AttrValue::String(s.to_owned())))
                    })
                    .collect::<Result<_, AttrError>>()?,
            ),
            _ => return Err(mismatch()),
        },
        AttrType::Label => AttrValue::Label(label(value)?),
        AttrType::LabelList => AttrValue::List(
            list()?
                .map(|v| label(v).map(AttrValue::Label))
                .collect::<Result<_, _>>()?,
        ),
        AttrType::Labels if value.get_ref().as_str().is_some() => {
            AttrValue::List(vec![AttrValue::Label(label(value)?)])
        }
        AttrType::Labels => AttrValue::List(
            list()?
                .map(|v| label(v).map(AttrValue::Label))
                .collect::<Result<_, _>>()?,
        ),
        AttrType::Sources => AttrValue::List(
            list()?
                .map(|v| {
                    let s = v.get_ref().as_str().ok_or_else(mismatch)?;
                    if s.contains(':') {
                        label(v).map(|l| AttrValue::Source(Source::Target(l)))
                    } else {
                        source_file(s)
                            .map(|f| AttrValue::Source(Source::File(f)))
                            .map_err(|message| AttrError {
                                message,
                                span: v.span(),
                                help: Some("source files are paths relative to the package directory".to_owned()),
                            })
                    }
                })
                .collect::<Result<_, _>>()?,
        ),
        AttrType::Table => match value.get_ref() {
            DeValue::Table(_) => generic(spec.name, value)?,
            _ => return Err(mismatch()),
        },
        AttrType::Any => generic(spec.name, value)?,
    })
}

/// Normalizes a package-relative file path, refusing ones that leave the
/// package.
fn source_file(s: &str) -> Result<String, String> {
    relative_path(s).map_err(|why| format!("source `{s}` {why}"))
}

/// Normalizes a path that must stay inside a directory (a package's
/// sources, an action's outputs): `a/./b//c` is `a/b/c`; absolute paths,
/// `..` and paths naming nothing are refused with the reason.
pub fn relative_path(path: &str) -> Result<String, &'static str> {
    if path.starts_with('/') {
        return Err("is absolute");
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("leaves its directory (`..`)"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("names no file");
    }
    Ok(parts.join("/"))
}

/// A table or any-typed value as written; its floats must be finite.
fn generic(name: &str, v: &Spanned<DeValue<'_>>) -> Result<AttrValue, AttrError> {
    Ok(match v.get_ref() {
        DeValue::String(s) => AttrValue::String(s.to_string()),
        DeValue::Integer(i) => match parse_int(i.as_str(), i.radix()) {
            Some(n) => AttrValue::Int(n),
            None => AttrValue::String(i.as_str().to_owned()),
        },
        DeValue::Float(f) => AttrValue::Float(finite_float(name, f.as_str(), v.span())?),
        DeValue::Boolean(b) => AttrValue::Bool(*b),
        DeValue::Datetime(d) => AttrValue::String(d.to_string()),
        DeValue::Array(items) => AttrValue::List(items.iter().map(|i| generic(name, i)).collect::<Result<_, _>>()?),
        DeValue::Table(t) => AttrValue::Table(
            t.iter()
                .map(|(k, v)| Ok((k.get_ref().to_string(), generic(name, v)?)))
                .collect::<Result<_, AttrError>>()?,
        ),
    })
}

/// A float as written, refused when it is not finite: params are JSON,
/// which has no `nan` or `inf`, and a rule would silently see its default.
fn finite_float(name: &str, text: &str, span: std::ops::Range<usize>) -> Result<f64, AttrError> {
    parse_float(text).filter(|f| f.is_finite()).ok_or_else(|| AttrError {
        message: format!("attribute `{name}`: `{text}` is not a finite number"),
        span,
        help: None,
    })
}

fn parse_int(digits: &str, radix: u32) -> Option<i64> {
    i64::from_str_radix(&digits.replace('_', ""), radix).ok()
}

fn parse_float(text: &str) -> Option<f64> {
    let t = text.replace('_', "");
    match t.trim_start_matches('+') {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" | "-nan" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

pub(crate) fn describe_value(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_paths_are_normalized_and_confined() {
        assert_eq!(source_file("./a//b.txt").unwrap(), "a/b.txt");
        assert!(source_file("../x").is_err());
        assert!(source_file("/etc/passwd").is_err());
        assert!(source_file(".").is_err());
        assert!(source_file("").is_err());
        assert!(source_file("a/../../x").is_err());
    }

    #[test]
    fn floats_parse_toml_forms() {
        assert_eq!(parse_float("1_000.5"), Some(1000.5));
        assert_eq!(parse_float("+inf"), Some(f64::INFINITY));
        assert_eq!(parse_float("-inf"), Some(f64::NEG_INFINITY));
        assert!(parse_float("nan").unwrap().is_nan());
        assert_eq!(parse_float("6.626e-34"), Some(6.626e-34));
    }

    #[test]
    fn float_equality_is_total() {
        assert_eq!(AttrValue::Float(f64::NAN), AttrValue::Float(f64::NAN));
        assert_ne!(AttrValue::Float(0.0), AttrValue::Float(-0.0));
    }
}
