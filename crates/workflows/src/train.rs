//! The LCM trainer: batches from a concept store, the loss of each variant, backward,
//! clipping and AdamW with a cosine schedule, validation on the held-out split, as a
//! [`Trainer`] driven by the shared loop [`lcm_train::run::run`] (which owns the run
//! directory, cadence, budgets and the resume policy; see there).
//!
//! Determinism: every random draw (weight initialisation, diffusion timesteps and noise,
//! CFG dropout) comes from a seeded [`TrainRng`]; the data order comes from the seeded
//! [`Batcher`]. A run interrupted at a checkpoint and resumed yields the same weights as an
//! uninterrupted one.
//!
//! A resumed run must keep every setting except the budgets (`steps`, `stop_at`,
//! `max_seconds`, `eval_every`, `checkpoint_every`, `keep_last`) and the normaliser's path
//! (its content is checked by hash instead).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_concept::ConceptEncoder;
use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::batch::{
    BatchIter, BatchPosition, Batcher, BatcherConfig, DEFAULT_MAX_SEQ_LEN, DatasetConfig, EOS_TEXT,
    SourceMixture, SplitDataset,
};
use lcm_data::pairs::{PairStats, PairStore};
use lcm_data::store::ConceptStore;
use lcm_model::base_lcm::SummedLoss;
use lcm_model::builder::{ModelConfig, ModelKind, build_model};
use lcm_model::generate::Lcm;
use lcm_train::TrainError;
use lcm_train::checkpoint::{DataPosition, NormalizerRef, TrainRng, new_rng};
pub use lcm_train::optim::UpdateRule;
use lcm_train::optim::{AdamW, AdamWConfig, default_decay_filter};
use lcm_train::run::{
    Cadence, Identity, RunSpec, Step, Trainer, seeded_init, settings_without_budget,
};
use lcm_train::schedule::LrSchedule;
use serde::{Deserialize, Serialize};

use crate::fused::{Engine, FusedLcm};
use crate::store::StoreLayout;
use crate::{Result, WorkflowError};

pub use lcm_train::run::{CHECKPOINT_DIR, METRICS_FILE};

/// Mixed into the seed of the validation RNG so that it never shares a stream with training.
const EVAL_SALT: u64 = 0x5eed_0e7a_1000_0001;
/// Configuration fields a resumed run may change besides the loop's budget fields: the
/// normaliser's path (a moved file is fine; its content is checked by hash) and the warmup
/// length, which the CLI derives from `steps` when it is not given (so extending `--steps`
/// on resume, as before the one loop existed, stays possible; the schedule then follows the
/// new length).
/// The engine may change too: both compute the same step (to ~1e-5, the parity test's bound).
const RESUMABLE_FIELDS: &[&str] = &["normalizer_path", "warmup_steps", "engine"];

/// Training hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelKind,
    /// Preset name: `tiny`, `small`, `1.6b` (and `7b` for Two-Tower). The preset's input
    /// dimension is replaced by the store's.
    pub preset: String,
    /// Total optimiser steps (a resumed run continues up to this number).
    pub steps: u64,
    /// Batch budget in concepts, padding included.
    pub max_concepts: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub warmup_steps: u64,
    /// Final learning rate as a fraction of `lr` (cosine decay to it at `steps`).
    pub final_lr_scale: f64,
    /// Global gradient-norm clipping threshold.
    pub clip: f64,
    /// Validation every this many steps (0: never; the last step always evaluates).
    pub eval_every: u64,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Newest checkpoints kept (0: all).
    pub keep_last: usize,
    pub seed: u64,
    /// Fraction of documents (by id hash) held out for validation.
    pub valid_fraction: f64,
    /// Classifier-free-guidance dropout probability (diffusion models).
    pub cfg_dropout: f64,
    /// Sequence wrap length in concepts; `None`: min(128, the model's `max_seq_len`).
    #[serde(default)]
    pub max_seq_len: Option<usize>,
    /// Where the normaliser was loaded from, recorded in checkpoints.
    #[serde(default)]
    pub normalizer_path: Option<String>,
    /// Stop (with a checkpoint) after this step although the schedule spans `steps`:
    /// training in sessions, continued with `resume`.
    #[serde(default)]
    pub stop_at: Option<u64>,
    /// Wall-clock budget in seconds: the step that exhausts it is validated and
    /// checkpointed, then training stops (continue with `resume`).
    #[serde(default)]
    pub max_seconds: Option<f64>,
    /// Which code computes loss and gradients (configurations written before the engine
    /// existed read as the default, `fused`).
    #[serde(default)]
    pub engine: Engine,
    /// The update rule: AdamW (the default, left out of the recorded settings so that runs
    /// from before the choice existed still resume) or plain SGD.
    #[serde(default, skip_serializing_if = "is_adamw")]
    pub optimizer: UpdateRule,
    /// Sampling weights of the training data by document source (none: the store's own
    /// proportions; left out of the recorded settings then, so older runs still resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixture: Option<SourceMixture>,
    /// Instruction fine-tuning (`lcm finetune`): the checkpoint whose weights the run
    /// started from. Absent for pre-training (and left out of the recorded settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FinetuneFrom>,
}

