//! Unpadded, strided 2-D convolution over NCHW images as im2col + GEMM, with both backward
//! passes, split over threads by image.
//!
//! A convolution is one matrix product per image once its receptive fields are laid out as
//! rows (`im2col`): with `cols[p, (c, ki, kj)] = x[c, oy·s + ki, ox·s + kj]` for output
//! position `p = (oy, ox)`,
//!
//! ```text
//! y[o, p]       = Σ_q w[o, q] · cols[p, q]            (forward)
//! dw[o, q]     += Σ_p dy[o, p] · cols[p, q]           (weight gradient, summed over images)
//! dcols[p, q]   = Σ_o dy[o, p] · w[o, q]              (input gradient, then scattered back:
//! dx[c, oy·s + ki, ox·s + kj] += dcols[p, (c, ki, kj)])
//! ```
//!
//! The products run on [`matmul()`]; the layout passes are plain loops. Every thread owns a
//! contiguous range of images (and, for the weight gradient, its own partial sum, added in
//! thread order), so results do not depend on scheduling.

use crate::matmul::{Mat, MatMut, Scalar, matmul};

/// Geometry of a square-kernel, unpadded convolution with equal strides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dShape {
    pub batch: usize,
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl Conv2dShape {
    /// Output height: `(height − kernel) / stride + 1` (0 when the kernel does not fit).
    pub fn out_height(&self) -> usize {
        out_len(self.height, self.kernel, self.stride)
    }

    pub fn out_width(&self) -> usize {
        out_len(self.width, self.kernel, self.stride)
    }

    /// Output positions per image and channel.
    pub fn positions(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Length of one receptive field: `in_channels · kernel²`.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.height * self.width
    }

    pub fn weight_len(&self) -> usize {
        self.out_channels * self.patch_len()
    }

    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.positions()
    }

    fn image_len(&self) -> usize {
        self.in_channels * self.height * self.width
    }

    fn check(&self, input: usize, weight: usize, output: usize) {
        assert!(
            self.stride > 0 && self.kernel > 0,
            "conv2d: kernel and stride must be > 0"
        );
        assert!(
            input == self.input_len() && weight == self.weight_len() && output == self.output_len(),
            "conv2d buffers for {self:?}: input {input}, weight {weight}, output {output}"
        );
    }
}

fn out_len(n: usize, kernel: usize, stride: usize) -> usize {
    if n < kernel || stride == 0 {
        0
    } else {
        (n - kernel) / stride + 1
    }
}

/// Calls `row(start)` with the image offset of every kernel row of every receptive field, in
/// the order of `cols`' rows of `k` (position, then channel, then kernel row).
#[inline(always)]
fn for_each_kernel_row(shape: &Conv2dShape, k: usize, mut row: impl FnMut(usize)) {
    let (s, w) = (shape.stride, shape.width);
    let plane = shape.height * w;
    for oy in 0..shape.out_height() {
        for ox in 0..shape.out_width() {
            for c in 0..shape.in_channels {
                for ki in 0..k {
                    row(c * plane + (oy * s + ki) * w + ox * s);
                }
            }
        }
    }
}

/// `cols[p, (c, ki, kj)] = image[c, oy·s + ki, ox·s + kj]` for one image.
fn im2col<T: Scalar>(shape: &Conv2dShape, image: &[T], cols: &mut [T]) {
    // The row copies are `kernel` long: a constant length for the common kernels lets the
    // compiler turn each into a few register moves instead of a `memcpy` call.
    match shape.kernel {
        3 => copy_kernel_rows(shape, 3, image, cols),
        5 => copy_kernel_rows(shape, 5, image, cols),
        k => copy_kernel_rows(shape, k, image, cols),
    }
}

