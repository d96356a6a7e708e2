// 2-D convolution over NCHW activations, weight [out, in/groups, kh, kw], zero padding
// (top/left given; bottom/right only shape the output), strides and dilations per axis.
//
// Register-tiled kernels (CPU-emulated adapters such as lavapipe, which run invocations as
// SIMD lanes and pay for every load per lane: the larger the tile, the fewer loads per
// multiply-add; also the default elsewhere unless noted).
// conv1x1:        pointwise stride-1 unpadded convolution as a GEMM per sample,
//                 Y[Cout, HW] = W[Cout, Cin] * X[Cin, HW]; each invocation a CO_T x 8 tile
//                 (CO_T channels x 8 consecutive pixels: 8 + CO_T loads feed 8 * CO_T
//                 multiply-adds; no edge checks when HW % 8 == 0).
// conv1x1_vec4:   the same with vec4 loads along pixels and input channels (HW % 4 == 0,
//                 in_channels % 4 == 0): lavapipe pays per load instruction, not per value.
// conv1x1_wvec4:  the same for HW % 4 != 0 (7 x 7 planes; in_channels % 4 == 0): vec4 loads
//                 of weights along input channels, scalar pixel loads.
// conv_tiled:     any convolution as an implicit GEMM (the input window gathered on the fly):
//                 each invocation CO_T channels (of one group) x 4 consecutive output columns.
//                 (8 columns, accumulators in arrays, measured 0.86x on EfficientNet-B0's stem
//                 on lavapipe, so it stays at 4.)
// depthwise_tiled: groups == in == out channels, dilation 1, kernel <= 7, stride <= 2: each
//                 invocation 4 rows x TW (4 or 8) columns of one channel; every input value
//                 and tap it needs is loaded once and reused by every output that reads it.
// Workgroup-shared tiles (hardware GPUs): conv_shared and depthwise_shared in
//                 conv_shared.wgsl.
// Subgroup-shared weights (CPU-emulated adapters with subgroup operations): conv1x1_subgroup
//                 in conv_subgroup.wgsl.
// Direct kernel (any geometry; depthwise_tiled's fallback):
// depthwise: groups == in == out channels; each invocation computes 4 output columns of one channel.
//
// Bindings (group 0; declared in conv_common.wgsl with the parameters and the epilogue):
//   0: uniform ConvParams
//   1: x     [batch, in_channels, in_h, in_w]     (read; as vec4 in conv1x1_vec4)
//   2: w     [out_channels, in/groups, kh, kw]    (read; as vec4 in conv1x1_vec4, _wvec4)
//   3: bias  [out_channels]                       (read)
//   4: y     [batch, out_channels, out_h, out_w]  (write; as vec4 in conv1x1_vec4)
// Override constants: WG (workgroup size), CO_T (1, 2, 4 or 8; divides
// out/groups), WHOLE_TILES (HW % 8 == 0), KH, KW, SH, SW, TW (depthwise_tiled's kernel, strides
// and tile width: 4 or 8 columns).
// Invocations are numbered linearly with pixel tiles fastest, so neighbouring lanes read
// neighbouring pixels and the same weights, and small planes still fill a workgroup.

@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> y4: array<vec4<f32>>;

override CO_T: u32 = 4u;
override WHOLE_TILES: bool = false;
override KH: u32 = 3u;
override KW: u32 = 3u;
override SH: u32 = 1u;
override SW: u32 = 1u;
override TW: u32 = 4u;

// Four input values of row `iy` at columns ix0 + j*stride_w, zero outside the image.
fn load_row4(row_base: u32, ix0: i32) -> vec4<f32> {
    let s = i32(params.stride_w);
    let wmax = i32(params.in_w);
    var v = vec4<f32>(0.0);
    for (var j = 0; j < 4; j++) {
        let ix = ix0 + j * s;
        if ix >= 0 && ix < wmax { v[j] = x[row_base + u32(ix)]; }
    }
    return v;
}

fn store4(b: u32, oc: u32, oy: u32, ox0: u32, acc: vec4<f32>) {
    store_cols(((b * params.out_channels + oc) * params.out_h + oy) * params.out_w, ox0, params.out_w, oc, acc);
}

