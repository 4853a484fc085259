//! The crate's error type. Messages name the file involved and, where there is one, the
//! fix; errors of the crates underneath (the SONAR port, the training loop, candle, the
//! concept traits, BLEU) are wrapped, not re-worded.

use std::path::PathBuf;

use lcm_util::fs::AtomicWriteError;

/// Errors of training, loading and evaluating a concept decoder.
#[derive(Debug, thiserror::Error)]
pub enum DecoderError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A training step that cannot go on (non-finite loss, a batch without targets).
    #[error("training: {0}")]
    Training(String),
    #[error("training: {0}")]
    Train(#[from] lcm_train::TrainError),
    #[error(transparent)]
    Sonar(#[from] lcm_sonar::SonarError),
    #[error(transparent)]
    Concept(#[from] lcm_concept::ConceptError),
    #[error(transparent)]
    Eval(#[from] lcm_eval::EvalError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl DecoderError {
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::File {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn input(message: impl Into<String>) -> Self {
        Self::Input(message.into())
    }

    pub(crate) fn tokenizer(e: impl std::fmt::Display) -> Self {
        Self::Tokenizer(e.to_string())
    }
}

impl From<AtomicWriteError> for DecoderError {
    fn from(e: AtomicWriteError) -> Self {
        Self::file(e.path, e.source.to_string())
    }
}

pub type Result<T> = std::result::Result<T, DecoderError>;
