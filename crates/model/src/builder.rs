//! Which LCM to build: the architecture ([`ModelKind`]), its resolved configuration
//! ([`ModelConfig`], a preset with the store's concept dimension) and [`build_model`].
//! Checkpoints record `{kind, preset, config}` ([`ModelConfig::to_json`]), so a checkpoint
//! alone says how to rebuild its model.

use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::base_lcm::{BaseLcm, BaseLcmConfig};
use crate::diffusion::{NoiseSchedule, NoiseScheduleConfig};
use crate::generate::Lcm;
use crate::one_tower::{OneTowerConfig, OneTowerLcm};
use crate::presets;
use crate::two_tower::{TwoTowerConfig, TwoTowerLcm};

/// Errors choosing or building a model.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown model `{0}`; expected base, two-tower or one-tower")]
    UnknownKind(String),
    #[error("no `{preset}` preset for the {kind} model; try tiny, small or 1.6b")]
    UnknownPreset { kind: &'static str, preset: String },
    #[error("checkpoint model config: {0}")]
    BadConfig(String),
    #[error("noise schedule: {0}")]
    Schedule(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Which architecture.
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
    type Err = BuildError;
    fn from_str(s: &str) -> Result<Self, BuildError> {
        match s {
            "base" | "base-lcm" => Ok(ModelKind::Base),
            "two-tower" | "two_tower" => Ok(ModelKind::TwoTower),
            "one-tower" | "one_tower" => Ok(ModelKind::OneTower),
            other => Err(BuildError::UnknownKind(other.to_string())),
        }
    }
}

/// A resolved model configuration (preset with the store's input dimension).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ModelConfig {
    Base(BaseLcmConfig),
    TwoTower(TwoTowerConfig),
    OneTower(OneTowerConfig),
}

impl ModelConfig {
    /// The `preset` of `kind` with its input dimension replaced by `input_dim`.
    pub fn resolve(kind: ModelKind, preset: &str, input_dim: usize) -> Result<Self, BuildError> {
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
            _ => {
                return Err(BuildError::UnknownPreset {
                    kind: kind.name(),
                    preset: preset.to_string(),
                });
            }
        };
        match &mut cfg {
            ModelConfig::Base(c) => c.input_dim = input_dim,
            ModelConfig::TwoTower(c) => c.input_dim = input_dim,
            ModelConfig::OneTower(c) => c.input_dim = input_dim,
        }
        Ok(cfg)
    }

    /// The longest sequence the model's positions cover.
    pub fn max_seq_len(&self) -> usize {
        match self {
            ModelConfig::Base(c) => c.decoder.max_seq_len,
            ModelConfig::TwoTower(c) => c.max_seq_len,
            ModelConfig::OneTower(c) => c.max_seq_len,
        }
    }

    /// Reads back what [`Self::to_json`] wrote into a checkpoint.
    pub fn from_json(value: &serde_json::Value) -> Result<(ModelKind, String, Self), BuildError> {
        let bad = |what: String| BuildError::BadConfig(what);
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

    /// `{kind, preset, config}`, as recorded in checkpoints.
    pub fn to_json(&self, kind: ModelKind, preset: &str) -> Result<serde_json::Value, BuildError> {
        let config = serde_json::to_value(self)
            .map_err(|e| BuildError::BadConfig(format!("serialising: {e}")))?;
        Ok(serde_json::json!({ "kind": kind, "preset": preset, "config": config }))
    }
}

/// Builds the model for a resolved configuration on the variables of `vb`.
pub fn build_model(cfg: &ModelConfig, vb: VarBuilder) -> Result<Lcm, BuildError> {
    let schedule = || {
        NoiseSchedule::new(NoiseScheduleConfig::default())
            .map_err(|e| BuildError::Schedule(e.to_string()))
    };
    Ok(match cfg {
        ModelConfig::Base(c) => Lcm::Base(BaseLcm::new(c, vb)?),
        ModelConfig::TwoTower(c) => Lcm::TwoTower(TwoTowerLcm::new(c, vb)?, schedule()?),
        ModelConfig::OneTower(c) => Lcm::OneTower(OneTowerLcm::new(c, vb)?, schedule()?),
    })
}
