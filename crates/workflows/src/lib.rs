//! The LCM workflows: the one library API that the `lcm` binary (and later the Python
//! bindings and the HTTP server) call. Entry points parse flags or requests, call these
//! functions and print; every decision about stores, checkpoints, normalisers and models
//! is made here.
//!
//! - [`store`]: the concept-store layout (normaliser and sentence-bank paths, the bank
//!   built on first use).
//! - [`mod@train`]: the LCM trainer on `lcm_train::run`.
//! - [`fused`]: the fused training engine as the trainer drives it (which engine a run
//!   uses; the Base-LCM step over flat buffers).
//! - [`load`]: a trained LCM with its normaliser, checked against the store's encoder;
//!   the end-of-text embedding; the diffusion sampling settings.
//! - [`evaluate`]: teacher-forced evaluation on the held-out split against the baselines.
//! - [`export`]: a trained LCM as a Hugging Face–style folder with a model card, which
//!   every loader takes like a run directory.
//! - [`generate`]: continuing a prompt concept by concept, with the stop rules, and
//!   decoding the continuation.
//! - [`fused_generate`]: the next concept with a Two-Tower model's denoiser on the fused
//!   engine (what [`generate`] uses), candle for the other variants.
//! - [`generation_eval`]: `lcm eval-generation`: continuations of held-out prompts under a
//!   grid of sampling settings, scored by stop reasons, REP-4, OVL-3, coherence and the
//!   register (store source) of the generated sentences; held-out ℓ2 per source.
//! - [`finetune`]: `lcm finetune`: instruction fine-tuning of a trained LCM on prompt →
//!   answer pairs, the prompt's positions masked out of the loss, on the one trainer.
//! - [`summarization`]: `lcm eval-summarization`: fine-tuned LCMs and the first-sentence
//!   and nearest-summary baselines on held-out pairs, scored by ROUGE-L, OVL-3, REP-4 and
//!   the length ratio.
//! - [`federated`]: one site's round of federated training (`lcm fed-step`) and the first
//!   global model (`lcm fed-init`); the outer step lives in the Flower app (`federated/`).
//! - [`session`]: a trained LCM held ready to continue prompts (model, encoder, decoder
//!   loaded once), what `lcm generate`, `lcm serve` and the Python package call.
//! - [`encode`]: sentences to plain rows of numbers, for writing them out.
//! - [`vectors`]: concepts given as vectors rather than text: the model's next concepts
//!   and decoding them with any decoder (Python's `LCM.next_concepts`, `lcm.Decoder`).
//! - [`encoders`]: concept encoders and decoders by name or by the id an artifact records
//!   (`minilm`, `e5`, `sonar`, HF repo ids, folders), languages, the unknown-token tally.
//! - [`models`]: checking downloaded SONAR files by loading them.
//! - [`multilingual`]: `lcm eval-multilingual` on a parallel corpus: cross-lingual
//!   retrieval, zero-shot next-concept prediction in languages never trained on, and
//!   generation decoded from another language's sentences.
//! - [`planning`]: concept-space planning with the LCM as world model (the LCM- and
//!   bank-backed proposers, the method comparison, case files and reports).

pub mod encode;
pub mod encoders;
pub mod evaluate;
pub mod export;
pub mod federated;
pub mod finetune;
pub mod fused;
pub mod fused_generate;
pub mod generate;
pub mod generation_eval;
pub mod load;
pub mod models;
pub mod multilingual;
pub mod planning;
pub mod session;
pub mod store;
pub mod summarization;
pub mod train;
pub mod vectors;

use std::path::PathBuf;

pub use load::{LoadedModel, SamplingSettings, TrainedLcm, eos_embedding, load_model};
pub use store::StoreLayout;
pub use train::{StepMetrics, TrainConfig, TrainSummary, normalizer_hash, train};

/// Errors of the workflows. The wrapped errors of the lower layers keep their own
/// messages (each names the file at fault); the others say what to pass instead.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error(transparent)]
    Train(#[from] lcm_train::TrainError),
    #[error(transparent)]
    Data(#[from] lcm_data::DataError),
    #[error(transparent)]
    Concept(#[from] lcm_concept::ConceptError),
    #[error(transparent)]
    Eval(#[from] lcm_eval::EvalError),
    #[error(transparent)]
    Sonar(#[from] lcm_sonar::SonarError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Engine(#[from] lcm_engine::EngineError),
    /// A file that could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Settings that cannot work (the wording is the one the trainer always used).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A request refused because its inputs do not belong together (another encoder,
    /// normaliser or store than the model's); the message says what to pass.
    #[error("{0}")]
    Refused(String),
    /// A failure while loading the model a user named.
    #[error("loading the model at {}", path.display())]
    LoadModel {
        path: PathBuf,
        #[source]
        source: Box<WorkflowError>,
    },
    /// A failure while loading the encoder a user named or an artifact records.
    #[error("loading encoder from {}", path.display())]
    LoadEncoder {
        path: PathBuf,
        #[source]
        source: Box<WorkflowError>,
    },
    /// A failure while loading a SONAR decoder.
    #[error("loading decoder from {}", path.display())]
    LoadDecoder {
        path: PathBuf,
        #[source]
        source: Box<WorkflowError>,
    },
    /// A language code no table knows (the message lists the close matches).
    #[error(transparent)]
    Language(#[from] lcm_concept::lang::UnknownLanguage),
    /// A failure while building or opening a sentence bank.
    #[error("{action} {}", path.display())]
    Bank {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: Box<lcm_data::DataError>,
    },
    /// A failure of the evaluation proper, after the held-out split was built.
    #[error("evaluating {}", path.display())]
    Evaluating {
        path: PathBuf,
        #[source]
        source: Box<WorkflowError>,
    },
}

/// A model that cannot be chosen or rebuilt is a configuration error, worded as the
/// trainer always worded it ("invalid configuration: no `x` preset …"), so that printed
/// errors stay the same; candle's own errors pass through.
impl From<lcm_model::builder::BuildError> for WorkflowError {
    fn from(error: lcm_model::builder::BuildError) -> Self {
        match error {
            lcm_model::builder::BuildError::Candle(e) => WorkflowError::Candle(e),
            other => WorkflowError::Config(other.to_string()),
        }
    }
}

pub type Result<T, E = WorkflowError> = std::result::Result<T, E>;

/// An error with every cause, as the CLI prints it (`a: b: c`), a cause left out when its
/// text is already in the message (errors that show their source): what the entry points
/// without anyhow (the Python package, the server) report.
pub fn error_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
