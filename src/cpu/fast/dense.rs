//! Dense and fixed-fan-in layers. Dense layers are one GEMM over the batch
//! (`Y[n, out] = X[n, in] · Wᵀ`) with bias and activation applied right after. Fan-in layers
//! run sparse (`k` taps per output, vectorised across the batch) unless their density makes
//! the dense GEMM faster ([`fanin_runs_dense`]).

use super::gemm::{matmul, MatRef};
use super::scratch::{self, with_scratch};
use super::{simd, PAR_MIN_ELEMS};
use crate::model::{Activation, Dense, FanIn};
use rayon::prelude::*;

/// Dense layer on `n` rows of `inputs` features; returns `[n, outputs]`.
pub fn dense(d: &Dense, x: &[f32], n: usize) -> Vec<f32> {
    linear(
        &d.weight,
        &d.bias,
        d.activation,
        (d.inputs, d.outputs),
        x,
        n,
    )
}

/// `act(x · weightᵀ + bias)` for `n` rows; `weight` is row-major `[outputs, inputs]`.
pub(crate) fn linear(
    weight: &[f32],
    bias: &[f32],
    act: Activation,
    (inputs, outputs): (usize, usize),
    x: &[f32],
    n: usize,
) -> Vec<f32> {
    let mut y = scratch::overwritten(n * outputs);
    if outputs == 0 {
        return y;
    }
    matmul(
        n,
        outputs,
        inputs,
        MatRef::row_major(x, inputs),
        MatRef::transposed(weight, inputs),
        &mut y,
        outputs,
    );
    y.par_chunks_mut(outputs)
        .with_min_len(PAR_MIN_ELEMS.div_ceil(outputs))
        .for_each(|row| {
            simd::dispatch(|| {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
                simd::activate(act, row);
            })
        });
    y
}

/// How many times faster per multiply-add the dense GEMM runs than the sparse taps (measured
/// on the MNIST fan-in shapes at batch 64 on a 2-core AMD EPYC): a fan-in layer whose density
/// `k / inputs` is at least its inverse runs as dense. Below batch [`FANIN_DENSE_MIN_BATCH`]
/// converting the weights costs more than the GEMM saves, so small batches stay sparse.
pub const FANIN_DENSE_SPEEDUP: usize = 4;

/// Smallest batch at which a dense enough fan-in layer runs as a dense GEMM.
pub const FANIN_DENSE_MIN_BATCH: usize = 8;

/// True when [`fanin`] runs this layer as a dense GEMM for a batch of `n`.
pub fn fanin_runs_dense(f: &FanIn, n: usize) -> bool {
    n >= FANIN_DENSE_MIN_BATCH && f.k * FANIN_DENSE_SPEEDUP >= f.inputs
}

/// Fixed-fan-in layer on `n` rows; returns `[n, outputs]`.
pub fn fanin(f: &FanIn, x: &[f32], n: usize) -> Vec<f32> {
    if fanin_runs_dense(f, n) {
        let d = f.to_dense();
        return dense(&d, x, n);
    }
    if n == 1 {
        return fanin_single(f, x);
    }
    // Transpose the batch to `[inputs, n]`: each tap then reads one contiguous row of `n`
    // values, and each output's `n` results accumulate in one vector.
    let mut yt = scratch::overwritten(f.outputs * n);
    with_scratch(f.inputs * n, |xt| {
        for (b, row) in x.chunks_exact(f.inputs).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                xt[i * n + b] = v;
            }
        }
        let xt = &*xt;
        yt.par_chunks_mut(n)
            .enumerate()
            .with_min_len(PAR_MIN_ELEMS.div_ceil(f.k * n))
            .for_each(|(o, acc)| {
                simd::dispatch(|| {
                    acc.fill(f.bias[o]);
                    let taps = o * f.k..(o + 1) * f.k;
                    for (&i, &wv) in f.indices[taps.clone()].iter().zip(&f.weights[taps]) {
                        let src = &xt[i as usize * n..(i as usize + 1) * n];
                        for (a, s) in acc.iter_mut().zip(src) {
                            *a += wv * s;
                        }
                    }
                    simd::activate(f.activation, acc);
                })
            });
    });
    let mut y = scratch::overwritten(n * f.outputs);
    for (o, col) in yt.chunks_exact(n).enumerate() {
        for (b, &v) in col.iter().enumerate() {
            y[b * f.outputs + o] = v;
        }
    }
    scratch::recycle(yt);
    y
}

/// One sample: a gather-dot per output.
fn fanin_single(f: &FanIn, x: &[f32]) -> Vec<f32> {
    let mut y = scratch::overwritten(f.outputs);
    y.par_iter_mut()
        .enumerate()
        .with_min_len(PAR_MIN_ELEMS.div_ceil(f.k.max(1)))
        .for_each(|(o, v)| {
            let taps = o * f.k..(o + 1) * f.k;
            let acc: f32 = f.indices[taps.clone()]
                .iter()
                .zip(&f.weights[taps])
                .map(|(&i, &wv)| wv * x[i as usize])
                .sum();
            *v = f.activation.apply(acc + f.bias[o]);
        });
    y
}
