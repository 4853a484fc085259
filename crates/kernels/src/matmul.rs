//! A strided GEMM wrapper over the `gemm` crate: transposes, head splits and column blocks
//! are stride choices on [`Mat`] views, and products can accumulate into their destination.
//! `f32` everywhere it is fast; `f64` for the finite-difference gradient checks of kernels
//! built on it.

/// The element types [`matmul`] runs on (`f32`, `f64`).
pub trait Scalar: Copy + Default + Send + Sync + std::ops::AddAssign + 'static {
    const ONE: Self;
    /// Sum of a slice (SIMD for `f32`).
    fn sum(x: &[Self]) -> Self;
}

impl Scalar for f32 {
    const ONE: f32 = 1.0;
    fn sum(x: &[f32]) -> f32 {
        crate::simd::sum(x)
    }
}

impl Scalar for f64 {
    const ONE: f64 = 1.0;
    fn sum(x: &[f64]) -> f64 {
        x.iter().sum()
    }
}

/// A strided, read-only matrix view: element (i, j) is `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy)]
pub struct Mat<'a, T = f32> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A dense row-major `rows × cols` matrix.
    pub fn dense(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// Rows `0..rows` of a row-major matrix with `row_stride`, columns `col0..col0 + cols`.
    pub fn block(data: &'a [T], row_stride: usize, rows: usize, col0: usize, cols: usize) -> Self {
        Self {
            data: &data[col0.min(data.len())..],
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// The destination of [`matmul`]: rows of `cols` at `row_stride`, unit column stride.
pub struct MatMut<'a, T = f32> {
    pub data: &'a mut [T],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
}

impl<'a, T> MatMut<'a, T> {
    pub fn dense(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
        }
    }

    pub fn block(
        data: &'a mut [T],
        row_stride: usize,
        rows: usize,
        col0: usize,
        cols: usize,
    ) -> Self {
        let start = col0.min(data.len());
        Self {
            data: &mut data[start..],
            rows,
            cols,
            row_stride,
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + self.cols <= self.data.len()
    }
}

/// `dst = a·b`, or `dst += a·b` when `accumulate`, with `gemm` using `threads` threads
/// (1 = on the calling thread).
///
/// # Panics
/// If the shapes disagree or a view reaches past its slice: callers derive both from the model
/// config, so a mismatch is a bug here, not bad input.
pub fn matmul<T: Scalar>(
    dst: MatMut<'_, T>,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    accumulate: bool,
    threads: usize,
) {
    assert!(
        a.rows == dst.rows && b.cols == dst.cols && a.cols == b.rows,
        "matmul shapes: dst {}x{}, a {}x{}, b {}x{}",
        dst.rows,
        dst.cols,
        a.rows,
        a.cols,
        b.rows,
        b.cols
    );
    assert!(
        a.fits() && b.fits() && dst.fits(),
        "matmul view out of bounds"
    );
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            for r in 0..dst.rows {
                dst.data[r * dst.row_stride..][..dst.cols].fill(T::default());
            }
        }
        return;
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every index gemm computes — (i·rs + j·cs) for i < rows,
    // j < cols — inside the corresponding slice, and `dst` is borrowed mutably, so it cannot
    // alias `a` or `b`.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            a.cols,
            dst.data.as_mut_ptr(),
            1,
            dst.row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_strided_and_accumulating() {
        // a: 3x4, b given as its transpose (5x4) to exercise strided operands.
        let a: Vec<f32> = (0..12).map(|i| i as f32 - 5.0).collect();
        let bt: Vec<f32> = (0..20).map(|i| (i as f32 * 0.5).cos()).collect();
        let mut dst = vec![1.0f32; 15];
        matmul(
            MatMut::dense(&mut dst, 3, 5),
            Mat::dense(&a, 3, 4),
            Mat::dense(&bt, 5, 4).t(),
            true,
            1,
        );
        for i in 0..3 {
            for j in 0..5 {
                let want: f32 = 1.0 + (0..4).map(|k| a[i * 4 + k] * bt[j * 4 + k]).sum::<f32>();
                assert!((dst[i * 5 + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn matmul_into_a_column_block_leaves_the_rest() {
        let a = [1.0f32, 2.0, 3.0, 4.0]; // 2x2
        let b = [1.0f32, 0.0, 0.0, 1.0]; // identity
        let mut dst = vec![9.0f32; 2 * 4];
        matmul(
            MatMut::block(&mut dst, 4, 2, 1, 2),
            Mat::dense(&a, 2, 2),
            Mat::dense(&b, 2, 2),
            false,
            2,
        );
        assert_eq!(dst, [9.0, 1.0, 2.0, 9.0, 9.0, 3.0, 4.0, 9.0]);
    }

    #[test]
    #[should_panic(expected = "matmul shapes")]
    fn mismatched_shapes_panic() {
        let a = [0.0f32; 6];
        let mut dst = [0.0f32; 4];
        matmul(
            MatMut::dense(&mut dst, 2, 2),
            Mat::dense(&a, 2, 3),
            Mat::dense(&a, 2, 3),
            false,
            1,
        );
    }
}
