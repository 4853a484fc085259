//! Model-predictive path integral control: the mean is the softmin(cost / λ)-weighted
//! average of the samples.

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use super::{
    Candidate, Plan, Planner, clip_sequence, penalised, sample_sequences, shift_warm, to_plan,
    warm_start,
};
use crate::cost::Cost;
use crate::world::{PlanError, WorldModel};

/// MPPI settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MppiConfig {
    pub horizon: usize,
    pub population: usize,
    pub iterations: usize,
    /// Sampling noise standard deviation per action component.
    pub sigma: f32,
    /// Temperature λ: weights are `exp(−(S − S_min) / λ)`, with `S` in cost units (pixels).
    pub lambda: f32,
    pub action_dim: usize,
    pub max_action_norm: f32,
    /// Weight on hard violation in the sample cost `S`.
    pub hard_penalty: f32,
    pub seed: u64,
}

impl Default for MppiConfig {
    fn default() -> Self {
        MppiConfig {
            horizon: 8,
            population: 64,
            iterations: 4,
            sigma: 1.0,
            lambda: 0.5,
            action_dim: 2,
            max_action_norm: 2.45,
            hard_penalty: 1.0e3,
            seed: 0,
        }
    }
}

/// Model-predictive path integral control.
#[derive(Debug, Clone)]
pub struct Mppi {
    cfg: MppiConfig,
    rng: ChaCha12Rng,
    warm: Option<Vec<f32>>,
}

impl Mppi {
    pub fn new(cfg: MppiConfig) -> Result<Self, PlanError> {
        let ok = cfg.horizon > 0
            && cfg.population > 0
            && cfg.iterations > 0
            && cfg.action_dim > 0
            && cfg.sigma.is_finite()
            && cfg.sigma > 0.0
            && cfg.lambda.is_finite()
            && cfg.lambda > 0.0
            && cfg.max_action_norm.is_finite()
            && cfg.max_action_norm > 0.0
            && cfg.hard_penalty.is_finite()
            && cfg.hard_penalty >= 0.0;
        if !ok {
            return Err(PlanError::Config(format!("{cfg:?}")));
        }
        Ok(Mppi {
            rng: ChaCha12Rng::seed_from_u64(cfg.seed),
            warm: None,
            cfg,
        })
    }
}

impl Planner for Mppi {
    fn plan<M: WorldModel>(
        &mut self,
        model: &M,
        z0: &M::Latent,
        cost: &Cost<M::Latent>,
    ) -> Plan<M::Latent> {
        let c = &self.cfg;
        let len = c.horizon * c.action_dim;
        let mut mean = warm_start(&self.warm, len);
        let mut feasible_candidates = 0;
        for _ in 0..c.iterations {
            let seqs = sample_sequences(
                &mean,
                |_| c.sigma,
                c.population,
                (c.action_dim, c.max_action_norm),
                &mut self.rng,
            );
            let rollouts = model.rollout_batch(z0, &seqs);
            let scores: Vec<f32> = rollouts
                .iter()
                .map(|p| {
                    let e = cost.evaluate(p);
                    if e.feasible {
                        feasible_candidates += 1;
                    }
                    penalised(&e, c.hard_penalty)
                })
                .collect();
            let s_min = scores.iter().copied().fold(f32::INFINITY, f32::min);
            // Subtracting the minimum keeps the best weight at 1, so the sum never underflows
            // to 0 (unless every score is infinite, handled below).
            let weights: Vec<f32> = scores
                .iter()
                .map(|s| {
                    if s.is_finite() {
                        (-(s - s_min) / c.lambda).exp()
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f32 = weights.iter().sum();
            if total > 0.0 && total.is_finite() {
                for (i, mu) in mean.iter_mut().enumerate() {
                    *mu = seqs
                        .iter()
                        .zip(&weights)
                        .map(|(s, w)| w * s[i])
                        .sum::<f32>()
                        / total;
                }
            }
        }
        clip_sequence(&mut mean, c.action_dim, c.max_action_norm);
        self.warm = Some(mean.clone());
        to_plan(
            Candidate::rolled_out(model, z0, cost, mean),
            cost,
            c.action_dim,
            feasible_candidates,
        )
    }

    fn shift(&mut self, steps: usize) {
        shift_warm(&mut self.warm, steps, self.cfg.action_dim);
    }

    fn reset(&mut self) {
        self.warm = None;
    }
}
