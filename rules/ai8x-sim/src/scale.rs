//! Output scaling of 8-bit layers (spec §3.3) and activations (§2.9).

use crate::network::Activation;

/// Turns accumulators into int8 outputs for a total shift `S` in [−15, 15].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scale {
    /// `n = 7 − S`: a rounding right shift when positive, a left shift
    /// otherwise (S in [−15, 15] keeps it within 22 and 8).
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

    /// `⌊(acc + 2^(n−1)) / 2^n⌋` of every accumulator (round half toward
    /// +∞), clamped and activated, in a loop the compiler vectorizes: the
    /// shift direction and the activation are chosen once, outside it.
    pub fn apply_all(&self, acc: &[i32], out: &mut [i8]) {
        match self.activation {
            Activation::None => self.map(acc, out, |y| y),
            Activation::Relu => self.map(acc, out, |y| y.max(0)),
            Activation::Abs => self.map(acc, out, |y| y.abs().min(127)),
        }
    }

    #[inline(always)]
    fn map(&self, acc: &[i32], out: &mut [i8], activate: impl Fn(i32) -> i32) {
        let n = self.n;
        if self.left {
            // Beyond these bounds `acc << n` saturates; within them it
            // cannot overflow i32 (§3.6: left shifts are at most 8).
            let (lo, hi) = (-128 >> n, 127 >> n);
            for (y, &a) in out.iter_mut().zip(acc) {
                let v = if a > hi { 127 } else { (a.max(lo) << n).clamp(-128, 127) };
                *y = activate(v) as i8;
            }
        } else {
            // Adding 2^(n−1) before the shift equals adding bit n−1 after
            // it, which cannot overflow.
            for (y, &a) in out.iter_mut().zip(acc) {
                let v = ((a >> n) + ((a >> (n - 1)) & 1)).clamp(-128, 127);
                *y = activate(v) as i8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scale;
    use crate::network::Activation;

    fn one(s: &Scale, acc: i32) -> i8 {
        let mut y = [0i8];
        s.apply_all(&[acc], &mut y);
        y[0]
    }

    #[test]
    fn rounding_is_half_toward_positive_infinity() {
        // spec §3.3's table, n = 8 (S = −1).
        let s = Scale::new(-1, Activation::None);
        let cases = [(384, 2), (128, 1), (-128, 0), (-129, -1), (-300, -1), (-384, -1)];
        for (acc, y) in cases {
            assert_eq!(one(&s, acc), y, "acc {acc}");
        }
    }

    #[test]
    fn left_shifts_saturate_instead_of_wrapping() {
        let s = Scale::new(15, Activation::None);
        assert_eq!(one(&s, 1 << 28), 127);
        assert_eq!(one(&s, -(1 << 28)), -128);
        assert_eq!(one(&s, -1), -128);
        assert_eq!(one(&Scale::new(7, Activation::None), -3), -3);
    }

    /// The definition of §3.3 in i64, against the shift-and-bit form, for
    /// every shift and activation, on extreme and random accumulators.
    #[test]
    fn the_vectorized_form_equals_the_definition() {
        let mut acc: Vec<i32> = vec![i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX - 1, i32::MAX];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..4000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Small values near every rounding boundary, and the full range.
            acc.push(if i % 2 == 0 {
                (x >> 33) as i32 % 70_000
            } else {
                (x >> 32) as u32 as i32
            });
        }
        for shift in -15..=15 {
            for activation in [Activation::None, Activation::Relu, Activation::Abs] {
                let s = Scale::new(shift, activation);
                let mut got = vec![0i8; acc.len()];
                s.apply_all(&acc, &mut got);
                for (&a, &g) in acc.iter().zip(&got) {
                    let n = 7 - shift;
                    let a64 = i64::from(a);
                    let y = if n <= 0 { a64 << -n } else { (a64 + (1 << (n - 1))) >> n };
                    let y = y.clamp(-128, 127) as i8;
                    let want = match activation {
                        Activation::None => y,
                        Activation::Relu => y.max(0),
                        Activation::Abs => y.unsigned_abs().min(127) as i8,
                    };
                    assert_eq!(g, want, "acc {a}, shift {shift}, {activation:?}");
                }
            }
        }
    }

    #[test]
    fn activations_saturate_at_127() {
        assert_eq!(one(&Scale::new(7, Activation::Relu), -5), 0);
        assert_eq!(one(&Scale::new(7, Activation::Relu), 500), 127);
        assert_eq!(one(&Scale::new(7, Activation::Abs), -128), 127);
        assert_eq!(one(&Scale::new(7, Activation::Abs), -7), 7);
    }
}
