//! The training loop: batches from a concept store, loss, backward, clipping, AdamW with a
//! cosine schedule, periodic validation, `metrics.jsonl`, and resumable checkpoints.
//!
//! Determinism: every random draw (weight initialisation, diffusion timesteps and noise,
//! CFG dropout) comes from a [`TrainRng`]; the data order comes from the seeded
//! [`Batcher`]. A run interrupted at a checkpoint and resumed yields the same weights as an
//! uninterrupted one.
//!
//! Layout of `out_dir`:
//!
//! ```text
//! metrics.jsonl       one JSON object per optimiser step (valid_loss on eval steps)
//! checkpoints/        CheckpointManager directory (step-N/, latest)
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::batch::{
    BatchPosition, Batcher, BatcherConfig, DEFAULT_MAX_SEQ_LEN, DatasetConfig, SplitDataset,
    fnv1a64,
};
use lcm_data::store::ConceptStore;
use lcm_model::base_lcm::{BaseLcm, BaseLcmConfig, SummedLoss};
use lcm_model::diffusion::{NoiseSchedule, NoiseScheduleConfig};
use lcm_model::generate::Lcm;
use lcm_model::one_tower::{OneTowerConfig, OneTowerLcm};
use lcm_model::presets;
use lcm_model::two_tower::{TwoTowerConfig, TwoTowerLcm, standard_normal};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    CheckpointManager, DataPosition, NormalizerRef, RngState, TOOL_VERSION, TrainRng, TrainState,
    new_rng,
};
use crate::optim::{AdamW, AdamWConfig, default_decay_filter};
use crate::schedule::LrSchedule;
use crate::{Result, TrainError, io_err};

/// File name of the metrics log inside `out_dir`.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Sub-directory of `out_dir` holding the checkpoints.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// Mixed into the seed of the validation RNG so that it never shares a stream with training.
const EVAL_SALT: u64 = 0x5eed_0e7a_1000_0001;
/// ChaCha stream used for weight initialisation (training draws use stream 0).
const INIT_STREAM: u64 = 1;

/// Which architecture to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Base-LCM: MSE regression of the next concept.
    Base,
    /// Two-Tower diffusion LCM (contextualizer + denoiser).
    TwoTower,
    /// One-Tower diffusion LCM.
    OneTower,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Base => "base",
            ModelKind::TwoTower => "two-tower",
            ModelKind::OneTower => "one-tower",
        }
    }

    pub fn is_diffusion(self) -> bool {
        !matches!(self, ModelKind::Base)
    }
}

impl std::str::FromStr for ModelKind {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "base" | "base-lcm" => Ok(ModelKind::Base),
            "two-tower" | "two_tower" => Ok(ModelKind::TwoTower),
            "one-tower" | "one_tower" => Ok(ModelKind::OneTower),
            other => Err(TrainError::Config(format!(
                "unknown model `{other}`; expected base, two-tower or one-tower"
            ))),
        }
    }
}

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
        }
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
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
    pub concepts_per_s: f64,
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

/// A resolved model configuration (preset with the store's input dimension).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum ModelConfig {
    Base(BaseLcmConfig),
    TwoTower(TwoTowerConfig),
    OneTower(OneTowerConfig),
}

impl ModelConfig {
    pub(crate) fn resolve(kind: ModelKind, preset: &str, input_dim: usize) -> Result<Self> {
        let unknown = || {
            TrainError::Config(format!(
                "no `{preset}` preset for the {} model; try tiny, small or 1.6b",
                kind.name()
            ))
        };
        let p = preset.to_ascii_lowercase();
        let mut cfg = match (kind, p.as_str()) {
            (ModelKind::Base, "tiny") => ModelConfig::Base(presets::base_lcm_tiny()),
            (ModelKind::Base, "small") => ModelConfig::Base(presets::base_lcm_small()),
            (ModelKind::Base, "1.6b") => ModelConfig::Base(presets::base_lcm_1_6b()),
            (ModelKind::TwoTower, "tiny") => ModelConfig::TwoTower(presets::two_tower_tiny()),
            (ModelKind::TwoTower, "small") => ModelConfig::TwoTower(presets::two_tower_small()),
            (ModelKind::TwoTower, "1.6b") => ModelConfig::TwoTower(presets::two_tower_1_6b()),
            (ModelKind::TwoTower, "7b") => ModelConfig::TwoTower(presets::two_tower_7b()),
            (ModelKind::OneTower, "tiny") => ModelConfig::OneTower(presets::one_tower_tiny()),
            (ModelKind::OneTower, "small") => ModelConfig::OneTower(presets::one_tower_small()),
            (ModelKind::OneTower, "1.6b") => ModelConfig::OneTower(presets::one_tower_1_6b()),
            _ => return Err(unknown()),
        };
        match &mut cfg {
            ModelConfig::Base(c) => c.input_dim = input_dim,
            ModelConfig::TwoTower(c) => c.input_dim = input_dim,
            ModelConfig::OneTower(c) => c.input_dim = input_dim,
        }
        Ok(cfg)
    }

