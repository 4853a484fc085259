//! The decoder trainer: a [`SonarDecoder`] whose cross-attention memory is the concept
//! itself (length 1, model dimension = the encoder's dimension, exactly as SONAR conditions
//! on its 1024-d vectors), trained with teacher forcing on the sentences of a concept store
//! through the one training loop ([`lcm_train::run`]), which owns `config.json`,
//! `metrics.jsonl`, `checkpoints/`, `loss.png`, the cadence, the budgets and the resume
//! policy. This file adds what is the decoder's own: the tokenizer learnt before training
//! (kept on resume), the seeded initialisation, and the run folder's `tokenizer.json`,
//! `decoder.json` and final `model.safetensors`.
//!
//! Sentences longer than `max_seq_len − 1` pieces are truncated for training (the decoder
//! then never learns to end them; the count is logged and reported).
//!
//! The loss and gradients of a step come from the fused engine by default
//! ([`crate::fused::FusedDecoder`]: [`lcm_engine::SonarDecoderEngine`] replicas, data
//! parallel over the batch's sentences), or from candle autograd ([`DecoderEngine`]); both
//! train the same `Var`s, and a run may resume on the other.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_engine::EngineError;
use lcm_sonar::SpecialIds;
use lcm_sonar::model::{SonarDecoder, SonarDecoderConfig};
use lcm_train::run::{Cadence, Identity, RunDir, RunSpec, Step, Trainer, settings_without_budget};
use lcm_train::{AdamW, AdamWConfig, DataPosition, LrSchedule, default_decay_filter};
use serde::{Deserialize, Serialize};

use crate::batch::{epoch_plan, make_batch, token_loss};
use crate::error::{DecoderError, Result};
use crate::fused::{FusedDecoder, engine_error};
use crate::inference::{DecoderMeta, FORMAT, MODEL_FILE, TOKENIZER_FILE, TokenizerInfo};
use crate::split::SentenceSplit;
use crate::tokenizer::{DecoderTokenizer, PROMPT, SPECIAL_TOKENS};

/// Title of the run's `loss.png`.
const PLOT_TITLE: &str = "lcm train-decoder";
/// Configuration fields a resumed run may change besides the loop's budget fields: the
/// engine (both compute the same step, to the parity test's 1e-5).
const RESUMABLE_FIELDS: &[&str] = &["engine"];

/// Which code computes a training step's loss and gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderEngine {
    /// The fused engine ([`crate::fused::FusedDecoder`], data parallel over the batch's
    /// sentences); candle where it refuses the model.
    #[default]
    Fused,
    /// candle autograd (the reference the engine is tested against).
    Candle,
}

impl DecoderEngine {
    pub fn name(self) -> &'static str {
        match self {
            DecoderEngine::Fused => "fused",
            DecoderEngine::Candle => "candle",
        }
    }

    /// Parses `fused` or `candle`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "fused" => Ok(DecoderEngine::Fused),
            "candle" => Ok(DecoderEngine::Candle),
            other => Err(DecoderError::input(format!(
                "unknown engine `{other}`; use `fused` or `candle`"
            ))),
        }
    }
}

/// Hyper-parameters of [`train_decoder`]. Everything except the budget fields
/// ([`lcm_train::run::BUDGET_FIELDS`]: steps, stopping point, time budget, validation and
/// checkpoint cadence, checkpoints kept) and the engine must match on resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderTrainConfig {
    pub layers: usize,
    /// Model dimension; `None`: the encoder's dimension (the concept is the memory as is).
    pub dim: Option<usize>,
    pub heads: usize,
    pub ffn: usize,
    /// BPE vocabulary size (specials included).
    pub vocab_size: usize,
    /// Longest token sequence (prompt + pieces); longer sentences are truncated.
    pub max_seq_len: usize,
    /// Sentences per batch.
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Final learning rate as a fraction of `lr`.
    pub final_lr_scale: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub clip: f64,
    pub label_smoothing: f64,
    /// Total optimiser steps (the cosine schedule spans them).
    pub steps: u64,
    pub seed: u64,
    /// Documents held out (by id hash, as `lcm train`).
    pub valid_fraction: f64,
    /// Held-out sentences scored by the periodic validation loss.
    pub valid_sentences: usize,
    /// Validation every N steps (0: only at the end).
    #[serde(default)]
    pub eval_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    #[serde(default)]
    pub keep_last: usize,
    /// Wall-clock budget in seconds (the step that spends it is validated and checkpointed).
    #[serde(default)]
    pub max_seconds: Option<f64>,
    /// Stop after this step (with a checkpoint) although the schedule spans `steps`.
    #[serde(default)]
    pub stop_at: Option<u64>,
    /// Which code computes the steps (configurations written before the engine existed
    /// read as the default, `fused`).
    #[serde(default)]
    pub engine: DecoderEngine,
}

