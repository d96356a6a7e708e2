//! The fast CPU kernels the CPU backend runs, each with the signature of its
//! [`crate::cpu::reference`] twin and tested against it: dense, fan-in and 1x1 convolutions on
//! a packed SIMD GEMM, KxK and grouped convolutions through im2col, vectorised direct
//! depthwise kernels, pooling and the squeeze-excite pieces. Bias and activation are fused
//! into the pass that produces each output. Parallel on the pool of [`mod@crate::cpu::threads`].
//!
//! Activations stay NCHW, the layout the engine passes between steps: per sample a 1x1
//! convolution `Y[cout, hw] = W[cout, cin] · X[cin, hw]` is already a plain GEMM in NCHW.

mod conv;
mod dense;
mod depthwise;
mod elementwise;
mod gemm;
mod pool;
mod scratch;
mod simd;

pub use conv::conv2d;
pub use dense::{dense, fanin, fanin_runs_dense, FANIN_DENSE_MIN_BATCH, FANIN_DENSE_SPEEDUP};
pub use elementwise::{activation, binary};
pub use pool::{global_avgpool, mul, pool};

/// Fewest output values a parallel task gets: below this, splitting work across threads
/// costs more than it saves.
const PAR_MIN_ELEMS: usize = 16 * 1024;
