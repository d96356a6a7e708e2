// Fixed-fan-in sparse layer (ELL layout): y[n, o] = act(sum_j w[o, j] * x[n, idx[o, j]] + bias[o]).
// Every output has exactly k inputs, so every invocation does the same work: no load imbalance.
//
// Register-blocked: each invocation computes ROWS batch rows x 4 outputs; each index/weight
// load is reused for ROWS rows. With k % 4 == 0, fanin_vec4 loads 4 indices and 4 weights at once.
//
// Bindings (group 0):
//   0: uniform FanInParams
//   1: x     [batch, inputs]  (read)
//   2: idx   [outputs, k] u32 (read)   as vec4<u32> in fanin_vec4
//   3: w     [outputs, k]     (read)   as vec4<f32> in fanin_vec4
//   4: bias  [outputs]        (read)
//   5: y     [batch, outputs] (write)
// Override constants: WG (workgroup size), ROWS (1 or 4; fanin_vec4_r16 always takes 16).

struct FanInParams {
    batch: u32,
    inputs: u32,
    outputs: u32,
    k: u32,
    activation: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 64u;
override ROWS: u32 = 4u;

@group(0) @binding(0) var<uniform> params: FanInParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> idx4: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> idx1: array<u32>;
@group(0) @binding(3) var<storage, read> w1: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

fn activate(v: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return max(v, 0.0); }
        case 2u: { return clamp(v, 0.0, 6.0); }
        case 3u: { return v / (1.0 + exp(-v)); }
        case 4u: { return 1.0 / (1.0 + exp(-v)); }
        default: { return v; }
    }
}

fn gather4(base: u32, i: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(x[base + i.x], x[base + i.y], x[base + i.z], x[base + i.w]);
}

fn store_tile(r0: u32, o0: u32, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        let o = o0 + c;
        if o >= params.outputs { break; }
        let b = bias[o];
        y[r0 * params.outputs + o] = activate(a0[c] + b, params.activation);
        if ROWS == 4u {
            if r0 + 1u < params.batch { y[(r0 + 1u) * params.outputs + o] = activate(a1[c] + b, params.activation); }
            if r0 + 2u < params.batch { y[(r0 + 2u) * params.outputs + o] = activate(a2[c] + b, params.activation); }
            if r0 + 3u < params.batch { y[(r0 + 3u) * params.outputs + o] = activate(a3[c] + b, params.activation); }
        }
    }
}

fn tile_of(t: u32) -> vec2<u32> {
    let out_tiles = (params.outputs + 3u) / 4u;
    return vec2<u32>((t / out_tiles) * ROWS, (t % out_tiles) * 4u);
}

@compute @workgroup_size(WG)
fn fanin_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let row_tiles = (params.batch + ROWS - 1u) / ROWS;
    if t >= row_tiles * ((params.outputs + 3u) / 4u) { return; }
    let tile = tile_of(t);
    let r0 = tile.x;
    let o0 = tile.y;
    let k4 = params.k / 4u;
    let last_o = params.outputs - 1u;
    let last_r = params.batch - 1u;
    let ob = vec4<u32>(min(o0, last_o), min(o0 + 1u, last_o), min(o0 + 2u, last_o), min(o0 + 3u, last_o)) * k4;
    let xb = vec4<u32>(r0, min(r0 + 1u, last_r), min(r0 + 2u, last_r), min(r0 + 3u, last_r)) * params.inputs;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var j = 0u; j < k4; j++) {
        let i0 = idx4[ob.x + j];
        let i1 = idx4[ob.y + j];
        let i2 = idx4[ob.z + j];
        let i3 = idx4[ob.w + j];
        let w0 = w4[ob.x + j];
        let w1v = w4[ob.y + j];
        let w2 = w4[ob.z + j];
        let w3 = w4[ob.w + j];
        a0 += vec4<f32>(dot(gather4(xb.x, i0), w0), dot(gather4(xb.x, i1), w1v),
                        dot(gather4(xb.x, i2), w2), dot(gather4(xb.x, i3), w3));
        if ROWS == 4u {
            a1 += vec4<f32>(dot(gather4(xb.y, i0), w0), dot(gather4(xb.y, i1), w1v),
                            dot(gather4(xb.y, i2), w2), dot(gather4(xb.y, i3), w3));
            a2 += vec4<f32>(dot(gather4(xb.z, i0), w0), dot(gather4(xb.z, i1), w1v),
                            dot(gather4(xb.z, i2), w2), dot(gather4(xb.z, i3), w3));
            a3 += vec4<f32>(dot(gather4(xb.w, i0), w0), dot(gather4(xb.w, i1), w1v),
                            dot(gather4(xb.w, i2), w2), dot(gather4(xb.w, i3), w3));
        }
    }
    store_tile(r0, o0, a0, a1, a2, a3);
}

