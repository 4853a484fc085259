//! Throughput of candle f32 matmuls in the orders the SONAR model can use for `x · Wᵀ`
//! (weight in torch layout `[out, in]`): through a transposed view, against a contiguous
//! transposed copy, and as `(W · xᵀ)ᵀ`. The measurements behind `model.rs`'s `FEW_ROWS`.
//!
//! ```text
//! cargo run --release --example matmul_probe -p lcm-sonar
//! ```

use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global();
    let d = Device::Cpu;
    for (m, k, n) in [
        (5usize, 1024usize, 8192usize),
        (160, 1024, 8192),
        (160, 8192, 1024),
        (160, 1024, 65536),
        (960, 1024, 8192),
    ] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &d).unwrap();
        let w = Tensor::randn(0f32, 1.0, (n, k), &d).unwrap(); // torch layout [out, in]
        let wt = w.t().unwrap().contiguous().unwrap(); // [in, out]
        let flops = 2.0 * (m * k * n) as f64;
        let f1 = || x.matmul(&w.t().unwrap()).unwrap();
        let f2 = || x.matmul(&wt).unwrap();
        let f3 = || w.matmul(&x.t().unwrap()).unwrap();
        for (name, f) in [
            ("x·Wᵀ(view)", &f1 as &dyn Fn() -> Tensor),
            ("x·Wt(contig)", &f2),
            ("W·xᵀ", &f3),
        ] {
            let t0 = Instant::now();
            f();
            let _ = t0;
            let t0 = Instant::now();
            for _ in 0..5 {
                f();
            }
            let s = t0.elapsed().as_secs_f64() / 5.0;
            println!(
                "m{m} k{k} n{n} {name}: {:.1} ms, {:.0} GFLOP/s",
                s * 1e3,
                flops / s / 1e9
            );
        }
    }
}