    fn max_seq_len(&self) -> usize {
        match self {
            ModelConfig::Base(c) => c.decoder.max_seq_len,
            ModelConfig::TwoTower(c) => c.max_seq_len,
            ModelConfig::OneTower(c) => c.max_seq_len,
        }
    }

    /// Reads back what [`Self::to_json`] wrote into a checkpoint.
    pub(crate) fn from_json(value: &serde_json::Value) -> Result<(ModelKind, String, Self)> {
        let bad = |what: String| TrainError::Config(format!("checkpoint model config: {what}"));
        let kind: ModelKind =
            serde_json::from_value(value["kind"].clone()).map_err(|e| bad(format!("kind: {e}")))?;
        let preset = value["preset"].as_str().unwrap_or_default().to_string();
        let config = value["config"].clone();
        let parsed = match kind {
            ModelKind::Base => serde_json::from_value(config).map(ModelConfig::Base),
            ModelKind::TwoTower => serde_json::from_value(config).map(ModelConfig::TwoTower),
            ModelKind::OneTower => serde_json::from_value(config).map(ModelConfig::OneTower),
        }
        .map_err(|e| bad(e.to_string()))?;
        Ok((kind, preset, parsed))
    }

    pub(crate) fn to_json(&self, kind: ModelKind, preset: &str) -> Result<serde_json::Value> {
        let config = serde_json::to_value(self)
            .map_err(|e| TrainError::Config(format!("serialising model config: {e}")))?;
        Ok(serde_json::json!({ "kind": kind, "preset": preset, "config": config }))
    }
}

/// Builds the model (a fresh [`VarMap`]-backed one) for a resolved configuration.
pub(crate) fn build_model(cfg: &ModelConfig, vb: VarBuilder) -> Result<Lcm> {
    let schedule = || {
        NoiseSchedule::new(NoiseScheduleConfig::default())
            .map_err(|e| TrainError::Config(format!("noise schedule: {e}")))
    };
    Ok(match cfg {
        ModelConfig::Base(c) => Lcm::Base(BaseLcm::new(c, vb)?),
        ModelConfig::TwoTower(c) => Lcm::TwoTower(TwoTowerLcm::new(c, vb)?, schedule()?),
        ModelConfig::OneTower(c) => Lcm::OneTower(OneTowerLcm::new(c, vb)?, schedule()?),
    })
}

/// Shortest document a model can learn from: Base-LCM needs a (context, target) pair.
fn min_len(model: &Lcm) -> usize {
    match model {
        Lcm::Base(_) => 2,
        _ => 1,
    }
}

/// The training objective of any variant, randomness (timesteps, noise, CFG dropout) from
/// `rng`.
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

/// Replaces candle's unseeded random initialisation with seeded draws: every variable whose
/// values are not all equal (i.e. was randomly initialised) is refilled with `N(0, σ²)`,
/// σ = 1/√fan_in for matrices (fan_in = second dimension), 0.02 for the learned position
/// table and for vectors. Constant inits (norm gains, zero modulators and biases) are kept.
/// Variables are visited in name order.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let mut rng = new_rng(seed);
    rng.set_stream(INIT_STREAM);
    let mut named: Vec<_> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Config("variable map lock poisoned".into()))?;
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in named {
        let values = var.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let Some(&first) = values.first() else {
            continue;
        };
        if values.iter().all(|&v| v == first) {
            continue;
        }
        let std = match var.dims() {
            [_, fan_in] if !name.contains("pos_embed") => 1.0 / (*fan_in as f64).sqrt(),
            _ => 0.02,
        };
        let fresh = (standard_normal(var.dims(), &mut rng, var.dtype(), var.device())? * std)?;
        var.set(&fresh)?;
    }
    Ok(())
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
    format!("fnv1a64:{:016x}", fnv1a64(&bytes))
}

