//! Buffers kept across runs, so that a plan run repeatedly does not allocate and fault in its
//! largest tensors every time: per-thread scratch (im2col columns, padded planes) and a
//! per-thread pool of activation buffers that the engine hands back once a tensor is dead.
//! A fresh allocation of that size costs a page fault per 4 KiB and serialises threads in the
//! kernel; a reused one is already mapped and in cache. The pools live as long as their
//! threads (the CPU backend's pool): a process keeps up to [`POOL_BUFFERS`] buffers per thread,
//! about one per tensor size of the models it has run.

use std::cell::RefCell;

/// Buffers the pool keeps per thread (the largest ones win): about one per tensor size of a
/// model, so that each size class finds its own buffer run after run.
const POOL_BUFFERS: usize = 32;
/// A pooled buffer serves requests down to `1 - 1/SLACK` of its capacity only.
const SLACK: usize = 4;
/// Smaller buffers are left to the allocator, which reuses them cheaply.
const POOL_MIN_VALUES: usize = 4096;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with a buffer of `len` values (contents unspecified). The thread's buffer is
/// reused when free; a nested call on the same thread (a worker that stole another plan's job
/// while waiting) gets a fresh one.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// An empty buffer with room for `len` values: a pooled one of about that size ([`take_stale`]),
/// else new.
fn take(len: usize) -> Vec<f32> {
    let mut v = take_stale(len);
    v.clear();
    v
}

/// A pooled buffer with room for `len` values and not much more (so that a large buffer is not
/// cut down to a small tensor's length, to be zeroed up again for the next large one),
/// preferring one that already holds as many values; at most `len` of its old values kept.
/// Else a new empty one.
fn take_stale(len: usize) -> Vec<f32> {
    if len >= POOL_MIN_VALUES {
        let pooled = POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            // Fewest values to zero first (a buffer already as long), then the smallest.
            let best = (0..pool.len())
                .filter(|&i| (len..=len + len / SLACK).contains(&pool[i].capacity()))
                .min_by_key(|&i| (len.saturating_sub(pool[i].len()), pool[i].len()))?;
            Some(pool.swap_remove(best))
        });
        if let Some(mut v) = pooled {
            v.truncate(len);
            return v;
        }
    }
    Vec::with_capacity(len)
}

/// `len` zeros, in a pooled buffer when one fits.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    let mut v = take(len);
    v.resize(len, 0.0);
    v
}

/// `len` values of unspecified contents (a dead tensor's, in a pooled buffer), for a kernel
/// that writes every one of them: it saves the zeroing pass over the whole output.
pub(crate) fn overwritten(len: usize) -> Vec<f32> {
    let mut v = take_stale(len);
    v.resize(len, 0.0);
    v
}

/// A copy of `x`, in a pooled buffer when one fits.
pub fn copied(x: &[f32]) -> Vec<f32> {
    let mut v = take(x.len());
    v.extend_from_slice(x);
    v
}

/// Hands a dead tensor's buffer to this thread's pool (dropping the smallest when full).
pub fn recycle(v: Vec<f32>) {
    if v.capacity() < POOL_MIN_VALUES {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.push(v);
        if pool.len() > POOL_BUFFERS {
            let smallest = (0..pool.len())
                .min_by_key(|&i| pool[i].capacity())
                .expect("the pool is not empty");
            pool.swap_remove(smallest);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_buffers_are_reused_zeroed_and_copied_exactly() {
        let mut a = zeroed(10_000);
        a.iter_mut().for_each(|v| *v = 7.0);
        let ptr = a.as_ptr();
        recycle(a);
        let b = zeroed(9_000);
        assert_eq!(b.as_ptr(), ptr, "the pooled buffer is reused");
        assert!(b.len() == 9_000 && b.iter().all(|&v| v == 0.0));
        recycle(b);
        let x: Vec<f32> = (0..5_000).map(|i| i as f32).collect();
        assert_eq!(copied(&x), x);
        let c = overwritten(4_500);
        assert_eq!(c.len(), 4_500);
        recycle(c);
        // Too small to pool: left to the allocator.
        assert_eq!(zeroed(10), vec![0.0; 10]);
    }
}
