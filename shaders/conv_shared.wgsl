// Convolutions tiled through workgroup-shared memory, for hardware GPUs: a workgroup stages
// the inputs its outputs share with coalesced loads (neighbouring invocations read
// neighbouring addresses), then every invocation computes a 4 x 4 (conv_shared) or 2 x 2
// (depthwise_shared) block of outputs from the staged copy. CPU-emulated adapters run the
// register-tiled kernels of conv2d.wgsl instead: there workgroup memory costs as much per
// access as a storage-buffer load.
//
// conv_shared:      any non-depthwise convolution as an implicit GEMM per group,
//                   Y[Cout/g, N * OH * OW] = W[Cout/g, Cin/g * KH * KW] * im2col(X): 32 x 32
//                   output tiles per workgroup of 8 x 8 invocations, 16-deep slices of W and
//                   of the input windows (gathered on the fly, zeros in the padding) staged in
//                   workgroup memory. KH = KW = 1 folds the window arithmetic away.
// depthwise_shared: groups == in == out channels, dilation 1, kernel <= 7 x 7, stride <= 2:
//                   16 x 16 outputs of one plane per workgroup; the input patch under them
//                   (at most 37 x 37) and the channel's taps are staged once.
//
// Bindings and parameters: conv_common.wgsl (y at binding 4). Override constants: KH, KW
// (kernel), SH, SW (depthwise_shared's strides).

@group(0) @binding(4) var<storage, read_write> y: array<f32>;

override KH: u32 = 1u;
override KW: u32 = 1u;
override SH: u32 = 1u;
override SW: u32 = 1u;

// Linear workgroup index (dispatches fold into 2-D past the per-dimension limit).
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// conv_shared's tile: 32 output channels x 32 columns (output pixels of the batch, flattened),
// from 16-deep slices of W (stored [k][m]) and of the input windows (stored [k][n]).
const TILE: u32 = 32u;
const SLICE: u32 = 16u;
var<workgroup> tile_w: array<f32, 512>;
var<workgroup> tile_x: array<f32, 512>;

// Input value `k` (input channel of the group, kernel row, kernel column) of output column `n`'s
// window; zero in the padding and past the last column.
fn window_value(grp: u32, k: u32, n: u32) -> f32 {
    let ohw = params.out_h * params.out_w;
    if n >= params.batch * ohw { return 0.0; }
    let ic = k / (KH * KW);
    let ky = (k / KW) % KH;
    let kx = k % KW;
    let b = n / ohw;
    let p = n % ohw;
    let iy = i32((p / params.out_w) * params.stride_h + ky * params.dilation_h) - i32(params.pad_top);
    let ix = i32((p % params.out_w) * params.stride_w + kx * params.dilation_w) - i32(params.pad_left);
    if iy < 0 || iy >= i32(params.in_h) || ix < 0 || ix >= i32(params.in_w) { return 0.0; }
    let cin_g = params.in_channels / params.groups;
    return x[((b * params.in_channels + grp * cin_g + ic) * params.in_h + u32(iy)) * params.in_w + u32(ix)];
}

