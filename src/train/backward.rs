//! Plain-Rust backward pass of every trainable op: the CPU training backend and the oracle
//! the GPU backward kernels are tested against. Shapes follow the forward ops in [`crate::cpu`]:
//! activations are NCHW (or `[n, features]`), batch first. Weight gradients are *accumulated*
//! into the given slices; input gradients are returned.

use crate::model::{Activation, Conv2d, Dense, FanIn, Pool, PoolKind};
use crate::sparsity::FanInPattern;

impl Activation {
    /// Derivative of the activation at pre-activation `z`.
    #[inline]
    pub fn derivative(self, z: f32) -> f32 {
        match self {
            Activation::None => 1.0,
            Activation::Relu => (z > 0.0) as u8 as f32,
            Activation::Relu6 => (z > 0.0 && z < 6.0) as u8 as f32,
            Activation::Silu => {
                let s = 1.0 / (1.0 + (-z).exp());
                s * (1.0 + z * (1.0 - s))
            }
            Activation::Sigmoid => {
                let s = 1.0 / (1.0 + (-z).exp());
                s * (1.0 - s)
            }
            Activation::LeakyRelu(alpha) => {
                if z >= 0.0 {
                    1.0
                } else {
                    alpha
                }
            }
            Activation::Clip(lo, hi) => (z > lo && z < hi) as u8 as f32,
            Activation::HardSigmoid(alpha, beta) => {
                let v = alpha * z + beta;
                if v > 0.0 && v < 1.0 {
                    alpha
                } else {
                    0.0
                }
            }
            Activation::HardSwish => {
                if z <= -3.0 {
                    0.0
                } else if z >= 3.0 {
                    1.0
                } else {
                    z / 3.0 + 0.5
                }
            }
            Activation::Tanh => 1.0 - z.tanh().powi(2),
        }
    }
}

/// Gradient through an activation: `dz = dy · act'(z)` for pre-activations `z`.
pub fn activation_backward(act: Activation, z: &[f32], dy: &[f32]) -> Vec<f32> {
    if act == Activation::None {
        return dy.to_vec();
    }
    z.iter()
        .zip(dy)
        .map(|(&z, &g)| g * act.derivative(z))
        .collect()
}

/// Dense backward for `n` rows: accumulates `dw [outputs, inputs]` and `db [outputs]` from the
/// pre-activation gradient `dz [n, outputs]` and the input `x [n, inputs]`; returns
/// `dx [n, inputs]` when `want_dx`.
pub fn dense_backward(
    d: &Dense,
    x: &[f32],
    dz: &[f32],
    n: usize,
    dw: &mut [f32],
    db: &mut [f32],
    want_dx: bool,
) -> Option<Vec<f32>> {
    let (ni, no) = (d.inputs, d.outputs);
    for b in 0..n {
        let xr = &x[b * ni..(b + 1) * ni];
        for o in 0..no {
            let g = dz[b * no + o];
            db[o] += g;
            if g == 0.0 {
                continue;
            }
            for (w, &xv) in dw[o * ni..(o + 1) * ni].iter_mut().zip(xr) {
                *w += g * xv;
            }
        }
    }
    want_dx.then(|| {
        let mut dx = vec![0.0f32; n * ni];
        for b in 0..n {
            let row = &mut dx[b * ni..(b + 1) * ni];
            for o in 0..no {
                let g = dz[b * no + o];
                if g == 0.0 {
                    continue;
                }
                for (v, &w) in row.iter_mut().zip(&d.weight[o * ni..(o + 1) * ni]) {
                    *v += g * w;
                }
            }
        }
        dx
    })
}

/// The backward layout of a fixed-fan-in layer: its transposed pattern (fixed fan-in again,
/// `k = out-degree`) and, per transposed entry, where its weight sits in the forward table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanInBackward {
    /// The transposed pattern: input `i` reads the outputs it feeds.
    pub transposed: FanInPattern,
    /// `positions[t]` is the index in the forward `[outputs, k]` table of transposed entry `t`.
    pub positions: Vec<u32>,
}

impl FanInBackward {
    /// Builds the backward layout; `None` when the layer's out-degree is not uniform.
    pub fn new(f: &FanIn) -> Option<Self> {
        let pattern = FanInPattern {
            inputs: f.inputs,
            outputs: f.outputs,
            k: f.k,
            indices: f.indices.clone(),
        };
        let (transposed, positions) = pattern.transpose()?;
        Some(Self {
            transposed,
            positions,
        })
    }

    /// The forward weights gathered into the transposed layout.
    pub fn gather_weights(&self, weights: &[f32]) -> Vec<f32> {
        self.positions
            .iter()
            .map(|&p| weights[p as usize])
            .collect()
    }
}

/// Fixed-fan-in backward for `n` rows: accumulates `dw [outputs, k]` (over the ELL pattern) and
/// `db`; returns `dx [n, inputs]` when `back` is given, computed as a fixed-fan-in forward
/// pass over the transposed pattern with gathered weights (no scatter, no atomics).
pub fn fanin_backward(
    f: &FanIn,
    back: Option<&FanInBackward>,
    x: &[f32],
    dz: &[f32],
    n: usize,
    dw: &mut [f32],
    db: &mut [f32],
) -> Option<Vec<f32>> {
    let (ni, no, k) = (f.inputs, f.outputs, f.k);
    for b in 0..n {
        let xr = &x[b * ni..(b + 1) * ni];
        for o in 0..no {
            let g = dz[b * no + o];
            db[o] += g;
            for j in 0..k {
                dw[o * k + j] += g * xr[f.indices[o * k + j] as usize];
            }
        }
    }
    back.map(|back| {
        let t = &back.transposed;
        let wt = back.gather_weights(&f.weights);
        let mut dx = vec![0.0f32; n * ni];
        for b in 0..n {
            let gr = &dz[b * no..(b + 1) * no];
            for i in 0..ni {
                let mut acc = 0.0;
                for j in 0..t.k {
                    acc += wt[i * t.k + j] * gr[t.indices[i * t.k + j] as usize];
                }
                dx[b * ni + i] = acc;
            }
        }
        dx
    })
}

