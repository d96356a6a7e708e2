//! Optimizers: SGD with momentum and Adam, applied tensor by tensor (the CPU reference of the
//! GPU optimizer kernels).

use super::spec::OptimizerSpec;

/// Per-tensor optimizer state.
#[derive(Debug, Clone, Default)]
pub struct OptimState {
    /// Momentum (SGD) or first moment (Adam).
    pub m: Vec<f32>,
    /// Second moment (Adam only).
    pub v: Vec<f32>,
}

impl OptimState {
    /// Zero state for a tensor of `len` values.
    pub fn new(len: usize) -> Self {
        Self {
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }
}

/// One optimizer step on `w` with gradient `g`; `t` is the 1-based step count (Adam's bias
/// correction).
pub fn step(opt: OptimizerSpec, lr: f32, t: u32, w: &mut [f32], g: &[f32], st: &mut OptimState) {
    match opt {
        OptimizerSpec::Sgd { momentum } => {
            for ((w, &g), m) in w.iter_mut().zip(g).zip(st.m.iter_mut()) {
                *m = momentum * *m + g;
                *w -= lr * *m;
            }
        }
        OptimizerSpec::Adam { beta1, beta2, eps } => {
            let c1 = 1.0 - beta1.powi(t as i32);
            let c2 = 1.0 - beta2.powi(t as i32);
            for (((w, &g), m), v) in w
                .iter_mut()
                .zip(g)
                .zip(st.m.iter_mut())
                .zip(st.v.iter_mut())
            {
                *m = beta1 * *m + (1.0 - beta1) * g;
                *v = beta2 * *v + (1.0 - beta2) * g * g;
                *w -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
            }
        }
    }
}