@compute @workgroup_size(64)
fn conv_shared(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lane: u32) {
    let ohw = params.out_h * params.out_w;
    let cols = params.batch * ohw;
    let cout_g = params.out_channels / params.groups;
    let depth = params.in_channels / params.groups * KH * KW;
    let n_tiles = (cols + TILE - 1u) / TILE;
    let m_tiles = (cout_g + TILE - 1u) / TILE;
    let g = workgroup_index(wid, nwg);
    // Uniform: the whole workgroup leaves or stays, so the barriers below stay uniform.
    if g >= params.groups * m_tiles * n_tiles { return; }
    let grp = g / (m_tiles * n_tiles);
    let m0 = ((g / n_tiles) % m_tiles) * TILE;
    let n0 = (g % n_tiles) * TILE;
    let oc_base = grp * cout_g;
    let tx = lane % 8u;
    let ty = lane / 8u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < depth; k0 += SLICE) {
        // Coalesced: consecutive lanes read consecutive k of a W row and consecutive output
        // columns of one window row; zeros past the edges.
        for (var r = 0u; r < 8u; r++) {
            let i = lane + 64u * r;
            let wk = i % SLICE;
            let wm = i / SLICE;
            var wv = 0.0;
            if m0 + wm < cout_g && k0 + wk < depth { wv = w[(oc_base + m0 + wm) * depth + k0 + wk]; }
            tile_w[wk * TILE + wm] = wv;
            let xn = i % TILE;
            let xk = i / TILE;
            var xv = 0.0;
            if k0 + xk < depth { xv = window_value(grp, k0 + xk, n0 + xn); }
            tile_x[xk * TILE + xn] = xv;
        }
        workgroupBarrier();
        for (var k = 0u; k < SLICE; k++) {
            let wrow = k * TILE + ty;
            let a = vec4<f32>(tile_w[wrow], tile_w[wrow + 8u], tile_w[wrow + 16u], tile_w[wrow + 24u]);
            let xrow = k * TILE + tx;
            let v = vec4<f32>(tile_x[xrow], tile_x[xrow + 8u], tile_x[xrow + 16u], tile_x[xrow + 24u]);
            acc0 += a.x * v;
            acc1 += a.y * v;
            acc2 += a.z * v;
            acc3 += a.w * v;
        }
        workgroupBarrier();
    }
    // Invocation (tx, ty) holds channels m0 + ty + 8i, columns n0 + tx + 8j.
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + ty + 8u * i;
        var acc = acc0;
        if i == 1u { acc = acc1; }
        if i == 2u { acc = acc2; }
        if i == 3u { acc = acc3; }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tx + 8u * j;
            if m < cout_g && n < cols {
                let oc = oc_base + m;
                y[((n / ohw) * params.out_channels + oc) * ohw + n % ohw] = epilogue(acc[j], oc);
            }
        }
    }
}

// depthwise_shared's tile: 16 x 16 outputs; the input patch under them is at most
// (15 * 2 + 7) x (15 * 2 + 7).
const DW_TILE: u32 = 16u;
const PATCH_MAX: u32 = 1369u;
var<workgroup> dw_patch: array<f32, PATCH_MAX>;
var<workgroup> dw_taps: array<f32, 49>;

@compute @workgroup_size(64)
fn depthwise_shared(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lane: u32) {
    let tiles_x = (params.out_w + DW_TILE - 1u) / DW_TILE;
    let tiles = tiles_x * ((params.out_h + DW_TILE - 1u) / DW_TILE);
    let g = workgroup_index(wid, nwg);
    // Uniform: the whole workgroup leaves or stays, so the barrier below stays uniform.
    if g >= params.batch * params.out_channels * tiles { return; }
    let plane = g / tiles; // sample * channels + channel
    let c = plane % params.out_channels;
    let oy0 = ((g % tiles) / tiles_x) * DW_TILE;
    let ox0 = ((g % tiles) % tiles_x) * DW_TILE;
    let ph = (DW_TILE - 1u) * SH + KH;
    let pw = (DW_TILE - 1u) * SW + KW;
    let iy0 = i32(oy0 * SH) - i32(params.pad_top);
    let ix0 = i32(ox0 * SW) - i32(params.pad_left);
    let in_base = plane * params.in_h * params.in_w;
    // Row by row, consecutive lanes on consecutive columns; zeros in the padding.
    for (var i = lane; i < ph * pw; i += 64u) {
        let iy = iy0 + i32(i / pw);
        let ix = ix0 + i32(i % pw);
        var v = 0.0;
        if iy >= 0 && iy < i32(params.in_h) && ix >= 0 && ix < i32(params.in_w) {
            v = x[in_base + u32(iy) * params.in_w + u32(ix)];
        }
        dw_patch[i] = v;
    }
    if lane < KH * KW { dw_taps[lane] = w[c * KH * KW + lane]; }
    workgroupBarrier();
    // Invocation (tx, ty) computes rows ty and ty + 8, columns tx and tx + 8 of the tile.
    let tx = lane % 8u;
    let ty = lane / 8u;
    let out_plane = plane * params.out_h * params.out_w;
    for (var i = 0u; i < 2u; i++) {
        let ly = ty + 8u * i;
        for (var j = 0u; j < 2u; j++) {
            let lx = tx + 8u * j;
            var acc = 0.0;
            for (var ky = 0u; ky < KH; ky++) {
                let row = (ly * SH + ky) * pw + lx * SW;
                for (var kx = 0u; kx < KW; kx++) {
                    acc += dw_patch[row + kx] * dw_taps[ky * KW + kx];
                }
            }
            let oy = oy0 + ly;
            let ox = ox0 + lx;
            if oy < params.out_h && ox < params.out_w {
                y[out_plane + oy * params.out_w + ox] = epilogue(acc, c);
            }
        }
    }
}
