//! A trained LCM ready for generation and evaluation: the checkpoint a path designates,
//! its model rebuilt on detached weights ([`load_model`]), the normaliser it was trained
//! with, checked by hash ([`TrainedLcm`]), the encoder check, the end-of-text embedding
//! ([`eos_embedding`]) and the diffusion sampling settings ([`SamplingSettings`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_concept::ConceptEncoder;
use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::batch::EOS_TEXT;
use lcm_model::builder::{ModelConfig, ModelKind, build_model};
use lcm_model::diffusion::{SamplingOptions, TimestepSpacing};
use lcm_model::generate::{DiffusionSampling, Lcm};
use lcm_train::TrainError;
use lcm_train::checkpoint::{
    CheckpointManager, STATE_FILE, TrainState, load_checkpoint, load_weights,
};
use lcm_train::run::CHECKPOINT_DIR;
use serde::Serialize;

use crate::export::{ExportConfig, read_export_config};
use crate::train::{TrainConfig, normalizer_hash};
use crate::{Result, WorkflowError};

/// A model restored from a checkpoint, with what it was trained on.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: Lcm,
    pub kind: ModelKind,
    pub preset: String,
    /// The step directory the weights came from.
    pub checkpoint: PathBuf,
    pub state: TrainState,
    /// The training configuration recorded in the checkpoint (absent in checkpoints not
    /// written by the trainer).
    pub train_config: Option<TrainConfig>,
}

/// Finds the step directory `path` designates: a step directory itself, a checkpoint
/// directory (its newest step), or a training output directory (`OUT/checkpoints`, newest
/// step).
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join(STATE_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    let dir = if path.join(CHECKPOINT_DIR).is_dir() {
        path.join(CHECKPOINT_DIR)
    } else {
        path.to_path_buf()
    };
    if !dir.is_dir() {
        return Err(WorkflowError::Config(format!(
            "no checkpoint at {}: pass a training output directory (lcm train --out), its \
             checkpoints/ directory or one checkpoints/step-N directory",
            path.display()
        )));
    }
    let manager = CheckpointManager::new(&dir, 0);
    let step = manager.steps()?.last().copied().ok_or_else(|| {
        WorkflowError::Config(format!(
            "{} holds no complete checkpoint; train with `lcm train --out {}` first",
            dir.display(),
            path.display()
        ))
    })?;
    Ok(manager.step_dir(step))
}

/// The embedding space (encoder id) the checkpoint at `path` records, read without loading
/// its weights: what picks the encoder when a command is given none.
pub fn checkpoint_space_id(path: &Path) -> Result<String> {
    if let Some(export) = read_export_config(path)? {
        return Ok(export.space_id);
    }
    let step_dir = resolve_checkpoint(path)?;
    Ok(read_state(&step_dir)?.space_id)
}

/// The `state.json` of a step directory, without its weights.
fn read_state(step_dir: &Path) -> Result<TrainState> {
    let state_path = step_dir.join(STATE_FILE);
    let bytes = std::fs::read(&state_path).map_err(|source| TrainError::Io {
        path: state_path.clone(),
        source,
    })?;
    Ok(
        serde_json::from_slice(&bytes).map_err(|e| TrainError::Corrupt {
            path: step_dir.to_path_buf(),
            reason: format!("invalid {STATE_FILE}: {e}"),
        })?,
    )
}

