// A plain vec4 copy, y = x, used by `edgecut bench` to measure memory bandwidth
// (bytes read + written per second); one invocation per vec4.
//
// Bindings (group 0):
//   0: uniform CopyParams
//   1: x [len4] vec4 (read)
//   2: y [len4] vec4 (write)
// Override constants: WG (workgroup size).

struct CopyParams {
    len4: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: CopyParams;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= params.len4 { return; }
    y[i] = x[i];
}
