//! Fused, row-wise element-wise kernels for the BERT forward pass, written as plain loops that
//! LLVM vectorises and compiled per instruction set by [`lcm_kernels::multiversion!`]; the
//! products go through [`lcm_kernels::matmul()`].

use lcm_kernels::multiversion;
use lcm_kernels::simd::{exp, fma, max, sum, sum_sq_dev};
pub(crate) use lcm_kernels::{Mat, MatMut, matmul};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
