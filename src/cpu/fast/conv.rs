//! Convolutions as GEMM: per sample and group, `Y[cout_g, oh·ow] = W[cout_g, K] · X[K, oh·ow]`
//! where `X` is the input itself for 1x1 stride-1 unpadded convolutions and its im2col
//! unfolding (`K = cin_g·kh·kw`) otherwise; depthwise convolutions go to [`super::depthwise`].
//! Bias and activation are applied in one pass over each output plane right after its GEMM.

use super::gemm::{matmul, matmul_single, MatRef};
use super::scratch::{self, with_scratch};
use super::{dense, depthwise, simd, PAR_MIN_ELEMS};
use crate::model::Conv2d;
use rayon::prelude::*;

/// 2-D convolution of `n` samples of `[in_channels, h, w]`; returns `[n, out, oh, ow]`.
pub fn conv2d(conv: &Conv2d, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
    if conv.is_depthwise() {
        return depthwise::conv2d(conv, x, n, h, w);
    }
    let (oh, ow) = conv
        .output_hw(h, w)
        .expect("shapes were validated when the model was loaded");
    let pointwise = conv.is_pointwise();
    if pointwise && h * w == 1 && conv.groups == 1 {
        // A 1x1 convolution of 1x1 planes (squeeze-excite) is a dense layer over the batch.
        return dense::linear(
            &conv.weight,
            &conv.bias,
            conv.activation,
            cin_cout(conv),
            x,
            n,
        );
    }
    if pointwise && conv.groups == 1 {
        return pointwise_conv(conv, x, n, h * w);
    }
    let (cin, cout, groups) = (conv.in_channels, conv.out_channels, conv.groups);
    let (cin_g, cout_g) = (cin / groups, cout / groups);
    let k = cin_g * conv.kernel_h * conv.kernel_w;
    let (hw, ohw) = (h * w, oh * ow);
    let mut y = scratch::overwritten(n * cout * ohw);
    let cols = if pointwise { 0 } else { k * ohw };
    with_scratch(cols, |col| {
        for b in 0..n {
            for g in 0..groups {
                let xg = &x[(b * cin + g * cin_g) * hw..(b * cin + (g + 1) * cin_g) * hw];
                let rhs = if pointwise {
                    MatRef::row_major(xg, hw)
                } else {
                    im2col(conv, xg, h, w, oh, ow, col);
                    MatRef::row_major(col, ohw)
                };
                let weight = &conv.weight[g * cout_g * k..(g + 1) * cout_g * k];
                let out =
                    &mut y[(b * cout + g * cout_g) * ohw..(b * cout + (g + 1) * cout_g) * ohw];
                matmul(cout_g, ohw, k, MatRef::row_major(weight, k), rhs, out, ohw);
            }
        }
    });
    epilogue(conv, &mut y, ohw);
    y
}

/// True when [`conv2d_batch_inner`] runs `conv`: ungrouped and depthwise convolutions (other
/// grouped ones run batch-outer).
pub fn runs_batch_inner(conv: &Conv2d) -> bool {
    conv.groups == 1 || conv.is_depthwise()
}

/// [`conv2d`] on batch-inner activations ([`super::layout`]): `x` is `[in_channels, n, h, w]`,
/// the result `[out_channels, n, oh, ow]`. Every output channel of the whole batch comes out of
/// one GEMM: 1x1 convolutions multiply the input itself, KxK ones its im2col unfolding over
/// all samples. Only for convolutions [`runs_batch_inner`] accepts.
pub fn conv2d_batch_inner(conv: &Conv2d, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
    debug_assert!(runs_batch_inner(conv));
    if n == 1 {
        // One sample: both layouts are the same memory.
        return conv2d(conv, x, 1, h, w);
    }
    if conv.is_depthwise() {
        return depthwise::conv2d_batch_inner(conv, x, n, h, w);
    }
    let (oh, ow) = conv
        .output_hw(h, w)
        .expect("shapes were validated when the model was loaded");
    let pointwise = conv.is_pointwise();
    if pointwise {
        return pointwise_conv(conv, x, 1, n * h * w);
    }
    if conv.stride == (1, 1) && conv.dilation == (1, 1) && conv.pads == [0; 4] {
        return full_width_batch_inner(conv, x, n, (h, w), (oh, ow));
    }
    unfolded_batch_inner(conv, x, n, (h, w), (oh, ow))
}

