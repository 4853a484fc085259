//! Frameskip: one planner action held for several environment steps.

use crate::world::{PlanError, WorldModel};

/// Frameskip: each planner action is applied `repeat` times. `rollout` returns all
/// `H·repeat` intermediate latents (so guardrails see every real step); element
/// `t·repeat + r` is the latent after repetition `r` of action `t`.
#[derive(Debug, Clone)]
pub struct RepeatActions<M> {
    pub inner: M,
    pub repeat: usize,
}

impl<M: WorldModel> RepeatActions<M> {
    fn expand(&self, actions: &[f32]) -> Vec<f32> {
        let a = self.inner.action_dim().max(1);
        actions
            .chunks_exact(a)
            .flat_map(|step| {
                std::iter::repeat_n(step, self.repeat.max(1))
                    .flatten()
                    .copied()
            })
            .collect()
    }
}

impl<M: WorldModel> WorldModel for RepeatActions<M> {
    type Latent = M::Latent;

    fn action_dim(&self) -> usize {
        self.inner.action_dim()
    }

    fn encode(&self, obs: &[f32]) -> Result<Self::Latent, PlanError> {
        self.inner.encode(obs)
    }

    fn predict(&self, z: &Self::Latent, action: &[f32]) -> Self::Latent {
        let mut z = z.clone();
        for _ in 0..self.repeat.max(1) {
            z = self.inner.predict(&z, action);
        }
        z
    }

    fn rollout(&self, z0: &Self::Latent, actions: &[f32]) -> Vec<Self::Latent> {
        self.inner.rollout(z0, &self.expand(actions))
    }

    fn rollout_batch(&self, z0: &Self::Latent, candidates: &[Vec<f32>]) -> Vec<Vec<Self::Latent>> {
        let expanded: Vec<Vec<f32>> = candidates.iter().map(|c| self.expand(c)).collect();
        self.inner.rollout_batch(z0, &expanded)
    }

    fn rollout_tensor(
        &self,
        z0: &Self::Latent,
        actions: &candle_core::Tensor,
    ) -> Option<candle_core::Result<candle_core::Tensor>> {
        let expand = || -> candle_core::Result<candle_core::Tensor> {
            let (r, h, a) = actions.dims3()?;
            let k = self.repeat.max(1);
            actions
                .unsqueeze(2)?
                .broadcast_as((r, h, k, a))?
                .reshape((r, h * k, a))
        };
        match expand() {
            Ok(expanded) => self.inner.rollout_tensor(z0, &expanded),
            Err(e) => Some(Err(e)),
        }
    }

    fn latent_values(&self, z: &Self::Latent) -> Option<Vec<f32>> {
        self.inner.latent_values(z)
    }
}