@compute @workgroup_size(WG)
fn depthwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let ox_tiles = (params.out_w + 3u) / 4u;
    if t >= params.batch * params.out_channels * params.out_h * ox_tiles { return; }
    let ox0 = (t % ox_tiles) * 4u;
    var rest = t / ox_tiles;
    let oy = rest % params.out_h;
    rest = rest / params.out_h;
    let c = rest % params.out_channels;
    let b = rest / params.out_channels;
    let plane = (b * params.in_channels + c) * params.in_h;
    let ix0 = i32(ox0 * params.stride_w) - i32(params.pad_left);
    var acc = vec4<f32>(0.0);
    for (var ky = 0u; ky < params.kernel_h; ky++) {
        let iy = i32(oy * params.stride_h + ky * params.dilation_h) - i32(params.pad_top);
        if iy < 0 || iy >= i32(params.in_h) { continue; }
        let row_base = (plane + u32(iy)) * params.in_w;
        let wrow = (c * params.kernel_h + ky) * params.kernel_w;
        for (var kx = 0u; kx < params.kernel_w; kx++) {
            acc += load_row4(row_base, ix0 + i32(kx * params.dilation_w)) * w[wrow + kx];
        }
    }
    store4(b, c, oy, ox0, acc);
}

// Four pixels p0..p0+3 of the input plane starting at `plane`; past the plane's end the
// last pixel repeats (those results are never stored). Scalar loads: lavapipe splits vector
// loads into per-component gathers anyway.
fn load_pixels(plane: u32, p0: u32, hw: u32) -> vec4<f32> {
    if WHOLE_TILES {
        let i = plane + p0;
        return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
    }
    let last = hw - 1u;
    return vec4<f32>(x[plane + min(p0, last)], x[plane + min(p0 + 1u, last)],
                     x[plane + min(p0 + 2u, last)], x[plane + min(p0 + 3u, last)]);
}

// Stores one CO_T x 4 tile row: channel `oc`, pixels p0..p0+3 of sample `b`.
fn store_pixels(b: u32, oc: u32, p0: u32, hw: u32, acc: vec4<f32>) {
    let base = (b * params.out_channels + oc) * hw;
    if WHOLE_TILES {
        let v = epilogue4(acc, oc);
        for (var j = 0u; j < 4u; j++) { y[base + p0 + j] = v[j]; }
    } else {
        store_cols(base, p0, hw, oc, acc);
    }
}