/// Convolution backward for `n` samples of `[in_channels, h, w]`: accumulates `dw` and `db`
/// from `dz [n, out, oh, ow]`; returns `dx` when `want_dx`.
#[allow(clippy::too_many_arguments)] // the shapes of one convolution
pub fn conv2d_backward(
    c: &Conv2d,
    x: &[f32],
    dz: &[f32],
    n: usize,
    h: usize,
    w: usize,
    dw: &mut [f32],
    db: &mut [f32],
    want_dx: bool,
) -> Option<Vec<f32>> {
    let (oh, ow) = c
        .output_hw(h, w)
        .expect("shapes were validated when the model was loaded");
    let cin_g = c.in_channels / c.groups;
    let cout_g = c.out_channels / c.groups;
    let (s, p) = c
        .uniform()
        .expect("training specs refuse per-axis strides, asymmetric padding and dilation");
    let (kh, kw) = (c.kernel_h, c.kernel_w);
    let mut dx = want_dx.then(|| vec![0.0f32; n * c.in_channels * h * w]);
    for b in 0..n {
        for oc in 0..c.out_channels {
            let g = oc / cout_g;
            let plane = &dz[(b * c.out_channels + oc) * oh * ow..][..oh * ow];
            db[oc] += plane.iter().sum::<f32>();
            for ic in 0..cin_g {
                let ch = g * cin_g + ic;
                let xplane = &x[(b * c.in_channels + ch) * h * w..][..h * w];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let widx = ((oc * cin_g + ic) * kh + ky) * kw + kx;
                        let wv = c.weight[widx];
                        let mut acc = 0.0f32;
                        for oy in 0..oh {
                            let iy = (oy * s + ky) as isize - p as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            let iy = iy as usize;
                            for ox in 0..ow {
                                let ix = (ox * s + kx) as isize - p as isize;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let gv = plane[oy * ow + ox];
                                acc += gv * xplane[iy * w + ix as usize];
                                if let Some(dx) = dx.as_mut() {
                                    dx[(b * c.in_channels + ch) * h * w + iy * w + ix as usize] +=
                                        gv * wv;
                                }
                            }
                        }
                        dw[widx] += acc;
                    }
                }
            }
        }
    }
    dx
}

/// Pooling backward over `nc` planes of `h × w`: max pooling routes each gradient to the first
/// maximum of its window (as the forward picks it), average pooling spreads it over the cells
/// inside the input.
pub fn pool_backward(
    pool: &Pool,
    x: &[f32],
    dy: &[f32],
    nc: usize,
    h: usize,
    w: usize,
) -> Vec<f32> {
    let (oh, ow) = pool
        .output_hw(h, w)
        .expect("shapes were validated when the model was loaded");
    let (stride, padding) = pool
        .uniform()
        .expect("training specs refuse per-axis strides, asymmetric padding and ceil_mode");
    let mut dx = vec![0.0f32; nc * h * w];
    let cells = |oy: usize, ox: usize| {
        let mut v = Vec::with_capacity(pool.kernel_h * pool.kernel_w);
        for ky in 0..pool.kernel_h {
            let iy = (oy * stride + ky) as isize - padding as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            for kx in 0..pool.kernel_w {
                let ix = (ox * stride + kx) as isize - padding as isize;
                if ix < 0 || ix >= w as isize {
                    continue;
                }
                v.push(iy as usize * w + ix as usize);
            }
        }
        v
    };
    for plane in 0..nc {
        let xp = &x[plane * h * w..][..h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                let g = dy[(plane * oh + oy) * ow + ox];
                let cs = cells(oy, ox);
                match pool.kind {
                    PoolKind::Max => {
                        let mut best = f32::NEG_INFINITY;
                        let mut at = None;
                        for &c in &cs {
                            if xp[c] > best {
                                best = xp[c];
                                at = Some(c);
                            }
                        }
                        if let Some(c) = at {
                            dx[plane * h * w + c] += g;
                        }
                    }
                    PoolKind::Avg => {
                        let share = g / cs.len().max(1) as f32;
                        for &c in &cs {
                            dx[plane * h * w + c] += share;
                        }
                    }
                }
            }
        }
    }
    dx
}

/// Global average pooling backward: every cell of a plane gets `dy / hw`.
pub fn global_avgpool_backward(dy: &[f32], hw: usize) -> Vec<f32> {
    dy.iter()
        .flat_map(|&g| std::iter::repeat_n(g / hw as f32, hw))
        .collect()
}

/// Softmax cross-entropy of `[n, classes]` logits against `labels`, averaged over the batch:
/// returns the mean loss and the gradient `(softmax - onehot) / n` with respect to the logits.
pub fn softmax_cross_entropy(logits: &[f32], labels: &[u8], classes: usize) -> (f32, Vec<f32>) {
    let n = labels.len();
    let mut grad = vec![0.0f32; logits.len()];
    let mut loss = 0.0f64;
    for (b, row) in logits.chunks(classes).enumerate() {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|&v| (v - m).exp()).sum();
        let log_sum = sum.ln();
        let label = labels[b] as usize;
        loss += (log_sum - (row[label] - m)) as f64;
        for (c, &v) in row.iter().enumerate() {
            let p = (v - m).exp() / sum;
            grad[b * classes + c] = (p - (c == label) as u8 as f32) / n as f32;
        }
    }
    ((loss / n.max(1) as f64) as f32, grad)
}
