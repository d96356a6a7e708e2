//! Depthwise convolutions (one input and one output channel per group) as direct kernels,
//! planes in parallel.
//!
//! Each input plane is first copied into a zero-padded buffer whose rows are split into their
//! `sw` column phases (phase `p`, column `j` = padded column `j·sw + p`; a plain padded copy at
//! stride 1). Output `(oy, ox)` then reads tap `(ky, kx)` at column `ox + kx·dw / sw` of phase
//! `kx·dw mod sw` of padded row `oy·sh + ky·dh`: one offset per tap from a base that moves by
//! a whole row per output row and by one value per output column, so every read is a
//! contiguous vector at any stride. The outputs are computed in register tiles of `R` rows by
//! `V` 8-lane vectors that start at the bias and accumulate every tap before one store
//! (AVX+FMA intrinsics where the CPU has them, the same tiles in plain arrays elsewhere); the
//! activation runs over the finished plane. Tiles are chosen per plane width so that short
//! rows (7x7, 14x14) still keep eight independent sums in flight.

use super::scratch::{self, with_scratch};
use super::{simd, PAR_MIN_ELEMS};
use crate::model::Conv2d;
use rayon::prelude::*;

/// Lanes of one vector of the register tiles.
const LANES: usize = 8;

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
    let mut y = scratch::overwritten(planes * ohw);
    if ohw == 0 {
        return y;
    }
    let g = Padded::new(conv, (h, w), (oh, ow));
    let avx = simd::has_avx_fma();
    let planes_per_task = PAR_MIN_ELEMS.div_ceil(ohw * conv.kernel_h * conv.kernel_w);
    y.par_chunks_mut(ohw)
        .enumerate()
        .with_min_len(planes_per_task)
        .for_each(|(plane, out)| {
            let ch = channel(plane);
            let input = &x[plane * h * w..(plane + 1) * h * w];
            let taps = &conv.weight[ch * g.offsets.len()..(ch + 1) * g.offsets.len()];
            with_scratch(g.len(), |buf| {
                if avx {
                    // SAFETY: AVX and FMA were detected on this CPU.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        if g.sw == 1 {
                            avx::fill_stride1(&g, input, buf);
                        } else {
                            g.fill(input, buf);
                        }
                        avx::plane(&g, taps, conv.bias[ch], buf, out)
                    };
                } else {
                    g.fill(input, buf);
                    plane_portable(&g, taps, conv.bias[ch], buf, out);
                }
                simd::dispatch(|| simd::activate(conv.activation, out));
            });
        });
    y
}

/// The padded, phase-split copy of a plane and where each tap reads it.
struct Padded {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    /// Top and left zero padding.
    pt: usize,
    pl: usize,
    /// Column phases (the width stride).
    sw: usize,
    /// Values per phase row: every column a tile reads, zeros past the padded row.
    width: usize,
    /// Padded rows: the last one a tap reads is `(oh - 1)·sh + (kh - 1)·dh`.
    rows: usize,
    /// Distance between the first values of consecutive output rows (`sh` padded rows).
    row_step: usize,
    /// Per tap, in weight order: where its reads start relative to an output's base.
    offsets: Vec<usize>,
}