@compute @workgroup_size(WG)
fn conv1x1(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let hw = params.out_h * params.out_w;
    let ptiles = (hw + 7u) / 8u;
    let cols = params.batch * ptiles; // 8-pixel column tiles of every sample
    if t >= (params.out_channels / CO_T) * cols { return; }
    // Column tiles vary fastest: neighbouring lanes read neighbouring pixels and the same
    // weights; small planes still fill the workgroup (lanes span channel tiles).
    let oc0 = (t / cols) * CO_T;
    let q = t % cols;
    let b = q / ptiles;
    let p0 = (q % ptiles) * 8u;
    let p1 = p0 + 4u;
    let cin = params.in_channels;
    let xplane = b * cin * hw;
    let w0 = oc0 * cin;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    var b4 = vec4<f32>(0.0);
    var b5 = vec4<f32>(0.0);
    var b6 = vec4<f32>(0.0);
    var b7 = vec4<f32>(0.0);
    for (var ci = 0u; ci < cin; ci++) {
        let plane = xplane + ci * hw;
        let xv = load_pixels(plane, p0, hw);
        let xu = load_pixels(plane, p1, hw);
        var wv = w[w0 + ci];
        a0 += xv * wv;
        { b0 += xu * wv; }
        if CO_T >= 2u {
            wv = w[w0 + cin + ci];
            a1 += xv * wv;
            { b1 += xu * wv; }
        }
        if CO_T >= 4u {
            wv = w[w0 + 2u * cin + ci];
            a2 += xv * wv;
            { b2 += xu * wv; }
            wv = w[w0 + 3u * cin + ci];
            a3 += xv * wv;
            { b3 += xu * wv; }
        }
        if CO_T >= 8u {
            wv = w[w0 + 4u * cin + ci];
            a4 += xv * wv;
            { b4 += xu * wv; }
            wv = w[w0 + 5u * cin + ci];
            a5 += xv * wv;
            { b5 += xu * wv; }
            wv = w[w0 + 6u * cin + ci];
            a6 += xv * wv;
            { b6 += xu * wv; }
            wv = w[w0 + 7u * cin + ci];
            a7 += xv * wv;
            { b7 += xu * wv; }
        }
    }
    store_pixels(b, oc0, p0, hw, a0);
    if CO_T >= 2u { store_pixels(b, oc0 + 1u, p0, hw, a1); }
    if CO_T >= 4u {
        store_pixels(b, oc0 + 2u, p0, hw, a2);
        store_pixels(b, oc0 + 3u, p0, hw, a3);
    }
    if CO_T >= 8u {
        store_pixels(b, oc0 + 4u, p0, hw, a4);
        store_pixels(b, oc0 + 5u, p0, hw, a5);
        store_pixels(b, oc0 + 6u, p0, hw, a6);
        store_pixels(b, oc0 + 7u, p0, hw, a7);
    }
    if p1 < hw {
        store_pixels(b, oc0, p1, hw, b0);
        if CO_T >= 2u { store_pixels(b, oc0 + 1u, p1, hw, b1); }
        if CO_T >= 4u {
            store_pixels(b, oc0 + 2u, p1, hw, b2);
            store_pixels(b, oc0 + 3u, p1, hw, b3);
        }
        if CO_T >= 8u {
            store_pixels(b, oc0 + 4u, p1, hw, b4);
            store_pixels(b, oc0 + 5u, p1, hw, b5);
            store_pixels(b, oc0 + 6u, p1, hw, b6);
            store_pixels(b, oc0 + 7u, p1, hw, b7);
        }
    }
}

// acc + W[oc, c..c+4] . X[c..c+4, 4 pixels]: one weight vec4 against four input rows.
fn mac4(acc: vec4<f32>, wv: vec4<f32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) -> vec4<f32> {
    return acc + x0 * wv.x + x1 * wv.y + x2 * wv.z + x3 * wv.w;
}

// Stores channel `oc`'s two pixel quads q0 and q0 + 1 (the second only when `second`).
fn store_quads(b: u32, oc: u32, q0: u32, hw4: u32, second: bool, lo: vec4<f32>, hi: vec4<f32>) {
    let base = (b * params.out_channels + oc) * hw4 + q0;
    y4[base] = epilogue4(lo, oc);
    if second { y4[base + 1u] = epilogue4(hi, oc); }
}

