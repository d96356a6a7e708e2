// Pooling over NCHW planes.
//
// pool:           max or average (padding cells excluded from the average) over a window;
//                 one invocation per output value.
// global_avgpool: mean of each plane; one invocation per plane.
//
// Bindings (group 0):
//   0: uniform PoolParams
//   1: x [planes, in_h, in_w]   (read)
//   2: y [planes, out_h, out_w] (write)
// Override constants: WG (workgroup size).

struct PoolParams {
    planes: u32,
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride: u32,
    padding: u32,
    is_max: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn pool(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    if t >= params.planes * params.out_h * params.out_w { return; }
    let ox = t % params.out_w;
    let oy = (t / params.out_w) % params.out_h;
    let plane = t / (params.out_w * params.out_h);
    let base = plane * params.in_h * params.in_w;
    var acc = select(0.0, -3.4028235e38, params.is_max == 1u);
    var count = 0u;
    for (var ky = 0u; ky < params.kernel_h; ky++) {
        let iy = i32(oy * params.stride + ky) - i32(params.padding);
        if iy < 0 || iy >= i32(params.in_h) { continue; }
        for (var kx = 0u; kx < params.kernel_w; kx++) {
            let ix = i32(ox * params.stride + kx) - i32(params.padding);
            if ix < 0 || ix >= i32(params.in_w) { continue; }
            let v = x[base + u32(iy) * params.in_w + u32(ix)];
            if params.is_max == 1u { acc = max(acc, v); } else { acc += v; }
            count += 1u;
        }
    }
    if params.is_max == 0u { acc = acc / f32(max(count, 1u)); }
    y[t] = acc;
}

@compute @workgroup_size(WG)
fn global_avgpool(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = gid.x + gid.y * nwg.x * WG;
    if plane >= params.planes { return; }
    let hw = params.in_h * params.in_w;
    let base = plane * hw;
    var acc = vec4<f32>(0.0);
    let n4 = hw / 4u;
    for (var i = 0u; i < n4; i++) {
        let j = base + 4u * i;
        acc += vec4<f32>(x[j], x[j + 1u], x[j + 2u], x[j + 3u]);
    }
    var s = acc.x + acc.y + acc.z + acc.w;
    for (var i = n4 * 4u; i < hw; i++) { s += x[base + i]; }
    y[plane] = s / f32(hw);
}
