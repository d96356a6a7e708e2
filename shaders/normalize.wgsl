// Normalisations along one axis of tensors viewed as [outer, len, inner].
//
// lrn:          one invocation per value; ONNX LRN across `len` channels:
//               y = x / (bias + alpha / size · Σ x²)^beta over the channel window
//               [c - floor((size-1)/2), c + ceil((size-1)/2)] clipped.
// softmax_axis: one invocation per (outer, inner) pair; numerically stable softmax along `len`.
//
// Bindings (group 0):
//   0: uniform NormParams
//   1: x (read)
//   2: y (write)
// Override constants: WG (workgroup size).

struct NormParams {
    outer: u32,
    len: u32,
    inner: u32,
    size: u32,
    alpha: f32,
    beta: f32,
    bias: f32,
    _pad0: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: NormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn lrn(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= params.outer * params.len * params.inner { return; }
    let inner = params.inner;
    let o = i / (params.len * inner);
    let c = (i / inner) % params.len;
    let j = i % inner;
    let before = (params.size - 1u) / 2u;
    let after = params.size - 1u - before;
    let lo = select(0u, c - before, c >= before);
    // min(after, len) first: a huge window must not wrap around.
    let hi = min(c + min(after, params.len) + 1u, params.len);
    var sq = 0.0;
    for (var ch = lo; ch < hi; ch++) {
        let v = x[(o * params.len + ch) * inner + j];
        sq += v * v;
    }
    y[i] = x[i] / pow(params.bias + params.alpha / f32(params.size) * sq, params.beta);
}

@compute @workgroup_size(WG)
fn softmax_axis(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    if t >= params.outer * params.inner { return; }
    let inner = params.inner;
    let base = (t / inner) * params.len * inner + t % inner;
    var m = x[base];
    for (var k = 1u; k < params.len; k++) {
        m = max(m, x[base + k * inner]);
    }
    var sum = 0.0;
    for (var k = 0u; k < params.len; k++) {
        sum += exp(x[base + k * inner] - m);
    }
    for (var k = 0u; k < params.len; k++) {
        y[base + k * inner] = exp(x[base + k * inner] - m) / sum;
    }
}
