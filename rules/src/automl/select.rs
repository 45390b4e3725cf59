//! Choosing the models to deploy: the Pareto front over the declared
//! objectives first (then the next front, and so on), each front ordered by
//! the first objective.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// One objective, written `name:max` or `name:min`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    pub name: String,
    pub maximize: bool,
}

/// What an objective may name: validation F1 (from training), and the
/// resource report of the pre-training check.
pub const KNOWN: &[&str] = &[
    "f1",
    "val_loss",
    "latency_us",
    "weight_bytes",
    "bias_bytes",
    "total_bytes",
    "kernel_bytes",
    "flash_bytes",
    "arena_bytes",
    "ram_bytes",
    "params",
    "macs",
    "layers",
];

impl Objective {
    pub fn parse(text: &str) -> Result<Objective, String> {
        let (name, direction) = text
            .split_once(':')
            .ok_or_else(|| format!("objective `{text}` is `name:max` or `name:min`"))?;
        let maximize = match direction {
            "max" => true,
            "min" => false,
            other => return Err(format!("objective `{text}`: `{other}` is neither `max` nor `min`")),
        };
        if !KNOWN.contains(&name) {
            let nearest = KNOWN
                .iter()
                .min_by_key(|k| strsim::levenshtein(k, name))
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            return Err(format!(
                "objective `{text}`: unknown quantity `{name}` (one of {}){nearest}",
                KNOWN.join(", ")
            ));
        }
        Ok(Objective {
            name: name.to_owned(),
            maximize,
        })
    }

    /// `a` compared with `b` for this objective: `Greater` is better. A
    /// missing value is worse than any.
    fn compare(&self, a: Option<f64>, b: Option<f64>) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) if self.maximize => a.total_cmp(&b),
            (Some(a), Some(b)) => b.total_cmp(&a),
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => Ordering::Equal,
        }
    }
}

/// Whether `a` dominates `b`: at least as good in every objective, better
/// in one.
fn dominates(objectives: &[Objective], a: &[Option<f64>], b: &[Option<f64>]) -> bool {
    let mut better = false;
    for (k, o) in objectives.iter().enumerate() {
        match o.compare(a[k], b[k]) {
            Ordering::Less => return false,
            Ordering::Greater => better = true,
            Ordering::Equal => {}
        }
    }
    better
}

/// The indices of `values` (one row per candidate, one column per
/// objective) best first: front by front, each front by the first
/// objective, ties by index.
pub fn order(objectives: &[Objective], values: &[Vec<Option<f64>>]) -> Vec<usize> {
    let mut left: Vec<usize> = (0..values.len()).collect();
    let mut ordered = Vec::with_capacity(values.len());
    while !left.is_empty() {
        let (mut front, rest): (Vec<usize>, Vec<usize>) = left.iter().partition(|&&i| {
            !left
                .iter()
                .any(|&j| j != i && dominates(objectives, &values[j], &values[i]))
        });
        front.sort_by(|&a, &b| match objectives.first() {
            Some(o) => o.compare(values[b][0], values[a][0]).then(a.cmp(&b)),
            None => a.cmp(&b),
        });
        ordered.extend(front);
        left = rest;
    }
    ordered
}

/// The first front's members, for the record.
pub fn front(objectives: &[Objective], values: &[Vec<Option<f64>>]) -> Vec<usize> {
    (0..values.len())
        .filter(|&i| !(0..values.len()).any(|j| j != i && dominates(objectives, &values[j], &values[i])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objectives() -> Vec<Objective> {
        ["f1:max", "latency_us:min"]
            .iter()
            .map(|t| Objective::parse(t).unwrap())
            .collect()
    }

    #[test]
    fn fronts_come_first_then_the_first_objective() {
        // (f1, latency): 0 and 2 are on the front; 1 is dominated by 2; 3 by 0.
        let values = vec![
            vec![Some(0.8), Some(100.0)],
            vec![Some(0.5), Some(60.0)],
            vec![Some(0.6), Some(50.0)],
            vec![Some(0.7), Some(120.0)],
        ];
        assert_eq!(front(&objectives(), &values), [0, 2]);
        assert_eq!(order(&objectives(), &values), [0, 2, 3, 1]);
    }

    #[test]
    fn a_missing_value_is_worst() {
        let values = vec![vec![None, Some(10.0)], vec![Some(0.1), Some(10.0)]];
        assert_eq!(order(&objectives(), &values), [1, 0]);
    }

    #[test]
    fn objectives_are_checked() {
        assert!(Objective::parse("f1").unwrap_err().contains("name:max"));
        assert!(Objective::parse("f1:up").unwrap_err().contains("neither"));
        let e = Objective::parse("latency:min").unwrap_err();
        assert!(e.contains("did you mean `latency_us`"), "{e}");
    }
}
