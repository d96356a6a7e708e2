//! Plain-Rust reference of every op: the oracle the GPU kernels and the fast CPU kernels are
//! tested against, kept simple on purpose. Activations are NCHW, batch first.

use crate::model::{
    broadcast_shape, broadcast_strides, Activation, Binary, BinaryOperand, Conv2d, Dense, FanIn,
    Lrn, Pool, PoolKind,
};

/// 2-D convolution of `n` samples of `[in_channels, h, w]`; returns `[n, out, oh, ow]`.
pub fn conv2d(conv: &Conv2d, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
    let (oh, ow) = conv
        .output_hw(h, w)
        .expect("shapes were validated when the model was loaded");
    let cin_g = conv.in_channels / conv.groups;
    let cout_g = conv.out_channels / conv.groups;
    let (kh, kw) = (conv.kernel_h, conv.kernel_w);
    let ((sh, sw), (dh, dw)) = (conv.stride, conv.dilation);
    let (pt, pl) = (conv.pads[0] as isize, conv.pads[1] as isize);
    let mut y = vec![0.0f32; n * conv.out_channels * oh * ow];
    for b in 0..n {
        for oc in 0..conv.out_channels {
            let g = oc / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = conv.bias[oc];
                    for ic in 0..cin_g {
                        let c = g * cin_g + ic;
                        for ky in 0..kh {
                            let iy = (oy * sh + ky * dh) as isize - pt;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * sw + kx * dw) as isize - pl;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((b * conv.in_channels + c) * h + iy as usize) * w
                                    + ix as usize];
                                let wv = conv.weight[((oc * cin_g + ic) * kh + ky) * kw + kx];
                                acc += xv * wv;
                            }
                        }
                    }
                    y[((b * conv.out_channels + oc) * oh + oy) * ow + ox] =
                        conv.activation.apply(acc);
                }
            }
        }
    }
    y
}

/// Dense layer on `n` rows of `inputs` features; returns `[n, outputs]`.
pub fn dense(d: &Dense, x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; n * d.outputs];
    for b in 0..n {
        let row = &x[b * d.inputs..(b + 1) * d.inputs];
        for o in 0..d.outputs {
            let wrow = &d.weight[o * d.inputs..(o + 1) * d.inputs];
            let acc: f32 = row.iter().zip(wrow).map(|(a, b)| a * b).sum();
            y[b * d.outputs + o] = d.activation.apply(acc + d.bias[o]);
        }
    }
    y
}

/// Fixed-fan-in layer on `n` rows; returns `[n, outputs]`.
pub fn fanin(f: &FanIn, x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; n * f.outputs];
    for b in 0..n {
        let row = &x[b * f.inputs..(b + 1) * f.inputs];
        for o in 0..f.outputs {
            let mut acc = f.bias[o];
            for j in 0..f.k {
                acc += f.weights[o * f.k + j] * row[f.indices[o * f.k + j] as usize];
            }
            y[b * f.outputs + o] = f.activation.apply(acc);
        }
    }
    y
}

/// Max or average pooling of `n·c` planes of `h × w`. Cells outside the input never count as
/// values; the average divides by the cells inside the input, or with `count_include_pad` by
/// the window's cells inside the padded input.
pub fn pool(pool: &Pool, x: &[f32], nc: usize, h: usize, w: usize) -> Vec<f32> {
    let (oh, ow) = pool
        .output_hw(h, w)
        .expect("shapes were validated when the model was loaded");
    let (sh, sw) = pool.stride;
    let [pt, pl, pb, pr] = pool.pads.map(|p| p as isize);
    let (h_i, w_i) = (h as isize, w as isize);
    let mut y = vec![0.0f32; nc * oh * ow];
    for plane in 0..nc {
        for oy in 0..oh {
            let y0 = (oy * sh) as isize - pt;
            let y1 = (y0 + pool.kernel_h as isize).min(h_i + pb);
            for ox in 0..ow {
                let x0 = (ox * sw) as isize - pl;
                let x1 = (x0 + pool.kernel_w as isize).min(w_i + pr);
                let mut max = f32::NEG_INFINITY;
                let mut sum = 0.0f32;
                let mut count = 0usize;
                for iy in y0.max(0)..y1.min(h_i) {
                    for ix in x0.max(0)..x1.min(w_i) {
                        let v = x[(plane * h + iy as usize) * w + ix as usize];
                        max = max.max(v);
                        sum += v;
                        count += 1;
                    }
                }
                if pool.count_include_pad {
                    count = ((y1 - y0) * (x1 - x0)) as usize;
                }
                y[(plane * oh + oy) * ow + ox] = match pool.kind {
                    PoolKind::Max => max,
                    PoolKind::Avg => sum / count.max(1) as f32,
                };
            }
        }
    }
    y
}

