//! Pooling and the squeeze-excite pieces: windowed max/avg pooling, global average pooling and
//! the per-channel gate product, planes in parallel with contiguous inner loops.

use super::{scratch, simd, PAR_MIN_ELEMS};
use crate::model::{Pool, PoolKind};
use rayon::prelude::*;

/// Max or average pooling of `nc` planes of `h × w`, with the reference's semantics
/// (padding never counts as a value; `count_include_pad` only changes the divisor).
pub fn pool(pool: &Pool, x: &[f32], nc: usize, h: usize, w: usize) -> Vec<f32> {
    let (oh, ow) = pool
        .output_hw(h, w)
        .expect("shapes were validated when the model was loaded");
    let ohw = oh * ow;
    let mut y = scratch::overwritten(nc * ohw);
    if ohw == 0 {
        return y;
    }
    let planes_per_task = PAR_MIN_ELEMS.div_ceil(ohw * pool.kernel_h * pool.kernel_w);
    let inside = pool.pads == [0; 4]
        && (oh - 1) * pool.stride.0 + pool.kernel_h <= h
        && (ow - 1) * pool.stride.1 + pool.kernel_w <= w;
    y.par_chunks_mut(ohw)
        .enumerate()
        .with_min_len(planes_per_task)
        .for_each(|(plane, out)| {
            let input = &x[plane * h * w..(plane + 1) * h * w];
            match (pool.kind, inside) {
                (PoolKind::Max, true) => {
                    simd::dispatch(|| plane_pool_inside::<true>(pool, input, w, out, ow))
                }
                (PoolKind::Avg, true) => {
                    simd::dispatch(|| plane_pool_inside::<false>(pool, input, w, out, ow))
                }
                (PoolKind::Max, false) => plane_pool::<true>(pool, input, h, w, out, ow),
                (PoolKind::Avg, false) => plane_pool::<false>(pool, input, h, w, out, ow),
            }
        });
    y
}

/// One output plane when every window lies inside the input (no padding, no partial
/// ceil-mode window): per output row, one pass per window tap over the whole row, without
/// clipping; 2-wide stride-2 windows (the common 2x2 pooling) read pairs.
#[inline(always)]
fn plane_pool_inside<const MAX: bool>(
    pool: &Pool,
    input: &[f32],
    w: usize,
    out: &mut [f32],
    ow: usize,
) {
    let (sh, sw) = pool.stride;
    let (kh, kw) = (pool.kernel_h, pool.kernel_w);
    let fold = |a: f32, b: f32| if MAX { a.max(b) } else { a + b };
    for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
        row.fill(if MAX { f32::NEG_INFINITY } else { 0.0 });
        for ky in 0..kh {
            let src = &input[(oy * sh + ky) * w..(oy * sh + ky + 1) * w];
            if sw == 2 && kw == 2 {
                for (o, pair) in row.iter_mut().zip(src.chunks_exact(2)) {
                    *o = fold(*o, fold(pair[0], pair[1]));
                }
                continue;
            }
            for kx in 0..kw {
                for (o, v) in row.iter_mut().zip(src[kx..].iter().step_by(sw)) {
                    *o = fold(*o, *v);
                }
            }
        }
        if !MAX {
            let count = (kh * kw) as f32;
            row.iter_mut().for_each(|v| *v /= count);
        }
    }
}

/// One output plane; `MAX` picks the reduction at compile time.
fn plane_pool<const MAX: bool>(
    pool: &Pool,
    input: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
    ow: usize,
) {
    let (sh, sw) = pool.stride;
    let [pt, pl, pb, pr] = pool.pads;
    for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
        // Window rows in padded coordinates, clipped to the padded input, then to the input.
        let y0 = oy * sh;
        let y1 = (y0 + pool.kernel_h).min(h + pt + pb);
        let (iy0, iy1) = (y0.max(pt) - pt, y1.min(h + pt).saturating_sub(pt));
        for (ox, v) in row.iter_mut().enumerate() {
            let x0 = ox * sw;
            let x1 = (x0 + pool.kernel_w).min(w + pl + pr);
            let (ix0, ix1) = (x0.max(pl) - pl, x1.min(w + pl).saturating_sub(pl));
            let mut max = f32::NEG_INFINITY;
            let mut sum = 0.0f32;
            for iy in iy0..iy1.max(iy0) {
                let cells = &input[iy * w + ix0..iy * w + ix1.max(ix0)];
                if MAX {
                    max = cells.iter().fold(max, |m, &c| m.max(c));
                } else {
                    sum += cells.iter().sum::<f32>();
                }
            }
            *v = if MAX {
                max
            } else {
                let count = if pool.count_include_pad {
                    (y1 - y0) * (x1 - x0)
                } else {
                    iy1.saturating_sub(iy0) * ix1.saturating_sub(ix0)
                };
                sum / count.max(1) as f32
            };
        }
    }
}

/// Mean of each of `nc` planes of `hw` values, summed in 8 lanes (vectorised).
pub fn global_avgpool(x: &[f32], nc: usize, hw: usize) -> Vec<f32> {
    let mut y = scratch::zeroed(nc);
    if hw == 0 {
        return y;
    }
    y.par_iter_mut()
        .enumerate()
        .with_min_len(PAR_MIN_ELEMS.div_ceil(hw))
        .for_each(|(p, v)| *v = simd::dispatch(|| lane_sum(&x[p * hw..(p + 1) * hw])) / hw as f32);
    y
}

/// Sum with eight independent accumulators, so the loop vectorises.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Product of `x` (planes of `hw` values) with a per-plane `gate`; with `hw == 1` the
/// elementwise product.
pub fn mul(gate: &[f32], x: &[f32], hw: usize) -> Vec<f32> {
    let mut y = scratch::copied(x);
    if hw == 0 {
        return y;
    }
    y.par_chunks_mut(hw)
        .zip(gate.par_iter())
        .with_min_len(PAR_MIN_ELEMS.div_ceil(hw))
        .for_each(|(plane, &g)| plane.iter_mut().for_each(|v| *v *= g));
    y
}