/// An unpadded stride-1 KxK ungrouped convolution of a batch-inner batch (the LeNet 5x5s),
/// computed on the full input width: output `(oy, ox)` is flat position `p = oy·w + ox`, which
/// reads tap `(c, ky, kx)` at `p + ky·w + kx` of plane `c`. So each im2col row of a sample is
/// one contiguous copy of `(oh - 1)·w + ow` values (instead of `oh` copies of `ow`), at the
/// price of `w - ow` computed-and-dropped columns per output row. Tasks take blocks of
/// samples; each copies the kept columns out with bias and activation.
fn full_width_batch_inner(
    conv: &Conv2d,
    x: &[f32],
    n: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    let cout = conv.out_channels;
    let (kh, kw) = (conv.kernel_h, conv.kernel_w);
    let k = conv.in_channels * kh * kw;
    let (ohw, hw) = (oh * ow, h * w);
    let cols = n * ohw;
    let mut y = scratch::overwritten(cout * cols);
    if cols == 0 || cout == 0 {
        return y;
    }
    // Flat positions per sample: the last one is (oh - 1, ow - 1).
    let flat = (oh - 1) * w + ow;
    let threads = rayon::current_num_threads();
    let per_task = (UNFOLD_TILE_VALUES / (k * flat).max(1))
        .min(n.div_ceil(2 * threads))
        .max(1);
    let out = SharedOut(y.as_mut_ptr());
    (0..n.div_ceil(per_task)).into_par_iter().for_each(|task| {
        let (b0, b1) = (task * per_task, ((task + 1) * per_task).min(n));
        let width = (b1 - b0) * flat;
        with_scratch(k * width + cout * width, |scratch| {
            let (col, acc) = scratch.split_at_mut(k * width);
            for (r, dst) in col.chunks_exact_mut(width).enumerate() {
                let (c, ky, kx) = (r / (kh * kw), r / kw % kh, r % kw);
                for (b, d) in (b0..b1).zip(dst.chunks_exact_mut(flat)) {
                    let start = (c * n + b) * hw + ky * w + kx;
                    d.copy_from_slice(&x[start..start + flat]);
                }
            }
            matmul_single_into(
                cout,
                width,
                k,
                MatRef::row_major(&conv.weight, k),
                MatRef::row_major(col, width),
                acc,
            );
            for (r, computed) in acc.chunks_exact(width).enumerate() {
                for (b, sample) in (b0..b1).zip(computed.chunks_exact(flat)) {
                    // SAFETY: channel r's output plane of sample b lies inside `y` (which
                    // outlives the loop) and is written by this task only: tasks cover
                    // disjoint blocks of samples.
                    let dst = unsafe { out.slice(r * cols + b * ohw, ohw) };
                    for (oy, row) in dst.chunks_exact_mut(ow).enumerate() {
                        row.copy_from_slice(&sample[oy * w..oy * w + ow]);
                    }
                    simd::dispatch(|| simd::bias_activate(conv.activation, conv.bias[r], dst));
                }
            }
        });
    });
    y
}

/// [`matmul_single`] into a task's own row-major `m × n` buffer.
fn matmul_single_into(m: usize, n: usize, k: usize, a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32]) {
    assert!(
        c.len() >= m * n,
        "gemm output: {m}x{n} in {} values",
        c.len()
    );
    // SAFETY: `c` holds the m × n block and is borrowed mutably for the call.
    unsafe { matmul_single(m, n, k, a, b, c.as_mut_ptr(), n) }
}

/// im2col values one batch-inner KxK task unfolds: they and the GEMM's packed copies of them
/// stay in the L2 cache.
const UNFOLD_TILE_VALUES: usize = 48 * 1024;

