use std::path::PathBuf;

/// Errors of the data layer. Each names the file at fault and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {reason}")]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "duplicate document id `{id}`: first at {first}, again at {second}; give every document its own id (or drop --strict to keep both with a warning)"
    )]
    DuplicateId {
        id: String,
        first: String,
        second: String,
    },
    #[error(
        "{path} is not a readable Parquet file ({reason}); if it is a shard of an interrupted `lcm prepare`, delete it and re-run the same command (finished shards are kept)"
    )]
    BadParquet { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Schema { path: PathBuf, reason: String },
    #[error(
        "{path} holds concepts of encoder `{found}` (dim {found_dim}) but this store/run uses `{expected}` (dim {expected_dim}); a store never mixes encoders: write to a new --out directory"
    )]
    EncoderMismatch {
        path: PathBuf,
        expected: String,
        expected_dim: usize,
        found: String,
        found_dim: usize,
    },
    #[error("{path}: {reason}")]
    NonFinite { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Concept(#[from] lcm_concept::ConceptError),
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}
