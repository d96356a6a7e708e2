//! Per-thread scratch buffers (im2col columns, transposed batches) kept across runs, so a plan
//! run repeatedly does not allocate and fault in its largest temporaries every time.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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
