//! Instruction fine-tuning (`lcm finetune`, the LCM paper's §3 SFT): a trained LCM
//! continues training on prompt → answer pairs ([`lcm_data::pairs`]), each example the
//! prompt's concepts followed by the answer's and the end-of-text concept, with the
//! prompt's positions masked out of the loss.
//!
//! It is the one training loop ([`crate::train`] over [`lcm_train::run`]) with two
//! differences: the data are pairs (the batch's `first_target` / `loss_mask`, which the
//! fused engine and the candle models both honour), and a fresh run's weights are replaced
//! by the pre-trained checkpoint's before its first step. The optimiser starts fresh (the
//! pre-training run's AdamW moments are not carried over); the model kind, preset, wrap
//! length and CFG dropout are the pre-trained run's. The output is an ordinary run
//! directory that `lcm generate`, `lcm eval` and `lcm eval-summarization` load; its
//! settings record the checkpoint it started from (`finetune`), so `--resume` continues
//! only the same fine-tuning.

use std::path::{Path, PathBuf};

use candle_nn::VarMap;
use lcm_data::pairs::{PairStats, PairStore};
use lcm_model::builder::ModelConfig;
use lcm_train::checkpoint::load_weights;
use serde::Serialize;

use crate::load::TrainedLcm;
use crate::train::{
    FinetuneFrom, StepMetrics, TrainConfig, TrainData, TrainSummary, normalizer_hash, train_with,
};
use crate::{Result, WorkflowError};

/// One fine-tuning call.
pub struct FinetuneRequest<'a> {
    /// The pre-trained model: a run directory, its checkpoints/ or one step directory.
    pub from: &'a Path,
    /// The pair store (`PAIRS/prompt`, `PAIRS/answer`).
    pub pairs: &'a Path,
    /// The fine-tuning run directory.
    pub out_dir: &'a Path,
    /// The normaliser (default: the one the pre-trained run recorded, checked by hash).
    pub normalizer: Option<&'a Path>,
    /// Raw embedding of "End of text." by the space's encoder.
    pub eos: Vec<f32>,
    /// Budgets, learning rate, seed, engine…: the model kind, preset, wrap length, CFG
    /// dropout and normaliser path are taken from the pre-trained run instead.
    pub config: TrainConfig,
    pub resume: bool,
}

/// What a fine-tuning call did.
#[derive(Clone, Debug, Serialize)]
pub struct FinetuneSummary {
    pub train: TrainSummary,
    /// The step directory the weights started from.
    pub from_checkpoint: PathBuf,
    pub from_step: u64,
    /// How the pair store joined and what the wrap length cut.
    pub pairs: PairStats,
}

/// The embedding space a pre-trained model and a pair store must share, read without
/// loading weights: what picks the encoder (and its end-of-text concept) for the CLI.
pub fn finetune_space(from: &Path, pairs: &Path) -> Result<String> {
    let model_space = crate::load::checkpoint_space_id(from)?;
    let store = PairStore::open(pairs)?;
    if store.meta().encoder_id != model_space {
        return Err(WorkflowError::Refused(format!(
            "the pair store {} holds `{}` concepts but the model {} was trained on `{}`; \
             prepare the pairs with the model's encoder (`lcm prepare … --encoder …`)",
            pairs.display(),
            store.meta().encoder_id,
            from.display(),
            model_space
        )));
    }
    Ok(model_space)
}

/// Fine-tunes the model at `request.from` on the pairs at `request.pairs` into
/// `request.out_dir`.
pub fn finetune(
    request: FinetuneRequest<'_>,
    progress: &mut dyn FnMut(&StepMetrics),
) -> Result<FinetuneSummary> {
    let space = finetune_space(request.from, request.pairs)?;
    let base = TrainedLcm::load(request.from, request.normalizer)?;
    let loaded = &base.loaded;
    let dim = base.normalizer.dim();
    // The model must be exactly the preset the trainer rebuilds.
    let rebuilt = ModelConfig::resolve(loaded.kind, &loaded.preset, dim)?
        .to_json(loaded.kind, &loaded.preset)?;
    if rebuilt != loaded.state.model_config {
        return Err(WorkflowError::Refused(format!(
            "{} holds a {} model whose configuration is not the `{}` preset at dimension \
             {dim}; only models trained by `lcm train` can be fine-tuned",
            loaded.checkpoint.display(),
            loaded.kind.name(),
            loaded.preset
        )));
    }
    let pretrained = loaded.train_config.clone().unwrap_or_default();
    let normalizer_path = match request.normalizer {
        Some(p) => p.display().to_string(),
        None => loaded
            .state
            .normalizer
            .as_ref()
            .map(|r| r.path.clone())
            .unwrap_or_default(),
    };
    let checkpoint = loaded.checkpoint.clone();
    let from_step = loaded.state.step;
    let config = TrainConfig {
        model: loaded.kind,
        preset: loaded.preset.clone(),
        max_seq_len: pretrained.max_seq_len,
        cfg_dropout: pretrained.cfg_dropout,
        normalizer_path: Some(normalizer_path),
        finetune: Some(FinetuneFrom {
            checkpoint: checkpoint.display().to_string(),
            step: from_step,
        }),
        ..request.config
    };
    tracing::info!(
        "fine-tuning {} {} from {} (step {from_step}, space {space}, normaliser {})",
        loaded.kind.name(),
        loaded.preset,
        checkpoint.display(),
        normalizer_hash(&base.normalizer)
    );
    let resume = request.resume;
    let mut start = |varmap: &VarMap| -> Result<()> {
        // A resumed run already holds its fine-tuned weights.
        if !resume {
            load_weights(&checkpoint, varmap)?;
        }
        Ok(())
    };
    let (train, stats) = train_with(
        &config,
        TrainData::Pairs(request.pairs),
        &base.normalizer,
        request.eos,
        request.out_dir,
        resume,
        progress,
        &mut start,
    )?;
    Ok(FinetuneSummary {
        train,
        from_checkpoint: loaded.checkpoint.clone(),
        from_step,
        pairs: stats.unwrap_or_default(),
    })
}