// conv1x1 with vec4 loads (HW % 4 == 0, in_channels % 4 == 0): per 4 input channels, 8 input
// vec4 and CO_T weight vec4 loads feed 32 * CO_T multiply-adds.
@compute @workgroup_size(WG)
fn conv1x1_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let hw4 = (params.out_h * params.out_w) / 4u;
    let ptiles = (hw4 + 1u) / 2u;
    let cols = params.batch * ptiles; // 8-pixel (two-quad) column tiles of every sample
    if t >= (params.out_channels / CO_T) * cols { return; }
    let oc0 = (t / cols) * CO_T;
    let q = t % cols;
    let b = q / ptiles;
    let q0 = (q % ptiles) * 2u;
    let second = q0 + 1u < hw4;
    let q1 = select(q0, q0 + 1u, second);
    let cin4 = params.in_channels / 4u;
    let xbase = b * params.in_channels * hw4;
    let w0 = oc0 * cin4;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    var b4 = vec4<f32>(0.0);
    var b5 = vec4<f32>(0.0);
    var b6 = vec4<f32>(0.0);
    var b7 = vec4<f32>(0.0);
    for (var c4 = 0u; c4 < cin4; c4++) {
        let r = xbase + c4 * 4u * hw4;
        let x0 = x4[r + q0];
        let x1 = x4[r + hw4 + q0];
        let x2 = x4[r + 2u * hw4 + q0];
        let x3 = x4[r + 3u * hw4 + q0];
        let u0 = x4[r + q1];
        let u1 = x4[r + hw4 + q1];
        let u2 = x4[r + 2u * hw4 + q1];
        let u3 = x4[r + 3u * hw4 + q1];
        var wv = w4[w0 + c4];
        a0 = mac4(a0, wv, x0, x1, x2, x3);
        b0 = mac4(b0, wv, u0, u1, u2, u3);
        if CO_T >= 2u {
            wv = w4[w0 + cin4 + c4];
            a1 = mac4(a1, wv, x0, x1, x2, x3);
            b1 = mac4(b1, wv, u0, u1, u2, u3);
        }
        if CO_T >= 4u {
            wv = w4[w0 + 2u * cin4 + c4];
            a2 = mac4(a2, wv, x0, x1, x2, x3);
            b2 = mac4(b2, wv, u0, u1, u2, u3);
            wv = w4[w0 + 3u * cin4 + c4];
            a3 = mac4(a3, wv, x0, x1, x2, x3);
            b3 = mac4(b3, wv, u0, u1, u2, u3);
        }
        if CO_T >= 8u {
            wv = w4[w0 + 4u * cin4 + c4];
            a4 = mac4(a4, wv, x0, x1, x2, x3);
            b4 = mac4(b4, wv, u0, u1, u2, u3);
            wv = w4[w0 + 5u * cin4 + c4];
            a5 = mac4(a5, wv, x0, x1, x2, x3);
            b5 = mac4(b5, wv, u0, u1, u2, u3);
            wv = w4[w0 + 6u * cin4 + c4];
            a6 = mac4(a6, wv, x0, x1, x2, x3);
            b6 = mac4(b6, wv, u0, u1, u2, u3);
            wv = w4[w0 + 7u * cin4 + c4];
            a7 = mac4(a7, wv, x0, x1, x2, x3);
            b7 = mac4(b7, wv, u0, u1, u2, u3);
        }
    }
    store_quads(b, oc0, q0, hw4, second, a0, b0);
    if CO_T >= 2u { store_quads(b, oc0 + 1u, q0, hw4, second, a1, b1); }
    if CO_T >= 4u {
        store_quads(b, oc0 + 2u, q0, hw4, second, a2, b2);
        store_quads(b, oc0 + 3u, q0, hw4, second, a3, b3);
    }
    if CO_T >= 8u {
        store_quads(b, oc0 + 4u, q0, hw4, second, a4, b4);
        store_quads(b, oc0 + 5u, q0, hw4, second, a5, b5);
        store_quads(b, oc0 + 6u, q0, hw4, second, a6, b6);
        store_quads(b, oc0 + 7u, q0, hw4, second, a7, b7);
    }
}