impl Default for DecoderTrainConfig {
    fn default() -> Self {
        Self {
            layers: 4,
            dim: None,
            heads: 6,
            ffn: 1536,
            vocab_size: 8192,
            max_seq_len: 128,
            batch_size: 64,
            lr: 1e-3,
            warmup_steps: 200,
            final_lr_scale: 0.05,
            weight_decay: 0.01,
            clip: 1.0,
            label_smoothing: 0.1,
            steps: 2000,
            seed: 0,
            valid_fraction: 0.01,
            valid_sentences: 512,
            eval_every: 100,
            checkpoint_every: 200,
            keep_last: 2,
            max_seconds: None,
            stop_at: None,
            engine: DecoderEngine::default(),
        }
    }
}

impl DecoderTrainConfig {
    /// Refuses settings no run could train with, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("layers", self.layers),
            ("heads", self.heads),
            ("ffn", self.ffn),
            ("batch size", self.batch_size),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(DecoderError::input(format!("{name} must be at least 1")));
            }
        }
        if self.steps == 0 {
            return Err(DecoderError::input("steps must be at least 1"));
        }
        if self.max_seq_len < 2 {
            return Err(DecoderError::input(
                "max_seq_len must be at least 2 (prompt + </s>)",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(DecoderError::input(format!(
                "lr must be positive, got {}",
                self.lr
            )));
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err(DecoderError::input(format!(
                "clip must be positive, got {}",
                self.clip
            )));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(DecoderError::input(format!(
                "label smoothing must be in [0, 1), got {}",
                self.label_smoothing
            )));
        }
        if let Some(s) = self.max_seconds
            && !(s.is_finite() && s > 0.0)
        {
            return Err(DecoderError::input(format!(
                "the time budget must be positive, got {s}"
            )));
        }
        Ok(())
    }

    /// The cosine schedule over `steps` (warm-up capped below `steps`).
    pub fn schedule(&self) -> Result<LrSchedule> {
        let s = LrSchedule::Cosine {
            lr: self.lr,
            start_lr: 0.0,
            warmup_steps: self.warmup_steps.min(self.steps - 1),
            max_steps: self.steps,
            final_lr_scale: self.final_lr_scale,
        };
        s.validate()?;
        Ok(s)
    }
}

/// One optimiser step, as written to `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderStepMetrics {
    pub step: u64,
    /// Training objective (label-smoothed cross-entropy per target token).
    pub loss: f64,
    /// Cross-entropy without smoothing on the batch.
    pub nll: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Target tokens in the batch.
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub seconds: f64,
    /// The engine that computed the step: `fused` or `candle` (empty in metrics written
    /// before the engine existed).
    #[serde(default)]
    pub engine: String,
    /// Mean held-out cross-entropy per token (no smoothing), on validation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
}

/// What one call of [`train_decoder`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecoderTrainSummary {
    pub start_step: u64,
    pub final_step: u64,
    pub last_loss: Option<f64>,
    pub last_valid_loss: Option<f64>,
    pub tokens: u64,
    pub seconds: f64,
    pub train_seconds: f64,
    pub num_parameters: usize,
    pub train_sentences: usize,
    pub valid_sentences: usize,
    pub truncated: usize,
    pub vocab_size: usize,
    pub model: PathBuf,
}

