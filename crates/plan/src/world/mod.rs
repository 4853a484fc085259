//! World models a planner imagines with.
//!
//! A world model maps an observation to a latent and predicts the next latent from an action.
//! Planners only ever touch latents through this trait, so the same planner runs on the
//! exact simulator ([`OracleTwoRooms`], the "oracle planner" row of an evaluation) and on a
//! learned one.
//!
//! - this file: the [`WorldModel`] interface, [`PlanError`] and the Two-Rooms oracle (the
//!   PointMaze oracle lives with its environment);
//! - [`conv`]: the pixel encoder's convolutions (im2col + GEMM custom ops with both gradients);
//! - [`jepa`]: the JEPA world model (encoder, action-conditioned predictor, losses, collapse
//!   diagnostics, seeded initialisation);
//! - [`train`]: its trainer on the one training loop; [`load`]: loading a trained run;
//! - [`learned`]: a trained JEPA as a [`WorldModel`], and the cost-module pieces on its
//!   latents (latent distance, the probed hazard guardrail).

pub mod conv;
pub mod jepa;
pub mod learned;
pub mod load;
pub mod train;

pub use load::{LoadedWorldModel, load_world_model};
pub use train::{WmError, WmMetrics, WmTrainConfig, WmTrainSummary, train_world_model};

use crate::env::two_rooms::{Geometry, TwoRoomsConfig, Vec2, clip_action};

/// Errors from planning: bad observations, bad planner settings, or the environment refusing
/// a step during an MPC episode. All come from caller input, so they are reported, not
/// panicked on.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum PlanError {
    #[error("observation has {got} values, the world model expects {expected}")]
    Observation { expected: usize, got: usize },
    #[error("observation contains a non-finite value")]
    NonFiniteObservation,
    #[error("invalid planner configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Env(#[from] crate::env::EnvError),
    #[error("world model: {0}")]
    Model(String),
}

/// An encoder plus a one-step latent predictor.
pub trait WorldModel {
    /// The latent state. `Clone` because planners keep the predicted trajectory of the best
    /// candidate while sampling others.
    type Latent: Clone;

    /// Number of action components the predictor consumes.
    fn action_dim(&self) -> usize;

    /// Maps an observation (whatever the model consumes: a state vector or pixels) to a latent.
    fn encode(&self, obs: &[f32]) -> Result<Self::Latent, PlanError>;

    /// Predicts the latent after applying `action` in `z`.
    fn predict(&self, z: &Self::Latent, action: &[f32]) -> Self::Latent;

    /// Predicts the latents after each action of a flat `[H, A]` sequence (`z0` excluded:
    /// element `t` is the latent after action `t`). A trailing partial action is ignored.
    /// Learned models can override this with a batched forward pass.
    fn rollout(&self, z0: &Self::Latent, actions: &[f32]) -> Vec<Self::Latent> {
        let a_dim = self.action_dim().max(1);
        let mut out = Vec::with_capacity(actions.len() / a_dim);
        let mut z = z0.clone();
        for a in actions.chunks_exact(a_dim) {
            z = self.predict(&z, a);
            out.push(z.clone());
        }
        out
    }

    /// Rolls out many candidate sequences (each a flat `[H, A]` slice). The default just loops;
    /// a batched model overrides it to evaluate the population in one pass.
    fn rollout_batch(&self, z0: &Self::Latent, candidates: &[Vec<f32>]) -> Vec<Vec<Self::Latent>> {
        candidates.iter().map(|c| self.rollout(z0, c)).collect()
    }

    /// Rollout as a tensor computation, so gradients reach the actions (gradient-based
    /// planning): `actions` `[R, H, A]` → latents `[R, H', L]` (`H' = H` for a one-step model,
    /// more with frameskip). `None` when the model is not differentiable (the oracle).
    fn rollout_tensor(
        &self,
        _z0: &Self::Latent,
        _actions: &candle_core::Tensor,
    ) -> Option<candle_core::Result<candle_core::Tensor>> {
        None
    }

    /// The latent as a vector (what a differentiable cost compares); `None` if the latent
    /// is not a vector.
    fn latent_values(&self, _z: &Self::Latent) -> Option<Vec<f32>> {
        None
    }
}

/// The exact Two-Rooms dynamics as a world model: latent = agent position, prediction =
/// the environment's own clipping and collision resolution. Planning with it measures the
/// planner alone, with no model error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OracleTwoRooms {
    geom: Geometry,
    max_action_norm: f32,
}

impl OracleTwoRooms {
    pub fn new(cfg: &TwoRoomsConfig) -> Self {
        OracleTwoRooms {
            geom: cfg.geometry(),
            max_action_norm: cfg.max_action_norm,
        }
    }
}

impl WorldModel for OracleTwoRooms {
    type Latent = Vec2;

    fn action_dim(&self) -> usize {
        2
    }

    /// Consumes the environment's state vector (`Environment::observe_state`).
    fn encode(&self, obs: &[f32]) -> Result<Vec2, PlanError> {
        let &[x, y] = obs else {
            return Err(PlanError::Observation {
                expected: 2,
                got: obs.len(),
            });
        };
        if !(x.is_finite() && y.is_finite()) {
            return Err(PlanError::NonFiniteObservation);
        }
        Ok([x, y])
    }

    fn predict(&self, z: &Vec2, action: &[f32]) -> Vec2 {
        // Planners produce exactly `action_dim` finite components; anything missing or
        // non-finite is treated as "no move" so a bad candidate is merely useless, not a panic.
        let comp = |i: usize| {
            action
                .get(i)
                .copied()
                .filter(|v| v.is_finite())
                .unwrap_or(0.0)
        };
        let a = clip_action([comp(0), comp(1)], self.max_action_norm);
        self.geom.resolve_move(*z, a).position
    }
}