#[inline(always)]
fn copy_kernel_rows<T: Scalar>(shape: &Conv2dShape, k: usize, image: &[T], cols: &mut [T]) {
    let mut rows = cols.chunks_exact_mut(k);
    for_each_kernel_row(shape, k, |start| {
        if let (Some(dst), Some(src)) = (rows.next(), image.get(start..start + k)) {
            dst.copy_from_slice(src);
        }
    });
}

/// The adjoint of [`im2col`]: `image[c, oy·s + ki, ox·s + kj] += cols[p, (c, ki, kj)]`.
fn col2im_add<T: Scalar>(shape: &Conv2dShape, cols: &[T], image: &mut [T]) {
    let k = shape.kernel;
    let mut rows = cols.chunks_exact(k);
    for_each_kernel_row(shape, k, |start| {
        if let (Some(src), Some(dst)) = (rows.next(), image.get_mut(start..start + k)) {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d += v;
            }
        }
    });
}

/// Splits `0..batch` into at most `threads` contiguous ranges and runs `work(first, count)`
/// on each, the first range on the calling thread.
fn for_image_ranges<T: Send>(
    batch: usize,
    threads: usize,
    work: impl Fn(usize, usize) -> T + Sync,
) -> Vec<T> {
    let threads = threads.clamp(1, batch.max(1));
    let per = batch.div_ceil(threads);
    let ranges: Vec<(usize, usize)> = (0..threads)
        .map(|t| (t * per, per.min(batch.saturating_sub(t * per))))
        .filter(|&(_, count)| count > 0)
        .collect();
    if ranges.len() <= 1 {
        return ranges.iter().map(|&(f, c)| work(f, c)).collect();
    }
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = ranges[1..]
            .iter()
            .map(|&(f, c)| scope.spawn(move || work(f, c)))
            .collect();
        let mut results = vec![work(ranges[0].0, ranges[0].1)];
        for handle in handles {
            match handle.join() {
                Ok(r) => results.push(r),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    })
}

/// Raw pointer to an output buffer that threads write in disjoint per-image ranges.
struct SharedOut<T>(*mut T);
// SAFETY: every thread writes only the images of its own range (see the callers).
unsafe impl<T> Send for SharedOut<T> {}
unsafe impl<T> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// # Safety
    /// `start..start + len` must lie in the buffer and no other thread may touch it meanwhile.
    unsafe fn slice<'a>(&self, start: usize, len: usize) -> &'a mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// `output[n, o, p] = bias[o] + Σ_q weight[o, q] · cols_n[p, q]`.
///
/// # Panics
/// If a buffer's length disagrees with `shape` (callers derive both from one tensor shape).
pub fn conv2d_forward<T: Scalar>(
    shape: &Conv2dShape,
    input: &[T],
    weight: &[T],
    bias: &[T],
    output: &mut [T],
    threads: usize,
) {
    shape.check(input.len(), weight.len(), output.len());
    assert_eq!(bias.len(), shape.out_channels, "conv2d bias length");
    let (q, p, o) = (shape.patch_len(), shape.positions(), shape.out_channels);
    let out = SharedOut(output.as_mut_ptr());
    for_image_ranges(shape.batch, threads, |first, count| {
        let mut cols = vec![T::default(); p * q];
        for n in first..first + count {
            im2col(
                shape,
                &input[n * shape.image_len()..][..shape.image_len()],
                &mut cols,
            );
            // SAFETY: image n's output block belongs to this thread's range alone, and
            // `check` sized the buffer for every image.
            let y = unsafe { out.slice(n * o * p, o * p) };
            for (row, &b) in y.chunks_exact_mut(p.max(1)).zip(bias) {
                row.fill(b);
            }
            matmul(
                MatMut::dense(y, o, p),
                Mat::dense(weight, o, q),
                Mat::dense(&cols, p, q).t(),
                true,
                1,
            );
        }
    });
}

