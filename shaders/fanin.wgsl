// Fixed-fan-in sparse layer (ELL layout): y[n, o] = act(sum_j w[o, j] * x[n, idx[o, j]] + bias[o]).
// Every output has exactly k inputs, so every invocation does the same work: no load imbalance.
//
// Register-blocked: each invocation computes ROWS batch rows x 4 outputs; each index/weight
// load is reused for ROWS rows. With k % 4 == 0, fanin_vec4 loads 4 indices and 4 weights at once.
//
// fanin_fm reads a feature-major input (see layout.wgsl): x[i] for 4 consecutive batch rows is
// one contiguous vec4, so each gathered tap is one vec4 load feeding 4 rows instead of 4 scalar
// loads, and neighbouring invocations (neighbouring rows of one output) read neighbouring
// memory with the same index and weight. Inference plans use it from a few rows up.
//
// Bindings (group 0):
//   0: uniform FanInParams
//   1: x     [batch, inputs]  (read)   fanin_fm: [inputs, quads] vec4 of 4 rows
//   2: idx   [outputs, k] u32 (read)   as vec4<u32> in fanin_vec4
//   3: w     [outputs, k]     (read)   as vec4<f32> in fanin_vec4
//   4: bias  [outputs]        (read)
//   5: y     [batch, outputs] (write)  fanin_fm with OUT_FM = 1: [outputs, quads] of 4 rows
// Override constants: WG (workgroup size), ROWS (1 or 4), OUT_FM (fanin_fm's output layout),
// G (fanin_group, fanin_fm: outputs sharing an index row, 1..=8).

struct FanInParams {
    batch: u32,
    inputs: u32,
    outputs: u32,
    k: u32,
    activation: u32,
    act_a: f32,
    act_b: f32,
    _pad0: u32,
}

override WG: u32 = 64u;
override ROWS: u32 = 4u;
override OUT_FM: u32 = 0u;
override G: u32 = 1u;

@group(0) @binding(0) var<uniform> params: FanInParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> xq: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> idx4: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> idx1: array<u32>;
@group(0) @binding(3) var<storage, read> w1: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

fn gather4(base: u32, i: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(x[base + i.x], x[base + i.y], x[base + i.z], x[base + i.w]);
}