/// Mean validation loss over one pass of `batcher`, with a fixed RNG so that evaluations
/// at different steps are comparable.
fn validate(net: &Lcm, batcher: &Batcher, seed: u64, cfg_p: f64) -> Result<Option<f64>> {
    let mut rng = new_rng(seed ^ EVAL_SALT);
    let (mut sum, mut count) = (0.0f64, 0.0f64);
    for batch in batcher.epoch(0) {
        let batch = batch?;
        if batch.max_len() < min_len(net) {
            continue;
        }
        let loss = model_loss(net, &batch.x, &batch.mask, cfg_p, &mut rng)?;
        sum += loss.sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        count += loss.count;
    }
    Ok((count > 0.0).then(|| sum / count))
}

/// Keeps the lines of a `metrics.jsonl` whose `step` is at most `max_step` (what a resumed run
/// reproduces from its checkpoint on would otherwise be logged twice). Every resumable
/// trainer (LCM, world model, concept decoder) uses it; the file is replaced atomically.
pub fn truncate_metrics(path: &Path, max_step: u64) -> Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= max_step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let tmp = path.with_extension("jsonl.tmp");
    fs::write(&tmp, kept).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Trains (or, with `resume`, continues training) a model on the concept store at
/// `store_path`. `normalizer` must be fitted in the store's embedding space; `eos` is the
/// raw (unnormalised) embedding of [`lcm_data::batch::EOS_TEXT`] by the store's encoder.
/// `progress` is called after every optimiser step.
pub fn train(
    config: &TrainConfig,
    store_path: &Path,
    normalizer: &RobustNormalizer,
    eos: Vec<f32>,
    out_dir: &Path,
    resume: bool,
    progress: &mut dyn FnMut(&StepMetrics),
) -> Result<TrainSummary> {
    config.validate()?;
    let started = Instant::now();
    let device = Device::Cpu;
    let store = ConceptStore::open(store_path)?;
    let encoder_id = store.meta.encoder_id.clone();
    let model_cfg = ModelConfig::resolve(config.model, &config.preset, store.meta.dim)?;
    let model_json = model_cfg.to_json(config.model, &config.preset)?;

    let max_seq_len = config
        .max_seq_len
        .unwrap_or(DEFAULT_MAX_SEQ_LEN.min(model_cfg.max_seq_len()));
    if max_seq_len > model_cfg.max_seq_len() {
        return Err(TrainError::Config(format!(
            "max_seq_len {max_seq_len} exceeds the model's {}",
            model_cfg.max_seq_len()
        )));
    }
    let split = SplitDataset::from_store(
        &store,
        normalizer,
        eos,
        DatasetConfig {
            max_seq_len,
            valid_fraction: config.valid_fraction,
        },
    )?;
    if split.train.is_empty() {
        return Err(TrainError::Config(format!(
            "the training split of {} is empty",
            store_path.display()
        )));
    }
    let batcher_cfg = BatcherConfig::new(config.max_concepts, config.seed);
    let valid = (!split.valid.is_empty())
        .then(|| Batcher::new(split.valid, batcher_cfg, device.clone()))
        .transpose()?;
    let train_batcher = Batcher::new(split.train, batcher_cfg, device.clone())?;

    let varmap = VarMap::new();
    let net = build_model(
        &model_cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    seeded_init(&varmap, config.seed)?;
    let num_parameters: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    let mut opt = AdamW::from_varmap(
        &varmap,
        AdamWConfig {
            lr: config.lr,
            ..AdamWConfig::default()
        },
        default_decay_filter,
    )?;
    let schedule = config.schedule()?;

    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let metrics_path = out_dir.join(METRICS_FILE);
    let ckpt = CheckpointManager::new(out_dir.join(CHECKPOINT_DIR), config.keep_last);
    let norm_ref = NormalizerRef {
        path: config.normalizer_path.clone().unwrap_or_default(),
        hash: normalizer_hash(normalizer),
    };

    let mut rng = new_rng(config.seed);
    let mut position = BatchPosition::default();
    let mut step = 0u64;
    let mut checkpoint = None;
    if resume {
        let state = ckpt
            .load_latest(&varmap, Some(&mut opt), &encoder_id)?
            .ok_or_else(|| {
                TrainError::Config(format!(
                    "nothing to resume: no checkpoint in {}",
                    ckpt.dir().display()
                ))
            })?;
        if state.model_config != model_json {
            return Err(TrainError::Config(format!(
                "the checkpoint's model ({}) differs from the requested one ({model_json})",
                state.model_config
            )));
        }
        if let Some(r) = &state.normalizer
            && r.hash != norm_ref.hash
        {
            return Err(TrainError::Config(format!(
                "the checkpoint was trained with another normaliser ({}); pass that one",
                r.path
            )));
        }
        rng = state.rng.restore()?;
        position = BatchPosition {
            epoch: state.data.epoch,
            index: state.data.batch_index as usize,
        };
        step = state.step;
        checkpoint = Some(ckpt.step_dir(step));
        truncate_metrics(&metrics_path, step)?;
    } else {
        if !ckpt.steps().unwrap_or_default().is_empty() {
            return Err(TrainError::Config(format!(
                "{} already holds checkpoints; resume it or choose another output directory",
                ckpt.dir().display()
            )));
        }
        fs::write(&metrics_path, b"").map_err(io_err(&metrics_path))?;
    }
    let start_step = step;
    let mut metrics_file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&metrics_path)
        .map_err(io_err(&metrics_path))?;

    let save = |step: u64, position: BatchPosition, rng: &TrainRng, opt: &AdamW| {
        let state = TrainState {
            step,
            rng: RngState::capture(rng),
            data: DataPosition {
                epoch: position.epoch,
                batch_index: position.index as u64,
            },
            encoder_id: encoder_id.clone(),
            normalizer: Some(norm_ref.clone()),
            tool_version: TOOL_VERSION.to_string(),
            model_config: model_json.clone(),
            extra: serde_json::json!({ "train_config": config }),
        };
        ckpt.save(&varmap, opt, &state)
    };

    let mut last_loss = None;
    let mut last_valid_loss = None;
    let mut concepts_total = 0u64;
    let mut batches = train_batcher.batches_from(position);
    let last_step = config.stop_at.unwrap_or(config.steps).min(config.steps);
    while step < last_step {
        let t0 = Instant::now();
        let batch = batches
            .next()
            .ok_or_else(|| TrainError::Config("the training split yields no batches".into()))??;
        position = batch.next;
        if batch.max_len() < min_len(&net) {
            continue;
        }
        let loss = model_loss(&net, &batch.x, &batch.mask, config.cfg_dropout, &mut rng)?;
        let mean = loss.mean()?;
        let loss_value = mean.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_value.is_finite() {
            return Err(TrainError::Optimizer(format!(
                "non-finite loss {loss_value} at step {}",
                step + 1
            )));
        }
        let mut grads = mean.backward()?;
        let grad_norm = opt.clip_grad_norm(&mut grads, config.clip)?;
        let lr = schedule.lr_at(step);
        opt.set_lr(lr);
        opt.step(&grads)?;
        step += 1;
        let concepts = batch.num_concepts();
        concepts_total += concepts as u64;
        let elapsed = t0.elapsed().as_secs_f64().max(1e-9);

        let out_of_time = config
            .max_seconds
            .is_some_and(|limit| started.elapsed().as_secs_f64() >= limit);
        let final_step = step == last_step || out_of_time;
        let eval_now = step == config.steps
            || final_step
            || (config.eval_every > 0 && step.is_multiple_of(config.eval_every));
        let valid_loss = match (&valid, eval_now) {
            (Some(v), true) => validate(&net, v, config.seed, config.cfg_dropout)?,
            _ => None,
        };
        if valid_loss.is_some() {
            last_valid_loss = valid_loss;
        }
        last_loss = Some(loss_value);
        let metrics = StepMetrics {
            step,
            loss: loss_value,
            lr,
            grad_norm,
            concepts,
            concepts_per_s: concepts as f64 / elapsed,
            valid_loss,
        };
        let line = serde_json::to_string(&metrics)
            .map_err(|e| TrainError::Config(format!("serialising metrics: {e}")))?;
        writeln!(metrics_file, "{line}").map_err(io_err(&metrics_path))?;
        metrics_file.flush().map_err(io_err(&metrics_path))?;
        progress(&metrics);

        if final_step
            || (config.checkpoint_every > 0 && step.is_multiple_of(config.checkpoint_every))
        {
            checkpoint = Some(save(step, position, &rng, &opt)?);
        }
        if out_of_time {
            tracing::info!(step, "time budget spent; stopping with a checkpoint");
            break;
        }
    }

    Ok(TrainSummary {
        start_step,
        final_step: step,
        last_loss,
        last_valid_loss,
        concepts: concepts_total,
        seconds: started.elapsed().as_secs_f64(),
        num_parameters,
        checkpoint,
        metrics: metrics_path,
    })
}
