//! `kflow explain`: for each action of the last build of a target, whether
//! it ran, and if so why, found by diffing its record against the previous
//! record of the same identity.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::Digest;
use crate::events::{ActionRecord, BuildHeader, list_builds, read_build};
use crate::label::Label;
use crate::rule::Status;

#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub build: BuildHeader,
    pub actions: Vec<ExplainedAction>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExplainedAction {
    pub id: String,
    pub rule: String,
    pub status: Status,
    pub duration_ms: u64,
    /// Why it ran (empty when it came from the cache).
    pub reasons: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no recorded build includes `{0}`; build it first")]
    NeverBuilt(String),
    #[error("cannot read build records: {0}")]
    Io(#[from] std::io::Error),
}

/// The target label an action identity belongs to: `cell//pkg:name`,
/// followed by nothing, `/action` or `[group]/child`.
pub fn target_of(id: &str) -> &str {
    let Some(colon) = id.find("//").and_then(|s| id[s..].find(':').map(|c| s + c)) else {
        return id;
    };
    let end = id[colon..].find(['/', '[']).map_or(id.len(), |e| colon + e);
    &id[..end]
}

/// Explains the last build that included `label`, restricted to actions of
/// targets in `scope` (the target and its dependencies).
pub fn explain(out_dir: &Path, label: &Label, scope: &BTreeSet<String>) -> Result<Explanation, ExplainError> {
    let wanted = label.to_string();
    let builds = list_builds(out_dir);
    let mut older = builds.iter().rev();
    let (header, current) = loop {
        let Some(path) = older.next() else {
            return Err(ExplainError::NeverBuilt(wanted));
        };
        let build = read_build(path)?;
        if build.actions.iter().any(|a| target_of(&a.id) == wanted)
            && let Some(header) = build.header
        {
            break (header, build.actions);
        }
    };
    let current: Vec<ActionRecord> = current
        .into_iter()
        .filter(|a| scope.contains(target_of(&a.id)))
        .collect();
    let by_id: HashMap<&str, &ActionRecord> = current.iter().map(|a| (&*a.id, a)).collect();

    // The previous record of each identity, searching back build by build
    // until every identity is found or the records run out. An abridged
    // record stands for the last full record with the same key.
    let mut previous: HashMap<Arc<str>, ActionRecord> = HashMap::new();
    let mut missing: HashMap<&str, Option<Digest>> = current.iter().map(|a| (&*a.id, None)).collect();
    for path in older {
        if missing.is_empty() {
            break;
        }
        for record in read_build(path)?.actions.into_iter().rev() {
            let Some(wanted_key) = missing.get(&*record.id).copied() else {
                continue;
            };
            if wanted_key.is_some_and(|k| record.key != Some(k)) {
                continue;
            }
            if record.abridged {
                missing.insert(current_id(&current, &record.id), record.key);
                previous.entry(record.id.clone()).or_insert(record);
            } else {
                missing.remove(&*record.id);
                let status = previous.get(&record.id).map(|p| p.status);
                let mut full = record;
                if let Some(status) = status {
                    full.status = status;
                }
                previous.insert(full.id.clone(), full);
            }
        }
    }
    let mut actions: Vec<ExplainedAction> = current
        .iter()
        .map(|a| ExplainedAction {
            id: a.id.to_string(),
            rule: a.rule.to_string(),
            status: a.status,
            duration_ms: a.duration_ms,
            reasons: reasons(a, previous.get(&a.id), &by_id),
        })
        .collect();
    actions.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Explanation { build: header, actions })
}

