//! The one matrix product every dense-like kernel (dense, fan-in as dense, 1x1 and im2col
//! convolutions) goes through: the `gemm` crate (runtime FMA/AVX-512 dispatch, packed
//! micro-kernels), parallel on the CPU backend's pool.

/// A read-only strided view of a `rows × cols` matrix: element `(r, c)` is
/// `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with rows of `cols` values.
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with rows of `cols` values.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }

    /// Panics unless every element of a `rows × cols` view lies inside `data`: the safety
    /// condition of the raw-pointer call below, guaranteed by the callers' shape arithmetic.
    fn check(&self, rows: usize, cols: usize, what: &str) {
        let last = (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
        assert!(
            last < self.data.len(),
            "{what}: a {rows}x{cols} view needs {} values, has {}",
            last + 1,
            self.data.len()
        );
    }
}

/// `c = a · b` with `a` of `m × k`, `b` of `k × n` and `c` row-major `m × n` with rows
/// `c_row_stride` apart. Overwrites `c`; with `k == 0` it is zero.
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    c_row_stride: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let c_view = MatRef {
        data: c,
        row_stride: c_row_stride,
        col_stride: 1,
    };
    c_view.check(m, n, "gemm output");
    if k == 0 {
        for r in 0..m {
            c[r * c_row_stride..r * c_row_stride + n].fill(0.0);
        }
        return;
    }
    a.check(m, k, "gemm left operand");
    b.check(k, n, "gemm right operand");
    let parallelism = if rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the three views were checked above to lie inside their slices; `c` is borrowed
    // mutably and cannot alias `a` or `b`.
    unsafe { product(m, n, k, a, b, c.as_mut_ptr(), c_row_stride, parallelism) }
}

/// [`matmul`] on the calling thread only, into a raw output block: for kernels that run many
/// small products in parallel themselves.
///
/// # Safety
/// `c` points to an `m × n` block, rows `c_row_stride` apart, valid for writes and neither
/// read nor written by anything else during the call.
#[allow(clippy::too_many_arguments)] // the GEMM's shape, two operands and the output block
pub(crate) unsafe fn matmul_single(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: *mut f32,
    c_row_stride: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        for r in 0..m {
            std::ptr::write_bytes(c.add(r * c_row_stride), 0, n);
        }
        return;
    }
    a.check(m, k, "gemm left operand");
    b.check(k, n, "gemm right operand");
    product(m, n, k, a, b, c, c_row_stride, gemm::Parallelism::None)
}

/// The `gemm` crate's call: `c = a · b`, `c` not read.
///
/// # Safety
/// `a` and `b` were checked to hold their `m × k` and `k × n` views; `c` as in
/// [`matmul_single`]. Strides fit in isize because the slices exist.
#[allow(clippy::too_many_arguments)] // the GEMM's shape, operands, output and threading
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: *mut f32,
    c_row_stride: usize,
    parallelism: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        c_row_stride as isize,
        false,
        a.data.as_ptr(),
        a.col_stride as isize,
        a.row_stride as isize,
        b.data.as_ptr(),
        b.col_stride as isize,
        b.row_stride as isize,
        0.0f32,
        1.0f32,
        false,
        false,
        false,
        parallelism,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_product_matches_the_definition() {
        // a: 3x2 given transposed (stored 2x3), b: 2x4 row-major, c rows padded to 5.
        let at = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, -1.0, 2.0, 0.5, 1.0, 0.0, -2.0];
        let mut c = vec![9.0; 3 * 5];
        matmul(
            3,
            4,
            2,
            MatRef::transposed(&at, 3),
            MatRef::row_major(&b, 4),
            &mut c,
            5,
        );
        for r in 0..3 {
            for col in 0..4 {
                let want: f32 = (0..2).map(|i| at[i * 3 + r] * b[i * 4 + col]).sum();
                assert_eq!(c[r * 5 + col], want, "({r}, {col})");
            }
            assert_eq!(c[r * 5 + 4], 9.0, "padding untouched");
        }
    }
}
