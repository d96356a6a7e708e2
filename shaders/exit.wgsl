// Softmax and early-exit statistics over [batch, classes] logits; one invocation per sample.
//
// softmax:    y [batch, classes] = softmax(x) per row (max-subtracted for stability)
// exit_stats: y [batch, 4] = (confidence = max probability, entropy in nats, argmax as f32, 0)
//
// Bindings (group 0):
//   0: uniform ExitParams
//   1: x [batch, classes] (read)
//   2: y                  (write)
// Override constants: WG (workgroup size).

struct ExitParams {
    batch: u32,
    classes: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: ExitParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = gid.x + gid.y * nwg.x * WG;
    if n >= params.batch { return; }
    let base = n * params.classes;
    var m = -3.4028235e38;
    for (var c = 0u; c < params.classes; c++) { m = max(m, x[base + c]); }
    var s = 0.0;
    for (var c = 0u; c < params.classes; c++) { s += exp(x[base + c] - m); }
    for (var c = 0u; c < params.classes; c++) { y[base + c] = exp(x[base + c] - m) / s; }
}

@compute @workgroup_size(WG)
fn exit_stats(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = gid.x + gid.y * nwg.x * WG;
    if n >= params.batch { return; }
    let base = n * params.classes;
    var m = -3.4028235e38;
    var arg = 0u;
    for (var c = 0u; c < params.classes; c++) {
        let v = x[base + c];
        if v > m { m = v; arg = c; }
    }
    var s = 0.0;
    for (var c = 0u; c < params.classes; c++) { s += exp(x[base + c] - m); }
    let log_s = log(s);
    var entropy = 0.0;
    for (var c = 0u; c < params.classes; c++) {
        let lp = (x[base + c] - m) - log_s;
        entropy -= exp(lp) * lp;
    }
    y[4u * n] = 1.0 / s;
    y[4u * n + 1u] = entropy;
    y[4u * n + 2u] = f32(arg);
    y[4u * n + 3u] = 0.0;
}
