//! GEMM throughput on the exact shapes a fused training step of the `small` LCMs needs
//! (issue 11: "know early whether the products reach ≥ 350 GFLOP/s"), through the `gemm`
//! crate with the strides the engine will use — no copies, transposes as stride choices:
//!
//! - forward `Y[M,N] = X[M,K] · Wᵀ` with `W` in torch layout `[N, K]`;
//! - input gradient `dX[M,K] = dY[M,N] · W`;
//! - weight gradient `dW[N,K] += dYᵀ · X`, contracting over the M = 4096 rows of a batch;
//! - attention scores per (sequence, head): `S[T,T] = Q · Kᵀ` with Q and K strided views
//!   into a packed QKV buffer, one single-threaded product per pair in a rayon loop.
//!
//! Batch 32 × 128 concepts (M = 4096), d = 256, packed QKV 768, input dimension 384
//! (MiniLM), SwiGLU inner 688 (packed gate+up 1376), 4 heads of 64.
//!
//! ```text
//! cargo run --release -p lcm-train --example gemm_probe [-- THREADS]
//! ```

use std::time::Instant;

/// A strided operand: element (i, j) at `i·rs + j·cs`.
#[derive(Clone, Copy)]
struct View {
    rs: isize,
    cs: isize,
}

/// `dst[m×n] (+)= a[m×k] · b[k×n]`, all strides explicit; `dst` is row-major with
/// `dst_rs`.
#[allow(clippy::too_many_arguments)]
fn gemm_into(
    dst: &mut [f32],
    dst_rs: usize,
    a: &[f32],
    av: View,
    b: &[f32],
    bv: View,
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) {
    let reach =
        |v: View, rows: usize, cols: usize| (rows - 1) as isize * v.rs + (cols - 1) as isize * v.cs;
    assert!(reach(av, m, k) < a.len() as isize && reach(bv, k, n) < b.len() as isize);
    assert!((m - 1) * dst_rs + n <= dst.len());
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts keep every index gemm forms inside its slice, and `dst` is a
    // unique borrow, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.as_ptr(),
            av.cs,
            av.rs,
            b.as_ptr(),
            bv.cs,
            bv.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Seconds per call of `f`: one warm-up call, then the median of `reps` calls.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut samples: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[reps / 2]
}

fn filled(n: usize, seed: u32) -> Vec<f32> {
    // A cheap deterministic fill; the values do not matter for throughput.
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 * 1e-7)
        .collect()
}

fn report(name: &str, flops: f64, seconds: f64) {
    println!(
        "{name:<44} {:>8.2} ms {:>7.0} GFLOP/s",
        seconds * 1e3,
        flops / seconds / 1e9
    );
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    println!("gemm {threads} thread(s); bar: 350 GFLOP/s");
    let reps = 7;
    // What this machine's GEMM reaches at all: a large square product.
    let side = 2048;
    let a = filled(side * side, 5);
    let b = filled(side * side, 6);
    let mut c = vec![0f32; side * side];
    let square = View {
        rs: side as isize,
        cs: 1,
    };
    let s = time(3, || {
        gemm_into(
            &mut c,
            side,
            &a,
            square,
            &b,
            square,
            (side, side, side),
            false,
            threads,
        )
    });
    report(
        &format!("reference: square {side}³"),
        2.0 * (side as f64).powi(3),
        s,
    );
    let rows = 4096;
    for (k, n, what) in [
        (256, 256, "attention output"),
        (256, 768, "packed QKV"),
        (384, 256, "input projection (D = 384)"),
        (256, 384, "output projection"),
        (256, 1376, "packed SwiGLU gate+up"),
        (688, 256, "SwiGLU down"),
        (768, 256, "denoiser 3d → d"),
    ] {
        let x = filled(rows * k, 1);
        let w = filled(n * k, 2); // torch layout [out = n, in = k]
        let dy = filled(rows * n, 3);
        let mut y = vec![0f32; rows * n];
        let mut dx = vec![0f32; rows * k];
        let mut dw = vec![0f32; n * k];
        let flops = 2.0 * (rows * k * n) as f64;
        let dense = |cols: usize| View {
            rs: cols as isize,
            cs: 1,
        };
        let transposed = |cols: usize| View {
            rs: 1,
            cs: cols as isize,
        };
        let s = time(reps, || {
            gemm_into(
                &mut y,
                n,
                &x,
                dense(k),
                &w,
                transposed(k),
                (rows, k, n),
                false,
                threads,
            )
        });
        report(&format!("Y = X·Wᵀ   {rows}×{k}×{n} {what}"), flops, s);
        let s = time(reps, || {
            gemm_into(
                &mut dx,
                k,
                &dy,
                dense(n),
                &w,
                dense(k),
                (rows, n, k),
                false,
                threads,
            )
        });
        report(&format!("dX = dY·W  {rows}×{n}×{k}"), flops, s);
        let s = time(reps, || {
            gemm_into(
                &mut dw,
                k,
                &dy,
                transposed(n),
                &x,
                dense(k),
                (n, rows, k),
                true,
                threads,
            )
        });
        report(&format!("dW += dYᵀ·X {n}×{rows}×{k} (K = rows)"), flops, s);
    }

    // Attention scores: 32 sequences × 4 heads of (128 × 64) · (64 × 128), Q and K read in
    // place from a packed [4096, 768] QKV buffer; one single-threaded product per pair.
    let (seqs, heads, t, hd, d) = (32usize, 4usize, 128usize, 64usize, 256usize);
    let qkv = filled(seqs * t * 3 * d, 4);
    let mut scores = vec![0f32; seqs * heads * t * t];
    let flops = 2.0 * (seqs * heads * t * t * hd) as f64;
    let s = time(reps, || {
        use rayon::prelude::*;
        scores
            .par_chunks_mut(t * t)
            .enumerate()
            .for_each(|(pair, out)| {
                let (seq, head) = (pair / heads, pair % heads);
                let base = seq * t * 3 * d;
                let q = &qkv[base + head * hd..];
                let key = &qkv[base + d + head * hd..];
                gemm_into(
                    out,
                    t,
                    q,
                    View {
                        rs: (3 * d) as isize,
                        cs: 1,
                    },
                    key,
                    View {
                        rs: 1,
                        cs: (3 * d) as isize,
                    },
                    (t, hd, t),
                    false,
                    1,
                );
            })
    });
    report(
        &format!("S = Q·Kᵀ  {} × ({t}×{hd}×{t}), packed QKV", seqs * heads),
        flops,
        s,
    );
}
