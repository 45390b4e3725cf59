//! Training budgets: a fixed number of epochs, or successive halving
//! (Jamieson & Talwalkar 2016; the rungs of Hyperband): every admitted
//! candidate trains `min_epochs`, the best `1/eta` of them continue to
//! `min_epochs·eta`, and so on up to `max_epochs`. A candidate that
//! continues resumes from its checkpoint: the epochs it already has are the
//! same cached actions.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Budget {
    Epochs { epochs: u32 },
    SuccessiveHalving { min_epochs: u32, max_epochs: u32, eta: u32 },
}

impl Budget {
    /// What is wrong with the budget, if anything.
    pub fn problem(&self) -> Option<String> {
        match *self {
            Budget::Epochs { epochs: 0 } => Some("`epochs` must be at least 1".to_owned()),
            Budget::Epochs { .. } => None,
            Budget::SuccessiveHalving { min_epochs: 0, .. } => Some("`min_epochs` must be at least 1".to_owned()),
            Budget::SuccessiveHalving {
                min_epochs, max_epochs, ..
            } if max_epochs < min_epochs => Some(format!(
                "`max_epochs` ({max_epochs}) must be at least `min_epochs` ({min_epochs})"
            )),
            Budget::SuccessiveHalving { eta, .. } if eta < 2 => Some(format!("`eta` must be at least 2, not {eta}")),
            Budget::SuccessiveHalving { .. } => None,
        }
    }

    /// The epochs a candidate has trained after each rung, lowest first.
    pub fn rungs(&self) -> Vec<u32> {
        match *self {
            Budget::Epochs { epochs } => vec![epochs],
            Budget::SuccessiveHalving {
                min_epochs,
                max_epochs,
                eta,
            } => {
                let mut rungs = Vec::new();
                let mut epochs = min_epochs.max(1);
                loop {
                    rungs.push(epochs.min(max_epochs));
                    if epochs >= max_epochs {
                        return rungs;
                    }
                    epochs = epochs.saturating_mul(eta.max(2));
                }
            }
        }
    }

    /// How many of `n` candidates of a rung continue to the next one: the
    /// best `1/eta` (rounded up), but never fewer than `keep`, so that the
    /// last rung has a model for every slot.
    pub fn promoted(&self, n: usize, keep: usize) -> usize {
        let eta = match *self {
            Budget::Epochs { .. } => 1,
            Budget::SuccessiveHalving { eta, .. } => eta.max(2) as usize,
        };
        n.div_ceil(eta).max(keep).min(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(min_epochs: u32, max_epochs: u32, eta: u32) -> Budget {
        Budget::SuccessiveHalving {
            min_epochs,
            max_epochs,
            eta,
        }
    }

    #[test]
    fn rungs_grow_by_eta_up_to_the_maximum() {
        assert_eq!(sh(2, 12, 3).rungs(), [2, 6, 12]);
        assert_eq!(sh(1, 9, 3).rungs(), [1, 3, 9]);
        assert_eq!(sh(3, 3, 2).rungs(), [3]);
        assert_eq!(Budget::Epochs { epochs: 4 }.rungs(), [4]);
    }

    #[test]
    fn a_rung_keeps_a_third_but_never_fewer_than_the_slots() {
        let b = sh(1, 9, 3);
        assert_eq!(b.promoted(30, 3), 10);
        assert_eq!(b.promoted(10, 3), 4);
        assert_eq!(b.promoted(4, 3), 3);
        assert_eq!(b.promoted(2, 3), 2);
    }

    #[test]
    fn bad_budgets_say_what_is_wrong() {
        assert!(sh(0, 4, 3).problem().unwrap().contains("min_epochs"));
        assert!(sh(4, 2, 3).problem().unwrap().contains("max_epochs"));
        assert!(sh(1, 4, 1).problem().unwrap().contains("eta"));
        assert!(Budget::Epochs { epochs: 0 }.problem().is_some());
        assert!(sh(1, 9, 3).problem().is_none());
    }
}
