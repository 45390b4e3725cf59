//! Choosing the models to deploy: the Pareto front over the declared
//! objectives first (then the next front, and so on), each front ordered by
//! the first objective; then the models to keep spread over the families.

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

/// Reorders `order` so that its first `keep` hold the best of every family
/// in it, as far as `keep` allows: each missing family's best takes the
/// place of the last of the head whose family is there more than once.
/// Candidates of one family can all fail alike on the test split (classifiers
/// that learned only the kinds of anomaly in their few training segments, and
/// excel on validation segments of the same kinds), so what ships spans them.
pub fn spread_families<F: PartialEq>(order: &mut Vec<usize>, keep: usize, family: impl Fn(usize) -> F) {
    let head = keep.min(order.len());
    let mut k = head;
    while k < order.len() {
        let f = family(order[k]);
        if order[..head].iter().any(|&i| family(i) == f) {
            k += 1;
            continue;
        }
        let Some(spare) = (0..head)
            .rev()
            .find(|&p| order[..head].iter().filter(|&&i| family(i) == family(order[p])).count() > 1)
        else {
            break;
        };
        let moved = order.remove(k);
        let displaced = order.remove(spare);
        order.insert(head - 1, moved);
        order.insert(head, displaced);
        k += 1;
    }
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

    #[test]
    fn the_kept_span_the_families() {
        let families = ['c', 'c', 'c', 'f', 'c', 'f', 'a'];
        let mut order: Vec<usize> = (0..families.len()).collect();
        spread_families(&mut order, 3, |i| families[i]);
        // The best forecaster (3) and autoencoder (6) replace the last two
        // classifiers of the head, which come next in their order.
        assert_eq!(order, [0, 3, 6, 1, 2, 4, 5]);

        // Room for fewer families than there are: the best come first.
        let mut order: Vec<usize> = (0..families.len()).collect();
        spread_families(&mut order, 2, |i| families[i]);
        assert_eq!(order, [0, 3, 1, 2, 4, 5, 6]);

        // Already spread, or one family: unchanged.
        for families in [['f', 'c', 'a', 'c'], ['c'; 4]] {
            let mut order = vec![0, 1, 2, 3];
            spread_families(&mut order, 3, |i| families[i]);
            assert_eq!(order, [0, 1, 2, 3]);
        }
    }

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