/// A KxK (or strided or padded 1x1) ungrouped convolution of a batch-inner batch as GEMMs
/// over blocks of output rows `(sample, oy)`: each task unfolds its rows of every sample into
/// a cache-sized im2col block, multiplies it single-threaded into its columns of
/// `Y[cout, n·oh·ow]`, and applies bias and activation while they are in cache.
fn unfolded_batch_inner(
    conv: &Conv2d,
    x: &[f32],
    n: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    let cout = conv.out_channels;
    let k = conv.in_channels * conv.kernel_h * conv.kernel_w;
    let (cols, out_rows) = (n * oh * ow, n * oh);
    let mut y = scratch::overwritten(cout * cols);
    if cols == 0 || cout == 0 {
        return y;
    }
    let threads = rayon::current_num_threads();
    let rows = (UNFOLD_TILE_VALUES / (k * ow).max(1))
        .min(out_rows.div_ceil(2 * threads))
        .max(1);
    let blocks = out_rows.div_ceil(rows);
    let out = SharedOut(y.as_mut_ptr());
    (0..blocks).into_par_iter().for_each(|block| {
        let (g0, g1) = (block * rows, ((block + 1) * rows).min(out_rows));
        let width = (g1 - g0) * ow;
        with_scratch(k * width, |col| {
            unfold_rows(conv, x, n, (h, w), (oh, ow), g0..g1, col);
            // SAFETY: this task's cells, columns g0·ow..g1·ow of every output channel, lie
            // inside `y` (which outlives the loop) and are written by this task only: tasks
            // cover disjoint ranges of output rows.
            unsafe {
                matmul_single(
                    cout,
                    width,
                    k,
                    MatRef::row_major(&conv.weight, k),
                    MatRef::row_major(col, width),
                    out.at(g0 * ow),
                    cols,
                );
            }
        });
        for r in 0..cout {
            // SAFETY: as above; one channel's segment of this task's columns.
            let row = unsafe { out.slice(r * cols + g0 * ow, width) };
            simd::dispatch(|| simd::bias_activate(conv.activation, conv.bias[r], row));
        }
    });
    y
}

/// Output values (channels × positions) one pointwise task computes: its block of the output
/// and the input columns it reads stay in the L2 cache for the bias and activation pass.
const POINTWISE_TILE_VALUES: usize = 64 * 1024;

/// Positions per pointwise task are a multiple of this (the GEMM kernel's column width).
const POINTWISE_COLUMN_STEP: usize = 16;

/// A 1x1 stride-1 unpadded ungrouped convolution: per sample `Y[cout, hw] = W[cout, cin] ·
/// X[cin, hw]`, cut into tasks of (sample, block of positions, block of output channels) that
/// run in parallel, each one single-threaded GEMM followed by bias and activation on its own
/// block while it is still in cache. Blocks of channels are cut only when samples and
/// positions give too few tasks to keep every thread busy (the 7x7 planes at batch 1).
fn pointwise_conv(conv: &Conv2d, x: &[f32], n: usize, hw: usize) -> Vec<f32> {
    let (cin, cout) = (conv.in_channels, conv.out_channels);
    let mut y = scratch::overwritten(n * cout * hw);
    if hw == 0 || cout == 0 {
        return y;
    }
    let cols = (POINTWISE_TILE_VALUES / cout.max(1))
        .next_multiple_of(POINTWISE_COLUMN_STEP)
        .min(hw);
    let col_blocks = hw.div_ceil(cols);
    // At least two tasks per thread when the work is large enough to be worth splitting.
    let threads = rayon::current_num_threads();
    let wanted = if n * cout * hw * cin >= PAR_MIN_ELEMS * 16 {
        2 * threads
    } else {
        1
    };
    let row_blocks = wanted.div_ceil(n * col_blocks).clamp(1, cout.div_ceil(8));
    let rows = cout.div_ceil(row_blocks).next_multiple_of(8).min(cout);
    let row_blocks = cout.div_ceil(rows);
    let out = SharedOut(y.as_mut_ptr());
    (0..n * col_blocks * row_blocks)
        .into_par_iter()
        .for_each(|task| {
            let (b, rest) = (
                task / (col_blocks * row_blocks),
                task % (col_blocks * row_blocks),
            );
            let (cb, rb) = (rest / row_blocks, rest % row_blocks);
            let (c0, c1) = (cb * cols, ((cb + 1) * cols).min(hw));
            let (r0, r1) = (rb * rows, ((rb + 1) * rows).min(cout));
            let xb = &x[b * cin * hw..(b + 1) * cin * hw];
            let weight = MatRef::row_major(&conv.weight[r0 * cin..r1 * cin], cin);
            let rhs = MatRef::row_major(&xb[c0..], hw);
            // SAFETY: this task's cells, rows r0..r1 by columns c0..c1 of sample b, lie inside
            // `y` (which outlives the loop) and are written by this task only: tasks cover
            // disjoint (sample, row block, column block) rectangles.
            unsafe {
                matmul_single(
                    r1 - r0,
                    c1 - c0,
                    cin,
                    weight,
                    rhs,
                    out.at((b * cout + r0) * hw + c0),
                    hw,
                );
            }
            for r in r0..r1 {
                // SAFETY: as above; one row segment of this task's rectangle.
                let row = unsafe { out.slice((b * cout + r) * hw + c0, c1 - c0) };
                simd::dispatch(|| simd::bias_activate(conv.activation, conv.bias[r], row));
            }
        });
    y
}