/// `grad_weight[o, q] = Σ_n Σ_p grad_output[n, o, p] · cols_n[p, q]`.
pub fn conv2d_backward_weight<T: Scalar>(
    shape: &Conv2dShape,
    input: &[T],
    grad_output: &[T],
    grad_weight: &mut [T],
    threads: usize,
) {
    shape.check(input.len(), grad_weight.len(), grad_output.len());
    let (q, p, o) = (shape.patch_len(), shape.positions(), shape.out_channels);
    let partials = for_image_ranges(shape.batch, threads, |first, count| {
        let mut cols = vec![T::default(); p * q];
        let mut dw = vec![T::default(); o * q];
        for n in first..first + count {
            im2col(
                shape,
                &input[n * shape.image_len()..][..shape.image_len()],
                &mut cols,
            );
            matmul(
                MatMut::dense(&mut dw, o, q),
                Mat::dense(&grad_output[n * o * p..][..o * p], o, p),
                Mat::dense(&cols, p, q),
                true,
                1,
            );
        }
        dw
    });
    grad_weight.fill(T::default());
    for dw in partials {
        for (g, &d) in grad_weight.iter_mut().zip(&dw) {
            *g += d;
        }
    }
}

/// `grad_bias[o] = Σ_n Σ_p grad_output[n, o, p]`, for `grad_output` of `[N, O, P]` with
/// `O = grad_bias.len()` and `P = positions`.
pub fn conv2d_backward_bias<T: Scalar>(positions: usize, grad_output: &[T], grad_bias: &mut [T]) {
    let (p, o) = (positions, grad_bias.len());
    grad_bias.fill(T::default());
    if p == 0 || o == 0 {
        return;
    }
    assert!(
        grad_output.len().is_multiple_of(o * p),
        "conv2d bias gradient: {} values are not whole images of {o} × {p}",
        grad_output.len()
    );
    for image in grad_output.chunks_exact(o * p) {
        for (g, row) in grad_bias.iter_mut().zip(image.chunks_exact(p)) {
            *g += T::sum(row);
        }
    }
}

