//! CPU kernels for the BERT forward pass: a strided GEMM wrapper over the `gemm` crate and fused,
//! row-wise element-wise kernels written as plain loops that LLVM vectorises.
//!
//! The element-wise kernels are compiled three times (AVX-512, AVX2+FMA, baseline) and picked at
//! run time, so a default `cargo build` still gets wide vectors without `-C target-cpu=native`.
//! Reductions use 16 independent accumulators: without fast-math LLVM will not reassociate a
//! single running sum, which would keep it scalar.

use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SimdLevel {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return SimdLevel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Baseline
    })
}

/// Defines `fn $name` that runs `$body` compiled for the best instruction set this CPU has.
/// Everything `$body` calls must be `#[inline(always)]` to be compiled for that set too.
/// Inside `$body`, the const `FMA` says whether [`fma`] may use a fused multiply-add
/// instruction (without one, `f32::mul_add` becomes a slow libm call).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body<const FMA: bool>($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) { body::<true>($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) { body::<true>($($arg),*) }
                match simd_level() {
                    // SAFETY: `simd_level` verified at run time that the CPU has these features.
                    SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    SimdLevel::Baseline => {}
                }
            }
            body::<{ NATIVE_FMA }>($($arg),*)
        }
    };
}

/// Whether the baseline build target has fused multiply-add (always on aarch64).
const NATIVE_FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

/// `a·b + c`, fused (one rounding) when `F`.
#[inline(always)]
fn fma<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F { a.mul_add(b, c) } else { a * b + c }
}

const LANES: usize = 16;

#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

#[inline(always)]
fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()
}

#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// `exp(x)` to within ~2 ulp for x ≤ 88, branch-free so that loops over it vectorise.
///
/// exp(x) = 2ⁿ·exp(r) with n = round(x/ln 2) and |r| ≤ ln2/2; exp(r) by its degree-7 Taylor
/// polynomial (truncation error < 6e-9 relative). Inputs below −87.3 return ≈1.2e-38 instead of
/// a subnormal or zero, which is harmless for softmax and erf.
#[inline(always)]
pub(crate) fn exp<const F: bool>(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split into 355/512 (9 significant bits, so n·LN2_HI is exact) and the remainder.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let shifted = fma::<F>(x, LOG2_E, ROUND);
    let n = shifted - ROUND;
    let r = fma::<F>(-n, LN2_LO, fma::<F>(-n, LN2_HI, x));
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = fma::<F>(p, r, c);
    }
    // n sits in the low mantissa bits of `shifted`; reading it from there instead of with
    // `n as i32` avoids a saturating conversion that LLVM does not vectorise.
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    p * scale
}

/// `erf(x)` with absolute error below 2.5e-7: for |x| ≥ 1 Abramowitz & Stegun 7.1.26 (the
/// formula PyTorch's vectorised CPU GELU uses too), below that its Maclaurin series.
#[inline(always)]
pub(crate) fn erf<const F: bool>(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        1.061_405_4,
        -1.453_152_1,
        1.421_413_7,
        -0.284_496_74,
        0.254_829_6,
    ];
    let a = x.abs();
    let t = 1.0 / fma::<F>(P, a, 1.0);
    let mut poly = 0.0;
    for c in A {
        poly = fma::<F>(poly, t, c);
    }
    poly *= t;
    let tail = fma::<F>(-poly, exp::<F>(-a * a), 1.0).copysign(x);
    // Near 0 the line above cancels (1 − ≈1), leaving ~7e-7 absolute error; the Maclaurin
    // series is exact to f32 there. Both are computed so the select stays branch-free.
    let x2 = x * x;
    let mut series = 0.0f32;
    for c in ERF_SERIES.iter().rev() {
        series = fma::<F>(series, x2, *c);
    }
    if a < 1.0 { x * series } else { tail }
}

