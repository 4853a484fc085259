//! Affine layers `y = x·Wᵀ + b` over row-major buffers, with torch-layout weights
//! `W: [out, in]`. Transposes are stride choices; the weight gradient is accumulated
//! straight into the gradient buffer.

use lcm_kernels::{Mat, MatMut, matmul};

use crate::rows::fill_rows;

/// The shape of one affine layer applied to `rows` inputs.
#[derive(Debug, Clone, Copy)]
pub struct Affine {
    pub rows: usize,
    pub inputs: usize,
    pub outputs: usize,
}

impl Affine {
    /// `y[rows, outputs] = x[rows, inputs] · Wᵀ (+ b)`.
    pub fn forward(&self, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32], threads: usize) {
        let Self {
            rows,
            inputs,
            outputs,
        } = *self;
        let y = &mut y[..rows * outputs];
        if let Some(b) = b {
            fill_rows(y, b);
        }
        matmul(
            MatMut::dense(y, rows, outputs),
            Mat::dense(&x[..rows * inputs], rows, inputs),
            Mat::dense(w, outputs, inputs).t(),
            b.is_some(),
            threads,
        );
    }

    /// Backward: `dW += dyᵀ·x` and, when `dx` is given, `dx = dy·W` (`accumulate`:
    /// `dx += dy·W`). The bias gradient is [`crate::rows::column_sums`] of `dy`, taken by the caller
    /// (it lives in another part of the same gradient buffer).
    pub fn backward(
        &self,
        dy: &[f32],
        x: &[f32],
        w: &[f32],
        dw: &mut [f32],
        dx: Option<(&mut [f32], bool)>,
        threads: usize,
    ) {
        let Self {
            rows,
            inputs,
            outputs,
        } = *self;
        let dy = &dy[..rows * outputs];
        matmul(
            MatMut::dense(dw, outputs, inputs),
            Mat::dense(dy, rows, outputs).t(),
            Mat::dense(&x[..rows * inputs], rows, inputs),
            true,
            threads,
        );
        if let Some((dx, accumulate)) = dx {
            matmul(
                MatMut::dense(&mut dx[..rows * inputs], rows, inputs),
                Mat::dense(dy, rows, outputs),
                Mat::dense(w, outputs, inputs),
                accumulate,
                threads,
            );
        }
    }
}
