//! CPU execution. [`reference`](mod@reference) holds the plain-Rust loops of every op: the
//! oracle every GPU kernel and every fast CPU kernel is tested against. [`fast`] holds the
//! kernels the CPU backend runs, on the thread pool of [`threads`](mod@threads); [`Kernels`]
//! names which set a run uses.

pub mod fast;
pub mod reference;
pub mod threads;

pub use reference::{exit_stats, ExitStat};
pub use threads::{set_threads, threads, CpuError};

use crate::model::{Activation, Binary, Conv2d, Dense, FanIn, Pool};

/// `binary(b, x, x_shape, operand, n)`: a broadcasting binary op on `n` samples.
pub type BinaryKernel = fn(&Binary, &[f32], &[usize], &[f32], usize) -> Vec<f32>;

/// One implementation of each op whose kernel differs between the reference and the fast
/// path; every other op runs its reference on both.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    /// `conv2d(conv, x, n, h, w)`.
    pub conv2d: fn(&Conv2d, &[f32], usize, usize, usize) -> Vec<f32>,
    /// `dense(d, x, n)`.
    pub dense: fn(&Dense, &[f32], usize) -> Vec<f32>,
    /// `fanin(f, x, n)`.
    pub fanin: fn(&FanIn, &[f32], usize) -> Vec<f32>,
    /// `pool(p, x, nc, h, w)`.
    pub pool: fn(&Pool, &[f32], usize, usize, usize) -> Vec<f32>,
    /// `global_avgpool(x, nc, hw)`.
    pub global_avgpool: fn(&[f32], usize, usize) -> Vec<f32>,
    /// `binary(b, x, x_shape, operand, n)`.
    pub binary: BinaryKernel,
    /// `activation(act, x)`.
    pub activation: fn(Activation, &[f32]) -> Vec<f32>,
}

impl Kernels {
    /// The plain loops: the oracle.
    pub const REFERENCE: Kernels = Kernels {
        conv2d: reference::conv2d,
        dense: reference::dense,
        fanin: reference::fanin,
        pool: reference::pool,
        global_avgpool: reference::global_avgpool,
        binary: reference::binary,
        activation: reference::activation,
    };

    /// The CPU backend's kernels.
    pub const FAST: Kernels = Kernels {
        conv2d: fast::conv2d,
        dense: fast::dense,
        fanin: fast::fanin,
        pool: fast::pool,
        global_avgpool: fast::global_avgpool,
        binary: fast::binary,
        activation: fast::activation,
    };
}
