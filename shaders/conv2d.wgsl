// 2-D convolution over NCHW activations, weight [out, in/groups, kh, kw], zero padding
// (top/left given; bottom/right only shape the output), strides and dilations per axis.
//
// conv2d:    each invocation computes OC_TILE output channels (of one group) x 4 consecutive
//            output columns, so each input load feeds OC_TILE MACs and each weight 4 MACs.
// depthwise: groups == in == out channels; each invocation computes 4 output columns of one channel.
//
// Bindings (group 0):
//   0: uniform ConvParams
//   1: x     [batch, in_channels, in_h, in_w]     (read)
//   2: w     [out_channels, in/groups, kh, kw]    (read)
//   3: bias  [out_channels]                       (read)
//   4: y     [batch, out_channels, out_h, out_w]  (write)
// Override constants: WG (workgroup size), OC_TILE (1 or 4; 4 needs (out/groups) % 4 == 0).

struct ConvParams {
    batch: u32,
    in_channels: u32,
    in_h: u32,
    in_w: u32,
    out_channels: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    dilation_h: u32,
    dilation_w: u32,
    pad_top: u32,
    pad_left: u32,
    groups: u32,
    activation: u32,
    act_a: f32,
    act_b: f32,
    _pad0: u32,
}

override WG: u32 = 64u;
override OC_TILE: u32 = 4u;

@group(0) @binding(0) var<uniform> params: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

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
    let base = ((b * params.out_channels + oc) * params.out_h + oy) * params.out_w;
    let bv = bias[oc];
    for (var j = 0u; j < 4u; j++) {
        if ox0 + j < params.out_w { y[base + ox0 + j] = activate(acc[j] + bv, params.activation, params.act_a, params.act_b); }
    }
}

@compute @workgroup_size(WG)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let ox_tiles = (params.out_w + 3u) / 4u;
    let oc_tiles = params.out_channels / OC_TILE;
    if t >= params.batch * oc_tiles * params.out_h * ox_tiles { return; }
    let ox0 = (t % ox_tiles) * 4u;
    var rest = t / ox_tiles;
    let oy = rest % params.out_h;
    rest = rest / params.out_h;
    let oc0 = (rest % oc_tiles) * OC_TILE;
    let b = rest / oc_tiles;
    let cin_g = params.in_channels / params.groups;
    let cout_g = params.out_channels / params.groups;
    let g = oc0 / cout_g;
    let khw = params.kernel_h * params.kernel_w;
    let wstride = cin_g * khw; // weights per output channel
    let ix0 = i32(ox0 * params.stride_w) - i32(params.pad_left);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var ic = 0u; ic < cin_g; ic++) {
        let c = g * cin_g + ic;
        let plane = (b * params.in_channels + c) * params.in_h;
        for (var ky = 0u; ky < params.kernel_h; ky++) {
            let iy = i32(oy * params.stride_h + ky * params.dilation_h) - i32(params.pad_top);
            if iy < 0 || iy >= i32(params.in_h) { continue; }
            let row_base = (plane + u32(iy)) * params.in_w;
            let wrow = oc0 * wstride + (ic * params.kernel_h + ky) * params.kernel_w;
            for (var kx = 0u; kx < params.kernel_w; kx++) {
                let xv = load_row4(row_base, ix0 + i32(kx * params.dilation_w));
                a0 += xv * w[wrow + kx];
                if OC_TILE == 4u {
                    a1 += xv * w[wrow + wstride + kx];
                    a2 += xv * w[wrow + 2u * wstride + kx];
                    a3 += xv * w[wrow + 3u * wstride + kx];
                }
            }
        }
    }
    store4(b, oc0, oy, ox0, a0);
    if OC_TILE == 4u {
        store4(b, oc0 + 1u, oy, ox0, a1);
        store4(b, oc0 + 2u, oy, ox0, a2);
        store4(b, oc0 + 3u, oy, ox0, a3);
    }
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
