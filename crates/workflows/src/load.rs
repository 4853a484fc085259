//! Loading a trained LCM from a checkpoint for generation and evaluation.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_model::generate::Lcm;

use crate::checkpoint::{CheckpointManager, STATE_FILE, TrainState, load_checkpoint};
use crate::trainer::{CHECKPOINT_DIR, ModelConfig, ModelKind, TrainConfig, build_model};
use crate::{Result, TrainError};

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
        return Err(TrainError::Config(format!(
            "no checkpoint at {}: pass a training output directory (lcm train --out), its \
             checkpoints/ directory or one checkpoints/step-N directory",
            path.display()
        )));
    }
    let manager = CheckpointManager::new(&dir, 0);
    let step = manager.steps()?.last().copied().ok_or_else(|| {
        TrainError::Config(format!(
            "{} holds no complete checkpoint; train with `lcm train --out {}` first",
            dir.display(),
            path.display()
        ))
    })?;
    Ok(manager.step_dir(step))
}

/// Loads the model of the checkpoint at `path` (see [`resolve_checkpoint`]). With
/// `expected_encoder`, a checkpoint trained in another embedding space is refused.
pub fn load_model(path: &Path, expected_encoder: Option<&str>) -> Result<LoadedModel> {
    let step_dir = resolve_checkpoint(path)?;
    let state_path = step_dir.join(STATE_FILE);
    let bytes = fs::read(&state_path).map_err(crate::io_err(&state_path))?;
    let peek: TrainState = serde_json::from_slice(&bytes).map_err(|e| TrainError::Corrupt {
        path: step_dir.clone(),
        reason: format!("invalid {STATE_FILE}: {e}"),
    })?;
    let (kind, preset, config) = ModelConfig::from_json(&peek.model_config)?;
    let varmap = VarMap::new();
    let model = build_model(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let encoder = expected_encoder.unwrap_or(&peek.encoder_id);
    let state = load_checkpoint(&step_dir, &varmap, None, encoder)?;
    // Rebuilt on detached tensors: operations on trainable variables record a backward
    // graph, and a 40-step sampling loop would keep every intermediate activation alive.
    let weights: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Config("variable map lock poisoned".into()))?
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
        .collect();
    drop(model);
    let model = build_model(
        &config,
        VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
    )?;
    let train_config = state
        .extra
        .get("train_config")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    Ok(LoadedModel {
        model,
        kind,
        preset,
        checkpoint: step_dir,
        state,
        train_config,
    })
}
