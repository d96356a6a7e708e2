// Elementwise ops; one invocation per output value.
//
// activation: y = act(a)
// add:        y = act(a + b)                       (residual)
// mul:        y = act(a[i / inner] * b[i])         (channel gate a [planes] over b [planes, inner];
//                                                   inner == 1 is the plain product)
//
// Bindings (group 0):
//   0: uniform ElementwiseParams
//   1: a (read)
//   2: b (read; unused by activation)
//   3: y (write)
// The `_vec4` twins compute four values per invocation with vec4 loads (lavapipe pays per
// load instruction): len % 4 == 0, and for mul_vec4 inner % 4 == 0 (one gate value per quad).
// Override constants: WG (workgroup size).

struct ElementwiseParams {
    len: u32,
    inner: u32,
    activation: u32,
    _pad0: u32,
    act_a: f32,
    act_b: f32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: ElementwiseParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> y4: array<vec4<f32>>;

fn activate4(v: vec4<f32>) -> vec4<f32> {
    let k = params.activation;
    let p = params.act_a;
    let q = params.act_b;
    return vec4<f32>(activate(v.x, k, p, q), activate(v.y, k, p, q), activate(v.z, k, p, q),
                     activate(v.w, k, p, q));
}

@compute @workgroup_size(WG)
fn activation(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= params.len { return; }
    y[i] = activate(a[i], params.activation, params.act_a, params.act_b);
}

@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= params.len { return; }
    y[i] = activate(a[i] + b[i], params.activation, params.act_a, params.act_b);
}

@compute @workgroup_size(WG)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= params.len { return; }
    y[i] = activate(a[i / params.inner] * b[i], params.activation, params.act_a, params.act_b);
}

@compute @workgroup_size(WG)
fn activation_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= params.len / 4u { return; }
    y4[i] = activate4(a4[i]);
}

@compute @workgroup_size(WG)
fn add_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= params.len / 4u { return; }
    y4[i] = activate4(a4[i] + b4[i]);
}

@compute @workgroup_size(WG)
fn mul_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= params.len / 4u { return; }
    y4[i] = activate4(a[(4u * i) / params.inner] * b4[i]);
}
