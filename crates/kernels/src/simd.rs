//! Run-time dispatched SIMD building blocks: the [`multiversion!`](crate::multiversion)
//! macro, which compiles a kernel three times (AVX-512, AVX2+FMA, baseline) and picks one
//! at run time, and the `#[inline(always)]` reductions and `exp` those kernels are made of.
//!
//! A default `cargo build` thus still gets wide vectors without `-C target-cpu=native`.
//! Reductions use [`LANES`] independent accumulators: without fast-math LLVM will not
//! reassociate a single running sum, which would keep it scalar.

use std::sync::OnceLock;

/// The widest instruction set this CPU offers to the [`multiversion!`](crate::multiversion) kernels.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SimdLevel {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// Detected once per process.
pub fn simd_level() -> SimdLevel {
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
#[macro_export]
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            // The inner copies mirror the outer signature; lints on it belong to the caller.
            #[allow(clippy::too_many_arguments)]
            #[inline(always)]
            fn body<const FMA: bool>($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) { body::<true>($($arg),*) }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) { body::<true>($($arg),*) }
                match $crate::simd::simd_level() {
                    // SAFETY: `simd_level` verified at run time that the CPU has these features.
                    $crate::simd::SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::simd::SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::SimdLevel::Baseline => {}
                }
            }
            body::<{ $crate::simd::NATIVE_FMA }>($($arg),*)
        }
    };
}

/// Whether the baseline build target has fused multiply-add (always on aarch64).
pub const NATIVE_FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

/// `a·b + c`, fused (one rounding) when `F`.
#[inline(always)]
pub fn fma<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F { a.mul_add(b, c) } else { a * b + c }
}

/// Independent accumulators per reduction: enough for two AVX-512 or four AVX2 registers.
pub const LANES: usize = 16;

/// `Σ x`.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
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

/// `Σ (x − mean)²`.
#[inline(always)]
pub fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
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

/// `max x` (−∞ for an empty slice).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
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
pub fn exp<const F: bool>(x: f32) -> f32 {
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

/// `Σ x²`.
#[inline(always)]
pub fn sum_sq(x: &[f32]) -> f32 {
    sum_sq_dev(x, 0.0)
}

/// `⟨a, b⟩` over the common length, with [`LANES`] accumulators.
#[inline(always)]
pub fn dot<const F: bool>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let chunks = n / LANES * LANES;
    for (ca, cb) in a[..chunks]
        .chunks_exact(LANES)
        .zip(b[..chunks].chunks_exact(LANES))
    {
        for i in 0..LANES {
            acc[i] = fma::<F>(ca[i], cb[i], acc[i]);
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
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
    fn reductions_match_plain_sums_on_ragged_lengths() {
        for n in [0usize, 1, 15, 16, 17, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() - 0.2).collect();
            let close = |x: f32, y: f64| (x as f64 - y).abs() <= 1e-5 * (1.0 + y.abs());
            let want_dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!(close(dot::<false>(&a, &b), want_dot), "dot n={n}");
            assert!(close(dot::<true>(&a, &b), want_dot), "dot fma n={n}");
            let want_sq: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
            assert!(close(sum_sq(&a), want_sq), "sum_sq n={n}");
            let want_sum: f64 = a.iter().map(|x| *x as f64).sum();
            assert!(close(sum(&a), want_sum), "sum n={n}");
            let want_max = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&a), want_max, "max n={n}");
        }
        // dot over unequal lengths uses the common prefix.
        assert_eq!(dot::<false>(&[1.0, 2.0, 3.0], &[4.0, 5.0]), 14.0);
    }

    crate::multiversion! {
        fn scaled_copy(src: &[f32], dst: &mut [f32], s: f32) {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = fma::<FMA>(v, s, 1.0);
            }
        }
    }

    #[test]
    fn multiversioned_kernel_runs_on_this_cpu() {
        let src = [1.0f32, 2.0, -3.0];
        let mut dst = [0.0f32; 3];
        scaled_copy(&src, &mut dst, 2.0);
        assert_eq!(dst, [3.0, 5.0, -5.0]);
    }
}