/// Events [`train_decoder`] reports besides steps.
pub enum TrainEvent<'a> {
    /// A phase of preparation began (loading, tokenizer, tokenising).
    Phase(&'a str),
    /// Training starts at `start` of `total` steps.
    Start {
        start: u64,
        total: u64,
    },
    Step(&'a DecoderStepMetrics),
}

/// Trains (or with `resume`, continues) a decoder on the sentences of the store at
/// `store_path` into `out_dir`. `progress` sees the phases and every step.
///
/// The cheap refusals come before the tokenizer is trained: `resume` without a checkpoint,
/// and a fresh run into a folder that already holds checkpoints. On resume the tokenizer is
/// the run's `tokenizer.json`; the loop then refuses a checkpoint of other settings.
pub fn train_decoder(
    config: &DecoderTrainConfig,
    store_path: &Path,
    out_dir: &Path,
    resume: bool,
    progress: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<DecoderTrainSummary> {
    let started = Instant::now();
    config.validate()?;
    let device = Device::Cpu;

    progress(TrainEvent::Phase("reading the store"));
    let data = SentenceSplit::load(store_path, config.valid_fraction)?;
    if data.train_texts.is_empty() {
        return Err(DecoderError::file(
            store_path,
            "no training sentences (all empty or held out); use a larger store or a smaller \
             --valid-fraction",
        ));
    }
    tracing::info!(
        train = data.train_texts.len(),
        held_out = data.valid_texts.len(),
        duplicates = data.duplicates,
        removed_held_out = data.removed_held_out,
        empty = data.skipped_empty,
        "sentences loaded"
    );
    fs::create_dir_all(out_dir).map_err(|e| DecoderError::file(out_dir, e.to_string()))?;
    let checkpoints = RunDir::new(out_dir).checkpoints(config.keep_last);
    let newest_checkpoint = checkpoints.steps()?.last().copied();
    let tokenizer_path = out_dir.join(TOKENIZER_FILE);
    let tokenizer = if resume {
        if newest_checkpoint.is_none() {
            return Err(DecoderError::file(
                checkpoints.dir(),
                "nothing to resume: no checkpoint; run without --resume",
            ));
        }
        DecoderTokenizer::open(&tokenizer_path)?
    } else {
        if newest_checkpoint.is_some() {
            return Err(DecoderError::file(
                checkpoints.dir(),
                "already holds checkpoints; pass --resume or choose another output folder",
            ));
        }
        progress(TrainEvent::Phase("training the tokenizer"));
        let t = DecoderTokenizer::train(&data.train_texts, config.vocab_size)?;
        t.save(&tokenizer_path)?;
        t
    };
    let vocab = tokenizer.vocab_size();
    let model_cfg = model_config(config, data.dim, vocab)?;

    progress(TrainEvent::Phase("tokenising"));
    let max_pieces = config.max_seq_len - PROMPT.len();
    let (train_pieces, truncated) = tokenizer.encode_all(&data.train_texts, max_pieces)?;
    let n_valid = data.valid_texts.len().min(config.valid_sentences);
    let (valid_pieces, _) = tokenizer.encode_all(&data.valid_texts[..n_valid], max_pieces)?;
    if truncated > 0 {
        tracing::warn!(
            truncated,
            max_seq_len = config.max_seq_len,
            "training sentences longer than max_seq_len were truncated"
        );
    }

    let varmap = VarMap::new();
    let model = SonarDecoder::new(
        &model_cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    init_weights(&varmap, config.seed)?;
    let num_parameters: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    let mut opt = AdamW::from_varmap(
        &varmap,
        AdamWConfig {
            lr: config.lr,
            weight_decay: config.weight_decay,
            ..AdamWConfig::default()
        },
        default_decay_filter,
    )?;
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
        identity: identity(config, &data, &model_cfg, vocab)?,
        started,
        plot_title: PLOT_TITLE.to_string(),
    };
    // The loop resumes from the newest checkpoint; the bar starts there.
    progress(TrainEvent::Start {
        start: if resume {
            newest_checkpoint.unwrap_or(0)
        } else {
            0
        },
        total: spec.cadence.last_step(),
    });
    let fused = fused_engine(config.engine, &model_cfg, &varmap)?;
    let mut trainer = DecoderTrainer {
        model,
        fused,
        config,
        data: &data,
        lengths: train_pieces.iter().map(Vec::len).collect(),
        plan: Vec::new(),
        train_pieces,
        valid_pieces,
        position: DataPosition::default(),
        device,
        tokens: 0,
        last_valid_loss: None,
    };
    trainer.seek(DataPosition::default())?;
    let summary = lcm_train::run::run(spec, &varmap, &mut opt, &mut trainer, &mut |metrics| {
        progress(TrainEvent::Step(metrics))
    })?;

    let model_path = out_dir.join(MODEL_FILE);
    if summary.final_step > summary.start_step || !model_path.exists() {
        save_weights(&varmap, &model_path)?;
    }
    let meta = DecoderMeta {
        format: FORMAT.to_string(),
        encoder_id: data.encoder_id.clone(),
        dim: data.dim,
        config: model_cfg,
        prompt: PROMPT.to_vec(),
        tokenizer: TokenizerInfo {
            file: TOKENIZER_FILE.to_string(),
            kind: "byte-level BPE".to_string(),
            vocab_size: vocab,
            special_tokens: SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect(),
        },
        valid_fraction: config.valid_fraction,
        store: store_path.display().to_string(),
        step: summary.final_step,
        train_sentences: data.train_texts.len(),
        train: config.clone(),
    };
    meta.write(out_dir)?;
    Ok(DecoderTrainSummary {
        start_step: summary.start_step,
        final_step: summary.final_step,
        last_loss: summary.last.as_ref().map(|m| m.loss),
        last_valid_loss: trainer.last_valid_loss,
        tokens: trainer.tokens,
        seconds: summary.seconds,
        train_seconds: summary.train_seconds,
        num_parameters,
        train_sentences: data.train_texts.len(),
        valid_sentences: n_valid,
        truncated,
        vocab_size: vocab,
        model: model_path,
    })
}

/// What a checkpoint must match to be resumed: the store's space, the architecture, and
/// the settings (the configuration without its budget fields, plus the vocabulary the
/// tokenizer actually learnt, which may be smaller than the requested one).
fn identity(
    config: &DecoderTrainConfig,
    data: &SentenceSplit,
    model_cfg: &SonarDecoderConfig,
    vocab: usize,
) -> Result<Identity> {
    let serialise = |e: serde_json::Error| DecoderError::input(format!("serialising: {e}"));
    let mut settings = settings_without_budget(config, RESUMABLE_FIELDS)?;
    if let serde_json::Value::Object(map) = &mut settings {
        map.insert("tokenizer_vocab_size".into(), vocab.into());
    }
    Ok(Identity {
        space_id: data.encoder_id.clone(),
        model_config: serde_json::to_value(model_cfg).map_err(serialise)?,
        settings,
        config: serde_json::to_value(config).map_err(serialise)?,
        normalizer: None,
    })
}

/// The decoder's half of the training loop: batches in the seeded epoch plan, the
/// teacher-forced step, the held-out loss.
struct DecoderTrainer<'a> {
    model: SonarDecoder,
    /// The fused engine bound to the model's `Var`s; `None`: candle autograd.
    fused: Option<FusedDecoder>,
    config: &'a DecoderTrainConfig,
    data: &'a SentenceSplit,
    train_pieces: Vec<Vec<u32>>,
    /// Pieces of the held-out sentences scored by validation.
    valid_pieces: Vec<Vec<u32>>,
    /// Piece counts of the training sentences (the plan groups similar lengths).
    lengths: Vec<usize>,
    /// Batches of `position.epoch`.
    plan: Vec<Vec<usize>>,
    /// The next batch: `plan[position.batch_index]`.
    position: DataPosition,
    device: Device,
    /// Target tokens trained on in this call.
    tokens: u64,
    last_valid_loss: Option<f64>,
}

impl Trainer for DecoderTrainer<'_> {
    type Metrics = DecoderStepMetrics;
    type Error = DecoderError;

    fn step(&mut self, step: Step<'_>) -> Result<Option<DecoderStepMetrics>> {
        let t0 = Instant::now();
        if self.position.batch_index as usize >= self.plan.len() {
            self.seek(DataPosition {
                epoch: self.position.epoch + 1,
                batch_index: 0,
            })?;
        }
        let rows = &self.plan[self.position.batch_index as usize];
        self.position.batch_index += 1;
        let data = self.data;
        let batch = make_batch(
            rows,
            &self.train_pieces,
            &data.train_vectors,
            data.dim,
            &self.device,
        )?;
        let clip = self.config.clip;
        let (loss_value, nll, grad_norm) = if let Some(engine) = self.fused.as_mut() {
            let out = engine.train_step(
                step.opt,
                &batch.for_engine(self.config.label_smoothing),
                clip,
                step.index + 1,
            )?;
            tracing::debug!(
                step = step.index + 1,
                forward_backward_s = out.gradient_seconds,
                optimizer_s = t0.elapsed().as_secs_f64() - out.gradient_seconds,
                replicas = engine.replicas(),
                "step timing (fused)"
            );
            (out.loss.mean(), out.loss.nll_mean(), out.grad_norm)
        } else {
            let logits = self
                .model
                .forward_train(&batch.conditioning, &batch.input)?;
            let (loss, nll_sum, count) = token_loss(
                &logits,
                &batch.target,
                SpecialIds::SONAR.pad,
                self.config.label_smoothing,
            )?;
            let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss_value.is_finite() {
                return Err(DecoderError::Training(format!(
                    "non-finite loss {loss_value} at step {}; lower --lr",
                    step.index + 1
                )));
            }
            let t_forward = t0.elapsed().as_secs_f64();
            let mut grads = loss.backward()?;
            let t_backward = t0.elapsed().as_secs_f64();
            let grad_norm = step.opt.clip_grad_norm(&mut grads, clip)?;
            step.opt.step(&grads)?;
            drop(grads);
            tracing::debug!(
                step = step.index + 1,
                forward_s = t_forward,
                backward_s = t_backward - t_forward,
                optimizer_s = t0.elapsed().as_secs_f64() - t_backward,
                "step timing"
            );
            (loss_value, nll_sum / count as f64, grad_norm)
        };
        self.tokens += batch.tokens as u64;
        let elapsed = t0.elapsed().as_secs_f64().max(1e-9);
        Ok(Some(DecoderStepMetrics {
            step: step.index + 1,
            loss: loss_value,
            nll,
            lr: step.lr,
            grad_norm,
            tokens: batch.tokens,
            tokens_per_s: batch.tokens as f64 / elapsed,
            seconds: elapsed,
            engine: if self.fused.is_some() {
                DecoderEngine::Fused
            } else {
                DecoderEngine::Candle
            }
            .name()
            .into(),
            valid_loss: None,
        }))
    }

    fn validate(&mut self, metrics: &mut DecoderStepMetrics) -> Result<()> {
        if self.valid_pieces.is_empty() {
            return Ok(());
        }
        metrics.valid_loss = validation_loss(
            &self.model,
            self.fused.as_mut(),
            &self.valid_pieces,
            &self.data.valid_vectors,
            self.data.dim,
            self.config.batch_size,
            &self.device,
        )?;
        if metrics.valid_loss.is_some() {
            self.last_valid_loss = metrics.valid_loss;
        }
        Ok(())
    }

    fn data_position(&self) -> DataPosition {
        self.position
    }

    fn seek(&mut self, position: DataPosition) -> Result<()> {
        self.plan = epoch_plan(
            &self.lengths,
            self.config.batch_size,
            self.config.seed,
            position.epoch,
        );
        self.position = position;
        Ok(())
    }
}

