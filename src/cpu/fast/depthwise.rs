//! Depthwise convolutions (one input and one output channel per group) as direct kernels,
//! planes in parallel.
//!
//! Each input plane is first split into its zero-padded *phase planes*: for stride `(sh, sw)`
//! the `sh·sw` subsampled grids `P[py, px][r, c] = padded[r·sh + py, c·sw + px]` (one padded
//! copy at stride 1), all of width `wp`. Output `(oy, ox)` then reads, through tap `(ky, kx)`,
//! the phase plane of `(ky·dh mod sh, kx·dw mod sw)` at flat index
//! `oy·wp + ox + (ky·dh / sh)·wp + kx·dw / sw`: a fixed offset from `oy·wp + ox`. So the whole
//! plane is computed as one flat sequence of `oh·wp` positions (the `wp - ow` extra columns of
//! each row are computed and dropped), in register tiles of [`TILE`] consecutive positions that
//! accumulate every tap before they are stored: long contiguous vector loops without bounds
//! checks or padding tests, even on 7x7 planes, at the price of `wp / ow` extra work.

use super::scratch::with_scratch;
use super::{simd, PAR_MIN_ELEMS};
use crate::model::Conv2d;
use rayon::prelude::*;

/// Output positions accumulated in registers at once (four 8-lane vectors).
const TILE: usize = 32;

/// Depthwise convolution of `n` samples of `[channels, h, w]`; returns `[n, channels, oh, ow]`.
pub fn conv2d(conv: &Conv2d, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
    let c = conv.out_channels;
    by_planes(conv, x, n * c, h, w, |plane| plane % c)
}

/// [`conv2d`] on batch-inner activations: `x` is `[channels, n, h, w]`, the result
/// `[channels, n, oh, ow]`.
pub fn conv2d_batch_inner(conv: &Conv2d, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
    by_planes(conv, x, n * conv.out_channels, h, w, |plane| {
        plane / n.max(1)
    })
}

/// `planes` input planes of `h × w` to as many output planes; `channel(p)` is the channel
/// (filter) of plane `p`.
fn by_planes(
    conv: &Conv2d,
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    channel: impl Fn(usize) -> usize + Sync,
) -> Vec<f32> {
    debug_assert!(conv.is_depthwise());
    let (oh, ow) = conv
        .output_hw(h, w)
        .expect("shapes were validated when the model was loaded");
    let ohw = oh * ow;
    let mut y = vec![0.0f32; planes * ohw];
    if ohw == 0 || h * w == 0 {
        return y;
    }
    let geometry = Phases::new(conv, h, w, oh);
    let planes_per_task = PAR_MIN_ELEMS.div_ceil(ohw * conv.kernel_h * conv.kernel_w);
    y.par_chunks_mut(ohw)
        .enumerate()
        .with_min_len(planes_per_task)
        .for_each(|(plane, out)| {
            let ch = channel(plane);
            let input = &x[plane * h * w..(plane + 1) * h * w];
            with_scratch(geometry.scratch_len(conv.stride.1), |scratch| {
                simd::dispatch(|| plane_kernel(conv, &geometry, ch, input, out, ow, scratch))
            });
        });
    y
}

/// The phase-plane geometry of one convolution on one input size.
struct Phases {
    h: usize,
    w: usize,
    oh: usize,
    /// Phase planes: `sh·sw`.
    phases: usize,
    /// Rows and columns of every phase plane.
    hp: usize,
    wp: usize,
    /// Values allocated per phase plane: `hp·wp` plus the slack the last tile reads past it.
    plane_len: usize,
    /// Flat positions computed: `oh·wp` rounded up to whole tiles.
    positions: usize,
}

impl Phases {
    fn new(conv: &Conv2d, h: usize, w: usize, oh: usize) -> Self {
        let (sh, sw) = conv.stride;
        let [pt, pl, pb, pr] = conv.pads;
        let (hp, wp) = ((h + pt + pb).div_ceil(sh), (w + pl + pr).div_ceil(sw));
        let positions = (oh * wp).div_ceil(TILE) * TILE;
        let (dh, dw) = conv.dilation;
        let max_offset = (conv.kernel_h - 1) * dh / sh * wp + (conv.kernel_w - 1) * dw / sw;
        Self {
            h,
            w,
            oh,
            phases: sh * sw,
            hp,
            wp,
            plane_len: (hp * wp).max(positions + max_offset),
            positions,
        }
    }