// conv1x1 for planes whose size is not a multiple of 4 (7 x 7, 1 x 1; in_channels % 4 == 0):
// scalar pixel loads (planes are not vec4-aligned), weights as vec4s along input channels.
// Per 4 input channels: 32 + CO_T loads feed 32 * CO_T multiply-adds (the scalar conv1x1:
// 32 + 4 * CO_T). Pixels past the plane's end read the next plane (or, clamped, the buffer's
// end) and are never stored. (Three aligned vec4 loads and a shift per pixel octet measured
// slower on lavapipe than these eight scalar loads.)
@compute @workgroup_size(WG)
fn conv1x1_wvec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let hw = params.out_h * params.out_w;
    let ptiles = (hw + 7u) / 8u;
    let cols = params.batch * ptiles;
    if t >= (params.out_channels / CO_T) * cols { return; }
    let oc0 = (t / cols) * CO_T;
    let q = t % cols;
    let b = q / ptiles;
    let p0 = (q % ptiles) * 8u;
    let cin4 = params.in_channels / 4u;
    let w0 = oc0 * cin4;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    var b4 = vec4<f32>(0.0);
    var b5 = vec4<f32>(0.0);
    var b6 = vec4<f32>(0.0);
    var b7 = vec4<f32>(0.0);
    // Offset (in values) of pixel p0 of the current input channel.
    var o = b * params.in_channels * hw + p0;
    for (var c4 = 0u; c4 < cin4; c4++) {
        let x0 = vec4<f32>(x[o], x[o + 1u], x[o + 2u], x[o + 3u]);
        let u0 = vec4<f32>(x[o + 4u], x[o + 5u], x[o + 6u], x[o + 7u]);
        let o1 = o + hw;
        let x1 = vec4<f32>(x[o1], x[o1 + 1u], x[o1 + 2u], x[o1 + 3u]);
        let u1 = vec4<f32>(x[o1 + 4u], x[o1 + 5u], x[o1 + 6u], x[o1 + 7u]);
        let o2 = o1 + hw;
        let x2 = vec4<f32>(x[o2], x[o2 + 1u], x[o2 + 2u], x[o2 + 3u]);
        let u2 = vec4<f32>(x[o2 + 4u], x[o2 + 5u], x[o2 + 6u], x[o2 + 7u]);
        let o3 = o2 + hw;
        let x3 = vec4<f32>(x[o3], x[o3 + 1u], x[o3 + 2u], x[o3 + 3u]);
        let u3 = vec4<f32>(x[o3 + 4u], x[o3 + 5u], x[o3 + 6u], x[o3 + 7u]);
        o = o3 + hw;
        var wv = w4[w0 + c4];
        a0 = mac4(a0, wv, x0, x1, x2, x3);
        b0 = mac4(b0, wv, u0, u1, u2, u3);
        if CO_T >= 2u {
            wv = w4[w0 + cin4 + c4];
            a1 = mac4(a1, wv, x0, x1, x2, x3);
            b1 = mac4(b1, wv, u0, u1, u2, u3);
        }
        if CO_T >= 4u {
            wv = w4[w0 + 2u * cin4 + c4];
            a2 = mac4(a2, wv, x0, x1, x2, x3);
            b2 = mac4(b2, wv, u0, u1, u2, u3);
            wv = w4[w0 + 3u * cin4 + c4];
            a3 = mac4(a3, wv, x0, x1, x2, x3);
            b3 = mac4(b3, wv, u0, u1, u2, u3);
        }
        if CO_T >= 8u {
            wv = w4[w0 + 4u * cin4 + c4];
            a4 = mac4(a4, wv, x0, x1, x2, x3);
            b4 = mac4(b4, wv, u0, u1, u2, u3);
            wv = w4[w0 + 5u * cin4 + c4];
            a5 = mac4(a5, wv, x0, x1, x2, x3);
            b5 = mac4(b5, wv, u0, u1, u2, u3);
            wv = w4[w0 + 6u * cin4 + c4];
            a6 = mac4(a6, wv, x0, x1, x2, x3);
            b6 = mac4(b6, wv, u0, u1, u2, u3);
            wv = w4[w0 + 7u * cin4 + c4];
            a7 = mac4(a7, wv, x0, x1, x2, x3);
            b7 = mac4(b7, wv, u0, u1, u2, u3);
        }
    }
    store8(b, oc0, p0, hw, a0, b0);
    if CO_T >= 2u { store8(b, oc0 + 1u, p0, hw, a1, b1); }
    if CO_T >= 4u {
        store8(b, oc0 + 2u, p0, hw, a2, b2);
        store8(b, oc0 + 3u, p0, hw, a3, b3);
    }
    if CO_T >= 8u {
        store8(b, oc0 + 4u, p0, hw, a4, b4);
        store8(b, oc0 + 5u, p0, hw, a5, b5);
        store8(b, oc0 + 6u, p0, hw, a6, b6);
        store8(b, oc0 + 7u, p0, hw, a7, b7);
    }
}

