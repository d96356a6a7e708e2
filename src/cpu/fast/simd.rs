//! Runtime SIMD dispatch and the vectorisable element-wise pieces (activation epilogue, a
//! polynomial `exp`) shared by the fast kernels.
//!
//! The crate is built for the baseline x86-64 target (SSE2); [`dispatch`] recompiles a kernel
//! body with AVX and FMA when the CPU has them, so the same loops auto-vectorise 8 wide. AVX2
//! is not required: the float loops need only AVX, and some virtual CPUs (this project's
//! benchmark machine among them) report AVX and FMA without AVX2.

use crate::model::Activation;

/// Runs `f` compiled with AVX and FMA enabled when the CPU supports them, else as is. Kernel
/// bodies passed here should be `#[inline(always)]` so they are compiled inside the wrapper.
#[inline(always)]
pub(crate) fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx_fma() {
            // SAFETY: both target features were detected on this CPU.
            return unsafe { with_avx_fma(f) };
        }
    }
    f()
}

/// True when the CPU has AVX and FMA: what [`dispatch`] and kernels written with explicit
/// AVX+FMA intrinsics require.
#[inline(always)]
pub(crate) fn has_avx_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,fma")]
fn with_avx_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `e^x` to within a few ulp for `x` in `[-87, 88]` (clamped outside, where `f32::exp` would
/// be 0 or infinite and the activations using it saturate anyway), in plain arithmetic that
/// auto-vectorises (Cephes polynomial on `x - n ln 2`, scale `2^n` built in the exponent bits).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in f32 and a correction, so `x - n ln 2` loses no bits.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // The low bits of `t` hold n in two's complement; the bits above shift out.
    let scale = f32::from_bits(t.to_bits().wrapping_add(127) << 23);
    e * scale
}

/// Applies `act` to every value of `y` in place, one branch-free loop per activation.
#[inline(always)]
pub(crate) fn activate(act: Activation, y: &mut [f32]) {
    match act {
        Activation::None => {}
        Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Relu6 => y.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        Activation::Silu => y.iter_mut().for_each(|v| *v /= 1.0 + exp(-*v)),
        Activation::Sigmoid => y.iter_mut().for_each(|v| *v = 1.0 / (1.0 + exp(-*v))),
        // The activations of imported models run their reference definition.
        other => y.iter_mut().for_each(|v| *v = other.apply(*v)),
    }
}

/// `act(y + bias)` in place.
#[inline(always)]
pub(crate) fn bias_activate(act: Activation, bias: f32, y: &mut [f32]) {
    y.iter_mut().for_each(|v| *v += bias);
    activate(act, y);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error of the polynomial `exp` against `f32::exp`.
    const EXP_RELATIVE: f32 = 4e-7;

    #[test]
    fn polynomial_exp_matches_std_exp_over_the_whole_range() {
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= EXP_RELATIVE * want,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn activations_match_the_reference_including_extremes() {
        let xs = [
            -1e30, -200.0, -88.5, -20.0, -1.0, -0.0, 0.0, 0.5, 3.0, 7.0, 90.0, 1e30,
        ];
        for act in [
            Activation::None,
            Activation::Relu,
            Activation::Relu6,
            Activation::Silu,
            Activation::Sigmoid,
        ] {
            let mut y = xs.to_vec();
            dispatch(|| activate(act, &mut y));
            for (&x, &got) in xs.iter().zip(&y) {
                let want = act.apply(x);
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{act:?}({x}) = {got}, want {want}"
                );
            }
        }
    }
}
