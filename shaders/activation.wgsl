// The activations every kernel applies (fused or standalone), joined in front of each shader
// that uses them (see `Shader::source`), so there is one definition of each code.
// Codes and parameters are `Activation::code` and `Activation::params`:
//   0 none, 1 relu, 2 relu6, 3 silu, 4 sigmoid, 5 leaky_relu (a = alpha),
//   6 clip (a = min, b = max; infinite bounds are unbounded), 7 hard_sigmoid (a = alpha, b = beta),
//   8 hard_swish, 9 tanh.

// ACT: the activation as a pipeline constant. Every launcher in `gpu::kernels` sets it, so each
// pipeline keeps only its own case: CPU-emulated adapters run every case of a switch on a
// run-time code for every value (their lanes execute both sides of each branch), which cost
// more than the multiply-adds of a small convolution. Left at RUNTIME_ACT, the code passed at
// run time (the parameters' `activation`, always the same code) selects.
const RUNTIME_ACT: u32 = 255u;
override ACT: u32 = RUNTIME_ACT;

fn activate(v: f32, act_code: u32, a: f32, b: f32) -> f32 {
    var act = act_code;
    if ACT != RUNTIME_ACT { act = ACT; }
    switch act {
        case 1u: { return max(v, 0.0); }
        case 2u: { return clamp(v, 0.0, 6.0); }
        case 3u: { return v / (1.0 + exp(-v)); }
        case 4u: { return 1.0 / (1.0 + exp(-v)); }
        case 5u: { return select(a * v, v, v >= 0.0); }
        case 6u: { return min(max(v, a), b); }
        case 7u: { return clamp(a * v + b, 0.0, 1.0); }
        case 8u: { return v * clamp(v / 6.0 + 0.5, 0.0, 1.0); }
        case 9u: {
            // tanh through exp(-2|v|): finite for every v (a plain tanh may overflow to NaN).
            let e = exp(-2.0 * abs(v));
            return sign(v) * (1.0 - e) / (1.0 + e);
        }
        default: { return v; }
    }
}

