// Backward kernels of convolutions and pools, and a gather; one invocation per output value,
// no atomics (input gradients gather over the outputs that read each input cell).
//
// conv_grad_weight: out[((oc*cin_g + ic)*kh + ky)*kw + kx] = sum_{n,oy,ox} b[n,oc,oy,ox] * a[n,ch,iy,ix]
//                   out[W + oc] = sum_{n,oy,ox} b[n,oc,oy,ox]      (bias gradient; W = weights)
//                   a = x [batch, in_channels, in_h, in_w], b = dz [batch, out_channels, out_h, out_w]
// conv_grad_input:  out[n,ch,iy,ix] = sum over (oc, ky, kx) reading (iy, ix) of b[n,oc,oy,ox] * c[w]
//                   c = weight
// pool_grad:        out[plane,iy,ix] = sum over windows containing (iy, ix): max pooling routes
//                   b to the first maximum of the window (as the forward picks it), average
//                   pooling shares it among the window's cells inside the input; a = x, b = dy
//                   (params: batch = planes, activation = 1 for max)
// global_avgpool_grad: out[plane*hw + i] = b[plane] / hw   (params: batch = planes, in_h = hw)
// gather:           out[t] = a[bitcast<u32>(c[t])] for t < batch
//
// Bindings (group 0):
//   0: uniform ConvParams (the forward convolution's parameters, see conv2d.wgsl)
//   1: a (read)
//   2: b (read)
//   3: c (read)
//   4: out (write)
// Override constants: WG (workgroup size).

struct ConvParams {
    batch: u32,
    in_channels: u32,
    in_h: u32,
    in_w: u32,
    out_channels: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride: u32,
    padding: u32,
    groups: u32,
    activation: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn conv_grad_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(gid, nwg);
    let cin_g = p.in_channels / p.groups;
    let cout_g = p.out_channels / p.groups;
    let weights = p.out_channels * cin_g * p.kernel_h * p.kernel_w;
    if t >= weights + p.out_channels {
        return;
    }
    let ohw = p.out_h * p.out_w;
    var acc = 0.0;
    if t < weights {
        let kx = t % p.kernel_w;
        let ky = (t / p.kernel_w) % p.kernel_h;
        let ic = (t / (p.kernel_w * p.kernel_h)) % cin_g;
        let oc = t / (p.kernel_w * p.kernel_h * cin_g);
        let ch = (oc / cout_g) * cin_g + ic;
        for (var n = 0u; n < p.batch; n++) {
            let zb = (n * p.out_channels + oc) * ohw;
            let xb = (n * p.in_channels + ch) * p.in_h * p.in_w;
            for (var oy = 0u; oy < p.out_h; oy++) {
                let iy = i32(oy * p.stride + ky) - i32(p.padding);
                if iy < 0 || iy >= i32(p.in_h) {
                    continue;
                }
                for (var ox = 0u; ox < p.out_w; ox++) {
                    let ix = i32(ox * p.stride + kx) - i32(p.padding);
                    if ix < 0 || ix >= i32(p.in_w) {
                        continue;
                    }
                    acc += b[zb + oy * p.out_w + ox] * a[xb + u32(iy) * p.in_w + u32(ix)];
                }
            }
        }
    } else {
        let oc = t - weights;
        for (var n = 0u; n < p.batch; n++) {
            let zb = (n * p.out_channels + oc) * ohw;
            for (var i = 0u; i < ohw; i++) {
                acc += b[zb + i];
            }
        }
    }
    out[t] = acc;
}

@compute @workgroup_size(WG)
fn conv_grad_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(gid, nwg);
    let hw = p.in_h * p.in_w;
    if t >= p.batch * p.in_channels * hw {
        return;
    }
    let ix = i32(t % p.in_w);
    let iy = i32((t / p.in_w) % p.in_h);
    let ch = (t / hw) % p.in_channels;
    let n = t / (hw * p.in_channels);
    let cin_g = p.in_channels / p.groups;
    let cout_g = p.out_channels / p.groups;
    let g = ch / cin_g;
    let ic = ch % cin_g;
    let s = i32(p.stride);
    var acc = 0.0;
    for (var ocl = 0u; ocl < cout_g; ocl++) {
        let oc = g * cout_g + ocl;
        let zb = (n * p.out_channels + oc) * p.out_h * p.out_w;
        for (var ky = 0u; ky < p.kernel_h; ky++) {
            let ty = iy + i32(p.padding) - i32(ky);
            if ty < 0 || ty % s != 0 || ty / s >= i32(p.out_h) {
                continue;
            }
            let oy = u32(ty / s);
            for (var kx = 0u; kx < p.kernel_w; kx++) {
                let tx = ix + i32(p.padding) - i32(kx);
                if tx < 0 || tx % s != 0 || tx / s >= i32(p.out_w) {
                    continue;
                }
                let ox = u32(tx / s);
                let w = c[((oc * cin_g + ic) * p.kernel_h + ky) * p.kernel_w + kx];
                acc += b[zb + oy * p.out_w + ox] * w;
            }
        }
    }
    out[t] = acc;
}

@compute @workgroup_size(WG)
fn pool_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(gid, nwg);
    let hw = p.in_h * p.in_w;
    if t >= p.batch * hw {
        return;
    }
    let cell = i32(t % hw);
    let ix = i32(t % p.in_w);
    let iy = i32((t / p.in_w) % p.in_h);
    let plane = t / hw;
    let xb = plane * hw;
    let s = i32(p.stride);
    let pad = i32(p.padding);
    var acc = 0.0;
    for (var oy = 0; oy < i32(p.out_h); oy++) {
        let y0 = oy * s - pad;
        if iy < y0 || iy >= y0 + i32(p.kernel_h) {
            continue;
        }
        for (var ox = 0; ox < i32(p.out_w); ox++) {
            let x0 = ox * s - pad;
            if ix < x0 || ix >= x0 + i32(p.kernel_w) {
                continue;
            }
            let g = b[(plane * p.out_h + u32(oy)) * p.out_w + u32(ox)];
            var best = -3.402823e38;
            var at = -1;
            var count = 0;
            for (var ky = 0; ky < i32(p.kernel_h); ky++) {
                let yy = y0 + ky;
                if yy < 0 || yy >= i32(p.in_h) {
                    continue;
                }
                for (var kx = 0; kx < i32(p.kernel_w); kx++) {
                    let xx = x0 + kx;
                    if xx < 0 || xx >= i32(p.in_w) {
                        continue;
                    }
                    count += 1;
                    let v = a[xb + u32(yy * i32(p.in_w) + xx)];
                    if at < 0 || v > best {
                        best = v;
                        at = yy * i32(p.in_w) + xx;
                    }
                }
            }
            if p.activation == 1u {
                if at == cell {
                    acc += g;
                }
            } else {
                acc += g / f32(max(count, 1));
            }
        }
    }
    out[t] = acc;
}

@compute @workgroup_size(WG)
fn global_avgpool_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(gid, nwg);
    if t >= p.batch * p.in_h {
        return;
    }
    out[t] = b[t / p.in_h] / f32(p.in_h);
}

@compute @workgroup_size(WG)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(gid, nwg);
    if t >= p.batch {
        return;
    }
    out[t] = a[bitcast<u32>(c[t])];
}