    /// Scratch values one plane needs: its phase planes, the computed positions and one
    /// padded input row.
    fn scratch_len(&self, sw: usize) -> usize {
        self.phases * self.plane_len + self.positions + self.wp * sw
    }

    /// Fills the phase planes of `input` into `planes` (`phases · plane_len` values), every
    /// value written once; `row` is scratch for one padded input row (`wp · sw` values).
    fn split(&self, conv: &Conv2d, input: &[f32], planes: &mut [f32], row: &mut [f32]) {
        let (sh, sw) = conv.stride;
        let (pt, pl) = (conv.pads[0], conv.pads[1]);
        let (h, w, wp, hp, len) = (self.h, self.w, self.wp, self.hp, self.plane_len);
        for py in 0..sh {
            for r in 0..hp {
                let iy = (r * sh + py).wrapping_sub(pt);
                let rows = (0..sw).map(|px| (py * sw + px) * len + r * wp);
                if iy >= h {
                    for start in rows {
                        planes[start..start + wp].fill(0.0);
                    }
                    continue;
                }
                let src = &input[iy * w..(iy + 1) * w];
                // The padded row (`wp·sw >= pl + w + pr` by construction).
                let padded = &mut row[..wp * sw];
                padded[..pl].fill(0.0);
                padded[pl..pl + w].copy_from_slice(src);
                padded[pl + w..].fill(0.0);
                match sw {
                    1 => planes[py * len + r * wp..][..wp].copy_from_slice(padded),
                    2 => {
                        let (even, odd) = planes.split_at_mut((py * 2 + 1) * len);
                        let even = &mut even[py * 2 * len + r * wp..][..wp];
                        let odd = &mut odd[r * wp..][..wp];
                        for ((e, o), pair) in even.iter_mut().zip(odd).zip(padded.chunks_exact(2)) {
                            *e = pair[0];
                            *o = pair[1];
                        }
                    }
                    _ => {
                        for (px, start) in rows.enumerate() {
                            let dst = &mut planes[start..start + wp];
                            for (d, v) in dst.iter_mut().zip(padded[px..].iter().step_by(sw)) {
                                *d = *v;
                            }
                        }
                    }
                }
            }
        }
        // The slack the last tiles read past each plane.
        for phase in 0..self.phases {
            planes[phase * len + hp * wp..(phase + 1) * len].fill(0.0);
        }
    }
}

/// One output plane (channel `ch`) from its input plane.
#[inline(always)]
fn plane_kernel(
    conv: &Conv2d,
    g: &Phases,
    ch: usize,
    input: &[f32],
    out: &mut [f32],
    ow: usize,
    scratch: &mut [f32],
) {
    let (kh, kw) = (conv.kernel_h, conv.kernel_w);
    let ((sh, sw), (dh, dw)) = (conv.stride, conv.dilation);
    let (planes, rest) = scratch.split_at_mut(g.phases * g.plane_len);
    let (acc, row) = rest.split_at_mut(g.positions);
    g.split(conv, input, planes, row);
    let planes = &*planes;
    // Per tap: its weight and where its reads start (phase plane + offset).
    let taps = &conv.weight[ch * kh * kw..(ch + 1) * kh * kw];
    let mut starts = Vec::with_capacity(kh * kw);
    for ky in 0..kh {
        for kx in 0..kw {
            let phase = (ky * dh % sh) * sw + kx * dw % sw;
            let offset = ky * dh / sh * g.wp + kx * dw / sw;
            starts.push((taps[ky * kw + kx], phase * g.plane_len + offset));
        }
    }
    for (t, tile) in acc.chunks_exact_mut(TILE).enumerate() {
        let base = t * TILE;
        let mut sum = [0.0f32; TILE];
        for &(wv, start) in &starts {
            let src: &[f32; TILE] = planes[start + base..start + base + TILE]
                .try_into()
                .expect("TILE values");
            for (s, v) in sum.iter_mut().zip(src) {
                *s += wv * v;
            }
        }
        tile.copy_from_slice(&sum);
    }
    let bias = conv.bias[ch];
    for (oy, row) in out.chunks_exact_mut(ow).enumerate().take(g.oh) {
        for (o, a) in row.iter_mut().zip(&acc[oy * g.wp..oy * g.wp + ow]) {
            *o = a + bias;
        }
    }
    simd::activate(conv.activation, out);
}