impl Padded {
    fn new(conv: &Conv2d, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Self {
        let (kh, kw) = (conv.kernel_h, conv.kernel_w);
        let ((sh, sw), (dh, dw)) = (conv.stride, conv.dilation);
        let width = ow.next_multiple_of(LANES) + (kw - 1) * dw / sw;
        let offsets = (0..kh * kw)
            .map(|t| {
                let (ky, kx) = (t / kw, t % kw);
                (ky * dh * sw + kx * dw % sw) * width + kx * dw / sw
            })
            .collect();
        Self {
            h,
            w,
            oh,
            ow,
            pt: conv.pads[0],
            pl: conv.pads[1],
            sw,
            width,
            rows: (oh - 1) * sh + (kh - 1) * dh + 1,
            row_step: sh * sw * width,
            offsets,
        }
    }

    /// Scratch values one plane needs.
    fn len(&self) -> usize {
        self.rows * self.sw * self.width
    }

    /// Copies `input` into `buf` ([`Self::len`] values): padded rows of phase rows, zeros
    /// wherever no input value lands.
    fn fill(&self, input: &[f32], buf: &mut [f32]) {
        let (w, sw, width, pl) = (self.w, self.sw, self.width, self.pl);
        for (r, dst) in buf.chunks_exact_mut(sw * width).enumerate() {
            let Some(src) = r
                .checked_sub(self.pt)
                .filter(|&iy| iy < self.h)
                .map(|iy| &input[iy * w..(iy + 1) * w])
            else {
                dst.fill(0.0);
                continue;
            };
            if sw == 1 {
                let (start, end) = (pl.min(width), (pl + w).min(width));
                dst[..start].fill(0.0);
                dst[start..end].copy_from_slice(&src[..end - start]);
                dst[end..].fill(0.0);
                continue;
            }
            if sw == 2 {
                let (a, b) = dst.split_at_mut(width);
                // Even input columns land in phase `pl % 2`, odd ones in the other.
                let (even, odd) = if pl % 2 == 0 { (a, b) } else { (b, a) };
                deinterleave(src, (even, pl / 2), (odd, pl.div_ceil(2)));
                continue;
            }
            dst.fill(0.0);
            for (phase, row) in dst.chunks_exact_mut(width).enumerate() {
                // Input columns ix with (ix + pl) % sw == phase land at (ix + pl) / sw.
                let first = (phase + sw - pl % sw) % sw;
                let at = (first + pl) / sw;
                if at < width {
                    for (d, v) in row[at..].iter_mut().zip(src.iter().skip(first).step_by(sw)) {
                        *d = *v;
                    }
                }
            }
        }
    }

    /// Vectors per tile across a row (4, 2 or 1 by the row's width); [`for_each_tile`] makes
    /// tiles `8 / vectors` rows tall, so that a tile holds eight sums.
    fn tile_vectors(&self) -> usize {
        match self.ow.div_ceil(LANES) {
            1 => 1,
            2 | 3 => 2,
            _ => 4,
        }
    }
}

/// `even[e0 + t] = src[2t]` and `odd[o0 + t] = src[2t + 1]` as far as the rows reach, zeros
/// everywhere else in both rows.
fn deinterleave(src: &[f32], (even, e0): (&mut [f32], usize), (odd, o0): (&mut [f32], usize)) {
    let ne = src.len().div_ceil(2).min(even.len().saturating_sub(e0));
    let no = (src.len() / 2).min(odd.len().saturating_sub(o0));
    let (e0, o0) = (e0.min(even.len()), o0.min(odd.len()));
    even[..e0].fill(0.0);
    even[e0 + ne..].fill(0.0);
    odd[..o0].fill(0.0);
    odd[o0 + no..].fill(0.0);
    let (even, odd) = (&mut even[e0..e0 + ne], &mut odd[o0..o0 + no]);
    let mut t = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_shuffle_ps, _mm_storeu_ps};
        while 2 * t + 8 <= src.len() && t + 4 <= ne.min(no) {
            // SAFETY: SSE is part of x86_64; the loads read src[2t..2t + 8] and the stores
            // write even[t..t + 4] and odd[t..t + 4], all in bounds by the loop condition.
            unsafe {
                let lo = _mm_loadu_ps(src.as_ptr().add(2 * t));
                let hi = _mm_loadu_ps(src.as_ptr().add(2 * t + 4));
                _mm_storeu_ps(even.as_mut_ptr().add(t), _mm_shuffle_ps::<0x88>(lo, hi));
                _mm_storeu_ps(odd.as_mut_ptr().add(t), _mm_shuffle_ps::<0xDD>(lo, hi));
            }
            t += 4;
        }
    }
    for (i, e) in even.iter_mut().enumerate().skip(t) {
        *e = src[2 * i];
    }
    for (i, o) in odd.iter_mut().enumerate().skip(t) {
        *o = src[2 * i + 1];
    }
}

/// Calls `tile(oy, ox, rows, vectors)` for tiles covering the `oh × ow` outputs: tiles of
/// up to `8 / v` rows by `v` vectors (fewer rows at the bottom), then single vectors for the
/// columns left.
#[inline(always)]
fn for_each_tile(g: &Padded, mut tile: impl FnMut(usize, usize, usize, usize)) {
    let v = g.tile_vectors();
    let r = 8 / v;
    let vectors = g.ow.div_ceil(LANES);
    let full = vectors / v * v;
    let mut oy = 0;
    while oy < g.oh {
        let rows = r.min(g.oh - oy);
        let mut vx = 0;
        while vx < full {
            tile(oy, vx * LANES, rows, v);
            vx += v;
        }
        while vx < vectors {
            tile(oy, vx * LANES, rows, 1);
            vx += 1;
        }
        oy += rows;
    }
}

/// Stores the lanes of `acc` that fall inside the row (`ow` columns) from column `ox`.
#[inline(always)]
fn store(out_row: &mut [f32], ox: usize, acc: &[f32; LANES]) {
    let n = (out_row.len() - ox).min(LANES);
    out_row[ox..ox + n].copy_from_slice(&acc[..n]);
}

