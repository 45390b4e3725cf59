//! Seeded random numbers that give the same values on every machine.
//!
//! Only integer operations and IEEE-exact float arithmetic (+, −, ×, ÷, sqrt) are used: `ln`, `exp`, `sin` and `cos`
//! come from the platform's math library and may differ in the last bit between machines, which would change the
//! generated CSV. So normal variates are an Irwin–Hall sum, not Box–Muller.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(crate) struct Random {
    rng: ChaCha8Rng,
}

/// √3, the scale that gives a sum of four uniforms unit variance.
const SQRT_3: f64 = 1.732_050_807_568_877_2;

impl Random {
    /// Independent streams of one seed, so that adding draws to one concern (say, commands) does not shift another's.
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Self { rng }
    }

    /// Uniform in [0, 1), 53 random bits.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n); 0 when n is 0. Rejection sampling, so no modulo bias.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.rng.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Approximately standard normal: mean 0, variance 1, bounded by ±2√3 (no rare huge outliers, which suits
    /// sensor noise).
    pub(crate) fn normal(&mut self) -> f64 {
        let sum = self.uniform() + self.uniform() + self.uniform() + self.uniform();
        (sum - 2.0) * SQRT_3
    }

    /// Fisher–Yates with [`Random::below`], so the permutation is the same everywhere.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}
