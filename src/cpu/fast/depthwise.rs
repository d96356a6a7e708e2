//! Depthwise convolutions (one input and one output channel per group) as direct kernels:
//! planes in parallel; per output row, every tap adds a weighted input row segment to the
//! row, a contiguous loop without bounds checks that auto-vectorises. The padding never enters
//! the hot loop: each tap's valid output columns are computed once ([`valid_range`]).

use super::conv::valid_range;
use super::{simd, PAR_MIN_ELEMS};
use crate::model::Conv2d;
use rayon::prelude::*;

/// Depthwise convolution of `n` samples of `[channels, h, w]`; returns `[n, channels, oh, ow]`.
pub fn conv2d(conv: &Conv2d, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
    debug_assert!(conv.is_depthwise());
    let (oh, ow) = conv
        .output_hw(h, w)
        .expect("shapes were validated when the model was loaded");
    let c = conv.out_channels;
    let ohw = oh * ow;
    let mut y = vec![0.0f32; n * c * ohw];
    if ohw == 0 {
        return y;
    }
    let planes_per_task = PAR_MIN_ELEMS.div_ceil(ohw * conv.kernel_h * conv.kernel_w);
    y.par_chunks_mut(ohw)
        .enumerate()
        .with_min_len(planes_per_task)
        .for_each(|(plane, out)| {
            let ch = plane % c;
            let input = &x[plane * h * w..(plane + 1) * h * w];
            simd::dispatch(|| plane_kernel(conv, ch, input, h, w, out, ow));
        });
    y
}

/// One output plane (channel `ch`) from its input plane.
#[inline(always)]
fn plane_kernel(
    conv: &Conv2d,
    ch: usize,
    input: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
    ow: usize,
) {
    let (kh, kw) = (conv.kernel_h, conv.kernel_w);
    let ((sh, sw), (dh, dw)) = (conv.stride, conv.dilation);
    let (pt, pl) = (conv.pads[0], conv.pads[1]);
    let taps = &conv.weight[ch * kh * kw..(ch + 1) * kh * kw];
    let bias = conv.bias[ch];
    for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
        row.fill(bias);
        for ky in 0..kh {
            let iy = (oy * sh + ky * dh).wrapping_sub(pt);
            if iy >= h {
                continue;
            }
            let src = &input[iy * w..(iy + 1) * w];
            for kx in 0..kw {
                let wv = taps[ky * kw + kx];
                let (ox0, ox1) = valid_range(ow, sw, kx * dw, pl, w);
                if ox0 >= ox1 {
                    continue;
                }
                let first = ox0 * sw + kx * dw - pl;
                let dst = &mut row[ox0..ox1];
                if sw == 1 {
                    let src = &src[first..first + dst.len()];
                    for (o, i) in dst.iter_mut().zip(src) {
                        *o += wv * i;
                    }
                } else {
                    for (o, i) in dst.iter_mut().zip(src[first..].iter().step_by(sw)) {
                        *o += wv * i;
                    }
                }
            }
        }
        simd::activate(conv.activation, row);
    }
}