/// The pre-trained checkpoint a fine-tuning run starts from, recorded in its settings (a
/// resumed run must name the same one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinetuneFrom {
    /// The step directory the weights were read from.
    pub checkpoint: String,
    /// Its step.
    pub step: u64,
}

fn is_adamw(rule: &UpdateRule) -> bool {
    *rule == UpdateRule::AdamW
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: ModelKind::Base,
            preset: "small".into(),
            steps: 1000,
            max_concepts: 4096,
            lr: 4e-4,
            warmup_steps: 100,
            final_lr_scale: 0.01,
            clip: 25.0,
            eval_every: 100,
            checkpoint_every: 500,
            keep_last: 3,
            seed: 0,
            valid_fraction: 0.01,
            cfg_dropout: 0.15,
            max_seq_len: None,
            normalizer_path: None,
            stop_at: None,
            max_seconds: None,
            engine: Engine::default(),
            optimizer: UpdateRule::AdamW,
            mixture: None,
            finetune: None,
        }
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(WorkflowError::Config(m));
        if self.steps == 0 {
            return bad("steps must be > 0".into());
        }
        if self.max_concepts == 0 {
            return bad("max_concepts must be > 0".into());
        }
        if self.clip.is_nan() || self.clip <= 0.0 {
            return bad(format!("clip must be > 0, got {}", self.clip));
        }
        if !(0.0..=1.0).contains(&self.valid_fraction) {
            return bad(format!(
                "valid_fraction must be in [0, 1], got {}",
                self.valid_fraction
            ));
        }
        if !(0.0..=1.0).contains(&self.cfg_dropout) {
            return bad(format!(
                "cfg_dropout must be in [0, 1], got {}",
                self.cfg_dropout
            ));
        }
        if let Some(limit) = self.max_seconds
            && !(limit.is_finite() && limit > 0.0)
        {
            return bad(format!(
                "max_seconds must be a positive number, got {limit}"
            ));
        }
        Ok(())
    }

    fn schedule(&self) -> Result<LrSchedule> {
        let s = LrSchedule::Cosine {
            lr: self.lr,
            start_lr: 0.0,
            warmup_steps: self.warmup_steps.min(self.steps),
            max_steps: self.steps,
            final_lr_scale: self.final_lr_scale,
        };
        s.validate()?;
        Ok(s)
    }
}

/// One optimiser step, as written to `metrics.jsonl` and passed to the progress callback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Real (unpadded) concepts in the batch.
    pub concepts: usize,
    /// Loss terms (predicted concepts) the step's loss and gradient average over: the
    /// weight of a site's update in federated averaging (0 in metrics written before it
    /// was recorded).
    #[serde(default)]
    pub predictions: usize,
    pub concepts_per_s: f64,
    /// The engine that computed the step: `fused` or `candle` (empty in metrics written
    /// before the engine existed).
    #[serde(default)]
    pub engine: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
}

/// What a call to [`train`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainSummary {
    /// Step the run started from (0, or the resumed checkpoint's step).
    pub start_step: u64,
    /// Step reached.
    pub final_step: u64,
    /// Training loss of the last step taken in this call.
    pub last_loss: Option<f64>,
    /// Last validation loss computed in this call.
    pub last_valid_loss: Option<f64>,
    /// Real concepts consumed in this call.
    pub concepts: u64,
    pub seconds: f64,
    pub num_parameters: usize,
    /// Newest checkpoint directory, if any was written or resumed from.
    pub checkpoint: Option<PathBuf>,
    pub metrics: PathBuf,
}