/// The output pointer shared by the pointwise tasks, each writing its own cells.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: the tasks that share it write disjoint cells (see `pointwise_conv`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `start` lies inside the allocation.
    unsafe fn at(self, start: usize) -> *mut f32 {
        self.0.add(start)
    }

    /// # Safety
    /// `start..start + len` lies inside the allocation, which outlives the slice, and no other
    /// reference to those cells is live while the slice is.
    unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

/// `act(y + bias[channel])` over every output plane, planes in parallel.
fn epilogue(conv: &Conv2d, y: &mut [f32], ohw: usize) {
    let cout = conv.out_channels;
    let planes_per_task = PAR_MIN_ELEMS.div_ceil(ohw.max(1));
    y.par_chunks_mut(ohw.max(1))
        .enumerate()
        .with_min_len(planes_per_task)
        .for_each(|(plane, out)| {
            simd::dispatch(|| simd::bias_activate(conv.activation, conv.bias[plane % cout], out))
        });
}

/// `(inputs, outputs)` of a 1x1 ungrouped convolution seen as a dense layer.
fn cin_cout(conv: &Conv2d) -> (usize, usize) {
    (conv.in_channels, conv.out_channels)
}

/// Unfolds one group of one sample (`cin_g` planes of `h × w`) into `col`, a row-major
/// `[cin_g·kh·kw, oh·ow]` matrix whose row `(c, ky, kx)` holds the input value each output
/// position reads through that tap (0 in the padding). Rows are filled in parallel.
fn im2col(conv: &Conv2d, x: &[f32], h: usize, w: usize, oh: usize, ow: usize, col: &mut [f32]) {
    let (kh, kw) = (conv.kernel_h, conv.kernel_w);
    let ((sh, sw), (dh, dw)) = (conv.stride, conv.dilation);
    let (pt, pl) = (conv.pads[0], conv.pads[1]);
    let ohw = oh * ow;
    let rows_per_task = PAR_MIN_ELEMS.div_ceil(ohw.max(1));
    col.par_chunks_mut(ohw.max(1))
        .enumerate()
        .with_min_len(rows_per_task)
        .for_each(|(row, dst)| {
            let (c, ky, kx) = (row / (kh * kw), row / kw % kh, row % kw);
            let plane = &x[c * h * w..(c + 1) * h * w];
            // Output columns whose input column `ox·sw + kx·dw - pl` lies inside `0..w`.
            let (ox0, ox1) = valid_range(ow, sw, kx * dw, pl, w);
            for oy in 0..oh {
                let out = &mut dst[oy * ow..(oy + 1) * ow];
                let iy = (oy * sh + ky * dh).wrapping_sub(pt);
                if iy >= h || ox0 >= ox1 {
                    out.fill(0.0);
                    continue;
                }
                let src = &plane[iy * w..(iy + 1) * w];
                tap_row(out, src, (ox0, ox1), ox0 * sw + kx * dw - pl, sw);
            }
        });
}

