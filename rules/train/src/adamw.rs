//! AdamW's update, written out rather than taken from `candle_nn::AdamW`,
//! whose moments are private and so could not be checkpointed.
//!
//! The arithmetic is PyTorch's single-tensor `AdamW` (decoupled weight
//! decay, then the bias-corrected Adam step), in f32 like PyTorch's state.

use crate::Hyper;

/// Coefficients of update number `step` (1-based), shared by all tensors.
pub(crate) struct AdamStep {
    decay: f32,
    beta1: f32,
    beta2: f32,
    step_size: f32,
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
            beta1: hyper.beta1 as f32,
            beta2: hyper.beta2 as f32,
            step_size: (hyper.lr / bias_correction1) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: hyper.eps as f32,
        }
    }

    /// Updates one tensor `p` with its gradient `g` and moments `m`, `v`.
    pub(crate) fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let one_minus_beta1 = 1.0 - self.beta1;
        let one_minus_beta2 = 1.0 - self.beta2;
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *p *= self.decay;
            // `exp_avg.lerp_(grad, 1 − β₁)`
            *m += one_minus_beta1 * (g - *m);
            // `exp_avg_sq.mul_(β₂).addcmul_(grad, grad, 1 − β₂)`
            *v = *v * self.beta2 + one_minus_beta2 * g * g;
            let denom = v.sqrt() / self.bias_correction2_sqrt + self.eps;
            *p -= self.step_size * (*m / denom);
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
}