/// The model config for `config` and the concepts' dimension.
fn model_config(
    config: &DecoderTrainConfig,
    dim: usize,
    vocab: usize,
) -> Result<SonarDecoderConfig> {
    let model_dim = config.dim.unwrap_or(dim);
    if model_dim != dim {
        return Err(DecoderError::input(format!(
            "the model dimension ({model_dim}) must equal the encoder's ({dim}): the concept \
             is the decoder's cross-attention memory as is"
        )));
    }
    if !model_dim.is_multiple_of(config.heads) {
        return Err(DecoderError::input(format!(
            "the model dimension {model_dim} is not divisible by {} heads",
            config.heads
        )));
    }
    Ok(SonarDecoderConfig {
        vocab_size: vocab,
        model_dim,
        num_layers: config.layers,
        num_heads: config.heads,
        ffn_inner_dim: config.ffn,
        max_seq_len: config.max_seq_len,
        pad_idx: SpecialIds::SONAR.pad as usize,
    })
}

/// Mean unsmoothed cross-entropy per token over the held-out examples, on the fused
/// engine when given.
fn validation_loss(
    model: &SonarDecoder,
    mut fused: Option<&mut FusedDecoder>,
    pieces: &[Vec<u32>],
    vectors: &[f32],
    dim: usize,
    batch_size: usize,
    device: &Device,
) -> Result<Option<f64>> {
    let (mut sum, mut count) = (0.0, 0usize);
    if let Some(engine) = fused.as_deref_mut() {
        engine.refresh()?;
    }
    let rows: Vec<usize> = (0..pieces.len()).collect();
    for chunk in rows.chunks(batch_size) {
        let batch = make_batch(chunk, pieces, vectors, dim, device)?;
        let (nll, n) = if let Some(engine) = fused.as_deref_mut() {
            let loss = engine.loss(&batch.for_engine(0.0))?;
            (loss.nll_sum, loss.count)
        } else {
            let logits = model.forward_train(&batch.conditioning, &batch.input)?;
            let (_, nll, n) =
                token_loss(&logits.detach(), &batch.target, SpecialIds::SONAR.pad, 0.0)?;
            (nll, n)
        };
        sum += nll;
        count += n;
    }
    Ok((count > 0).then(|| sum / count as f64))
}