/// One output row of an unfolded tap: the input row `src` read from `first` every `sw` values
/// into `out[ox0..ox1]`, zeros (the padding) elsewhere.
fn tap_row(out: &mut [f32], src: &[f32], (ox0, ox1): (usize, usize), first: usize, sw: usize) {
    out[..ox0].fill(0.0);
    out[ox1..].fill(0.0);
    if sw == 1 {
        out[ox0..ox1].copy_from_slice(&src[first..first + (ox1 - ox0)]);
    } else {
        for (o, i) in out[ox0..ox1]
            .iter_mut()
            .zip(src[first..].iter().step_by(sw))
        {
            *o = *i;
        }
    }
}

/// [`im2col`] of the output rows `rows` (row `g` is sample `g / oh`, output row `g % oh`) of a
/// batch-inner batch: `col` is `[cin·kh·kw, rows.len()·ow]`, filled on the calling thread.
fn unfold_rows(
    conv: &Conv2d,
    x: &[f32],
    n: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    rows: std::ops::Range<usize>,
    col: &mut [f32],
) {
    let (kh, kw) = (conv.kernel_h, conv.kernel_w);
    let ((sh, sw), (dh, dw)) = (conv.stride, conv.dilation);
    let (pt, pl) = (conv.pads[0], conv.pads[1]);
    let width = rows.len() * ow;
    for (r, dst) in col.chunks_exact_mut(width.max(1)).enumerate() {
        let (c, ky, kx) = (r / (kh * kw), r / kw % kh, r % kw);
        let (ox0, ox1) = valid_range(ow, sw, kx * dw, pl, w);
        for (g, out) in rows.clone().zip(dst.chunks_exact_mut(ow.max(1))) {
            let (b, oy) = (g / oh, g % oh);
            let iy = (oy * sh + ky * dh).wrapping_sub(pt);
            if iy >= h || ox0 >= ox1 {
                out.fill(0.0);
                continue;
            }
            let plane = (c * n + b) * h * w;
            let src = &x[plane + iy * w..plane + (iy + 1) * w];
            tap_row(out, src, (ox0, ox1), ox0 * sw + kx * dw - pl, sw);
        }
    }
}

/// The outputs `ox0..ox1` (of `out_len`) whose input index `ox·stride + offset - pad` lies in
/// `0..len`; empty when none does.
pub(crate) fn valid_range(
    out_len: usize,
    stride: usize,
    offset: usize,
    pad: usize,
    len: usize,
) -> (usize, usize) {
    // First ox with ox·stride + offset >= pad.
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    // One past the last ox with ox·stride + offset - pad <= len - 1.
    let hi = if offset > len - 1 + pad {
        0
    } else {
        ((len - 1 + pad - offset) / stride + 1).min(out_len)
    };
    (lo.min(hi), hi)
}

#[cfg(test)]
mod tests {
    use super::valid_range;

    #[test]
    fn valid_range_matches_a_brute_force_scan() {
        for len in 1..7 {
            for stride in 1..4 {
                for offset in 0..6 {
                    for pad in 0..4 {
                        let out_len = 9;
                        let want: Vec<usize> = (0..out_len)
                            .filter(|&o| {
                                let i = (o * stride + offset) as isize - pad as isize;
                                (0..len as isize).contains(&i)
                            })
                            .collect();
                        let (lo, hi) = valid_range(out_len, stride, offset, pad, len);
                        assert_eq!(
                            (lo..hi).collect::<Vec<_>>(),
                            want,
                            "len {len} stride {stride} offset {offset} pad {pad}"
                        );
                    }
                }
            }
        }
    }
}
