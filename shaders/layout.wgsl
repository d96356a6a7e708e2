// Activation layout changes for inference plans.
//
// Row-major [batch, features] is every op's layout. Feature-major [features, quads] stores, for
// each feature, the batch in quads of 4 consecutive rows (one vec4 each; rows past the batch
// repeat the last row, so padding stays finite). Only fanin_fm reads it.
//
// Bindings (group 0):
//   0: uniform LayoutParams
//   1: x [batch, features] (read)
//   2: y [features, quads] vec4 (write)
// Override constants: WG (workgroup size).

struct LayoutParams {
    batch: u32,
    features: u32,
    quads: u32,
    _pad0: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: LayoutParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;

fn row_of(q: u32, r: u32) -> u32 {
    return min(q * 4u + r, params.batch - 1u);
}

// Any feature count: one feature x one quad per invocation.
@compute @workgroup_size(WG)
fn to_feature_major(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    if t >= params.features * params.quads { return; }
    let f = t / params.quads;
    let q = t % params.quads;
    let n = params.features;
    y[t] = vec4<f32>(x[row_of(q, 0u) * n + f], x[row_of(q, 1u) * n + f],
                     x[row_of(q, 2u) * n + f], x[row_of(q, 3u) * n + f]);
}

// features % 4 == 0: a 4x4 block (4 features x one quad) per invocation, vec4 loads and stores.
@compute @workgroup_size(WG)
fn to_feature_major_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let f4s = params.features / 4u;
    if t >= f4s * params.quads { return; }
    let f4 = t / params.quads;
    let q = t % params.quads;
    let r0 = x4[row_of(q, 0u) * f4s + f4];
    let r1 = x4[row_of(q, 1u) * f4s + f4];
    let r2 = x4[row_of(q, 2u) * f4s + f4];
    let r3 = x4[row_of(q, 3u) * f4s + f4];
    let f = f4 * 4u;
    y[f * params.quads + q] = vec4<f32>(r0.x, r1.x, r2.x, r3.x);
    y[(f + 1u) * params.quads + q] = vec4<f32>(r0.y, r1.y, r2.y, r3.y);
    y[(f + 2u) * params.quads + q] = vec4<f32>(r0.z, r1.z, r2.z, r3.z);
    y[(f + 3u) * params.quads + q] = vec4<f32>(r0.w, r1.w, r2.w, r3.w);
}