/// `grad_input = col2im(grad_output_nᵀ · weight)` per image (overwrites `grad_input`).
pub fn conv2d_backward_input<T: Scalar>(
    shape: &Conv2dShape,
    grad_output: &[T],
    weight: &[T],
    grad_input: &mut [T],
    threads: usize,
) {
    shape.check(grad_input.len(), weight.len(), grad_output.len());
    let (q, p, o) = (shape.patch_len(), shape.positions(), shape.out_channels);
    let image_len = shape.image_len();
    let dx = SharedOut(grad_input.as_mut_ptr());
    for_image_ranges(shape.batch, threads, |first, count| {
        let mut dcols = vec![T::default(); p * q];
        for n in first..first + count {
            matmul(
                MatMut::dense(&mut dcols, p, q),
                Mat::dense(&grad_output[n * o * p..][..o * p], o, p).t(),
                Mat::dense(weight, o, q),
                false,
                1,
            );
            // SAFETY: image n's gradient block belongs to this thread's range alone.
            let image = unsafe { dx.slice(n * image_len, image_len) };
            image.fill(T::default());
            col2im_add(shape, &dcols, image);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 * 0.7311 + seed).sin() * 1.3).fract())
            .collect()
    }

    /// Direct six-loop convolution, the definition the GEMM path must reproduce.
    fn naive(shape: &Conv2dShape, x: &[f32], w: &[f32]) -> Vec<f32> {
        let (oh, ow, k, s) = (
            shape.out_height(),
            shape.out_width(),
            shape.kernel,
            shape.stride,
        );
        let mut y = vec![0.0f32; shape.output_len()];
        for n in 0..shape.batch {
            for o in 0..shape.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0f64;
                        for c in 0..shape.in_channels {
                            for ki in 0..k {
                                for kj in 0..k {
                                    let xi =
                                        ((n * shape.in_channels + c) * shape.height + oy * s + ki)
                                            * shape.width
                                            + ox * s
                                            + kj;
                                    let wi = ((o * shape.in_channels + c) * k + ki) * k + kj;
                                    acc += f64::from(x[xi]) * f64::from(w[wi]);
                                }
                            }
                        }
                        y[((n * shape.out_channels + o) * oh + oy) * ow + ox] = acc as f32;
                    }
                }
            }
        }
        y
    }

    fn shape() -> Conv2dShape {
        // Odd sizes so the last column and row of the input are left out by the stride.
        Conv2dShape {
            batch: 5,
            in_channels: 3,
            height: 12,
            width: 11,
            out_channels: 4,
            kernel: 3,
            stride: 2,
        }
    }

    #[test]
    fn forward_matches_the_definition_for_any_thread_count() {
        let s = shape();
        let x = values(s.input_len(), 0.3);
        let w = values(s.weight_len(), 1.7);
        let bias = values(s.out_channels, 3.1);
        let mut want = naive(&s, &x, &w);
        for (i, y) in want.iter_mut().enumerate() {
            *y += bias[(i / s.positions()) % s.out_channels];
        }
        for threads in [1, 2, 3, 8] {
            let mut y = vec![f32::NAN; s.output_len()];
            conv2d_forward(&s, &x, &w, &bias, &mut y, threads);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{threads} threads: {a} vs {b}");
            }
        }
    }

    /// The weight and input gradients are the adjoints of the forward pass: for any `x`, `w`,
    /// `g`, ⟨g, conv(x, w)⟩ = ⟨dW(x, g), w⟩ = ⟨dX(g, w), x⟩, checked entry by entry on unit
    /// vectors; the bias gradient is the sum of `g` per output channel.
    #[test]
    fn backward_passes_are_the_adjoints_of_the_forward() {
        let s = shape();
        let x = values(s.input_len(), 0.9);
        let w = values(s.weight_len(), 2.1);
        let g = values(s.output_len(), 4.4);
        let mut dw = vec![f32::NAN; s.weight_len()];
        let mut dx = vec![f32::NAN; s.input_len()];
        let mut db = vec![f32::NAN; s.out_channels];
        conv2d_backward_weight(&s, &x, &g, &mut dw, 3);
        conv2d_backward_input(&s, &g, &w, &mut dx, 2);
        conv2d_backward_bias(s.positions(), &g, &mut db);
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        };
        for i in 0..s.weight_len() {
            let mut e = vec![0.0f32; s.weight_len()];
            e[i] = 1.0;
            let want = dot(&g, &naive(&s, &x, &e));
            assert!((f64::from(dw[i]) - want).abs() < 1e-4, "dw[{i}]");
        }
        for i in (0..s.input_len()).step_by(7) {
            let mut e = vec![0.0f32; s.input_len()];
            e[i] = 1.0;
            let want = dot(&g, &naive(&s, &e, &w));
            assert!((f64::from(dx[i]) - want).abs() < 1e-4, "dx[{i}]");
        }
        for (o, &got) in db.iter().enumerate() {
            let want: f64 = (0..s.batch)
                .flat_map(|n| &g[(n * s.out_channels + o) * s.positions()..][..s.positions()])
                .map(|&v| f64::from(v))
                .sum();
            assert!((f64::from(got) - want).abs() < 1e-4, "db[{o}]");
        }
        // Pixels that no receptive field covers (the last row) get exactly zero.
        let last_row = (s.height - 1) * s.width;
        assert!(dx[last_row..s.height * s.width].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn a_kernel_larger_than_the_image_gives_no_output() {
        let s = Conv2dShape {
            height: 2,
            width: 2,
            ..shape()
        };
        assert_eq!(s.positions(), 0);
        let mut y = vec![];
        let (x, w) = (values(s.input_len(), 0.0), values(s.weight_len(), 0.0));
        conv2d_forward(&s, &x, &w, &[0.0; 4], &mut y, 2);
    }
}