@compute @workgroup_size(WG)
fn conv_tiled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let ox_tiles = (params.out_w + 3u) / 4u;
    let cols = params.batch * params.out_h * ox_tiles; // (sample, row, 4-column tile)
    if t >= (params.out_channels / CO_T) * cols { return; }
    let oc0 = (t / cols) * CO_T;
    let q = t % cols;
    let ox0 = (q % ox_tiles) * 4u;
    let oy = (q / ox_tiles) % params.out_h;
    let b = q / (ox_tiles * params.out_h);
    let cin_g = params.in_channels / params.groups;
    let grp = oc0 / (params.out_channels / params.groups);
    let khw = params.kernel_h * params.kernel_w;
    let wstride = cin_g * khw; // weights per output channel
    let ix0 = i32(ox0 * params.stride_w) - i32(params.pad_left);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    for (var ky = 0u; ky < params.kernel_h; ky++) {
        let iy = i32(oy * params.stride_h + ky * params.dilation_h) - i32(params.pad_top);
        if iy < 0 || iy >= i32(params.in_h) { continue; }
        for (var ic = 0u; ic < cin_g; ic++) {
            let row_base = ((b * params.in_channels + grp * cin_g + ic) * params.in_h + u32(iy)) * params.in_w;
            let wrow = oc0 * wstride + (ic * params.kernel_h + ky) * params.kernel_w;
            for (var kx = 0u; kx < params.kernel_w; kx++) {
                let xv = load_row4(row_base, ix0 + i32(kx * params.dilation_w));
                let wi = wrow + kx;
                a0 += xv * w[wi];
                if CO_T >= 2u { a1 += xv * w[wi + wstride]; }
                if CO_T >= 4u {
                    a2 += xv * w[wi + 2u * wstride];
                    a3 += xv * w[wi + 3u * wstride];
                }
                if CO_T >= 8u {
                    a4 += xv * w[wi + 4u * wstride];
                    a5 += xv * w[wi + 5u * wstride];
                    a6 += xv * w[wi + 6u * wstride];
                    a7 += xv * w[wi + 7u * wstride];
                }
            }
        }
    }
    store4(b, oc0, oy, ox0, a0);
    if CO_T >= 2u { store4(b, oc0 + 1u, oy, ox0, a1); }
    if CO_T >= 4u {
        store4(b, oc0 + 2u, oy, ox0, a2);
        store4(b, oc0 + 3u, oy, ox0, a3);
    }
    if CO_T >= 8u {
        store4(b, oc0 + 4u, oy, ox0, a4);
        store4(b, oc0 + 5u, oy, ox0, a5);
        store4(b, oc0 + 6u, oy, ox0, a6);
        store4(b, oc0 + 7u, oy, ox0, a7);
    }
}

// Input columns one depthwise_tiled invocation reads per input row: TW outputs at stride SW
// under a KW-wide window (at most 7 * 2 + 7 = 21).
const SPAN_MAX: u32 = 24u;
// Taps of one depthwise channel (kernel <= 7 x 7).
const TAPS_MAX: u32 = 49u;

// One input row of a depthwise_tiled tile: row i (of the 3 * SH + KH under the tile's 4 output
// rows, if it exists) is loaded once and feeds every (output row, kernel row) pair that reads
// it. The caller passes i as a constant, so that every array index here is one after inlining:
// lavapipe keeps arrays indexed by a loop counter in memory and gathers them lane by lane (the
// loop form measured 1.7-2x slower on 5x5 and 3x3 EfficientNet planes).
fn depthwise_row(i: u32, in_base: u32, iy0: i32, ix0: i32, taps: ptr<function, array<f32, TAPS_MAX>>,
                 lo: ptr<function, array<vec4<f32>, 4>>, hi: ptr<function, array<vec4<f32>, 4>>) {
    if i >= 3u * SH + KH { return; }
    let iy = iy0 + i32(i);
    if iy < 0 || iy >= i32(params.in_h) { return; }
    let span = (TW - 1u) * SW + KW;
    var row: array<f32, SPAN_MAX>;
    let row_base = in_base + u32(iy) * params.in_w;
    for (var j = 0u; j < span; j++) {
        let ix = ix0 + i32(j);
        let inside = ix >= 0 && ix < i32(params.in_w);
        row[j] = select(0.0, x[row_base + u32(clamp(ix, 0, i32(params.in_w) - 1))], inside);
    }
    for (var r = 0u; r < 4u; r++) {
        if i < r * SH || i - r * SH >= KH { continue; }
        let trow = (i - r * SH) * KW;
        var l = (*lo)[r];
        var h = (*hi)[r];
        for (var kx = 0u; kx < KW; kx++) {
            let wv = (*taps)[trow + kx];
            l += vec4<f32>(row[kx], row[SW + kx], row[2u * SW + kx], row[3u * SW + kx]) * wv;
            if TW == 8u {
                h += vec4<f32>(row[4u * SW + kx], row[5u * SW + kx], row[6u * SW + kx],
                               row[7u * SW + kx]) * wv;
            }
        }
        (*lo)[r] = l;
        (*hi)[r] = h;
    }
}