/// Shortest document a model can learn from: Base-LCM needs a (context, target) pair.
fn min_len(model: &Lcm) -> usize {
    match model {
        Lcm::Base(_) => 2,
        _ => 1,
    }
}

/// The training objective of any variant, randomness (timesteps, noise, CFG dropout) from
/// `rng`; `mask` (`[B, T]`) weighs each position's target (the batch's `loss_mask`).
fn model_loss(
    model: &Lcm,
    x: &Tensor,
    mask: &Tensor,
    cfg_p: f64,
    rng: &mut TrainRng,
) -> Result<SummedLoss> {
    Ok(match model {
        Lcm::Base(m) => m.loss(x, Some(mask))?,
        Lcm::TwoTower(m, s) => m.loss_sampled(x, Some(mask), s, cfg_p, rng)?,
        Lcm::OneTower(m, s) => m.loss_sampled(x, Some(mask), s, cfg_p, rng)?,
    })
}

/// Content hash of a normaliser (its centre, scale and encoder id), recorded in checkpoints.
pub fn normalizer_hash(normalizer: &RobustNormalizer) -> String {
    let bytes: Vec<u8> = normalizer
        .center
        .iter()
        .chain(&normalizer.scale)
        .flat_map(|v| v.to_le_bytes())
        .chain(normalizer.encoder_id.bytes())
        .collect();
    format!("fnv1a64:{:016x}", lcm_util::hash::fnv1a64(&bytes))
}

/// Mean validation loss over one pass of `batcher`, with a fixed RNG so that evaluations
/// at different steps are comparable; on the fused engine when `fused` is given.
fn validate(
    net: &Lcm,
    mut fused: Option<&mut FusedLcm>,
    batcher: &Batcher,
    seed: u64,
    cfg_p: f64,
) -> Result<Option<f64>> {
    let mut rng = new_rng(seed ^ EVAL_SALT);
    let (mut sum, mut count) = (0.0f64, 0.0f64);
    for batch in batcher.epoch(0) {
        let batch = batch?;
        if batch.max_len() < min_len(net) {
            continue;
        }
        if let Some(fused) = fused.as_deref_mut() {
            let loss = fused.masked_loss(
                &batch.x,
                &batch.lengths,
                &batch.first_target,
                cfg_p,
                &mut rng,
            )?;
            sum += loss.sum;
            count += loss.count;
        } else {
            let loss = model_loss(net, &batch.x, &batch.loss_mask, cfg_p, &mut rng)?;
            sum += loss.sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            count += loss.count;
        }
    }
    Ok((count > 0.0).then(|| sum / count))
}

/// The fused engine for `net` when `engine` asks for it and covers the architecture;
/// otherwise `None` (candle autograd), saying why once.
fn fused_engine(
    engine: Engine,
    net: &Lcm,
    cfg: &ModelConfig,
    varmap: &VarMap,
) -> Result<Option<FusedLcm>> {
    if engine == Engine::Candle {
        return Ok(None);
    }
    match FusedLcm::new(net, cfg, varmap)? {
        Ok(fused) => Ok(Some(fused)),
        Err(why) => {
            tracing::warn!("training on candle autograd: {why}");
            Ok(None)
        }
    }
}

/// The LCM half of a training run: the model, its batches and what the summary reports.
struct LcmTrainer<'a> {
    net: Lcm,
    /// The fused engine bound to `net`'s `Var`s, when it covers the architecture.
    fused: Option<FusedLcm>,
    config: &'a TrainConfig,
    train: &'a Batcher,
    valid: Option<&'a Batcher>,
    batches: BatchIter<'a>,
    /// Where the batch after the last one drawn starts (checkpointed).
    position: BatchPosition,
    last_loss: Option<f64>,
    last_valid_loss: Option<f64>,
    concepts: u64,
}

