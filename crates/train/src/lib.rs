//! The training machinery every trainer of the workspace shares, knowing nothing of the
//! models it trains: [`run`] (the one training loop: run directory, cadence, budgets,
//! resume policy, seeded re-initialisation), an AdamW optimiser with PyTorch semantics and
//! global gradient-norm clipping ([`optim`]), learning-rate schedules ([`schedule`]),
//! atomic resumable checkpoints ([`checkpoint`]), loss-curve plots ([`plot`]), TensorBoard
//! event files ([`tensorboard`]); the heap setting for training loops is re-exported from
//! `lcm-util` ([`memory`]).
//!
//! The LCM trainer lives in `lcm-workflows`, the concept-decoder trainer in `lcm-decoder`,
//! the world-model trainer in `lcm-plan`; each implements [`run::Trainer`].

pub mod checkpoint;
/// The heap setting for training loops (it lives in `lcm-util`, so non-training benches use it too).
pub use lcm_util::memory;
pub mod optim;
pub mod plot;
pub mod run;
pub mod schedule;
pub mod tensorboard;

pub use checkpoint::{
    CheckpointManager, DataPosition, NormalizerRef, RngState, TrainRng, TrainState, new_rng,
};
pub use optim::{AdamW, AdamWConfig, ParamState, UpdateRule, clip_grad_norm, default_decay_filter};
pub use run::{Cadence, Identity, RunDir, RunSpec, RunSummary, Step, Trainer};
pub use schedule::LrSchedule;

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
    #[error(
        "checkpoint {path} is corrupt or incomplete: {reason}. Delete that step directory; \
         --resume then continues from the previous checkpoint, if one is kept"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("checkpoint {path}: tensor `{name}` {problem}")]
    Tensor {
        path: PathBuf,
        name: String,
        problem: String,
    },
    #[error(
        "checkpoint {path}: expected space {expected}, checkpoint has {found}; \
         train in that space or pass the matching store"
    )]
    SpaceMismatch {
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
    #[error("TensorBoard event file {path}, byte {offset}: {reason}")]
    EventFile {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("plot {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