// Large batches: 16 rows x 4 outputs per invocation (k % 4 == 0); each index/weight load feeds
// 16 rows instead of 4.
@compute @workgroup_size(WG)
fn fanin_vec4_r16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let out_tiles = (params.outputs + 3u) / 4u;
    if t >= ((params.batch + 15u) / 16u) * out_tiles { return; }
    let r0 = (t / out_tiles) * 16u;
    let o0 = (t % out_tiles) * 4u;
    let k4 = params.k / 4u;
    let last_o = params.outputs - 1u;
    let last_r = params.batch - 1u;
    let ob = vec4<u32>(min(o0, last_o), min(o0 + 1u, last_o), min(o0 + 2u, last_o), min(o0 + 3u, last_o)) * k4;
    let xb0 = min(r0 + 0u, last_r) * params.inputs;
    let xb1 = min(r0 + 1u, last_r) * params.inputs;
    let xb2 = min(r0 + 2u, last_r) * params.inputs;
    let xb3 = min(r0 + 3u, last_r) * params.inputs;
    let xb4 = min(r0 + 4u, last_r) * params.inputs;
    let xb5 = min(r0 + 5u, last_r) * params.inputs;
    let xb6 = min(r0 + 6u, last_r) * params.inputs;
    let xb7 = min(r0 + 7u, last_r) * params.inputs;
    let xb8 = min(r0 + 8u, last_r) * params.inputs;
    let xb9 = min(r0 + 9u, last_r) * params.inputs;
    let xb10 = min(r0 + 10u, last_r) * params.inputs;
    let xb11 = min(r0 + 11u, last_r) * params.inputs;
    let xb12 = min(r0 + 12u, last_r) * params.inputs;
    let xb13 = min(r0 + 13u, last_r) * params.inputs;
    let xb14 = min(r0 + 14u, last_r) * params.inputs;
    let xb15 = min(r0 + 15u, last_r) * params.inputs;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var a8 = vec4<f32>(0.0);
    var a9 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0);
    var a11 = vec4<f32>(0.0);
    var a12 = vec4<f32>(0.0);
    var a13 = vec4<f32>(0.0);
    var a14 = vec4<f32>(0.0);
    var a15 = vec4<f32>(0.0);
    for (var j = 0u; j < k4; j++) {
        let i0 = idx4[ob.x + j];
        let i1 = idx4[ob.y + j];
        let i2 = idx4[ob.z + j];
        let i3 = idx4[ob.w + j];
        let w0 = w4[ob.x + j];
        let w1v = w4[ob.y + j];
        let w2 = w4[ob.z + j];
        let w3 = w4[ob.w + j];
        a0 += vec4<f32>(dot(gather4(xb0, i0), w0), dot(gather4(xb0, i1), w1v), dot(gather4(xb0, i2), w2), dot(gather4(xb0, i3), w3));
        a1 += vec4<f32>(dot(gather4(xb1, i0), w0), dot(gather4(xb1, i1), w1v), dot(gather4(xb1, i2), w2), dot(gather4(xb1, i3), w3));
        a2 += vec4<f32>(dot(gather4(xb2, i0), w0), dot(gather4(xb2, i1), w1v), dot(gather4(xb2, i2), w2), dot(gather4(xb2, i3), w3));
        a3 += vec4<f32>(dot(gather4(xb3, i0), w0), dot(gather4(xb3, i1), w1v), dot(gather4(xb3, i2), w2), dot(gather4(xb3, i3), w3));
        a4 += vec4<f32>(dot(gather4(xb4, i0), w0), dot(gather4(xb4, i1), w1v), dot(gather4(xb4, i2), w2), dot(gather4(xb4, i3), w3));
        a5 += vec4<f32>(dot(gather4(xb5, i0), w0), dot(gather4(xb5, i1), w1v), dot(gather4(xb5, i2), w2), dot(gather4(xb5, i3), w3));
        a6 += vec4<f32>(dot(gather4(xb6, i0), w0), dot(gather4(xb6, i1), w1v), dot(gather4(xb6, i2), w2), dot(gather4(xb6, i3), w3));
        a7 += vec4<f32>(dot(gather4(xb7, i0), w0), dot(gather4(xb7, i1), w1v), dot(gather4(xb7, i2), w2), dot(gather4(xb7, i3), w3));
        a8 += vec4<f32>(dot(gather4(xb8, i0), w0), dot(gather4(xb8, i1), w1v), dot(gather4(xb8, i2), w2), dot(gather4(xb8, i3), w3));
        a9 += vec4<f32>(dot(gather4(xb9, i0), w0), dot(gather4(xb9, i1), w1v), dot(gather4(xb9, i2), w2), dot(gather4(xb9, i3), w3));
        a10 += vec4<f32>(dot(gather4(xb10, i0), w0), dot(gather4(xb10, i1), w1v), dot(gather4(xb10, i2), w2), dot(gather4(xb10, i3), w3));
        a11 += vec4<f32>(dot(gather4(xb11, i0), w0), dot(gather4(xb11, i1), w1v), dot(gather4(xb11, i2), w2), dot(gather4(xb11, i3), w3));
        a12 += vec4<f32>(dot(gather4(xb12, i0), w0), dot(gather4(xb12, i1), w1v), dot(gather4(xb12, i2), w2), dot(gather4(xb12, i3), w3));
        a13 += vec4<f32>(dot(gather4(xb13, i0), w0), dot(gather4(xb13, i1), w1v), dot(gather4(xb13, i2), w2), dot(gather4(xb13, i3), w3));
        a14 += vec4<f32>(dot(gather4(xb14, i0), w0), dot(gather4(xb14, i1), w1v), dot(gather4(xb14, i2), w2), dot(gather4(xb14, i3), w3));
        a15 += vec4<f32>(dot(gather4(xb15, i0), w0), dot(gather4(xb15, i1), w1v), dot(gather4(xb15, i2), w2), dot(gather4(xb15, i3), w3));
    }
    for (var c = 0u; c < 4u; c++) {
        let o = o0 + c;
        if o >= params.outputs { break; }
        let b = bias[o];
        if r0 + 0u < params.batch { y[(r0 + 0u) * params.outputs + o] = activate(a0[c] + b, params.activation); }
        if r0 + 1u < params.batch { y[(r0 + 1u) * params.outputs + o] = activate(a1[c] + b, params.activation); }
        if r0 + 2u < params.batch { y[(r0 + 2u) * params.outputs + o] = activate(a2[c] + b, params.activation); }
        if r0 + 3u < params.batch { y[(r0 + 3u) * params.outputs + o] = activate(a3[c] + b, params.activation); }
        if r0 + 4u < params.batch { y[(r0 + 4u) * params.outputs + o] = activate(a4[c] + b, params.activation); }
        if r0 + 5u < params.batch { y[(r0 + 5u) * params.outputs + o] = activate(a5[c] + b, params.activation); }
        if r0 + 6u < params.batch { y[(r0 + 6u) * params.outputs + o] = activate(a6[c] + b, params.activation); }
        if r0 + 7u < params.batch { y[(r0 + 7u) * params.outputs + o] = activate(a7[c] + b, params.activation); }
        if r0 + 8u < params.batch { y[(r0 + 8u) * params.outputs + o] = activate(a8[c] + b, params.activation); }
        if r0 + 9u < params.batch { y[(r0 + 9u) * params.outputs + o] = activate(a9[c] + b, params.activation); }
        if r0 + 10u < params.batch { y[(r0 + 10u) * params.outputs + o] = activate(a10[c] + b, params.activation); }
        if r0 + 11u < params.batch { y[(r0 + 11u) * params.outputs + o] = activate(a11[c] + b, params.activation); }
        if r0 + 12u < params.batch { y[(r0 + 12u) * params.outputs + o] = activate(a12[c] + b, params.activation); }
        if r0 + 13u < params.batch { y[(r0 + 13u) * params.outputs + o] = activate(a13[c] + b, params.activation); }
        if r0 + 14u < params.batch { y[(r0 + 14u) * params.outputs + o] = activate(a14[c] + b, params.activation); }
        if r0 + 15u < params.batch { y[(r0 + 15u) * params.outputs + o] = activate(a15[c] + b, params.activation); }
    }
}

