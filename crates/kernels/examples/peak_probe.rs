//! The machine's fp32 peak as our kernels can reach it: independent fused multiply-add
//! chains in registers (no memory traffic), on 1 and on all threads, compiled for the best
//! instruction set present (`multiversion!`). The denominator of "fraction of peak" in
//! BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p lcm-kernels --example peak_probe [-- THREADS]
//! ```

use std::time::Instant;

/// 12 chains of 8 lanes: enough independent FMAs to cover the latency of two FMA units
/// (4–5 cycles each) with AVX2 registers; AVX-512 gets 6 chains of 16.
const WIDTH: usize = 96;
const ITERATIONS: usize = 20_000_000;

lcm_kernels::multiversion! {
    fn fma_chains(acc: &mut [f32; WIDTH], a: f32, b: f32, iterations: usize) {
        for _ in 0..iterations {
            for v in acc.iter_mut() {
                *v = lcm_kernels::simd::fma::<FMA>(*v, a, b);
            }
        }
    }
}

/// GFLOP/s of `threads` threads each running the chains.
fn measure(threads: usize) -> f64 {
    let start = Instant::now();
    let sums: Vec<f32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                s.spawn(move || {
                    let mut acc = [i as f32 * 1e-3; WIDTH];
                    // a < 1 keeps the values bounded; `black_box` keeps the loop alive.
                    fma_chains(&mut acc, std::hint::black_box(0.999_99), 1e-6, ITERATIONS);
                    acc.iter().sum::<f32>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0.0))
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    std::hint::black_box(sums);
    (threads * ITERATIONS * WIDTH * 2) as f64 / seconds / 1e9
}

fn main() {
    let all = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("simd level: {:?}", lcm_kernels::simd::simd_level());
    let _ = measure(1); // warm-up (clock ramp)
    let one = (0..3).map(|_| measure(1)).fold(0.0, f64::max);
    println!("1 thread: {one:.1} GFLOP/s fp32 (best of 3)");
    if all > 1 {
        let many = (0..3).map(|_| measure(all)).fold(0.0, f64::max);
        println!("{all} threads: {many:.1} GFLOP/s fp32 (best of 3)");
    }
}
