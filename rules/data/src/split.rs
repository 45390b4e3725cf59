//! Stratified, seeded, leak-free assignment of windows to train, validation and test.
//!
//! Overlapping windows make a window-level shuffle leak: a test window would share W − 1 rows with training windows.
//! So the window sequence is cut into contiguous blocks of `block` windows; the last ⌈(W + lookahead)/S⌉ windows of
//! every block but the final one are dropped (see [`crate::WindowParams::border_gap`]), so no row belongs to windows
//! of two blocks; each block is classed anomalous if any kept window in it is; and within each class the blocks are
//! shuffled with the seed and dealt to the splits in the requested proportions.

use serde::{Deserialize, Serialize};

use crate::WindowParams;
use crate::random::Random;

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Train,
    Val,
    Test,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Train, Part::Val, Part::Test];

    pub fn index(self) -> usize {
        match self {
            Part::Train => 0,
            Part::Val => 1,
            Part::Test => 2,
        }
    }
}

/// The split of every window (by index), `None` for a window dropped at a block border.
pub fn assign(labels: &[bool], params: &WindowParams) -> Vec<Option<Part>> {
    let n = labels.len();
    let block = params.block.max(1);
    let gap = params.border_gap() as usize;
    let blocks = n.div_ceil(block);
    let kept = |b: usize| -> std::ops::Range<usize> {
        let start = b * block;
        let end = ((b + 1) * block).min(n);
        // The final block has no neighbour after it, so it keeps all its windows.
        if b + 1 == blocks {
            start..end
        } else {
            start..end.saturating_sub(gap).max(start)
        }
    };

    let mut by_class: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for b in 0..blocks {
        let anomalous = labels[kept(b)].iter().any(|&l| l);
        by_class[usize::from(anomalous)].push(b);
    }

    let mut block_part = vec![Part::Train; blocks];
    for (class, list) in by_class.iter_mut().enumerate() {
        // A stream per class, so that the normal blocks' assignment does not depend on how many anomalous ones there
        // are.
        let mut random = Random::new(params.seed, 100 + class as u64);
        random.shuffle(list);
        let [train, val, _] = counts(list.len(), params.fractions);
        for (k, &b) in list.iter().enumerate() {
            block_part[b] = if k < train {
                Part::Train
            } else if k < train + val {
                Part::Val
            } else {
                Part::Test
            };
        }
    }

    let mut parts = vec![None; n];
    for (b, part) in block_part.iter().enumerate() {
        for slot in &mut parts[kept(b)] {
            *slot = Some(*part);
        }
    }
    parts
}

/// Blocks per split for `n` blocks of one class: rounded shares, then at least one block for every split with a
/// positive fraction while blocks allow (test before validation, since the test split is what gets reported), taken
/// from the largest split.
pub(crate) fn counts(n: usize, fractions: [f64; 3]) -> [usize; 3] {
    let val = ((n as f64 * fractions[1]).round() as usize).min(n);
    let test = ((n as f64 * fractions[2]).round() as usize).min(n - val);
    let mut c = [n - val - test, val, test];
    for want in [0, 2, 1] {
        if c[want] == 0 && fractions[want] > 0.0 {
            let (largest, &size) = c
                .iter()
                .enumerate()
                .max_by_key(|&(i, &s)| (s, usize::MAX - i))
                .unwrap_or((0, &0));
            if size > 1 {
                c[largest] -= 1;
                c[want] += 1;
            }
        }
    }
    c
}