fn store_tile(r0: u32, o0: u32, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        let o = o0 + c;
        if o >= params.outputs { break; }
        let b = bias[o];
        y[r0 * params.outputs + o] = activate(a0[c] + b, params.activation, params.act_a, params.act_b);
        if ROWS == 4u {
            if r0 + 1u < params.batch { y[(r0 + 1u) * params.outputs + o] = activate(a1[c] + b, params.activation, params.act_a, params.act_b); }
            if r0 + 2u < params.batch { y[(r0 + 2u) * params.outputs + o] = activate(a2[c] + b, params.activation, params.act_a, params.act_b); }
            if r0 + 3u < params.batch { y[(r0 + 3u) * params.outputs + o] = activate(a3[c] + b, params.activation, params.act_a, params.act_b); }
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

// Rows r0..r0+ROWS of output o (row-major), from a[c] = row r0 + c.
fn store_rows(o: u32, r0: u32, a: vec4<f32>) {
    let b = bias[o];
    for (var c = 0u; c < ROWS; c++) {
        if r0 + c < params.batch {
            y[(r0 + c) * params.outputs + o] = activate(a[c] + b, params.activation, params.act_a, params.act_b);
        }
    }
}

// Row-major input, k % 4 == 0, G > 1 outputs sharing one index row (a grouped pattern): ROWS
// rows x G outputs per invocation, each gathered input feeding G multiply-adds. Used below the
// feature-major batch threshold.
@compute @workgroup_size(WG)
fn fanin_group(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let groups = params.outputs / G;
    if t >= ((params.batch + ROWS - 1u) / ROWS) * groups { return; }
    let o0 = (t % groups) * G;
    let r0 = (t / groups) * ROWS;
    let last_r = params.batch - 1u;
    let xb = vec4<u32>(r0, min(r0 + 1u, last_r), min(r0 + 2u, last_r), min(r0 + 3u, last_r)) * params.inputs;
    let k4 = params.k / 4u;
    // a[g]: rows r0..r0+3 of output o0 + g (G <= 8).
    var a: array<vec4<f32>, 8>;
    for (var j = 0u; j < k4; j++) {
        let i = idx4[o0 * k4 + j];
        var x0 = vec4<f32>(x[xb.x + i.x], 0.0, 0.0, 0.0);
        var x1 = vec4<f32>(x[xb.x + i.y], 0.0, 0.0, 0.0);
        var x2 = vec4<f32>(x[xb.x + i.z], 0.0, 0.0, 0.0);
        var x3 = vec4<f32>(x[xb.x + i.w], 0.0, 0.0, 0.0);
        if ROWS == 4u {
            x0 = vec4<f32>(x0.x, x[xb.y + i.x], x[xb.z + i.x], x[xb.w + i.x]);
            x1 = vec4<f32>(x1.x, x[xb.y + i.y], x[xb.z + i.y], x[xb.w + i.y]);
            x2 = vec4<f32>(x2.x, x[xb.y + i.z], x[xb.z + i.z], x[xb.w + i.z]);
            x3 = vec4<f32>(x3.x, x[xb.y + i.w], x[xb.z + i.w], x[xb.w + i.w]);
        }
        for (var g = 0u; g < G; g++) {
            let w = w4[(o0 + g) * k4 + j];
            a[g] += x0 * w.x + x1 * w.y + x2 * w.z + x3 * w.w;
        }
    }
    // Constant indices keep `a` in registers (see fanin_fm).
    store_rows(o0, r0, a[0]);
    if G > 1u { store_rows(o0 + 1u, r0, a[1]); }
    if G > 2u { store_rows(o0 + 2u, r0, a[2]); }
    if G > 3u { store_rows(o0 + 3u, r0, a[3]); }
    if G > 4u { store_rows(o0 + 4u, r0, a[4]); }
    if G > 5u { store_rows(o0 + 5u, r0, a[5]); }
    if G > 6u { store_rows(o0 + 6u, r0, a[6]); }
    if G > 7u { store_rows(o0 + 7u, r0, a[7]); }
}

// 4 rows of one output, in the layout OUT_FM selects (rows past the batch are padding: kept in
// feature-major output, dropped in row-major output).
fn store_quad(o: u32, q: u32, quads: u32, a: vec4<f32>) {
    let b = bias[o];
    for (var c = 0u; c < 4u; c++) {
        let v = activate(a[c] + b, params.activation, params.act_a, params.act_b);
        if OUT_FM == 1u {
            y[(o * quads + q) * 4u + c] = v;
        } else if q * 4u + c < params.batch {
            y[(q * 4u + c) * params.outputs + o] = v;
        }
    }
}

// Feature-major input, k % 4 == 0: G outputs x 8 rows (two quads) per invocation. The G
// outputs share one index row (a grouped pattern; G = 1 for independent rows), so each gathered
// input vec4 feeds 4·G multiply-adds.
@compute @workgroup_size(WG)
fn fanin_fm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let quads = (params.batch + 3u) / 4u;
    let pairs = (quads + 1u) / 2u;
    if t >= pairs * (params.outputs / G) { return; }
    let o0 = (t / pairs) * G;
    let q0 = (t % pairs) * 2u;
    let q1 = min(q0 + 1u, quads - 1u);
    let k4 = params.k / 4u;
    // a[2g] and a[2g + 1]: output o0 + g for quads q0 and q1 (G <= 8).
    var a: array<vec4<f32>, 16>;
    for (var j = 0u; j < k4; j++) {
        let i = idx4[o0 * k4 + j] * quads;
        let x0 = xq[i.x + q0];
        let x1 = xq[i.y + q0];
        let x2 = xq[i.z + q0];
        let x3 = xq[i.w + q0];
        let z0 = xq[i.x + q1];
        let z1 = xq[i.y + q1];
        let z2 = xq[i.z + q1];
        let z3 = xq[i.w + q1];
        for (var g = 0u; g < G; g++) {
            let w = w4[(o0 + g) * k4 + j];
            a[2u * g] += x0 * w.x + x1 * w.y + x2 * w.z + x3 * w.w;
            a[2u * g + 1u] += z0 * w.x + z1 * w.y + z2 * w.z + z3 * w.w;
        }
    }
    // Constant indices (not a loop over g) keep `a` in registers on compilers that would not
    // unroll a loop this large (llvmpipe spilled them and ran measurably slower).
    store_pair(o0, q0, quads, a[0], a[1]);
    if G > 1u { store_pair(o0 + 1u, q0, quads, a[2], a[3]); }
    if G > 2u { store_pair(o0 + 2u, q0, quads, a[4], a[5]); }
    if G > 3u { store_pair(o0 + 3u, q0, quads, a[6], a[7]); }
    if G > 4u { store_pair(o0 + 4u, q0, quads, a[8], a[9]); }
    if G > 5u { store_pair(o0 + 5u, q0, quads, a[10], a[11]); }
    if G > 6u { store_pair(o0 + 6u, q0, quads, a[12], a[13]); }
    if G > 7u { store_pair(o0 + 7u, q0, quads, a[14], a[15]); }
}

// Quads q0 and q0 + 1 (when it exists) of output o.
fn store_pair(o: u32, q0: u32, quads: u32, a0: vec4<f32>, a1: vec4<f32>) {
    store_quad(o, q0, quads, a0);
    if q0 + 1u < quads {
        store_quad(o, q0 + 1u, quads, a1);
    }
}
