// Pooling over NCHW planes.
//
// pool:           max or average over a window (padding cells excluded from the average
//                 unless count_include_pad; ceil_mode only shapes the output on the host);
//                 one invocation per output value.
// global_avgpool: mean of each plane; one invocation per plane (many small planes).
// global_avgpool_wg (_vec4: plane sizes a multiple of 4, vec4 loads): mean of each plane;
//                 one workgroup of 64 per plane, each invocation summing every 64th value,
//                 then a tree sum in workgroup memory: large planes (few channels) spread
//                 over the whole device instead of one invocation each.
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
    stride_h: u32,
    stride_w: u32,
    pad_top: u32,
    pad_left: u32,
    pad_bottom: u32,
    pad_right: u32,
    is_max: u32,
    count_include_pad: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn pool(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    if t >= params.planes * params.out_h * params.out_w { return; }
    let ox = t % params.out_w;
    let oy = (t / params.out_w) % params.out_h;
    let plane = t / (params.out_w * params.out_h);
    let base = plane * params.in_h * params.in_w;
    // Window [y0, y1) x [x0, x1) clipped to the padded input; cells outside the input never
    // count as values.
    let y0 = i32(oy * params.stride_h) - i32(params.pad_top);
    let x0 = i32(ox * params.stride_w) - i32(params.pad_left);
    let y1 = min(y0 + i32(params.kernel_h), i32(params.in_h + params.pad_bottom));
    let x1 = min(x0 + i32(params.kernel_w), i32(params.in_w + params.pad_right));
    var acc = select(0.0, -3.4028235e38, params.is_max == 1u);
    var count = 0u;
    for (var iy = max(y0, 0); iy < min(y1, i32(params.in_h)); iy++) {
        for (var ix = max(x0, 0); ix < min(x1, i32(params.in_w)); ix++) {
            let v = x[base + u32(iy) * params.in_w + u32(ix)];
            if params.is_max == 1u { acc = max(acc, v); } else { acc += v; }
            count += 1u;
        }
    }
    if params.count_include_pad == 1u { count = u32((y1 - y0) * (x1 - x0)); }
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

const GAP_LANES: u32 = 64u;
var<workgroup> partial: array<f32, GAP_LANES>;

// The workgroup's mean of `plane` from each lane's partial sum `s`.
fn gap_reduce(lane: u32, plane: u32, s: f32) {
    partial[lane] = s;
    workgroupBarrier();
    for (var half = GAP_LANES / 2u; half > 0u; half /= 2u) {
        if lane < half { partial[lane] += partial[lane + half]; }
        workgroupBarrier();
    }
    if lane == 0u { y[plane] = partial[0] / f32(params.in_h * params.in_w); }
}

@compute @workgroup_size(GAP_LANES)
fn global_avgpool_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lane: u32) {
    let plane = wid.x + wid.y * nwg.x;
    // Uniform: the whole workgroup leaves or stays, so the barriers stay uniform.
    if plane >= params.planes { return; }
    let hw = params.in_h * params.in_w;
    let base = plane * hw;
    var s = 0.0;
    for (var i = lane; i < hw; i += GAP_LANES) { s += x[base + i]; }
    gap_reduce(lane, plane, s);
}

@compute @workgroup_size(GAP_LANES)
fn global_avgpool_wg_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lane: u32) {
    let plane = wid.x + wid.y * nwg.x;
    if plane >= params.planes { return; }
    let hw4 = params.in_h * params.in_w / 4u;
    let base = plane * hw4;
    var acc = vec4<f32>(0.0);
    for (var i = lane; i < hw4; i += GAP_LANES) { acc += x4[base + i]; }
    gap_reduce(lane, plane, acc.x + acc.y + acc.z + acc.w);
}