/// Mean of each of `nc` planes of `hw` values.
pub fn global_avgpool(x: &[f32], nc: usize, hw: usize) -> Vec<f32> {
    (0..nc)
        .map(|p| x[p * hw..(p + 1) * hw].iter().sum::<f32>() / hw as f32)
        .collect()
}

/// Applies an activation to every value.
pub fn activation(act: Activation, x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| act.apply(v)).collect()
}

/// `act(a + b)` elementwise.
pub fn add(a: &[f32], b: &[f32], act: Activation) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| act.apply(x + y)).collect()
}

/// Product of `x` (`nc` planes of `hw`) with a per-plane `gate` (`nc` values); with `hw == 1`
/// this is the elementwise product.
pub fn mul(gate: &[f32], x: &[f32], hw: usize) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| v * gate[i / hw])
        .collect()
}

/// Numerically stable softmax of each of `n` rows of `classes` values.
pub fn softmax(x: &[f32], classes: usize) -> Vec<f32> {
    let mut y = x.to_vec();
    for row in y.chunks_mut(classes) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
    y
}

/// `act(x ∘ operand)` (`act(operand ∘ x)` when reversed) for `n` samples of `x_shape`, with
/// NumPy broadcasting. `operand` holds `n` samples of the operand shape, or one copy for a
/// constant operand.
pub fn binary(b: &Binary, x: &[f32], x_shape: &[usize], operand: &[f32], n: usize) -> Vec<f32> {
    let out = broadcast_shape(x_shape, &b.operand_shape)
        .expect("shapes were validated when the model was loaded");
    let out_elems: usize = out.iter().product();
    let (xs, os) = (
        broadcast_strides(x_shape, &out),
        broadcast_strides(&b.operand_shape, &out),
    );
    let x_sample: usize = x_shape.iter().product();
    let o_sample = match b.operand {
        BinaryOperand::Tensor(_) => b.operand_shape.iter().product(),
        BinaryOperand::Const(_) => 0,
    };
    let mut y = Vec::with_capacity(n * out_elems);
    for s in 0..n {
        for i in 0..out_elems {
            let (mut xi, mut oi, mut rem) = (s * x_sample, s * o_sample, i);
            for d in (0..out.len()).rev() {
                let c = rem % out[d];
                rem /= out[d];
                xi += c * xs[d];
                oi += c * os[d];
            }
            let (l, r) = if b.reverse {
                (operand[oi], x[xi])
            } else {
                (x[xi], operand[oi])
            };
            y.push(b.activation.apply(b.op.apply(l, r)));
        }
    }
    y
}

/// Concatenation of `n` samples of each piece (data, per-sample shape) along per-sample `axis`.
pub fn concat(pieces: &[(&[f32], &[usize])], axis: usize, n: usize) -> Vec<f32> {
    let Some((_, first)) = pieces.first() else {
        return Vec::new();
    };
    let outer: usize = first[..axis].iter().product();
    // Values of one piece per outer index: its axis size times the trailing dimensions.
    let chunk = |shape: &[usize]| shape[axis..].iter().product::<usize>();
    let total: usize = pieces.iter().map(|(_, s)| outer * chunk(s)).sum();
    let mut y = Vec::with_capacity(n * total);
    for s in 0..n {
        for o in 0..outer {
            for (data, shape) in pieces {
                let c = chunk(shape);
                let start = (s * outer + o) * c;
                y.extend_from_slice(&data[start..start + c]);
            }
        }
    }
    y
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Per-sample axis permutation of `n` samples of `shape`: output axis `i` is input axis
/// `perm[i]`.
pub fn transpose(x: &[f32], shape: &[usize], perm: &[usize], n: usize) -> Vec<f32> {
    let in_strides = strides(shape);
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let elems: usize = shape.iter().product();
    let mut y = Vec::with_capacity(n * elems);
    for s in 0..n {
        for i in 0..elems {
            let (mut src, mut rem) = (s * elems, i);
            for d in (0..out.len()).rev() {
                src += (rem % out[d]) * in_strides[perm[d]];
                rem /= out[d];
            }
            y.push(x[src]);
        }
    }
    y
}

/// Constant padding of `n` samples of `shape`; `pads` is `[begin_0.., end_0..]`.
pub fn pad(x: &[f32], shape: &[usize], pads: &[usize], value: f32, n: usize) -> Vec<f32> {
    let r = shape.len();
    let out: Vec<usize> = (0..r).map(|d| shape[d] + pads[d] + pads[r + d]).collect();
    let in_strides = strides(shape);
    let (in_elems, out_elems) = (
        shape.iter().product::<usize>(),
        out.iter().product::<usize>(),
    );
    let mut y = Vec::with_capacity(n * out_elems);
    for s in 0..n {
        for i in 0..out_elems {
            let (mut src, mut rem, mut inside) = (s * in_elems, i, true);
            for d in (0..r).rev() {
                let c = rem % out[d];
                rem /= out[d];
                match c.checked_sub(pads[d]).filter(|&c| c < shape[d]) {
                    Some(c) => src += c * in_strides[d],
                    None => inside = false,
                }
            }
            y.push(if inside { x[src] } else { value });
        }
    }
    y
}

/// Local response normalisation of `n` samples of `shape` across axis 0 (channels).
pub fn lrn(l: &Lrn, x: &[f32], shape: &[usize], n: usize) -> Vec<f32> {
    let channels = shape[0];
    let inner: usize = shape[1..].iter().product();
    let mut y = vec![0.0f32; x.len()];
    for s in 0..n {
        for c in 0..channels {
            for i in 0..inner {
                let at = |ch: usize| x[(s * channels + ch) * inner + i];
                let sq: f32 = l.window(c, channels).map(|ch| at(ch) * at(ch)).sum();
                let v = at(c);
                y[(s * channels + c) * inner + i] =
                    v / (l.bias + l.alpha / l.size as f32 * sq).powf(l.beta);
            }
        }
    }
    y
}

/// Numerically stable softmax of `n` samples of `shape` along per-sample `axis`.
pub fn softmax_axis(x: &[f32], shape: &[usize], axis: usize, n: usize) -> Vec<f32> {
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer = n * shape[..axis].iter().product::<usize>();
    let mut y = x.to_vec();
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let m = (0..len).map(|k| x[at(k)]).fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = (0..len).map(|k| (x[at(k)] - m).exp()).sum();
            for k in 0..len {
                y[at(k)] = (x[at(k)] - m).exp() / sum;
            }
        }
    }
    y
}

