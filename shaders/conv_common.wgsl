// Shared by the convolution kernels (conv2d.wgsl, conv_subgroup.wgsl, conv_shared.wgsl): parameters, the
// input bindings, the epilogue (bias and fused activation) and the pixel-tile stores. Each
// file declares its output `y` / `y4` (binding 4 in conv2d.wgsl and
// conv_shared.wgsl, 5 in conv_subgroup.wgsl).

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
    stride_h: u32,
    stride_w: u32,
    dilation_h: u32,
    dilation_w: u32,
    pad_top: u32,
    pad_left: u32,
    groups: u32,
    activation: u32,
    act_a: f32,
    act_b: f32,
    _pad0: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

// The one epilogue of every convolution kernel: bias and the fused activation.
fn epilogue(v: f32, oc: u32) -> f32 {
    return activate(v + bias[oc], params.activation, params.act_a, params.act_b);
}

// Stores four results of channel `oc` at columns c0..c0+3 of the row starting at `base`,
// those below `end` only.
fn store_cols(base: u32, c0: u32, end: u32, oc: u32, acc: vec4<f32>) {
    let v = epilogue4(acc, oc);
    for (var j = 0u; j < 4u; j++) {
        if c0 + j < end { y[base + c0 + j] = v[j]; }
    }
}

// The epilogue of four results of channel `oc`: one bias load (lavapipe pays per load).
fn epilogue4(v: vec4<f32>, oc: u32) -> vec4<f32> {
    let s = v + vec4<f32>(bias[oc]);
    let act = params.activation;
    return vec4<f32>(activate(s.x, act, params.act_a, params.act_b),
                     activate(s.y, act, params.act_a, params.act_b),
                     activate(s.z, act, params.act_a, params.act_b),
                     activate(s.w, act, params.act_a, params.act_b));
}

// Stores channel `oc`'s pixels p0..p0+7 (those below hw) of sample `b`.
fn store8(b: u32, oc: u32, p0: u32, hw: u32, lo: vec4<f32>, hi: vec4<f32>) {
    let base = (b * params.out_channels + oc) * hw;
    store_cols(base, p0, hw, oc, lo);
    store_cols(base, p0 + 4u, hw, oc, hi);
}
