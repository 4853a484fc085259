//! Data parallelism over the sequences of a batch.
//!
//! On a few cores, splitting every product across threads leaves cores idle: the weight
//! gradients contract over all `B·T` rows (gemm scales them ~1.3× from one thread to two
//! on this project's hosts), the per-(sequence, head) attention products are small, and the
//! row kernels (norms, SwiGLU, RoPE, losses) run on one thread. Instead each thread runs
//! the whole forward and backward pass of one *replica* of an engine (its own activation
//! arena and gradient buffer, the same weights) on its share of the sequences, with
//! single-threaded products, and the shares' gradients are summed afterwards:
//!
//! ```text
//! ∇ (Σ_s sum_s / Σ_s count_s) = Σ_s (count_s / Σ count) · ∇ (sum_s / count_s)
//! ```
//!
//! The split depends only on the number of replicas, so a run computes the same numbers
//! whenever it runs with the same thread count.

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use crate::base_lcm::SummedLoss;

thread_local! {
    /// Threads the products may use on this thread; 0: rayon's pool size.
    static THREADS: Cell<usize> = const { Cell::new(0) };
}

/// Threads a product or parallel loop started on this thread may use: 1 inside a replica
/// ([`on_replicas`]), rayon's pool size elsewhere.
pub fn threads() -> usize {
    match THREADS.get() {
        0 => rayon::current_num_threads().max(1),
        n => n,
    }
}

/// Runs `f` with [`threads`] returning 1 on this thread.
fn single_threaded<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREADS.set(self.0);
        }
    }
    let _restore = Restore(THREADS.replace(1));
    f()
}

/// How many replicas a data-parallel engine keeps: one per thread of the pool, or
/// `LCM_ENGINE_REPLICAS` when set (1: one engine whose products use every thread, the
/// intra-operation parallelism of PyTorch and of this engine before data parallelism).
pub fn replica_count() -> usize {
    std::env::var("LCM_ENGINE_REPLICAS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(rayon::current_num_threads)
        .max(1)
}

/// The sequences of shard `i` when `sequences` are split into `shards` contiguous,
/// near-equal shares (the first `sequences % shards` shares one longer).
pub fn shard(sequences: usize, shards: usize, i: usize) -> Range<usize> {
    let shards = shards.max(1);
    let (base, extra) = (sequences / shards, sequences % shards);
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

/// Runs `work(i, shard_i, replica_i)` for the first `min(replicas, sequences)` replicas in
/// parallel, each on its own thread with single-threaded products; the results in replica
/// order.
pub fn on_replicas<E, R>(
    replicas: &mut [E],
    sequences: usize,
    work: impl Fn(usize, Range<usize>, &mut E) -> R + Sync,
) -> Vec<R>
where
    E: Send,
    R: Send,
{
    let shards = replicas.len().min(sequences).max(1);
    if shards == 1 {
        // One share: the replica may use every thread for its products.
        return vec![work(0, 0..sequences, &mut replicas[0])];
    }
    replicas[..shards]
        .par_iter_mut()
        .enumerate()
        .map(|(i, replica)| single_threaded(|| work(i, shard(sequences, shards, i), replica)))
        .collect()
}

/// The loss of the whole batch from its shares' losses.
pub fn total_loss(parts: &[SummedLoss]) -> SummedLoss {
    parts.iter().fold(
        SummedLoss {
            sum: 0.0,
            count: 0.0,
        },
        |acc, p| SummedLoss {
            sum: acc.sum + p.sum,
            count: acc.count + p.count,
        },
    )
}

/// Turns the first buffer of `grads` into the gradient of the whole batch's mean loss,
/// where `grads[s]` holds the gradient of share `s`'s mean (`parts[s].sum / parts[s].count`,
/// a share without predictions having a zero gradient). Chunks are summed in parallel.
pub fn combine_gradients(grads: &mut [&mut [f32]], parts: &[SummedLoss]) {
    let total: f64 = parts.iter().map(|p| p.count).sum();
    if grads.len() < 2 || total <= 0.0 {
        return;
    }
    let weights: Vec<f32> = parts.iter().map(|p| (p.count / total) as f32).collect();
    let (first, rest) = grads.split_at_mut(1);
    let first = &mut *first[0];
    let rest: Vec<&[f32]> = rest.iter().map(|g| &**g).collect();
    const CHUNK: usize = 1 << 14;
    first
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, dst)| {
            let span = c * CHUNK..c * CHUNK + dst.len();
            for v in dst.iter_mut() {
                *v *= weights[0];
            }
            for (g, &w) in rest.iter().zip(&weights[1..]) {
                for (v, &o) in dst.iter_mut().zip(&g[span.clone()]) {
                    *v += w * o;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_sequences_once() {
        for sequences in 0..12 {
            for shards in 1..5 {
                let all: Vec<usize> = (0..shards)
                    .flat_map(|i| shard(sequences, shards, i))
                    .collect();
                assert_eq!(all, (0..sequences).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn combined_gradient_is_the_gradient_of_the_overall_mean() {
        // Two shares with means 2 and 5 over 1 and 3 predictions: the overall mean's
        // gradient weighs them 1/4 and 3/4.
        let mut a = vec![2.0f32; 40_000];
        let mut b = vec![6.0f32; 40_000];
        let parts = [
            SummedLoss {
                sum: 2.0,
                count: 1.0,
            },
            SummedLoss {
                sum: 15.0,
                count: 3.0,
            },
        ];
        combine_gradients(&mut [&mut a, &mut b], &parts);
        assert!(a.iter().all(|&v| (v - 5.0).abs() < 1e-6), "{}", a[0]);
        assert_eq!(total_loss(&parts).mean(), 17.0 / 4.0);
    }

    #[test]
    fn replicas_run_single_threaded_products() {
        let mut replicas = vec![0usize; 2];
        let seen = on_replicas(&mut replicas, 8, |i, range, r| {
            *r = range.len();
            (i, threads())
        });
        if rayon::current_num_threads() > 1 {
            assert_eq!(seen, vec![(0, 1), (1, 1)]);
            assert_eq!(replicas, vec![4, 4]);
        }
        assert_eq!(threads(), rayon::current_num_threads().max(1));
    }
}
