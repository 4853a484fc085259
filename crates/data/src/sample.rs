//! Seeded reservoir sampling of concept vectors from a store.

use lcm_concept::normalizer::RobustNormalizer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::Result;
use crate::store::ConceptStore;

/// Draws up to `size` sentence vectors uniformly from the whole store (Algorithm R), so the
/// sample does not depend on shard order bias; the same seed gives the same sample.
pub fn sample_vectors(store: &ConceptStore, size: usize, seed: u64) -> Result<Vec<f32>> {
    let dim = store.meta.dim;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reservoir: Vec<f32> = Vec::with_capacity(size.min(1 << 20) * dim);
    let mut seen = 0usize;
    for document in store.documents() {
        let document = document?;
        for vector in document.embeddings.chunks_exact(dim) {
            if seen < size {
                reservoir.extend_from_slice(vector);
            } else {
                let slot = rng.random_range(0..=seen);
                if slot < size {
                    reservoir[slot * dim..(slot + 1) * dim].copy_from_slice(vector);
                }
            }
            seen += 1;
        }
    }
    Ok(reservoir)
}

/// Fits the robust normaliser on a seeded sample of up to `sample_size` vectors of `store`.
pub fn fit_normalizer(
    store: &ConceptStore,
    sample_size: usize,
    seed: u64,
) -> Result<RobustNormalizer> {
    let sample = sample_vectors(store, sample_size, seed)?;
    Ok(RobustNormalizer::fit(
        &sample,
        store.meta.dim,
        &store.meta.encoder_id,
    )?)
}
