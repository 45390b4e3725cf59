//! Pooling before the operator (spec §2.6, §3.5, §3.7).

use crate::network::{Pool, PoolKind, Shape};

/// Pools every channel of `x` (shape `input`) into `out` (shape `pooled`).
pub(crate) fn pool(x: &[i8], input: Shape, pool: &Pool, pooled: Shape, avg_rounding: bool) -> Vec<i8> {
    let [ph, pw] = pool.size;
    let n = (ph * pw) as i32;
    let mut out = Vec::with_capacity(pooled.len());
    for plane in x.chunks_exact(input.pixels()) {
        for oy in 0..pooled.height {
            for ox in 0..pooled.width {
                let (y0, x0) = (oy * pool.stride, ox * pool.stride);
                let window = (y0..y0 + ph).flat_map(|y| &plane[y * input.width + x0..][..pw]);
                let v = match pool.kind {
                    PoolKind::Max => window.copied().max().unwrap_or(0),
                    PoolKind::Avg => average(window.map(|&v| i32::from(v)).sum(), n, avg_rounding),
                };
                out.push(v);
            }
        }
    }
    out
}

/// spec §3.5: truncation toward zero by default; with `--avg-pool-rounding`
/// half away from zero, `sign(s)·⌊|s|/N + 1/2⌋`.
pub(crate) fn average(sum: i32, n: i32, rounding: bool) -> i8 {
    let q = if rounding {
        sum.signum() * ((2 * sum.abs() + n) / (2 * n))
    } else {
        sum / n
    };
    q.clamp(-128, 127) as i8
}

#[cfg(test)]
mod tests {
    use super::average;

    #[test]
    fn average_truncates_toward_zero_by_default() {
        assert_eq!(average(-3, 4, false), 0);
        assert_eq!(average(-7, 4, false), -1);
        assert_eq!(average(7, 4, false), 1);
    }

    #[test]
    fn average_rounding_goes_half_away_from_zero() {
        assert_eq!(average(-2, 4, true), -1);
        assert_eq!(average(2, 4, true), 1);
        assert_eq!(average(-7, 4, true), -2);
        assert_eq!(average(5, 4, true), 1);
    }
}