// Any k: the same tile, one index per step.
@compute @workgroup_size(WG)
fn fanin_scalar(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let row_tiles = (params.batch + ROWS - 1u) / ROWS;
    if t >= row_tiles * ((params.outputs + 3u) / 4u) { return; }
    let tile = tile_of(t);
    let r0 = tile.x;
    let o0 = tile.y;
    let k = params.k;
    let last_o = params.outputs - 1u;
    let last_r = params.batch - 1u;
    let ob = vec4<u32>(min(o0, last_o), min(o0 + 1u, last_o), min(o0 + 2u, last_o), min(o0 + 3u, last_o)) * k;
    let xb = vec4<u32>(r0, min(r0 + 1u, last_r), min(r0 + 2u, last_r), min(r0 + 3u, last_r)) * params.inputs;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var j = 0u; j < k; j++) {
        let i = vec4<u32>(idx1[ob.x + j], idx1[ob.y + j], idx1[ob.z + j], idx1[ob.w + j]);
        let w = vec4<f32>(w1[ob.x + j], w1[ob.y + j], w1[ob.z + j], w1[ob.w + j]);
        a0 += gather4(xb.x, i) * w;
        if ROWS == 4u {
            a1 += gather4(xb.y, i) * w;
            a2 += gather4(xb.z, i) * w;
            a3 += gather4(xb.w, i) * w;
        }
    }
    store_tile(r0, o0, a0, a1, a2, a3);
}
