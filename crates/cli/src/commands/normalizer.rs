use std::path::PathBuf;

use anyhow::{Context, Result};
use lcm_data::store::ConceptStore;

#[derive(clap::Args)]
pub struct Args {
    /// Concept store (directory of shards or one .parquet file).
    store: PathBuf,
    /// Output file (.safetensors).
    #[arg(long, short)]
    out: PathBuf,
    /// Number of sentence vectors sampled (uniformly, seeded) from the store.
    #[arg(long, default_value_t = 1_000_000)]
    sample: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let store = ConceptStore::open(&args.store)?;
    let normalizer = lcm_data::sample::fit_normalizer(&store, args.sample, args.seed)?;
    normalizer
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let mean_scale =
        normalizer.scale.iter().map(|&s| s as f64).sum::<f64>() / normalizer.dim() as f64;
    println!(
        "fitted on {} vectors of `{}` (dim {}); mean scale {:.5}; wrote {}",
        normalizer.fitted_on,
        normalizer.encoder_id,
        normalizer.dim(),
        mean_scale,
        args.out.display()
    );
    Ok(())
}
