//! Output scaling of 8-bit layers (spec §3.3) and activations (§2.9).

use crate::network::Activation;

/// Turns accumulators into int8 outputs for a total shift `S` in [−15, 15].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scale {
    /// `n = 7 − S`: a rounding right shift when positive, a left shift otherwise.
    n: u32,
    left: bool,
    activation: Activation,
}

impl Scale {
    pub fn new(total_shift: i32, activation: Activation) -> Scale {
        let n = 7 - total_shift;
        Scale {
            n: n.unsigned_abs(),
            left: n <= 0,
            activation,
        }
    }

    /// `⌊(acc + 2^(n−1)) / 2^n⌋`, i.e. round half toward +∞, then clamp and
    /// activate. i64 because a left shift by up to 8 leaves i32 (§3.6).
    pub fn apply(&self, acc: i32) -> i8 {
        let acc = i64::from(acc);
        let y = if self.left {
            acc << self.n
        } else {
            (acc + (1 << (self.n - 1))) >> self.n
        };
        let y = y.clamp(-128, 127) as i8;
        match self.activation {
            Activation::None => y,
            Activation::Relu => y.max(0),
            Activation::Abs => y.unsigned_abs().min(127) as i8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scale;
    use crate::network::Activation;

    #[test]
    fn rounding_is_half_toward_positive_infinity() {
        // spec §3.3's table, n = 8 (S = −1).
        let s = Scale::new(-1, Activation::None);
        let cases = [(384, 2), (128, 1), (-128, 0), (-129, -1), (-300, -1), (-384, -1)];
        for (acc, y) in cases {
            assert_eq!(s.apply(acc), y, "acc {acc}");
        }
    }

    #[test]
    fn left_shifts_saturate_instead_of_wrapping() {
        let s = Scale::new(15, Activation::None);
        assert_eq!(s.apply(1 << 28), 127);
        assert_eq!(s.apply(-(1 << 28)), -128);
        assert_eq!(s.apply(-1), -128);
        assert_eq!(Scale::new(7, Activation::None).apply(-3), -3);
    }

    #[test]
    fn activations_saturate_at_127() {
        assert_eq!(Scale::new(7, Activation::Relu).apply(-5), 0);
        assert_eq!(Scale::new(7, Activation::Relu).apply(500), 127);
        assert_eq!(Scale::new(7, Activation::Abs).apply(-128), 127);
        assert_eq!(Scale::new(7, Activation::Abs).apply(-7), 7);
    }
}
