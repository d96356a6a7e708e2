// Dense (fully connected) layer: y[n, o] = act(sum_i x[n, i] * w[o, i] + bias[o]).
//
// Register-blocked: each invocation computes a tile of ROWS batch rows x 4 outputs, so every
// loaded weight is reused ROWS times and every loaded input 4 times.
//
// Bindings (group 0):
//   0: uniform DenseParams
//   1: x     [batch, inputs]   (read)   as vec4 in dense_vec4 (inputs % 4 == 0)
//   2: w     [outputs, inputs] (read)   as vec4 in dense_vec4
//   3: bias  [outputs]         (read)
//   4: y     [batch, outputs]  (write)
// Override constants: WG (workgroup size), ROWS (1 or 4 batch rows per invocation).

struct DenseParams {
    batch: u32,
    inputs: u32,
    outputs: u32,
    activation: u32,
}

override WG: u32 = 64u;
override ROWS: u32 = 4u;

@group(0) @binding(0) var<uniform> params: DenseParams;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read> w1: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn activate(v: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return max(v, 0.0); }
        case 2u: { return clamp(v, 0.0, 6.0); }
        case 3u: { return v / (1.0 + exp(-v)); }
        case 4u: { return 1.0 / (1.0 + exp(-v)); }
        default: { return v; }
    }
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

// Tile coordinates of invocation t: output tiles vary fastest so neighbours share inputs.
fn tile_of(t: u32) -> vec2<u32> {
    let out_tiles = (params.outputs + 3u) / 4u;
    return vec2<u32>((t / out_tiles) * ROWS, (t % out_tiles) * 4u);
}

@compute @workgroup_size(WG)
fn dense_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let row_tiles = (params.batch + ROWS - 1u) / ROWS;
    if t >= row_tiles * ((params.outputs + 3u) / 4u) { return; }
    let tile = tile_of(t);
    let r0 = tile.x;
    let o0 = tile.y;
    let n4 = params.inputs / 4u;
    let last_o = params.outputs - 1u;
    let last_r = params.batch - 1u;
    // Tails: clamp to the last valid row/output; the duplicate results are never stored.
    let wb0 = min(o0, last_o) * n4;
    let wb1 = min(o0 + 1u, last_o) * n4;
    let wb2 = min(o0 + 2u, last_o) * n4;
    let wb3 = min(o0 + 3u, last_o) * n4;
    let xb0 = r0 * n4;
    let xb1 = min(r0 + 1u, last_r) * n4;
    let xb2 = min(r0 + 2u, last_r) * n4;
    let xb3 = min(r0 + 3u, last_r) * n4;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var i = 0u; i < n4; i++) {
        let w0 = w4[wb0 + i];
        let w1v = w4[wb1 + i];
        let w2 = w4[wb2 + i];
        let w3 = w4[wb3 + i];
        let x0 = x4[xb0 + i];
        a0 += vec4<f32>(dot(x0, w0), dot(x0, w1v), dot(x0, w2), dot(x0, w3));
        if ROWS == 4u {
            let x1v = x4[xb1 + i];
            let x2 = x4[xb2 + i];
            let x3 = x4[xb3 + i];
            a1 += vec4<f32>(dot(x1v, w0), dot(x1v, w1v), dot(x1v, w2), dot(x1v, w3));
            a2 += vec4<f32>(dot(x2, w0), dot(x2, w1v), dot(x2, w2), dot(x2, w3));
            a3 += vec4<f32>(dot(x3, w0), dot(x3, w1v), dot(x3, w2), dot(x3, w3));
        }
    }
    store_tile(r0, o0, a0, a1, a2, a3);
}

// Any input width: the same tile, scalar loads.
@compute @workgroup_size(WG)
fn dense_scalar(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let row_tiles = (params.batch + ROWS - 1u) / ROWS;
    if t >= row_tiles * ((params.outputs + 3u) / 4u) { return; }
    let tile = tile_of(t);
    let r0 = tile.x;
    let o0 = tile.y;
    let n = params.inputs;
    let last_o = params.outputs - 1u;
    let last_r = params.batch - 1u;
    let wb = vec4<u32>(min(o0, last_o), min(o0 + 1u, last_o), min(o0 + 2u, last_o), min(o0 + 3u, last_o)) * n;
    let xb = vec4<u32>(r0, min(r0 + 1u, last_r), min(r0 + 2u, last_r), min(r0 + 3u, last_r)) * n;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var i = 0u; i < n; i++) {
        let w = vec4<f32>(w1[wb.x + i], w1[wb.y + i], w1[wb.z + i], w1[wb.w + i]);
        a0 += x1[xb.x + i] * w;
        if ROWS == 4u {
            a1 += x1[xb.y + i] * w;
            a2 += x1[xb.z + i] * w;
            a3 += x1[xb.w + i] * w;
        }
    }
    store_tile(r0, o0, a0, a1, a2, a3);
}