// Output row r of a depthwise_tiled tile (if it exists): columns ox0..ox0+3 (lo) and
// ox0+4..ox0+7 (hi, TW == 8).
fn depthwise_store(r: u32, out_plane: u32, oy0: u32, ox0: u32, c: u32, lo: vec4<f32>, hi: vec4<f32>) {
    let oy = oy0 + r;
    if oy >= params.out_h { return; }
    let base = out_plane + oy * params.out_w;
    store_cols(base, ox0, params.out_w, c, lo);
    if TW == 8u { store_cols(base, ox0 + 4u, params.out_w, c, hi); }
}

@compute @workgroup_size(WG)
fn depthwise_tiled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    let tw = (params.out_w + TW - 1u) / TW;
    let tiles = tw * ((params.out_h + 3u) / 4u); // 4 x TW tiles of one plane
    if id >= params.batch * params.out_channels * tiles { return; }
    let plane = id / tiles; // sample * channels + channel
    let t = id % tiles;
    let c = plane % params.out_channels;
    let oy0 = (t / tw) * 4u;
    let ox0 = (t % tw) * TW;
    let in_base = plane * params.in_h * params.in_w;
    let iy0 = i32(oy0 * SH) - i32(params.pad_top);
    let ix0 = i32(ox0 * SW) - i32(params.pad_left);
    // The channel's taps, loaded once: each feeds every output row and column of the tile.
    var taps: array<f32, TAPS_MAX>;
    let wbase = c * KH * KW;
    for (var i = 0u; i < KH * KW; i++) { taps[i] = w[wbase + i]; }
    // Output columns 0..3 (lo) and 4..7 (hi, TW == 8) of each of the 4 rows.
    var lo: array<vec4<f32>, 4>;
    var hi: array<vec4<f32>, 4>;
    // The input rows under the tile, at most 3 * 2 + 7 = 13 (see depthwise_row).
    depthwise_row(0u, in_base, iy0, ix0, &taps, &lo, &hi);
    depthwise_row(1u, in_base, iy0, ix0, &taps, &lo, &hi);
    depthwise_row(2u, in_base, iy0, ix0, &taps, &lo, &hi);
    depthwise_row(3u, in_base, iy0, ix0, &taps, &lo, &hi);
    depthwise_row(4u, in_base, iy0, ix0, &taps, &lo, &hi);
    depthwise_row(5u, in_base, iy0, ix0, &taps, &lo, &hi);
    depthwise_row(6u, in_base, iy0, ix0, &taps, &lo, &hi);
    depthwise_row(7u, in_base, iy0, ix0, &taps, &lo, &hi);
    depthwise_row(8u, in_base, iy0, ix0, &taps, &lo, &hi);
    depthwise_row(9u, in_base, iy0, ix0, &taps, &lo, &hi);
    depthwise_row(10u, in_base, iy0, ix0, &taps, &lo, &hi);
    depthwise_row(11u, in_base, iy0, ix0, &taps, &lo, &hi);
    depthwise_row(12u, in_base, iy0, ix0, &taps, &lo, &hi);
    let out_plane = plane * params.out_h * params.out_w;
    depthwise_store(0u, out_plane, oy0, ox0, c, lo[0], hi[0]);
    depthwise_store(1u, out_plane, oy0, ox0, c, lo[1], hi[1]);
    depthwise_store(2u, out_plane, oy0, ox0, c, lo[2], hi[2]);
    depthwise_store(3u, out_plane, oy0, ox0, c, lo[3], hi[3]);
}
