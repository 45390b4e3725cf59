//! Action keys (SPEC.md §5):
//! `blake3("kflow-action/2" ‖ rule name ‖ rule version ‖ rule code ‖
//! canonical params ‖ for each input: name ‖ digest)`.
//!
//! Every variable-length field is length-prefixed so that no two different
//! actions can hash the same bytes; inputs are sorted by name.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::Digest;

const KEY_TAG: &[u8] = b"kflow-action/2";

/// An action's params as canonical JSON text, shared between the graph, the
/// jobs and the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params(Arc<str>);

impl Params {
    pub fn new(value: &serde_json::Value) -> Params {
        Params(Arc::from(canonical_json(value)))
    }

    /// Params that were canonical when stored.
    pub(crate) fn from_canonical(text: Arc<str>) -> Params {
        Params(text)
    }

    /// The canonical JSON text, as hashed into keys.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

/// Embedded as JSON in human-readable formats (build records), stored as a
/// string in binary ones (the saved graph).
impl Serialize for Params {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            RawValue::from_string(self.0.to_string())
                .map_err(serde::ser::Error::custom)?
                .serialize(s)
        } else {
            s.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Params, D::Error> {
        if d.is_human_readable() {
            Box::<RawValue>::deserialize(d).map(|raw| Params(Arc::from(raw.get())))
        } else {
            String::deserialize(d).map(|s| Params(Arc::from(s)))
        }
    }
}

/// Params as canonical JSON: object keys sorted, no whitespace, numbers as
/// integers when they are integers and otherwise in the shortest form that
/// reads back to the same f64 (ryu, via serde_json). Independent of
/// serde_json's `preserve_order` feature.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
    }
}

fn write_string(s: &str, out: &mut String) {
    // serde_json's string escaping is canonical (it escapes exactly the
    // characters JSON requires, the same way every time).
    out.push_str(&serde_json::Value::String(s.to_owned()).to_string());
}

/// The rule an action runs, as its key sees it.
#[derive(Clone, Copy, Debug)]
pub struct RuleId<'a> {
    pub name: &'a str,
    pub version: u32,
    /// `Rule::code`.
    pub code: &'a str,
}

impl<'a> RuleId<'a> {
    pub fn of(rule: &'a dyn crate::Rule) -> RuleId<'a> {
        RuleId {
            name: rule.name(),
            version: rule.version(),
            code: rule.code(),
        }
    }
}

/// The key of one action.
pub fn action_key<'a>(
    rule: RuleId<'_>,
    canonical_params: &str,
    inputs: impl IntoIterator<Item = (&'a str, &'a Digest)>,
) -> Digest {
    let mut h = blake3::Hasher::new();
    field(&mut h, KEY_TAG);
    field(&mut h, rule.name.as_bytes());
    h.update(&rule.version.to_le_bytes());
    field(&mut h, rule.code.as_bytes());
    field(&mut h, canonical_params.as_bytes());
    let mut inputs: Vec<_> = inputs.into_iter().collect();
    inputs.sort_by(|a, b| a.0.cmp(b.0));
    h.update(&(inputs.len() as u64).to_le_bytes());
    for (name, digest) in inputs {
        field(&mut h, name.as_bytes());
        h.update(digest.as_bytes());
    }
    Digest::from(h.finalize())
}

fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"d": [1.5, "x"], "c": null}});
        assert_eq!(canonical_json(&v), r#"{"a":{"c":null,"d":[1.5,"x"]},"b":1}"#);
    }

    #[test]
    fn canonical_json_distinguishes_int_and_float() {
        assert_ne!(canonical_json(&json!(1)), canonical_json(&json!(1.0)));
        assert_eq!(canonical_json(&json!(0.1)), "0.1");
    }

    fn rule(name: &str, version: u32) -> RuleId<'_> {
        RuleId {
            name,
            version,
            code: "",
        }
    }

    #[test]
    fn key_ignores_input_order() {
        let (a, b) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"));
        let k1 = action_key(rule("cmd", 1), "{}", [("x", &a), ("y", &b)]);
        let k2 = action_key(rule("cmd", 1), "{}", [("y", &b), ("x", &a)]);
        assert_eq!(k1, k2);
    }

    #[test]
    fn key_changes_with_each_part() {
        let a = Digest::of_bytes(b"a");
        let base = action_key(rule("cmd", 1), "{}", [("x", &a)]);
        assert_ne!(base, action_key(rule("cmd2", 1), "{}", [("x", &a)]));
        assert_ne!(base, action_key(rule("cmd", 2), "{}", [("x", &a)]));
        assert_ne!(base, action_key(rule("cmd", 1), "{\"a\":1}", [("x", &a)]));
        assert_ne!(base, action_key(rule("cmd", 1), "{}", [("z", &a)]));
        assert_ne!(base, action_key(rule("cmd", 1), "{}", [("x", &Digest::of_bytes(b"b"))]));
        assert_ne!(base, action_key(rule("cmd", 1), "{}", []));
        let code = RuleId {
            code: "c0de",
            ..rule("cmd", 1)
        };
        assert_ne!(base, action_key(code, "{}", [("x", &a)]));
    }

    #[test]
    fn params_round_trip_through_binary_and_json() {
        let p = Params::new(&json!({"z": [1, 2], "a": "x"}));
        assert_eq!(p.as_str(), r#"{"a":"x","z":[1,2]}"#);
        let bytes = postcard::to_stdvec(&p).unwrap();
        assert_eq!(postcard::from_bytes::<Params>(&bytes).unwrap(), p);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, p.as_str(), "embedded as JSON, not as a string");
        assert_eq!(serde_json::from_str::<Params>(&json).unwrap(), p);
    }

    #[test]
    fn fields_are_unambiguous() {
        // Without length prefixes, ("ab", "c") and ("a", "bc") would collide.
        assert_ne!(action_key(rule("ab", 1), "c", []), action_key(rule("a", 1), "bc", []));
    }
}