/// What an exit head says about one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExitStat {
    /// Maximum softmax probability.
    pub confidence: f32,
    /// Entropy of the softmax distribution (nats).
    pub entropy: f32,
    /// Index of the most probable class (first on ties).
    pub argmax: u32,
}

/// Per-sample softmax confidence, entropy and argmax of `[n, classes]` logits.
pub fn exit_stats(logits: &[f32], classes: usize) -> Vec<ExitStat> {
    logits
        .chunks(classes)
        .map(|row| {
            let mut m = f32::NEG_INFINITY;
            let mut arg = 0u32;
            for (i, &v) in row.iter().enumerate() {
                if v > m {
                    m = v;
                    arg = i as u32;
                }
            }
            let sum: f32 = row.iter().map(|&v| (v - m).exp()).sum();
            let log_sum = sum.ln();
            // entropy = -Σ p ln p with ln p = (v - m) - ln Σ
            let entropy = -row
                .iter()
                .map(|&v| {
                    let lp = (v - m) - log_sum;
                    lp.exp() * lp
                })
                .sum::<f32>();
            ExitStat {
                confidence: 1.0 / sum,
                entropy,
                argmax: arg,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_stats_of_uniform_logits_have_maximal_entropy() {
        let s = exit_stats(&[0.0; 4], 4)[0];
        assert!((s.confidence - 0.25).abs() < 1e-6);
        assert!((s.entropy - 4f32.ln()).abs() < 1e-6);
        assert_eq!(s.argmax, 0);
    }

    #[test]
    fn avgpool_excludes_padding_from_the_count() {
        let p = Pool {
            kind: PoolKind::Avg,
            kernel_h: 2,
            kernel_w: 2,
            stride: (2, 2),
            pads: [1; 4],
            ceil_mode: false,
            count_include_pad: false,
        };
        // 2x2 input of ones, padded: every window holds exactly one real cell.
        assert_eq!(pool(&p, &[1.0; 4], 1, 2, 2), vec![1.0; 4]);
        let with_pad = Pool {
            count_include_pad: true,
            ..p
        };
        assert_eq!(pool(&with_pad, &[1.0; 4], 1, 2, 2), vec![0.25; 4]);
    }

    #[test]
    fn ceil_mode_windows_cover_the_input_tail() {
        // 1x5 input, window 1x2, stride 2: floor gives 2 outputs, ceil a third over the last cell.
        let p = Pool {
            kind: PoolKind::Avg,
            kernel_h: 1,
            kernel_w: 2,
            stride: (1, 2),
            pads: [0; 4],
            ceil_mode: true,
            count_include_pad: false,
        };
        let x = [1.0, 3.0, 5.0, 7.0, 9.0];
        assert_eq!(pool(&p, &x, 1, 1, 5), vec![2.0, 6.0, 9.0]);
        let max = Pool {
            kind: PoolKind::Max,
            ..p
        };
        assert_eq!(pool(&max, &x, 1, 1, 5), vec![3.0, 7.0, 9.0]);
    }
}