fn reasons(
    now: &ActionRecord,
    before: Option<&ActionRecord>,
    this_build: &HashMap<&str, &ActionRecord>,
) -> Vec<String> {
    if now.from_cache {
        return Vec::new();
    }
    if now.status == Status::Skipped {
        return vec![now.reason.clone().unwrap_or_else(|| "skipped".to_owned())];
    }
    if now.forced {
        return vec![format!("rule `{}` was asked to run again in this build", now.rule)];
    }
    let Some(before) = before else {
        return vec!["no earlier build of this action".to_owned()];
    };
    if before.abridged {
        return vec!["its earlier inputs are no longer recorded (older build records were pruned)".to_owned()];
    }
    let mut out = Vec::new();
    if before.rule != now.rule {
        out.push(format!("rule changed from `{}` to `{}`", before.rule, now.rule));
    } else if before.rule_version != now.rule_version {
        out.push(format!(
            "rule `{}` version changed from {} to {}",
            now.rule, before.rule_version, now.rule_version
        ));
    } else if before.rule_code.is_some() && before.rule_code != now.rule_code {
        out.push(format!(
            "the code of rule `{}` changed (its sources or a library it uses)",
            now.rule
        ));
    }
    diff_params("", &before.params.to_value(), &now.params.to_value(), &mut out);
    let names: BTreeSet<&Arc<str>> = before.inputs.names().chain(now.inputs.names()).collect();
    for name in names {
        match (before.inputs.get(name), now.inputs.get(name)) {
            (Some(_), None) => out.push(format!("input `{name}` was removed")),
            (None, Some(_)) => out.push(format!("input `{name}` was added")),
            (Some(a), Some(b)) if a != b => out.push(input_changed(name, now, this_build)),
            _ => {}
        }
    }
    if out.is_empty() {
        out.push(if before.key == now.key {
            match before.status {
                Status::Failed => "the earlier attempt failed, so no result was cached".to_owned(),
                _ => "cached result was missing (evicted, damaged, or the cache was changed)".to_owned(),
            }
        } else {
            "its key changed".to_owned()
        });
    }
    if now.status == Status::Failed
        && let Some(reason) = &now.reason
    {
        out.push(format!("failed: {}", reason.lines().next().unwrap_or_default()));
    }
    out
}

fn input_changed(name: &str, now: &ActionRecord, this_build: &HashMap<&str, &ActionRecord>) -> String {
    match now.producers.get(name) {
        Some(producer) => match this_build.get(&**producer).map(|p| p.status) {
            Some(Status::Executed) => format!("input `{name}` changed because `{producer}` reran"),
            _ => format!("input `{name}` changed (produced by `{producer}`)"),
        },
        None => format!("input `{name}` changed"),
    }
}

/// Appends one line per changed leaf, with dotted paths for nested params.
fn diff_params(path: &str, before: &serde_json::Value, now: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (before, now) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff_params(&join(key), x, y, out),
                    (Some(x), None) => out.push(format!("param `{}` {} was removed", join(key), brief(x))),
                    (None, Some(y)) => out.push(format!("param `{}` was added: {}", join(key), brief(y))),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => {
            let name = if path.is_empty() { "params" } else { path };
            out.push(format!("param `{name}` {} → {}", brief(a), brief(b)));
        }
        _ => {}
    }
}

/// A value as JSON, shortened for one line.
fn brief(v: &serde_json::Value) -> String {
    const MAX: usize = 60;
    let s = v.to_string();
    if s.chars().count() <= MAX {
        s
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

/// The identity as borrowed from the current build's records.
fn current_id<'a>(current: &'a [ActionRecord], id: &str) -> &'a str {
    current.iter().find(|a| &*a.id == id).map_or("", |a| &a.id)
}

/// Counts of statuses for a header line.
pub fn status_counts(actions: &[ExplainedAction]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for a in actions {
        *counts.entry(a.status.as_str()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn target_of_strips_action_and_child_suffixes() {
        assert_eq!(target_of("target//gen:t5"), "target//gen:t5");
        assert_eq!(target_of("target//a/b:t/compile"), "target//a/b:t");
        assert_eq!(
            target_of("target//max78002:anomaly[cand-17]/quantize"),
            "target//max78002:anomaly"
        );
    }

    #[test]
    fn param_diff_names_the_nested_path() {
        let mut out = Vec::new();
        diff_params(
            "",
            &json!({"prune": {"sparsity": 0.25}, "cmd": "a"}),
            &json!({"prune": {"sparsity": 0.3}, "cmd": "a"}),
            &mut out,
        );
        assert_eq!(out, vec!["param `prune.sparsity` 0.25 → 0.3"]);
    }

    #[test]
    fn a_new_code_fingerprint_is_named_as_the_reason() {
        let mut before = crate::events::record_for_tests("target//p:t");
        before.rule_code = Some("aaaa".into());
        let mut now = before.clone();
        now.key = Some(crate::Digest::of_bytes(b"other"));
        now.rule_code = Some("bbbb".into());
        assert_eq!(
            reasons(&now, Some(&before), &HashMap::new()),
            ["the code of rule `cmd` changed (its sources or a library it uses)"]
        );
    }

    #[test]
    fn long_values_are_shortened() {
        let long = json!("x".repeat(200));
        assert!(brief(&long).ends_with('…'));
    }
}