impl Trainer for LcmTrainer<'_> {
    type Metrics = StepMetrics;
    type Error = WorkflowError;

    fn step(&mut self, step: Step<'_>) -> Result<Option<StepMetrics>> {
        let t0 = Instant::now();
        let batch = self.batches.next().ok_or_else(|| {
            WorkflowError::Config("the training split yields no batches".into())
        })??;
        self.position = batch.next;
        // Too short to learn from: skipped, as if the batcher had not produced it.
        if batch.max_len() < min_len(&self.net) {
            return Ok(None);
        }
        let lr = self.config.lr;
        let non_finite = |loss: f64| {
            TrainError::Optimizer(format!(
                "non-finite loss {loss} at step {}: the run diverged. Try a lower --lr (this \
                 run: {lr:e}) or a longer --warmup-steps; `--resume` continues from the last \
                 checkpoint written before the divergence, if there is one",
                step.index + 1
            ))
        };
        let (loss_value, predictions, grad_norm) = if let Some(fused) = &mut self.fused {
            let loss = fused.masked_loss_and_gradients(
                &batch.x,
                &batch.lengths,
                &batch.first_target,
                self.config.cfg_dropout,
                step.rng,
            )?;
            let (loss, predictions) = (loss.mean(), loss.count as usize);
            if !loss.is_finite() {
                return Err(non_finite(loss).into());
            }
            (loss, predictions, fused.step(step.opt, self.config.clip)?)
        } else {
            let loss = model_loss(
                &self.net,
                &batch.x,
                &batch.loss_mask,
                self.config.cfg_dropout,
                step.rng,
            )?;
            let predictions = loss.count as usize;
            let mean = loss.mean()?;
            let loss = mean.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss.is_finite() {
                return Err(non_finite(loss).into());
            }
            let mut grads = mean.backward()?;
            let grad_norm = step.opt.clip_grad_norm(&mut grads, self.config.clip)?;
            step.opt.step(&grads)?;
            (loss, predictions, grad_norm)
        };
        let concepts = batch.num_concepts();
        self.concepts += concepts as u64;
        self.last_loss = Some(loss_value);
        let elapsed = t0.elapsed().as_secs_f64().max(1e-9);
        Ok(Some(StepMetrics {
            step: step.index + 1,
            loss: loss_value,
            lr: step.lr,
            grad_norm,
            concepts,
            predictions,
            concepts_per_s: concepts as f64 / elapsed,
            engine: if self.fused.is_some() {
                Engine::Fused
            } else {
                Engine::Candle
            }
            .name()
            .into(),
            valid_loss: None,
        }))
    }

    fn validate(&mut self, metrics: &mut StepMetrics) -> Result<()> {
        if let Some(valid) = self.valid {
            metrics.valid_loss = validate(
                &self.net,
                self.fused.as_mut(),
                valid,
                self.config.seed,
                self.config.cfg_dropout,
            )?;
            if metrics.valid_loss.is_some() {
                self.last_valid_loss = metrics.valid_loss;
            }
        }
        Ok(())
    }

    fn data_position(&self) -> DataPosition {
        DataPosition {
            epoch: self.position.epoch,
            batch_index: self.position.index as u64,
        }
    }

    fn seek(&mut self, position: DataPosition) -> Result<()> {
        self.position = BatchPosition {
            epoch: position.epoch,
            index: usize::try_from(position.batch_index).map_err(|_| {
                WorkflowError::Config(format!(
                    "checkpointed batch index {} does not fit this machine",
                    position.batch_index
                ))
            })?,
        };
        self.batches = self.train.batches_from(self.position);
        Ok(())
    }
}

/// What training on a store needs besides the configuration: the store's embedding space
/// and the normaliser fitted in it.
pub struct TrainingInputs {
    /// The encoder id of the store's concepts.
    pub encoder_id: String,
    pub normalizer_path: PathBuf,
    pub normalizer: RobustNormalizer,
}

impl TrainingInputs {
    /// Opens the store at `store` and the normaliser `normalizer`, else the store's own
    /// ([`StoreLayout::normalizer`]); a missing one is refused with the command that fits it.
    pub fn open(store: &Path, normalizer: Option<&Path>) -> Result<Self> {
        let opened = ConceptStore::open(store)?;
        let normalizer_path = normalizer
            .map(Path::to_path_buf)
            .unwrap_or_else(|| StoreLayout::new(store).normalizer());
        if !normalizer_path.exists() {
            return Err(WorkflowError::Refused(format!(
                "no normaliser at {}; fit one with `lcm fit-normalizer {} --out {}` or pass \
                 --normalizer",
                normalizer_path.display(),
                store.display(),
                normalizer_path.display()
            )));
        }
        let normalizer = RobustNormalizer::load(&normalizer_path)?;
        Ok(Self {
            encoder_id: opened.meta.encoder_id,
            normalizer_path,
            normalizer,
        })
    }

