// General strided copy: transpose, constant padding and concatenation (one dispatch per
// piece, each writing its slice of the output). One invocation per value of an iteration
// space of up to 8 dimensions (outermost first, unused ones of size 1):
//   y[y_offset + Σ c_d·y_strides[d]] = x[Σ (c_d - pads[d])·x_strides[d]]
// when every 0 <= c_d - pads[d] < src_dims[d], else `value`.
//
// Bindings (group 0):
//   0: uniform MoveParams
//   1: x (read)
//   2: y (write)
// Override constants: WG (workgroup size).

struct MoveParams {
    len: u32,
    y_offset: u32,
    value: f32,
    _pad0: u32,
    dims: array<vec4<u32>, 2>,
    src_dims: array<vec4<u32>, 2>,
    pads: array<vec4<u32>, 2>,
    x_strides: array<vec4<u32>, 2>,
    y_strides: array<vec4<u32>, 2>,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: MoveParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn copy_strided(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= params.len { return; }
    var rem = i;
    var xi = 0u;
    var yi = params.y_offset;
    var inside = true;
    for (var k = 0u; k < 8u; k++) {
        let d = 7u - k;
        let size = params.dims[d / 4u][d % 4u];
        let c = rem % size;
        rem = rem / size;
        yi += c * params.y_strides[d / 4u][d % 4u];
        let p = params.pads[d / 4u][d % 4u];
        if c < p || c - p >= params.src_dims[d / 4u][d % 4u] {
            inside = false;
        } else {
            xi += (c - p) * params.x_strides[d / 4u][d % 4u];
        }
    }
    if inside {
        y[yi] = x[xi];
    } else {
        y[yi] = params.value;
    }
}
