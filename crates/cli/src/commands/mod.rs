pub mod decoder;
pub mod encode;
pub mod eval;
pub mod eval_generation;
pub mod eval_multilingual;
pub mod eval_summarization;
pub mod export;
pub mod federated;
pub mod finetune;
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

use anyhow::Result;
use lcm_concept::bert::EncoderOptions;
use lcm_workflows::encoders::{AnyEncoder, Recorded, load_encoder_for, resolve_language};

/// Options shared by every command that encodes text.
#[derive(clap::Args, Debug, Clone)]
pub struct EncoderArgs {
    /// Concept encoder: `minilm` (English), `e5` (~100 languages), `sonar` (202 languages;
    /// `$LCM_HOME/models/sonar`), an HF repo id, or a folder. Default: the encoder the store
    /// or model records, else `minilm`.
    #[arg(long)]
    pub encoder: Option<String>,
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

    /// The encoder as the user named it (`minilm` when not named), for messages.
    pub fn name(&self) -> &str {
        self.encoder.as_deref().unwrap_or("minilm")
    }

    fn options(&self) -> EncoderOptions {
        init_thread_pool(self.threads());
        EncoderOptions {
            batch_size: self.batch_size,
            threads: self.threads(),
            ..EncoderOptions::default()
        }
    }

    /// `--encoder`, else `minilm`.
    pub fn load(&self) -> Result<AnyEncoder> {
        Ok(load_encoder_for(
            self.encoder.as_deref(),
            None,
            &self.options(),
        )?)
    }

    /// `--encoder` (refused unless it is `recorded`'s space), else the one `what` (a store or
    /// model, named in messages) records as `id`.
    pub fn load_for(&self, id: &str, what: &str) -> Result<AnyEncoder> {
        let recorded = Recorded { id, what };
        Ok(load_encoder_for(
            self.encoder.as_deref(),
            Some(recorded),
            &self.options(),
        )?)
    }
}

/// The language flag of every command that accepts text.
#[derive(clap::Args, Debug, Clone)]
pub struct LangArgs {
    /// Language of the text: a SONAR code (`fra_Latn`) or ISO 639-1 (`fr`, `de`, `zh`). SONAR
    /// needs it (default eng_Latn); other encoders warn when they were not trained on it.
    #[arg(long)]
    pub lang: Option<String>,
}

impl LangArgs {
    /// The SONAR code of `--lang`; warns (once) when `encoder` does not cover it.
    pub fn resolve(&self, encoder: Option<&AnyEncoder>) -> Result<Option<&'static str>> {
        let lang = resolve_language(self.lang.as_deref())?;
        if let (Some(lang), Some(encoder)) = (lang, encoder)
            && let Some(warning) = encoder.language_warning(lang)
        {
            eprintln!("warning: {warning}");
        }
        Ok(lang)
    }
}

/// Sizes rayon's global pool once; later calls are no-ops.
pub fn init_thread_pool(threads: usize) {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build_global();
}