/// The tiles in plain arrays, for CPUs without AVX and FMA.
fn plane_portable(g: &Padded, taps: &[f32], bias: f32, buf: &[f32], out: &mut [f32]) {
    for_each_tile(g, |oy, ox, rows, vectors| {
        for r in 0..rows {
            let base = (oy + r) * g.row_step + ox;
            for v in 0..vectors {
                let mut acc = [bias; LANES];
                for (&wv, &off) in taps.iter().zip(&g.offsets) {
                    let src = &buf[base + off + v * LANES..][..LANES];
                    for (a, s) in acc.iter_mut().zip(src) {
                        *a += wv * s;
                    }
                }
                let row = &mut out[(oy + r) * g.ow..(oy + r + 1) * g.ow];
                store(row, ox + v * LANES, &acc);
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{for_each_tile, store, Padded, LANES};
    use std::arch::x86_64::*;

    /// The tiles with AVX+FMA registers.
    ///
    /// # Safety
    /// The CPU supports AVX and FMA.
    #[target_feature(enable = "avx,fma")]
    pub(super) unsafe fn plane(g: &Padded, taps: &[f32], bias: f32, buf: &[f32], out: &mut [f32]) {
        // Every read lies in the buffer: the last tile's last lane reads padded row
        // `(oh - 1)·sh + (kh - 1)·dh < rows`, column `< ow rounded to LANES + reach = width`.
        let last = (g.oh - 1) * g.row_step
            + g.offsets.iter().max().copied().unwrap_or(0)
            + g.ow.next_multiple_of(LANES);
        assert!(
            last <= buf.len(),
            "depthwise tiles read {last} of {} values",
            buf.len()
        );
        assert_eq!(taps.len(), g.offsets.len());
        let p = buf.as_ptr();
        for_each_tile(g, |oy, ox, rows, vectors| match (rows, vectors) {
            (2, 4) => tile::<2, 4>(g, taps, bias, p, out, oy, ox),
            (1, 4) => tile::<1, 4>(g, taps, bias, p, out, oy, ox),
            (4, 2) => tile::<4, 2>(g, taps, bias, p, out, oy, ox),
            (3, 2) => tile::<3, 2>(g, taps, bias, p, out, oy, ox),
            (2, 2) => tile::<2, 2>(g, taps, bias, p, out, oy, ox),
            (1, 2) => tile::<1, 2>(g, taps, bias, p, out, oy, ox),
            (8, 1) => tile::<8, 1>(g, taps, bias, p, out, oy, ox),
            (7, 1) => tile::<7, 1>(g, taps, bias, p, out, oy, ox),
            (6, 1) => tile::<6, 1>(g, taps, bias, p, out, oy, ox),
            (5, 1) => tile::<5, 1>(g, taps, bias, p, out, oy, ox),
            (4, 1) => tile::<4, 1>(g, taps, bias, p, out, oy, ox),
            (3, 1) => tile::<3, 1>(g, taps, bias, p, out, oy, ox),
            (2, 1) => tile::<2, 1>(g, taps, bias, p, out, oy, ox),
            (_, _) => {
                for r in 0..rows {
                    for v in 0..vectors {
                        tile::<1, 1>(g, taps, bias, p, out, oy + r, ox + v * LANES);
                    }
                }
            }
        });
    }

    /// [`Padded::fill`] at stride 1 in vector moves: short rows (7x7, 14x14 planes) cost a few
    /// instructions each instead of three library calls.
    ///
    /// # Safety
    /// The CPU supports AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn fill_stride1(g: &Padded, input: &[f32], buf: &mut [f32]) {
        debug_assert_eq!(g.sw, 1);
        // `MASKS[8 - r..16 - r]` selects the first `r` lanes.
        const MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
        let (w, width) = (g.w, g.width);
        // The copied part of each row: padded columns pl.. up to the row's end.
        let copied = w.min(width.saturating_sub(g.pl));
        assert!(input.len() >= g.h * w && buf.len() >= g.rows * width);
        let zero = _mm256_setzero_ps();
        // Zeros over columns from..to of the row at `d`, with a masked tail.
        let zero_range = |d: *mut f32, from: usize, to: usize| {
            let mut x = from;
            // SAFETY: callers pass from <= to <= width; every store lies in columns from..to.
            unsafe {
                while x + LANES <= to {
                    _mm256_storeu_ps(d.add(x), zero);
                    x += LANES;
                }
                if x < to {
                    let mask = _mm256_loadu_si256(MASKS[8 - (to - x)..].as_ptr().cast());
                    _mm256_maskstore_ps(d.add(x), mask, zero);
                }
            }
        };
        for (r, dst) in buf.chunks_exact_mut(width).take(g.rows).enumerate() {
            let d = dst.as_mut_ptr();
            let Some(iy) = r.checked_sub(g.pt).filter(|&iy| iy < g.h && copied > 0) else {
                zero_range(d, 0, width);
                continue;
            };
            // Zeros left and right of the copied columns pl..pl + copied, each value written
            // once.
            zero_range(d, 0, g.pl);
            zero_range(d, g.pl + copied, width);
            let (s, d) = (input[iy * w..].as_ptr(), d.add(g.pl));
            let mut x = 0;
            // SAFETY: reads stay in input row iy (x + LANES <= copied <= w) and writes in the
            // row from column pl (pl + copied <= width); the masked tail touches only its
            // `copied - x` selected lanes, inside both rows.
            unsafe {
                while x + LANES <= copied {
                    _mm256_storeu_ps(d.add(x), _mm256_loadu_ps(s.add(x)));
                    x += LANES;
                }
                if x < copied {
                    let mask = _mm256_loadu_si256(MASKS[8 - (copied - x)..].as_ptr().cast());
                    _mm256_maskstore_ps(d.add(x), mask, _mm256_maskload_ps(s.add(x), mask));
                }
            }
        }
    }

    /// One tile of `R` rows by `V` vectors from output `(oy, ox)`.
    #[inline(always)]
    fn tile<const R: usize, const V: usize>(
        g: &Padded,
        taps: &[f32],
        bias: f32,
        p: *const f32,
        out: &mut [f32],
        oy: usize,
        ox: usize,
    ) {
        // SAFETY: `plane` checked that every tile's reads lie inside the buffer behind `p`;
        // AVX and FMA are enabled by the caller's target features.
        unsafe {
            let mut acc = [[_mm256_set1_ps(bias); V]; R];
            for (&wv, &off) in taps.iter().zip(&g.offsets) {
                let w = _mm256_set1_ps(wv);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let src = p.add((oy + r) * g.row_step + off + ox);
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(src.add(v * LANES)), *a);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let row = &mut out[(oy + r) * g.ow..(oy + r + 1) * g.ow];
                for (v, a) in acc.iter().enumerate() {
                    let x = ox + v * LANES;
                    if x + LANES <= g.ow {
                        _mm256_storeu_ps(row.as_mut_ptr().add(x), *a);
                    } else {
                        let mut lanes = [0.0f32; LANES];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
                        store(row, x, &lanes);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Activation;

    /// The AVX tiles and the portable ones agree (up to FMA rounding) on odd shapes.
    #[test]
    fn avx_and_portable_tiles_agree() {
        if !simd::has_avx_fma() {
            eprintln!("SKIP: this CPU has no AVX+FMA; only the portable tiles run");
            return;
        }
        for &(h, w, k, s, d, pad) in &[
            (7, 7, 3, 1, 1, 1),
            (14, 13, 5, 2, 1, 2),
            (33, 40, 3, 1, 2, 2),
            (5, 70, 7, 3, 1, 3),
            (1, 9, 1, 1, 1, 0),
            (9, 11, 3, 2, 1, 1),
            (8, 17, 5, 2, 1, 3),
            (4, 4, 5, 1, 1, 2),
            (3, 25, 3, 1, 3, 3),
        ] {
            let conv = Conv2d {
                in_channels: 1,
                out_channels: 1,
                kernel_h: k,
                kernel_w: k,
                stride: (s, s),
                dilation: (d, d),
                pads: [pad; 4],
                groups: 1,
                weight: (0..k * k).map(|i| (i as f32 * 0.37).sin()).collect(),
                bias: vec![0.25],
                activation: Activation::None,
            };
            let (oh, ow) = conv.output_hw(h, w).unwrap();
            let g = Padded::new(&conv, (h, w), (oh, ow));
            let x: Vec<f32> = (0..h * w).map(|i| (i as f32 * 0.71).cos()).collect();
            let mut buf = vec![f32::NAN; g.len()];
            g.fill(&x, &mut buf);
            if s == 1 {
                let mut vector_filled = vec![f32::NAN; g.len()];
                // SAFETY: AVX was detected above.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    avx::fill_stride1(&g, &x, &mut vector_filled)
                };
                assert_eq!(vector_filled, buf, "{h}x{w} k{k}: the vector fill differs");
            }
            let mut want = vec![0.0; oh * ow];
            plane_portable(&g, &conv.weight, 0.25, &buf, &mut want);
            let mut got = vec![0.0; oh * ow];
            // SAFETY: AVX and FMA were detected above.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx::plane(&g, &conv.weight, 0.25, &buf, &mut got)
            };
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{h}x{w} k{k} s{s} at {i}: {a} vs {b}"
                );
            }
        }
    }
}