    /// Refuses an encoder other than the store's: it embeds the end-of-text concept every
    /// document is closed with.
    pub fn check_encoder(&self, encoder: &dyn ConceptEncoder) -> Result<()> {
        if encoder.id() != self.encoder_id {
            return Err(WorkflowError::Refused(format!(
                "the store was encoded with `{}` but --encoder is `{}`; pass the store's \
                 encoder (it embeds the end-of-text concept \"{EOS_TEXT}\")",
                self.encoder_id,
                encoder.id()
            )));
        }
        Ok(())
    }
}

/// Trains (or, with `resume`, continues training) a model on the concept store at
/// `store_path` into the run directory `out_dir` (`config.json`, `metrics.jsonl`,
/// `checkpoints/`, `loss.png`). `normalizer` must be fitted in the store's embedding
/// space; `eos` is the raw (unnormalised) embedding of [`lcm_data::batch::EOS_TEXT`] by
/// the store's encoder. `progress` is called after every optimiser step.
pub fn train(
    config: &TrainConfig,
    store_path: &Path,
    normalizer: &RobustNormalizer,
    eos: Vec<f32>,
    out_dir: &Path,
    resume: bool,
    progress: &mut dyn FnMut(&StepMetrics),
) -> Result<TrainSummary> {
    train_from(
        config,
        store_path,
        normalizer,
        eos,
        out_dir,
        resume,
        progress,
        &mut |_| Ok(()),
    )
}

/// [`train`] whose weights are replaced by `start` once the run is initialised or resumed,
/// before its first step (see [`lcm_train::run::run_from`]): a federated round
/// ([`crate::federated`]) starts from the global model with the site's optimiser state.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_from(
    config: &TrainConfig,
    store_path: &Path,
    normalizer: &RobustNormalizer,
    eos: Vec<f32>,
    out_dir: &Path,
    resume: bool,
    progress: &mut dyn FnMut(&StepMetrics),
    start: &mut dyn FnMut(&VarMap) -> Result<()>,
) -> Result<TrainSummary> {
    train_with(
        config,
        TrainData::Store(store_path),
        normalizer,
        eos,
        out_dir,
        resume,
        progress,
        start,
    )
    .map(|(summary, _)| summary)
}