/// The fused engine for the decoder when `engine` asks for it and covers the model;
/// otherwise `None` (candle autograd), saying why once.
fn fused_engine(
    engine: DecoderEngine,
    model_cfg: &SonarDecoderConfig,
    varmap: &VarMap,
) -> Result<Option<FusedDecoder>> {
    if engine == DecoderEngine::Candle {
        return Ok(None);
    }
    match FusedDecoder::new(model_cfg, varmap) {
        Ok(fused) => Ok(Some(fused)),
        Err(EngineError::Unsupported(why)) => {
            tracing::warn!("training the decoder on candle autograd: {why}");
            Ok(None)
        }
        Err(e) => Err(engine_error(e)),
    }
}

/// Seeded initialisation (the var builder creates every variable as zeros): matrices and
/// the embedding `N(0, 1/fan_in)` (fan_in = second dimension; for the embedding that is
/// fairseq2's `model_dim^-0.5`), layer-norm gains 1, biases kept at 0. One
/// [`lcm_util::random::standard_normal`] per element, variables in name order on the
/// loop's initialisation stream ([`lcm_train::run::reinit_vars`]).
fn init_weights(varmap: &VarMap, seed: u64) -> Result<()> {
    lcm_train::run::reinit_vars(varmap, seed, |name, var, rng| {
        let fresh = match *var.dims() {
            [rows, fan_in] => {
                let std = 1.0 / (fan_in as f64).sqrt();
                let values: Vec<f32> = (0..rows * fan_in)
                    .map(|_| (lcm_util::random::standard_normal(rng) * std) as f32)
                    .collect();
                Tensor::from_vec(values, (rows, fan_in), var.device())?
            }
            [n] if name.ends_with("weight") => Tensor::ones(n, DType::F32, var.device())?,
            _ => return Ok(None),
        };
        Ok(Some(fresh))
    })?;
    Ok(())
}

/// Writes the weights under fairseq2 key names, atomically.
fn save_weights(varmap: &VarMap, path: &Path) -> Result<()> {
    lcm_util::fs::replace_with(path, |tmp| {
        varmap
            .save(tmp)
            .map_err(|e| std::io::Error::other(format!("writing weights: {e}")))
    })?;
    Ok(())
}
