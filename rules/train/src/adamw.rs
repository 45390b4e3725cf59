//! AdamW's update, written out rather than taken from `candle_nn::AdamW`,
//! whose moments are private and so could not be checkpointed.
//!
//! The arithmetic is PyTorch's single-tensor `AdamW` (decoupled weight
//! decay, then the bias-corrected Adam step), in f32 like PyTorch's state,
//! with its constants rounded and its operations ordered as PyTorch's
//! kernels do. What remains is last-bit rounding: PyTorch's vectorized
//! `lerp_`/`addcmul_` fuse multiply-adds where the CPU has FMA, and its
//! `sqrt` is MKL's.

use crate::Hyper;

/// Coefficients of update number `step` (1-based), shared by all tensors.
pub(crate) struct AdamStep {
    decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    minus_step_size: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
}

impl AdamStep {
    pub(crate) fn new(hyper: &Hyper, step: u64) -> AdamStep {
        // Powers in f64: β₂^t underflows f32's precision long before it matters.
        let t = step.min(i32::MAX as u64) as i32;
        let bias_correction1 = 1.0 - hyper.beta1.powi(t);
        let bias_correction2 = 1.0 - hyper.beta2.powi(t);
        AdamStep {
            decay: (1.0 - hyper.lr * hyper.weight_decay) as f32,
            // `1 − β` in f64, then rounded, as PyTorch passes it; in f32 from
            // the rounded β₂ = 0.999 it would be 0.00099999, which shrinks
            // every second moment.
            one_minus_beta1: (1.0 - hyper.beta1) as f32,
            beta2: hyper.beta2 as f32,
            one_minus_beta2: (1.0 - hyper.beta2) as f32,
            // Negated, so that the update rounds as `addcdiv_(…, value=−step_size)`.
            minus_step_size: (-hyper.lr / bias_correction1) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: hyper.eps as f32,
        }
    }

    /// Updates one tensor `p` with its gradient `g` and moments `m`, `v`.
    pub(crate) fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *p *= self.decay;
            // `exp_avg.lerp_(grad, 1 − β₁)`
            *m += self.one_minus_beta1 * (g - *m);
            // `exp_avg_sq.mul_(β₂).addcmul_(grad, grad, 1 − β₂)`
            *v = *v * self.beta2 + self.one_minus_beta2 * g * g;
            let denom = v.sqrt() / self.bias_correction2_sqrt + self.eps;
            // `param.addcdiv_(exp_avg, denom, value=−step_size)`: product first, then the quotient.
            *p += self.minus_step_size * *m / denom;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_each_weight_by_about_lr_against_the_gradient() {
        let hyper = Hyper {
            lr: 0.1,
            weight_decay: 0.0,
            ..Hyper::default()
        };
        let (mut p, mut m, mut v) = (vec![1.0, 1.0], vec![0.0; 2], vec![0.0; 2]);
        AdamStep::new(&hyper, 1).apply(&mut p, &[0.5, -2.0], &mut m, &mut v);
        // With zero moments, the bias-corrected step is lr · g / |g|.
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] - 1.1).abs() < 1e-6, "{p:?}");
        assert!((m[0] - 0.05).abs() < 1e-7 && (v[1] - 0.004).abs() < 1e-7);
    }

    #[test]
    fn weight_decay_is_decoupled() {
        let hyper = Hyper {
            lr: 0.1,
            weight_decay: 0.5,
            ..Hyper::default()
        };
        let (mut p, mut m, mut v) = (vec![2.0], vec![0.0], vec![0.0]);
        AdamStep::new(&hyper, 1).apply(&mut p, &[0.0], &mut m, &mut v);
        // A zero gradient leaves only the decay: p · (1 − lr · wd).
        assert!((p[0] - 1.9).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn one_minus_beta_is_rounded_once_as_in_pytorch() {
        // PyTorch's `addcmul_(grad, grad, value=1 − β₂)` rounds the f64
        // `1 − β₂` to f32; `1 − (β₂ as f32)` would give 0.00099999.
        let (mut p, mut m, mut v) = (vec![0.0], vec![0.0], vec![0.0]);
        AdamStep::new(&Hyper::default(), 1).apply(&mut p, &[1.0], &mut m, &mut v);
        assert_eq!(v[0], 0.001f32);
        assert_eq!(m[0], 0.1f32);
    }

    /// `torch.optim.AdamW` as its documentation writes it, in f64: decay,
    /// moments, bias-corrected `m̂ / (√v̂ + ε)`.
    fn documented(hyper: &Hyper, p: f64, grads: &[f64]) -> Vec<(f64, f64, f64)> {
        let (mut p, mut m, mut v) = (p, 0.0, 0.0);
        let mut out = Vec::new();
        for (t, &g) in (1..).zip(grads) {
            p -= hyper.lr * hyper.weight_decay * p;
            m = hyper.beta1 * m + (1.0 - hyper.beta1) * g;
            v = hyper.beta2 * v + (1.0 - hyper.beta2) * g * g;
            let m_hat = m / (1.0 - hyper.beta1.powi(t));
            let v_hat = v / (1.0 - hyper.beta2.powi(t));
            p -= hyper.lr * m_hat / (v_hat.sqrt() + hyper.eps);
            out.push((p, m, v));
        }
        out
    }

    #[test]
    fn many_steps_follow_pytorchs_documented_adamw_to_f32_precision() {
        let hyper = Hyper {
            lr: 1e-2,
            weight_decay: 0.1,
            ..Hyper::default()
        };
        // Gradients of several magnitudes and changing signs, one tensor element each.
        let scales = [1e-6, 1e-3, 1.0, 30.0];
        let grads: Vec<Vec<f64>> = (0..scales.len())
            .map(|k| {
                (0..200)
                    .map(|t| scales[k] * ((t * 7 + k * 3) as f64 * 0.37).sin())
                    .collect()
            })
            .collect();
        let expected: Vec<_> = grads.iter().map(|g| documented(&hyper, 0.5, g)).collect();
        let (mut p, mut m, mut v) = (vec![0.5f32; 4], vec![0.0f32; 4], vec![0.0f32; 4]);
        for (t, step) in (1..=200u64).enumerate() {
            let g: Vec<f32> = grads.iter().map(|g| g[t] as f32).collect();
            AdamStep::new(&hyper, step).apply(&mut p, &g, &mut m, &mut v);
            for (k, want) in expected.iter().enumerate() {
                let (ep, em, ev) = want[t];
                let close = |ours: f32, want: f64, tolerance: f64| (f64::from(ours) - want).abs() <= tolerance;
                // Moments relative to their own size: rounding over 200 steps
                // stays within these, the bias an f32 `1 − β₂` adds to v
                // (about 1e-5 of it) does not.
                let m_scale = em.abs().max(scales[k] * 0.1);
                let v_scale = ev.abs().max(scales[k] * scales[k] * 1e-6);
                assert!(
                    close(m[k], em, 1e-6 * m_scale),
                    "step {step}, element {k}: m {} vs {em}",
                    m[k]
                );
                assert!(
                    close(v[k], ev, 4e-6 * v_scale),
                    "step {step}, element {k}: v {} vs {ev}",
                    v[k]
                );
                assert!(close(p[k], ep, 1e-5), "step {step}, element {k}: p {} vs {ep}", p[k]);
            }
        }
    }
}
