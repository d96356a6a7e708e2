//! The fast CPU kernels the CPU backend runs, each with the signature of its
//! [`crate::cpu::reference`] twin and tested against it: dense, fan-in and 1x1 convolutions on
//! a packed SIMD GEMM, KxK and grouped convolutions through im2col, vectorised direct
//! depthwise kernels, pooling and the squeeze-excite pieces. Bias and activation are fused
//! into the pass that produces each output. Parallel on the pool of [`mod@crate::cpu::threads`].
//!
//! Batches of more than one sample run batch-inner (`[c, n, h, w]`, see [`layout`]) from the
//! first convolution to the first op that needs samples outermost, so that each convolution is
//! one GEMM over the whole batch; the engine converts at those boundaries only.

mod conv;
mod dense;
mod depthwise;
mod elementwise;
mod gemm;
pub mod layout;
mod pool;
mod scratch;
pub use scratch::{copied, recycle};
mod simd;

pub use conv::{conv2d, conv2d_batch_inner, runs_batch_inner};
pub use dense::{dense, fanin, fanin_runs_dense, FANIN_DENSE_MIN_BATCH, FANIN_DENSE_SPEEDUP};
pub use elementwise::{activation, binary, binary_shaped};
pub use pool::{global_avgpool, mul, pool};

/// Fewest output values a parallel task gets: below this, splitting work across threads
/// costs more than it saves.
const PAR_MIN_ELEMS: usize = 16 * 1024;
