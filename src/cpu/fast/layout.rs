//! The batch-inner activation layout of the CPU backend and its conversions.
//!
//! A batch of `n` samples of shape `[c, rest...]` is *batch-outer* (`[n, c, rest...]`, the
//! layout of the engine's tensors, of split tensors and of every op's reference) or
//! *batch-inner* (`[c, n, rest...]`). In batch-inner form the `n` planes of one channel are
//! adjacent, so a 1x1 convolution of the whole batch is one GEMM
//! `Y[cout, n·hw] = W[cout, cin] · X[cin, n·hw]` (wide even on 7x7 planes), an im2col KxK
//! convolution is one GEMM over `n·oh·ow` columns (big even for 6 output channels), and the
//! per-plane ops (depthwise, pooling, global pooling, the squeeze-excite gate) only see planes
//! in another order. At `n == 1` both layouts are the same memory.

use super::scratch;
use super::PAR_MIN_ELEMS;
use rayon::prelude::*;

/// How a CPU activation tensor of `n` samples is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[n, c, rest...]`: samples outermost, the layout everywhere outside the CPU backend.
    BatchOuter,
    /// `[c, n, rest...]` with the sample's first dimension `c` outermost.
    BatchInner {
        /// The per-sample first dimension (channels).
        c: usize,
    },
}

/// `[n, c, r]` to `[c, n, r]` (`r` = whatever is left of `x`), output rows in parallel.
pub fn to_batch_inner(x: &[f32], n: usize, c: usize) -> Vec<f32> {
    swap_outer(x, n, c)
}

/// `[c, n, r]` to `[n, c, r]`, output rows in parallel.
pub fn to_batch_outer(x: &[f32], n: usize, c: usize) -> Vec<f32> {
    swap_outer(x, c, n)
}

/// A copy of `x` (`n` samples in `from`) laid out as `to`.
pub fn convert(x: &[f32], n: usize, from: Layout, to: Layout) -> Vec<f32> {
    if from == to || n <= 1 {
        return scratch::copied(x);
    }
    match (from, to) {
        (Layout::BatchOuter, Layout::BatchInner { c }) => to_batch_inner(x, n, c),
        (Layout::BatchInner { c }, Layout::BatchOuter) => to_batch_outer(x, n, c),
        (Layout::BatchInner { c: from }, Layout::BatchInner { c: to }) => {
            to_batch_inner(&to_batch_outer(x, n, from), n, to)
        }
        (Layout::BatchOuter, Layout::BatchOuter) => scratch::copied(x),
    }
}

/// `[a, b, r]` to `[b, a, r]` (`r` = whatever is left of `x`).
fn swap_outer(x: &[f32], a: usize, b: usize) -> Vec<f32> {
    let blocks = a * b;
    if blocks <= 1 || x.is_empty() {
        return scratch::copied(x);
    }
    let r = x.len() / blocks;
    let mut y = scratch::overwritten(x.len());
    // Output row `j` of `b` rows gathers block `(i, j)` of every input row `i`.
    y.par_chunks_mut(a * r)
        .enumerate()
        .with_min_len(PAR_MIN_ELEMS.div_ceil(a * r).max(1))
        .for_each(|(j, dst)| {
            for (i, d) in dst.chunks_exact_mut(r.max(1)).enumerate() {
                let start = (i * b + j) * r;
                d.copy_from_slice(&x[start..start + r]);
            }
        });
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_inverse_transposes() {
        let (n, c, r) = (3, 5, 7);
        let x: Vec<f32> = (0..n * c * r).map(|v| v as f32).collect();
        let inner = to_batch_inner(&x, n, c);
        for b in 0..n {
            for ch in 0..c {
                for i in 0..r {
                    assert_eq!(inner[(ch * n + b) * r + i], x[(b * c + ch) * r + i]);
                }
            }
        }
        assert_eq!(to_batch_outer(&inner, n, c), x);
        let back = convert(
            &convert(&x, n, Layout::BatchOuter, Layout::BatchInner { c }),
            n,
            Layout::BatchInner { c },
            Layout::BatchOuter,
        );
        assert_eq!(back, x);
    }
}