/// Loads the model of the checkpoint at `path` (see [`resolve_checkpoint`]). With
/// `expected_space`, a checkpoint trained in another embedding space is refused.
pub fn load_model(path: &Path, expected_space: Option<&str>) -> Result<LoadedModel> {
    if let Some(export) = read_export_config(path)? {
        return load_exported(path, &export, expected_space);
    }
    let step_dir = resolve_checkpoint(path)?;
    let peek = read_state(&step_dir)?;
    let (kind, preset, config) = ModelConfig::from_json(&peek.model_config)?;
    let varmap = VarMap::new();
    let model = build_model(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let space = expected_space.unwrap_or(&peek.space_id);
    let state = load_checkpoint(&step_dir, &varmap, None, space)?;
    drop(model);
    finish_loading(&config, &varmap, kind, preset, step_dir, state)
}

/// Loads an `lcm export` folder: the model rebuilt from its `config.json`, the weights
/// from its `model.safetensors`.
fn load_exported(
    dir: &Path,
    export: &ExportConfig,
    expected_space: Option<&str>,
) -> Result<LoadedModel> {
    if let Some(space) = expected_space
        && space != export.space_id
    {
        return Err(WorkflowError::Train(TrainError::SpaceMismatch {
            path: dir.to_path_buf(),
            expected: space.to_string(),
            found: export.space_id.clone(),
        }));
    }
    let (kind, preset, config) = ModelConfig::from_json(&export.model_config)?;
    let varmap = VarMap::new();
    let model = build_model(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    load_weights(dir, &varmap)?;
    drop(model);
    finish_loading(
        &config,
        &varmap,
        kind,
        preset,
        dir.to_path_buf(),
        export.as_state(dir),
    )
}

/// The model rebuilt on detached copies of `varmap`'s loaded weights: operations on
/// trainable variables record a backward graph, and a 40-step sampling loop would keep
/// every intermediate activation alive.
fn finish_loading(
    config: &ModelConfig,
    varmap: &VarMap,
    kind: ModelKind,
    preset: String,
    checkpoint: PathBuf,
    state: TrainState,
) -> Result<LoadedModel> {
    let weights: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| WorkflowError::Config("variable map lock poisoned".into()))?
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
        .collect();
    let model = build_model(
        config,
        VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
    )?;
    // `config` since the shared training loop; `train_config` in older checkpoints.
    let train_config = ["config", "train_config"]
        .iter()
        .find_map(|key| state.extra.get(*key))
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    Ok(LoadedModel {
        model,
        kind,
        preset,
        checkpoint,
        state,
        train_config,
    })
}

/// A trained model with the normaliser it was trained with: everything needed to feed it
/// text and read its concepts.
pub struct TrainedLcm {
    pub loaded: LoadedModel,
    pub normalizer: RobustNormalizer,
}

/// Where the normaliser recorded as `recorded` is now. A relative path was relative to the
/// directory training ran in, which loading does not know: it is tried as given (from
/// the current directory), then against each directory above the checkpoint, and the
/// first existing file whose content hash is `hash` wins. So a run directory works from
/// anywhere, and keeps working when it moves together with its store. Without a match
/// the path as given is returned (and reported missing or refused by the caller).
fn recorded_normalizer(recorded: &Path, checkpoint: &Path, hash: &str) -> PathBuf {
    if recorded.is_absolute() || recorded.exists() {
        return recorded.to_path_buf();
    }
    let matches = |candidate: &Path| {
        candidate.is_file()
            && RobustNormalizer::load(candidate)
                .map(|n| normalizer_hash(&n) == hash)
                .unwrap_or(false)
    };
    let start = std::path::absolute(checkpoint).unwrap_or_else(|_| checkpoint.to_path_buf());
    start
        .ancestors()
        .map(|dir| dir.join(recorded))
        .find(|candidate| matches(candidate))
        .unwrap_or_else(|| recorded.to_path_buf())
}

impl TrainedLcm {
    /// Loads the checkpoint at `model` (a training output directory, its checkpoints/ or
    /// one step directory) and its normaliser (`normalizer`, else the path recorded at
    /// training time), refusing a normaliser other than the one it was trained with.
    pub fn load(model: &Path, normalizer: Option<&Path>) -> Result<Self> {
        let loaded = load_model(model, None).map_err(|source| WorkflowError::LoadModel {
            path: model.to_path_buf(),
            source: Box::new(source),
        })?;
        let recorded = loaded.state.normalizer.clone();
        let normalizer_path = match (normalizer, &recorded) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(r)) if !r.path.is_empty() => {
                recorded_normalizer(&PathBuf::from(&r.path), &loaded.checkpoint, &r.hash)
            }
            _ => {
                return Err(WorkflowError::Refused(format!(
                    "{} does not record its normaliser; pass --normalizer",
                    loaded.checkpoint.display()
                )));
            }
        };
        if !normalizer_path.exists() {
            return Err(WorkflowError::Refused(format!(
                "the model's normaliser {} does not exist (moved?); pass --normalizer PATH",
                normalizer_path.display()
            )));
        }
        let normalizer = RobustNormalizer::load(&normalizer_path)?;
        if let Some(r) = &recorded
            && r.hash != normalizer_hash(&normalizer)
        {
            return Err(WorkflowError::Refused(format!(
                "{} is not the normaliser {} was trained with ({}); pass that one with \
                 --normalizer",
                normalizer_path.display(),
                loaded.checkpoint.display(),
                r.path
            )));
        }
        Ok(Self { loaded, normalizer })
    }

    /// The model.
    pub fn model(&self) -> &Lcm {
        &self.loaded.model
    }

    /// The encoder space the model was trained in.
    pub fn encoder_id(&self) -> &str {
        &self.loaded.state.space_id
    }

    /// Refuses an encoder from another embedding space than the model's; `requested` is
    /// the name the user asked for, shown in the message.
    pub fn check_encoder(&self, encoder: &dyn ConceptEncoder, requested: &str) -> Result<()> {
        if encoder.id() != self.encoder_id() {
            return Err(WorkflowError::Refused(format!(
                "the model was trained on `{}` concepts but --encoder `{requested}` produces \
                 `{}`; pass the encoder it was trained with",
                self.encoder_id(),
                encoder.id()
            )));
        }
        Ok(())
    }

    /// A short description: kind, preset and step.
    pub fn label(&self) -> String {
        format!(
            "{} {} (step {})",
            self.loaded.kind.name(),
            self.loaded.preset,
            self.loaded.state.step
        )
    }
}

