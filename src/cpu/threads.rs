//! The thread pool the fast CPU kernels run on. One process-wide Rayon pool, sized once by
//! [`set_threads`] (the `--threads` flag) or, by default, to every core; every CPU plan runs
//! inside it, so the GEMM crate's and the kernels' parallel loops share the same workers.

use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::{Arc, RwLock};
use thiserror::Error;

/// Errors configuring the CPU backend.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CpuError {
    /// A thread count of zero.
    #[error("the CPU backend needs at least one thread (got --threads 0); pass a positive count or leave it out for all cores")]
    ZeroThreads,
    /// The operating system refused to start the workers.
    #[error("cannot start {threads} CPU worker threads: {reason}; try a smaller --threads")]
    Spawn {
        /// Threads requested.
        threads: usize,
        /// What the thread pool builder said.
        reason: String,
    },
}

/// The pool in use; `None` until the first plan runs or [`set_threads`] is called.
static POOL: RwLock<Option<Arc<ThreadPool>>> = RwLock::new(None);

/// Sizes the CPU backend's thread pool to `threads` workers. Plans already running finish on
/// the old pool; later runs use the new one.
pub fn set_threads(threads: usize) -> Result<(), CpuError> {
    if threads == 0 {
        return Err(CpuError::ZeroThreads);
    }
    let pool = build(threads)?;
    // A poisoned lock only means another thread panicked while swapping pools; the value
    // inside is still a valid pool or `None`.
    *POOL.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(pool));
    Ok(())
}

/// Workers in the CPU backend's pool (all cores unless [`set_threads`] said otherwise).
pub fn threads() -> usize {
    pool().map_or(1, |p| p.current_num_threads())
}

/// Runs `f` on the CPU backend's pool: parallel loops and GEMMs inside use its workers. Runs
/// `f` on the calling thread (single-threaded) if no pool can be started.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match pool() {
        Some(p) => p.install(f),
        None => f(),
    }
}

fn build(threads: usize) -> Result<ThreadPool, CpuError> {
    ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("edgecut-cpu-{i}"))
        .build()
        .map_err(|e| CpuError::Spawn {
            threads,
            reason: e.to_string(),
        })
}

fn pool() -> Option<Arc<ThreadPool>> {
    if let Some(p) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Some(p.clone());
    }
    let mut slot = POOL.write().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match build(cores) {
            Ok(p) => *slot = Some(Arc::new(p)),
            Err(e) => log::warn!("{e}; running the CPU backend single-threaded"),
        }
    }
    slot.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_is_refused_with_a_hint() {
        let e = set_threads(0).expect_err("zero threads must be refused");
        assert!(e.to_string().contains("at least one thread"), "{e}");
    }
}
