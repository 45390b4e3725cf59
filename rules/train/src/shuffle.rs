//! The order in which an epoch visits the training samples.
//!
//! A pure function of (seed, epoch): ChaCha8 is specified bit for bit, and
//! the Fisher–Yates shuffle and the bounded draw are written here rather
//! than taken from `rand::seq`, whose output may change between `rand`
//! versions. Changing anything here changes every trained artifact.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::Hyper;

impl Hyper {
    /// The order in which epoch `epoch` (1-based) visits `n` training
    /// samples: what `train_epoch` cuts into mini-batches. Public so that
    /// another trainer can be fed the same batches (the PyTorch bench).
    pub fn sample_order(&self, n: usize, epoch: u32) -> Vec<u32> {
        permutation(n, self.seed, epoch)
    }
}

/// A permutation of `0..n`, the same on every platform and run.
pub(crate) fn permutation(n: usize, seed: u64, epoch: u32) -> Vec<u32> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..12].copy_from_slice(&epoch.to_le_bytes());
    // Domain separation, so that no other user of this seed draws the same stream.
    key[16..32].copy_from_slice(b"kflow.train.perm");
    let mut rng = ChaCha8Rng::from_seed(key);
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = below(&mut rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// A uniform draw from `0..bound` (Lemire's multiply-and-reject: unbiased,
/// and its output depends only on the generator's stream).
fn below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    let threshold = bound.wrapping_neg() % bound;
    loop {
        let product = u128::from(rng.next_u64()) * u128::from(bound);
        if (product as u64) >= threshold {
            return (product >> 64) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation_and_depends_on_seed_and_epoch() {
        let a = permutation(100, 7, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
        assert_eq!(a, permutation(100, 7, 1));
        assert_ne!(a, permutation(100, 7, 2));
        assert_ne!(a, permutation(100, 8, 1));
    }

    #[test]
    fn permutation_is_pinned() {
        // Artifacts depend on this order: a change here must be deliberate.
        assert_eq!(permutation(10, 0, 1), PINNED);
    }

    const PINNED: [u32; 10] = [5, 6, 9, 2, 0, 1, 3, 7, 8, 4];
}
