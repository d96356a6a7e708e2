// Shared by the dense kernels (dense.wgsl, dense_subgroup.wgsl): parameters and bindings.
// y[n, o] = act(sum_i x[n, i] * w[o, i] + bias[o]).
//
// Bindings (group 0):
//   0: uniform DenseParams
//   1: x     [batch, inputs]   (read; as vec4 where inputs % 4 == 0)
//   2: w     [outputs, inputs] (read; likewise)
//   3: bias  [outputs]         (read)
//   4: y     [batch, outputs]  (write)

struct DenseParams {
    batch: u32,
    inputs: u32,
    outputs: u32,
    activation: u32,
    act_a: f32,
    act_b: f32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: DenseParams;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read> w1: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