/// erf(x) = x · Σ cₙ x²ⁿ with cₙ = 2/√π · (−1)ⁿ / (n! (2n+1)); 12 terms reach 1e-9 at |x| = 1.
const ERF_SERIES: [f32; 12] = {
    let mut c = [0.0f32; 12];
    let mut n = 0;
    let mut fact = std::f64::consts::FRAC_2_SQRT_PI;
    while n < 12 {
        c[n] = (fact / (2 * n + 1) as f64) as f32;
        fact = -fact / (n + 1) as f64;
        n += 1;
    }
    c
};

/// `tanh(y)` via exp; absolute error ~1e-7.
#[inline(always)]
fn tanh<const F: bool>(y: f32) -> f32 {
    let e = exp::<F>(2.0 * y.clamp(-40.0, 40.0));
    1.0 - 2.0 / (e + 1.0)
}

multiversion! {
    /// In place: `x = gelu(x + bias)` with the exact (erf) GELU, one row of `bias.len()` at a time.
    pub(crate) fn bias_gelu_erf(x: &mut [f32], bias: &[f32]) {
        const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
        for row in x.chunks_exact_mut(bias.len()) {
            for (v, &b) in row.iter_mut().zip(bias) {
                let z = *v + b;
                *v = 0.5 * z * (1.0 + erf::<FMA>(z * FRAC_1_SQRT_2));
            }
        }
    }
}

multiversion! {
    /// In place: `x = gelu_tanh(x + bias)` (HF's `gelu_new` / `gelu_pytorch_tanh`).
    pub(crate) fn bias_gelu_tanh(x: &mut [f32], bias: &[f32]) {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        for row in x.chunks_exact_mut(bias.len()) {
            for (v, &b) in row.iter_mut().zip(bias) {
                let z = *v + b;
                *v = 0.5 * z * (1.0 + tanh::<FMA>(SQRT_2_OVER_PI * fma::<FMA>(0.044_715 * z * z, z, z)));
            }
        }
    }
}

multiversion! {
    /// In place: `x = max(x + bias, 0)`.
    pub(crate) fn bias_relu(x: &mut [f32], bias: &[f32]) {
        for row in x.chunks_exact_mut(bias.len()) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v = (*v + b).max(0.0);
            }
        }
    }
}

multiversion! {
    /// In place, per row of `gamma.len()`: `x = LayerNorm(x + bias)`; `bias` may be empty.
    ///
    /// Fusing the residual's bias with the norm saves a full pass over the activations.
    pub(crate) fn bias_layer_norm(x: &mut [f32], bias: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let width = gamma.len();
        for row in x.chunks_exact_mut(width) {
            if !bias.is_empty() {
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            let mean = sum(row) / width as f32;
            let var = sum_sq_dev(row, mean) / width as f32;
            let inv_std = 1.0 / (var + eps).sqrt();
            for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = fma::<FMA>((*v - mean) * inv_std, g, b);
            }
        }
    }
}

