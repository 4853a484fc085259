pub mod decoder;
pub mod encode;
pub mod eval;
pub mod federated;
pub mod generate;
pub mod inspect;
pub mod models;
pub mod normalizer;
pub mod plan;
pub mod plot;
pub mod prepare;
pub mod segment;
pub mod serve;
pub mod train;
pub mod trained;
pub mod wm;
pub mod wm_eval;

use anyhow::{Context, Result};
use lcm_concept::bert::{BertEncoder, EncoderOptions};
use lcm_concept::resolve::resolve_model;

/// Options shared by every command that encodes text.
#[derive(clap::Args, Debug, Clone)]
pub struct EncoderArgs {
    /// Sentence encoder: `minilm` (English), `e5` (multilingual), an HF repo id, or a folder.
    #[arg(long, default_value = "minilm")]
    pub encoder: String,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl EncoderArgs {
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    pub fn load(&self) -> Result<BertEncoder> {
        init_thread_pool(self.threads());
        let folder = resolve_model(&self.encoder)?;
        let options = EncoderOptions {
            batch_size: self.batch_size,
            threads: self.threads(),
            ..EncoderOptions::default()
        };
        BertEncoder::from_folder(&folder, &options)
            .with_context(|| format!("loading encoder from {}", folder.display()))
    }
}

/// Sizes rayon's global pool once; later calls are no-ops.
pub fn init_thread_pool(threads: usize) {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build_global();
}
