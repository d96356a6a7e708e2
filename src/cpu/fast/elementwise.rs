//! Broadcasting binary ops (residual adds, the squeeze-excite gate product, constant scales)
//! and standalone activations as contiguous, vectorised loops, rows in parallel.
//!
//! A broadcast is split into rows: the longest run of trailing output dimensions over which
//! each operand is either contiguous (it has those dimensions) or constant (it is stretched
//! over them). Each row is then one of four loops (vector ∘ vector, vector ∘ scalar, ...);
//! the row's start in each operand is found once per row. A residual add is one row per task,
//! the gate product one row per channel plane.

use super::{scratch, simd, PAR_MIN_ELEMS};
use crate::model::{
    broadcast_shape, broadcast_strides, Activation, Binary, BinaryOp, BinaryOperand,
};
use rayon::prelude::*;

/// `act(x ∘ operand)` (`act(operand ∘ x)` when reversed) for `n` samples of `x_shape`, with the
/// reference's NumPy broadcasting; `operand` holds `n` samples of the operand shape, or one
/// copy for a constant operand.
pub fn binary(b: &Binary, x: &[f32], x_shape: &[usize], operand: &[f32], n: usize) -> Vec<f32> {
    binary_shaped(b, &b.operand_shape, x, x_shape, operand, n)
}

/// [`binary`] with the operand seen as `operand_shape` (one of the same size as
/// `b.operand_shape`): how the batch-inner engine runs a whole batch as one sample of
/// `[c, n, ...]`.
pub fn binary_shaped(
    b: &Binary,
    operand_shape: &[usize],
    x: &[f32],
    x_shape: &[usize],
    operand: &[f32],
    n: usize,
) -> Vec<f32> {
    let out = broadcast_shape(x_shape, operand_shape)
        .expect("shapes were validated when the model was loaded");
    let out_elems: usize = out.iter().product();
    let mut y = scratch::overwritten(n * out_elems);
    if out_elems == 0 {
        return y;
    }
    let (xs, os) = (
        broadcast_strides(x_shape, &out),
        broadcast_strides(operand_shape, &out),
    );
    let x_sample: usize = x_shape.iter().product();
    let o_sample = match b.operand {
        BinaryOperand::Tensor(_) => operand_shape.iter().product(),
        BinaryOperand::Const(_) => 0,
    };
    let rows = Rows::new(&out, &xs, &os);
    let rows_per_sample = out_elems / rows.len;
    y.par_chunks_mut(rows.len)
        .enumerate()
        .with_min_len(PAR_MIN_ELEMS.div_ceil(rows.len))
        .for_each(|(r, dst)| {
            let (s, within) = (r / rows_per_sample, r % rows_per_sample);
            let (xi, oi) = rows.starts(within, &out, &xs, &os);
            let xv = rows.x.side(x, s * x_sample + xi, dst.len());
            let ov = rows.operand.side(operand, s * o_sample + oi, dst.len());
            let (l, r) = if b.reverse { (ov, xv) } else { (xv, ov) };
            simd::dispatch(|| row(b.op, b.activation, l, r, dst));
        });
    y
}

/// `act(x)` elementwise, chunks in parallel.
pub fn activation(act: Activation, x: &[f32]) -> Vec<f32> {
    let mut y = scratch::copied(x);
    y.par_chunks_mut(PAR_MIN_ELEMS)
        .for_each(|chunk| simd::dispatch(|| simd::activate(act, chunk)));
    y
}

/// How an operand varies along a row.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Along {
    /// Contiguous: the row reads consecutive values.
    Contiguous,
    /// Constant: the whole row reads one value.
    Constant,
}

impl Along {
    fn side(self, data: &[f32], start: usize, len: usize) -> Side<'_> {
        match self {
            Along::Contiguous => Side::Row(&data[start..start + len]),
            Along::Constant => Side::Scalar(data[start]),
        }
    }
}

/// One operand of one row.
#[derive(Clone, Copy)]
enum Side<'a> {
    Row(&'a [f32]),
    Scalar(f32),
}

/// The row decomposition of a broadcast: rows of `len` output values over the trailing
/// dimensions `outer..`, and how each operand varies along them.
struct Rows {
    len: usize,
    outer: usize,
    x: Along,
    operand: Along,
}

impl Rows {
    fn new(out: &[usize], xs: &[usize], os: &[usize]) -> Self {
        let mut rows = Rows {
            len: 1,
            outer: out.len(),
            x: Along::Constant,
            operand: Along::Constant,
        };
        // `None` until the operand's first dimension of size > 1 (from the end) fixes its kind.
        let (mut x_kind, mut o_kind) = (None, None);
        for d in (0..out.len()).rev() {
            if out[d] == 1 {
                rows.outer = d;
                continue;
            }
            let fits = |stride: usize, kind: &mut Option<Along>| {
                let this = if stride == 0 {
                    Along::Constant
                } else if stride == rows.len {
                    Along::Contiguous
                } else {
                    return false;
                };
                *kind.get_or_insert(this) == this
            };
            if !(fits(xs[d], &mut x_kind) && fits(os[d], &mut o_kind)) {
                break;
            }
            rows.len *= out[d];
            rows.outer = d;
        }
        rows.x = x_kind.unwrap_or(Along::Constant);
        rows.operand = o_kind.unwrap_or(Along::Constant);
        rows
    }

    /// Offsets of row `within` (of one sample) in `x` and the operand.
    fn starts(&self, within: usize, out: &[usize], xs: &[usize], os: &[usize]) -> (usize, usize) {
        let (mut xi, mut oi, mut rem) = (0, 0, within);
        for d in (0..self.outer).rev() {
            let c = rem % out[d];
            rem /= out[d];
            xi += c * xs[d];
            oi += c * os[d];
        }
        (xi, oi)
    }
}

/// `dst = act(l ∘ r)`, one monomorphic loop per op and operand kind.
#[inline(always)]
fn row(op: BinaryOp, act: Activation, l: Side<'_>, r: Side<'_>, dst: &mut [f32]) {
    match op {
        BinaryOp::Add => combine(l, r, dst, |a, b| a + b),
        BinaryOp::Sub => combine(l, r, dst, |a, b| a - b),
        BinaryOp::Mul => combine(l, r, dst, |a, b| a * b),
        BinaryOp::Div => combine(l, r, dst, |a, b| a / b),
    }
    simd::activate(act, dst);
}

#[inline(always)]
fn combine(l: Side<'_>, r: Side<'_>, dst: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    match (l, r) {
        (Side::Row(l), Side::Row(r)) => {
            for ((d, a), b) in dst.iter_mut().zip(l).zip(r) {
                *d = f(*a, *b);
            }
        }
        (Side::Row(l), Side::Scalar(b)) => {
            for (d, a) in dst.iter_mut().zip(l) {
                *d = f(*a, b);
            }
        }
        (Side::Scalar(a), Side::Row(r)) => {
            for (d, b) in dst.iter_mut().zip(r) {
                *d = f(a, *b);
            }
        }
        (Side::Scalar(a), Side::Scalar(b)) => dst.fill(f(a, b)),
    }
}