multiversion! {
    /// In place, per row of `width`: `x = softmax(scale · x)`.
    pub(crate) fn scaled_softmax(x: &mut [f32], width: usize, scale: f32) {
        for row in x.chunks_exact_mut(width) {
            let m = max(row) * scale;
            for v in row.iter_mut() {
                *v = exp::<FMA>(fma::<FMA>(*v, scale, -m));
            }
            let inv = 1.0 / sum(row);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

multiversion! {
    /// `dst[i] += src[i]`.
    pub(crate) fn add_assign(dst: &mut [f32], src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
}

/// A strided, read-only matrix view: element (i, j) is `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A dense row-major `rows × cols` matrix.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// Rows `0..rows` of a row-major matrix with `row_stride`, columns `col0..col0 + cols`.
    pub fn block(
        data: &'a [f32],
        row_stride: usize,
        rows: usize,
        col0: usize,
        cols: usize,
    ) -> Self {
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
pub(crate) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
}

impl<'a> MatMut<'a> {
    pub fn dense(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
        }
    }

    pub fn block(
        data: &'a mut [f32],
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
pub(crate) fn matmul(dst: MatMut<'_>, a: Mat<'_>, b: Mat<'_>, accumulate: bool, threads: usize) {
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
                dst.data[r * dst.row_stride..][..dst.cols].fill(0.0);
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
            1.0,
            1.0,
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
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let rel = ((exp::<false>(x) as f64 - want) / want)
                .abs()
                .max(((exp::<true>(x) as f64 - want) / want).abs());
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 3.0e-7, "worst relative error {worst}");
        assert_eq!(exp::<false>(0.0), 1.0);
        assert!(exp::<true>(-1000.0) < 1e-37);
    }

    #[test]
    fn erf_is_accurate() {
        // f64 reference: the Taylor series where it converges without cancellation (|x| < 3),
        // the asymptotic series of erfc beyond (truncated at its smallest term).
        fn erf64(x: f64) -> f64 {
            let a = x.abs();
            if a < 3.0 {
                let mut term = x;
                let mut total = x;
                let mut n = 0.0;
                while term.abs() > 1e-18 {
                    n += 1.0;
                    term *= -x * x / n;
                    total += term / (2.0 * n + 1.0);
                }
                return total * 2.0 / std::f64::consts::PI.sqrt();
            }
            let mut term = 1.0f64;
            let mut series = 1.0;
            let mut n = 1.0;
            loop {
                let next = -term * (2.0 * n - 1.0) / (2.0 * a * a);
                if next.abs() >= term.abs() {
                    break;
                }
                series += next;
                term = next;
                n += 1.0;
            }
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) * series;
            (1.0 - erfc).copysign(x)
        }
        let mut worst = (0.0f64, 0.0f32);
        let mut x = -5.0f32;
        while x < 5.0 {
            let err = (erf::<false>(x) as f64 - erf64(x as f64))
                .abs()
                .max((erf::<true>(x) as f64 - erf64(x as f64)).abs());
            if err > worst.0 {
                worst = (err, x);
            }
            x += 0.000_37;
        }
        assert!(
            worst.0 < 2.5e-7,
            "worst absolute error {} at {}",
            worst.0,
            worst.1
        );
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut x: Vec<f32> = (0..3 * 37)
            .map(|i| ((i * 7919) % 101) as f32 * 0.3 - 15.0)
            .collect();
        let orig = x.clone();
        scaled_softmax(&mut x, 37, 0.5);
        for (row, orig) in x.chunks(37).zip(orig.chunks(37)) {
            let total: f32 = row.iter().sum();
            assert!((total - 1.0).abs() < 1e-6);
            let m = orig.iter().fold(f32::MIN, |a, &b| a.max(b));
            let denom: f64 = orig.iter().map(|&v| ((v - m) as f64 * 0.5).exp()).sum();
            for (p, &o) in row.iter().zip(orig) {
                let want = ((o - m) as f64 * 0.5).exp() / denom;
                assert!((*p as f64 - want).abs() < 1e-7);
            }
        }
    }

    #[test]
    fn layer_norm_matches_reference() {
        let width = 37;
        let mut x: Vec<f32> = (0..2 * width)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let bias: Vec<f32> = (0..width).map(|i| i as f32 * 0.01).collect();
        let gamma: Vec<f32> = (0..width).map(|i| 1.0 + i as f32 * 0.02).collect();
        let beta: Vec<f32> = (0..width).map(|i| -(i as f32) * 0.03).collect();
        let orig = x.clone();
        bias_layer_norm(&mut x, &bias, &gamma, &beta, 1e-12);
        for (row, orig) in x.chunks(width).zip(orig.chunks(width)) {
            let z: Vec<f64> = orig
                .iter()
                .zip(&bias)
                .map(|(&a, &b)| (a + b) as f64)
                .collect();
            let mean = z.iter().sum::<f64>() / width as f64;
            let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
            for j in 0..width {
                let want = (z[j] - mean) / (var + 1e-12).sqrt() * gamma[j] as f64 + beta[j] as f64;
                assert!((row[j] as f64 - want).abs() < 2e-6, "{} vs {want}", row[j]);
            }
        }
    }

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
}
