//! Training utilities for Large Concept Models: an AdamW optimiser with PyTorch
//! semantics, global gradient-norm clipping, learning-rate schedules, and atomic,
//! resumable checkpoints.

pub mod checkpoint;
pub mod evaluate;
pub mod inference;
pub mod memory;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod trainer;

pub use checkpoint::{
    CheckpointManager, DataPosition, NormalizerRef, RngState, TrainRng, TrainState, new_rng,
};
pub use inference::{LoadedModel, load_model, resolve_checkpoint};
pub use optim::{AdamW, AdamWConfig, ParamState, clip_grad_norm, default_decay_filter};
pub use schedule::LrSchedule;
pub use trainer::{ModelKind, StepMetrics, TrainConfig, TrainSummary, train};

use std::path::PathBuf;

/// Errors from the training utilities.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path} is corrupt or incomplete: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("checkpoint {path}: tensor `{name}` {problem}")]
    Tensor {
        path: PathBuf,
        name: String,
        problem: String,
    },
    #[error(
        "checkpoint {path}: expected encoder {expected}, checkpoint has {found}; \
         train in that space or pass the matching store"
    )]
    EncoderMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("no checkpoint for step {step} in {dir}")]
    NoSuchStep { dir: PathBuf, step: u64 },
    #[error("optimizer: {0}")]
    Optimizer(String),
    #[error("{path}, line {line}: not a metrics record: {reason}")]
    MetricsLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("plot {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] lcm_data::DataError),
    #[error(transparent)]
    Concept(#[from] lcm_concept::error::ConceptError),
    #[error(transparent)]
    Eval(#[from] lcm_eval::error::EvalError),
}

pub type Result<T> = std::result::Result<T, TrainError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
