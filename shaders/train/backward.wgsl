// Backward kernels of dense and fixed-fan-in layers and of fused activations; one invocation
// per output value, no atomics. (The fan-in input gradient needs no kernel here: it is the
// fan-in forward kernel of fanin.wgsl run over the transposed pattern with gathered weights.)
//
// activation_grad:   out[i] = b[i] * act'(a[i])                  a = pre-activation z, b = dy
// dense_grad_weight: out[o*inputs + i] = sum_n b[n,o] * a[n,i]   a = x [batch, inputs], b = dz
//                    out[outputs*inputs + o] = sum_n b[n,o]      (bias gradient)
// dense_grad_input:  out[n*inputs + i] = sum_o b[n,o] * c[o*inputs + i]   c = weight
// fanin_grad_weight: out[o*k + j] = sum_n b[n,o] * a[n, c[o*k + j]]       c = indices (u32 bits)
//                    out[outputs*k + o] = sum_n b[n,o]           (bias gradient)
//
// Bindings (group 0):
//   0: uniform GradParams
//   1: a (read)
//   2: b (read)
//   3: c (read; weights, or indices as u32 bit patterns; unused by activation_grad)
//   4: out (write)
// Override constants: WG (workgroup size).

struct GradParams {
    batch: u32,
    inputs: u32,
    outputs: u32,
    k: u32,
    activation: u32,
    len: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: GradParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

fn derivative(z: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return select(0.0, 1.0, z > 0.0); }
        case 2u: { return select(0.0, 1.0, z > 0.0 && z < 6.0); }
        case 3u: {
            let s = 1.0 / (1.0 + exp(-z));
            return s * (1.0 + z * (1.0 - s));
        }
        case 4u: {
            let s = 1.0 / (1.0 + exp(-z));
            return s * (1.0 - s);
        }
        default: { return 1.0; }
    }
}

@compute @workgroup_size(WG)
fn activation_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if i >= params.len {
        return;
    }
    out[i] = b[i] * derivative(a[i], params.activation);
}

@compute @workgroup_size(WG)
fn dense_grad_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(gid, nwg);
    let weights = params.outputs * params.inputs;
    if t >= weights + params.outputs {
        return;
    }
    var acc = 0.0;
    if t < weights {
        let o = t / params.inputs;
        let i = t % params.inputs;
        for (var n = 0u; n < params.batch; n++) {
            acc += b[n * params.outputs + o] * a[n * params.inputs + i];
        }
    } else {
        let o = t - weights;
        for (var n = 0u; n < params.batch; n++) {
            acc += b[n * params.outputs + o];
        }
    }
    out[t] = acc;
}

@compute @workgroup_size(WG)
fn dense_grad_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(gid, nwg);
    if t >= params.batch * params.inputs {
        return;
    }
    let n = t / params.inputs;
    let i = t % params.inputs;
    var acc = 0.0;
    for (var o = 0u; o < params.outputs; o++) {
        acc += b[n * params.outputs + o] * c[o * params.inputs + i];
    }
    out[t] = acc;
}

@compute @workgroup_size(WG)
fn fanin_grad_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(gid, nwg);
    let weights = params.outputs * params.k;
    if t >= weights + params.outputs {
        return;
    }
    var acc = 0.0;
    if t < weights {
        let o = t / params.k;
        let src = bitcast<u32>(c[t]);
        for (var n = 0u; n < params.batch; n++) {
            acc += b[n * params.outputs + o] * a[n * params.inputs + src];
        }
    } else {
        let o = t - weights;
        for (var n = 0u; n < params.batch; n++) {
            acc += b[n * params.outputs + o];
        }
    }
    out[t] = acc;
}
