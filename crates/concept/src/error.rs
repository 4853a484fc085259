use std::path::PathBuf;

/// Errors of the concept layer. Every variant names the file or input at fault and,
/// where one exists, the command that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum ConceptError {
    #[error("model `{name}` not found (looked in: {searched}). Fetch it with: {fix}")]
    ModelNotFound {
        name: String,
        searched: String,
        fix: String,
    },
    #[error("model folder {path} is not a usable sentence-transformers/BERT folder: {reason}")]
    BadModelFolder { path: PathBuf, reason: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("invalid embeddings: {0}")]
    InvalidEmbedding(String),
    #[error("dimension mismatch: expected {expected}, got {got} ({context})")]
    DimensionMismatch {
        expected: usize,
        got: usize,
        context: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ConceptError> = std::result::Result<T, E>;
