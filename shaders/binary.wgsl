// Broadcasting binary op (add, sub, mul, div) over batched tensors of up to 4 per-sample
// dimensions; one invocation per output value:
//   y[s, o] = act(a[s·a_sample + Σ o_d·a_strides[d]] ∘ b[s·b_sample + Σ o_d·b_strides[d]])
// Strides are 0 along broadcast (size-1 or missing) dimensions and `*_sample` is 0 for a
// constant operand shared by every sample. `reverse` is the launcher swapping a and b.
//
// Bindings (group 0):
//   0: uniform BinaryParams
//   1: a (read)
//   2: b (read)
//   3: y (write)
// Override constants: WG (workgroup size).

struct BinaryParams {
    len: u32,
    op: u32,
    activation: u32,
    out_sample: u32,
    act_a: f32,
    act_b: f32,
    a_sample: u32,
    b_sample: u32,
    out_dims: vec4<u32>,
    a_strides: vec4<u32>,
    b_strides: vec4<u32>,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: BinaryParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= params.len { return; }
    let s = i / params.out_sample;
    var rem = i % params.out_sample;
    var ia = s * params.a_sample;
    var ib = s * params.b_sample;
    for (var k = 0u; k < 4u; k++) {
        let d = 3u - k;
        let size = params.out_dims[d];
        let c = rem % size;
        rem = rem / size;
        ia += c * params.a_strides[d];
        ib += c * params.b_strides[d];
    }
    let l = a[ia];
    let r = b[ib];
    var v: f32;
    switch params.op {
        case 0u: { v = l + r; }
        case 1u: { v = l - r; }
        case 2u: { v = l * r; }
        default: { v = l / r; }
    }
    y[i] = activate(v, params.activation, params.act_a, params.act_b);
}