/// What a run trains on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TrainData<'a> {
    /// Documents of a concept store (pre-training).
    Store(&'a Path),
    /// Prompt → answer pairs of a pair store, prompts masked out of the loss
    /// ([`lcm_data::pairs`]).
    Pairs(&'a Path),
}

/// [`train_from`] on either kind of data; for pairs, also how the pair store joined.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_with(
    config: &TrainConfig,
    data: TrainData<'_>,
    normalizer: &RobustNormalizer,
    eos: Vec<f32>,
    out_dir: &Path,
    resume: bool,
    progress: &mut dyn FnMut(&StepMetrics),
    start: &mut dyn FnMut(&VarMap) -> Result<()>,
) -> Result<(TrainSummary, Option<PairStats>)> {
    config.validate()?;
    let started = Instant::now();
    let device = Device::Cpu;
    let (store, pairs, store_path) = match data {
        TrainData::Store(path) => (ConceptStore::open(path)?, None, path),
        TrainData::Pairs(path) => {
            let pairs = PairStore::open(path)?;
            (pairs.prompt.clone(), Some(pairs), path)
        }
    };
    let model_cfg = ModelConfig::resolve(config.model, &config.preset, store.meta.dim)?;
    let model_json = model_cfg.to_json(config.model, &config.preset)?;

    let max_seq_len = config
        .max_seq_len
        .unwrap_or(DEFAULT_MAX_SEQ_LEN.min(model_cfg.max_seq_len()));
    if max_seq_len > model_cfg.max_seq_len() {
        return Err(WorkflowError::Config(format!(
            "max_seq_len {max_seq_len} exceeds the model's {}",
            model_cfg.max_seq_len()
        )));
    }
    let dataset_config = DatasetConfig {
        max_seq_len,
        valid_fraction: config.valid_fraction,
    };
    let mut pair_stats = None;
    let split = match &pairs {
        None => SplitDataset::from_store(&store, normalizer, eos, dataset_config)?,
        Some(pairs) => {
            if store.meta.encoder_id != normalizer.encoder_id {
                return Err(lcm_data::DataError::EncoderMismatch {
                    path: store_path.to_path_buf(),
                    expected: normalizer.encoder_id.clone(),
                    expected_dim: normalizer.dim(),
                    found: store.meta.encoder_id.clone(),
                    found_dim: store.meta.dim,
                }
                .into());
            }
            let (joined, mut stats) = pairs.pairs()?;
            let split =
                SplitDataset::from_pairs(joined, normalizer, eos, dataset_config, &mut stats)?;
            tracing::info!(
                pairs = stats.pairs,
                truncated_prompts = stats.truncated_prompts,
                skipped_too_long = stats.skipped_too_long,
                prompts_without_answer = stats.prompts_without_answer,
                answers_without_prompt = stats.answers_without_prompt,
                "pair store {}",
                store_path.display()
            );
            pair_stats = Some(stats);
            split
        }
    };
    if split.train.is_empty() {
        return Err(WorkflowError::Config(format!(
            "the training split of {} is empty",
            store_path.display()
        )));
    }
    let batcher_cfg = BatcherConfig::new(config.max_concepts, config.seed);
    let valid = (!split.valid.is_empty())
        .then(|| Batcher::new(split.valid, batcher_cfg, device.clone()))
        .transpose()?;
    let mut train_batcher = Batcher::new(split.train, batcher_cfg, device.clone())?;
    if let Some(mixture) = &config.mixture {
        train_batcher = train_batcher.with_mixture(mixture)?;
        if let Some(counts) = train_batcher.mixture_counts() {
            let shares: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
            tracing::info!(mixture = %mixture, "sequences per epoch by source: {}", shares.join(", "));
        }
    }

    let varmap = VarMap::new();
    let net = build_model(
        &model_cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    seeded_init(&varmap, config.seed)?;
    let fused = fused_engine(config.engine, &net, &model_cfg, &varmap)?;
    let num_parameters: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    let mut opt = AdamW::from_varmap(
        &varmap,
        AdamWConfig {
            lr: config.lr,
            rule: config.optimizer,
            ..AdamWConfig::default()
        },
        default_decay_filter,
    )?;
    let config_json = serde_json::to_value(config)
        .map_err(|e| WorkflowError::Config(format!("serialising the configuration: {e}")))?;
    let spec = RunSpec {
        dir: out_dir,
        resume,
        seed: config.seed,
        cadence: Cadence {
            steps: config.steps,
            stop_at: config.stop_at,
            max_seconds: config.max_seconds,
            eval_every: config.eval_every,
            checkpoint_every: config.checkpoint_every,
            keep_last: config.keep_last,
        },
        schedule: config.schedule()?,
        identity: Identity {
            space_id: store.meta.encoder_id.clone(),
            model_config: model_json,
            settings: settings_without_budget(config, RESUMABLE_FIELDS)?,
            config: config_json,
            normalizer: Some(NormalizerRef {
                path: config.normalizer_path.clone().unwrap_or_default(),
                hash: normalizer_hash(normalizer),
            }),
        },
        started,
        plot_title: format!("{} {}: loss", config.model.name(), config.preset),
    };
    let mut trainer = LcmTrainer {
        net,
        fused,
        config,
        train: &train_batcher,
        valid: valid.as_ref(),
        batches: train_batcher.batches_from(BatchPosition::default()),
        position: BatchPosition::default(),
        last_loss: None,
        last_valid_loss: None,
        concepts: 0,
    };
    let summary = lcm_train::run::run_from(spec, &varmap, &mut opt, &mut trainer, progress, start)?;
    let summary = TrainSummary {
        start_step: summary.start_step,
        final_step: summary.final_step,
        last_loss: trainer.last_loss,
        last_valid_loss: trainer.last_valid_loss,
        concepts: trainer.concepts,
        seconds: summary.seconds,
        num_parameters,
        checkpoint: summary.checkpoint,
        metrics: summary.metrics,
    };
    Ok((summary, pair_stats))
}
