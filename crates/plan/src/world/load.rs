//! Loading a trained world model for planning: the newest checkpoint of a `lcm wm train`
//! run (or a given `step-N` directory), rebuilt on detached tensors.

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use lcm_train::checkpoint::CheckpointManager;
use lcm_train::run::{CHECKPOINT_DIR, CONFIG_FILE};

use super::jepa::Jepa;
use super::train::{WmError, WmTrainConfig};

/// A trained world model loaded for planning: weights are detached tensors, so inference
/// records no backward graph.
pub struct LoadedWorldModel {
    pub model: Jepa,
    pub config: WmTrainConfig,
    pub step: u64,
    pub checkpoint: PathBuf,
}

/// Loads the newest checkpoint of a run directory (or a `step-N` directory inside it).
pub fn load_world_model(run: &Path) -> Result<LoadedWorldModel, WmError> {
    let (run_dir, step_dir) = if run.join(CONFIG_FILE).is_file() {
        let ckpt = CheckpointManager::new(run.join(CHECKPOINT_DIR), 0);
        let step = *ckpt.steps()?.last().ok_or_else(|| WmError::Run {
            path: run.to_path_buf(),
            reason: "has no checkpoint yet; train with `lcm wm train` first".into(),
        })?;
        (run.to_path_buf(), ckpt.step_dir(step))
    } else if let Some(parent) = run.parent().and_then(Path::parent)
        && parent.join(CONFIG_FILE).is_file()
    {
        (parent.to_path_buf(), run.to_path_buf())
    } else {
        return Err(WmError::Run {
            path: run.to_path_buf(),
            reason: format!(
                "not a world-model run (no {CONFIG_FILE}); pass the --out directory of `lcm wm train`"
            ),
        });
    };
    let cfg_path = run_dir.join(CONFIG_FILE);
    let text = fs::read_to_string(&cfg_path).map_err(|source| WmError::Io {
        path: cfg_path.clone(),
        source,
    })?;
    let config: WmTrainConfig = serde_json::from_str(&text).map_err(|e| WmError::Run {
        path: cfg_path.clone(),
        reason: format!("invalid config: {e}"),
    })?;
    config.validate()?;
    let device = Device::Cpu;
    let varmap = VarMap::new();
    Jepa::new(
        &config.model,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    let state =
        lcm_train::checkpoint::load_checkpoint(&step_dir, &varmap, None, &config.space_id())?;
    let tensors = varmap
        .data()
        .lock()
        .map_err(|_| WmError::Config("variable map lock poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let model = Jepa::new(
        &config.model,
        VarBuilder::from_tensors(tensors, DType::F32, &device),
    )?;
    Ok(LoadedWorldModel {
        model,
        config,
        step: state.step,
        checkpoint: step_dir,
    })
}