/// The raw (unnormalised) embedding of the end-of-text sentence [`EOS_TEXT`]: training
/// appends it to every document, generation stops when the model predicts it.
pub fn eos_embedding(encoder: &dyn ConceptEncoder) -> Result<Vec<f32>> {
    Ok(encoder
        .encode(&[EOS_TEXT], None)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// How a diffusion LCM samples a concept; the defaults are the paper's Two-Tower decoding
/// settings. Base-LCMs ignore them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SamplingSettings {
    /// DDIM denoising steps per concept.
    pub ddim_steps: usize,
    /// Classifier-free guidance scale (1 disables guidance).
    pub guidance_scale: f64,
    /// Guidance rescale factor (Lin et al. 2023).
    pub guidance_rescale: f64,
    /// Scale of the initial Gaussian noise.
    pub initial_noise_scale: f64,
    /// DDIM η (0: deterministic given the initial noise).
    pub eta: f64,
    /// Epsilon scaling of the DDIM update (1 disables it).
    pub epsilon_scaling: f64,
    /// Seed of the sampling noise.
    pub seed: u64,
}

impl SamplingSettings {
    /// These settings with a request's guidance scale and DDIM steps where it gives them.
    pub fn with_overrides(
        mut self,
        guidance_scale: Option<f64>,
        ddim_steps: Option<usize>,
    ) -> Self {
        if let Some(g) = guidance_scale {
            self.guidance_scale = g;
        }
        if let Some(steps) = ddim_steps {
            self.ddim_steps = steps;
        }
        self
    }
}

impl Default for SamplingSettings {
    fn default() -> Self {
        Self {
            ddim_steps: 40,
            guidance_scale: 3.0,
            guidance_rescale: 0.7,
            initial_noise_scale: 0.6,
            eta: 0.0,
            epsilon_scaling: 1.00045,
            seed: 0,
        }
    }
}

impl SamplingSettings {
    /// The sampler settings, refusing values that cannot be sampled reproducibly (the
    /// messages name the `lcm` flags, which have the fields' names).
    pub fn diffusion(&self) -> Result<DiffusionSampling> {
        if self.ddim_steps == 0 {
            return Err(WorkflowError::Refused(
                "--ddim-steps must be at least 1".into(),
            ));
        }
        if self.eta != 0.0 {
            // The sampler's stochastic term is not yet drawn from the seeded generator.
            return Err(WorkflowError::Refused(
                "--eta other than 0 is not supported yet (it would not be reproducible)".into(),
            ));
        }
        for (name, v) in [
            ("--guidance-scale", self.guidance_scale),
            ("--guidance-rescale", self.guidance_rescale),
            ("--initial-noise-scale", self.initial_noise_scale),
            ("--epsilon-scaling", self.epsilon_scaling),
        ] {
            if !v.is_finite() {
                return Err(WorkflowError::Refused(format!(
                    "{name} must be a finite number, got {v}"
                )));
            }
        }
        Ok(DiffusionSampling {
            steps: self.ddim_steps,
            spacing: TimestepSpacing::TrailingLcm,
            options: SamplingOptions {
                eta: self.eta,
                epsilon_scaling: (self.epsilon_scaling != 1.0).then_some(self.epsilon_scaling),
                initial_noise_scale: self.initial_noise_scale,
                guidance_scale: self.guidance_scale,
                guidance_rescale: self.guidance_rescale,
                ..SamplingOptions::default()
            },
        })
    }
}
