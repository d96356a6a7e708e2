// Optimizer steps, one invocation per parameter. The state buffer holds three planes of `len`
// values: [weights | first moment (or momentum) | second moment].
//
// sgd_step:  m = momentum*m + g;                       w -= lr*m
// adam_step: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; w -= lr*(m/c1)/(sqrt(v/c2) + eps)
//            with c1 = 1 - b1^t, c2 = 1 - b2^t computed on the host.
//
// Bindings (group 0):
//   0: uniform OptimParams
//   1: g (read; the gradient)
//   2: state (read_write; [w | m | v])
// Override constants: WG (workgroup size).

struct OptimParams {
    len: u32,
    _pad0: u32,
    lr: f32,
    momentum: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    c1: f32,
    c2: f32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: OptimParams;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: array<f32>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn sgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if i >= params.len {
        return;
    }
    let m = params.momentum * state[params.len + i] + g[i];
    state[params.len + i] = m;
    state[i] = state[i] - params.lr * m;
}

@compute @workgroup_size(WG)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if i >= params.len {
        return;
    }
    let gi = g[i];
    let m = params.beta1 * state[params.len + i] + (1.0 - params.beta1) * gi;
    let v = params.beta2 * state[2u * params.len + i] + (1.0 - params.beta2) * gi * gi;
    state[params.len + i] = m;
    state[2u * params.len + i] = v;
    state[i] = state[i] - params.lr * (m / params.c1) / (sqrt(v / params.c2) + params.eps);
}
