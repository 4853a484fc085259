//! Gradient-based planning through a differentiable world model.
//!
//! `R` action sequences (the shifted previous plan and `R − 1` perturbations of it) are
//! optimised in one batch by Adam on
//!
//! ```text
//! J(a) = w_T · ‖ẑ_H(a) − z_goal‖ + w_S · 1/H Σ_t ‖ẑ_t(a) − z_goal‖,     ẑ = rollout(z_0, a)
//! ```
//!
//! (the objective of [`Cost`], differentiated through the predictor), each step followed by
//! projecting every action onto the norm cap. Guardrails are not differentiated — a
//! [`Guardrail`](crate::cost::Guardrail) is an arbitrary function — so they act through
//! selection: every restart's final sequence is evaluated with the full cost, and the best
//! feasible one is returned (feasible-first, as [`super::ConstrainedCem`]).
//! The many restarts matter: from one start, gradient descent on a latent distance slides
//! into the wall between the rooms.

use candle_core::{D, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use crate::cost::Cost;
use lcm_util::random::standard_normal;
use std::cmp::Ordering;

use super::{Candidate, Plan, Planner, clip_sequence, feasible_first, shift_warm, to_plan};
use crate::world::{PlanError, WorldModel};

/// Settings of [`GradientPlanner`].
#[derive(Debug, Clone, PartialEq)]
pub struct GradientConfig {
    pub horizon: usize,
    /// Sequences optimised in parallel.
    pub restarts: usize,
    /// Adam steps per planning call.
    pub steps: usize,
    /// Adam step size, in action units.
    pub lr: f32,
    /// Standard deviation of the restarts' perturbations.
    pub init_std: f32,
    pub action_dim: usize,
    pub max_action_norm: f32,
    pub seed: u64,
}

impl Default for GradientConfig {
    fn default() -> Self {
        GradientConfig {
            horizon: 12,
            restarts: 32,
            steps: 20,
            lr: 0.3,
            init_std: 1.5,
            action_dim: 2,
            max_action_norm: 2.45,
            seed: 0,
        }
    }
}

/// Gradient descent on action sequences (see the module docs).
#[derive(Debug, Clone)]
pub struct GradientPlanner {
    cfg: GradientConfig,
    rng: ChaCha12Rng,
    warm: Option<Vec<f32>>,
}

impl GradientPlanner {
    pub fn new(cfg: GradientConfig) -> Result<Self, PlanError> {
        let ok = cfg.horizon > 0
            && cfg.restarts > 0
            && cfg.action_dim > 0
            && cfg.lr.is_finite()
            && cfg.lr > 0.0
            && cfg.init_std.is_finite()
            && cfg.init_std >= 0.0
            && cfg.max_action_norm.is_finite()
            && cfg.max_action_norm > 0.0;
        if !ok {
            return Err(PlanError::Config(format!("{cfg:?}")));
        }
        Ok(GradientPlanner {
            rng: ChaCha12Rng::seed_from_u64(cfg.seed),
            warm: None,
            cfg,
        })
    }

    /// Optimises the restarts; returns them flat (`[R][H·A]`).
    fn optimise<M: WorldModel>(
        &self,
        model: &M,
        z0: &M::Latent,
        goal: &[f32],
        cost: &Cost<M::Latent>,
        init: Vec<f32>,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        let (r, h, a) = (c.restarts, c.horizon, c.action_dim);
        let dev = Device::Cpu;
        let goal = Tensor::from_slice(goal, (1, 1, goal.len()), &dev)?;
        let mut x = init;
        let (mut m, mut v) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        for step in 1..=c.steps {
            let actions = Var::from_tensor(&Tensor::from_slice(&x, (r, h, a), &dev)?)?;
            let Some(latents) = model.rollout_tensor(z0, actions.as_tensor()) else {
                candle_core::bail!("the world model is not differentiable");
            };
            // [R, H', L] → distances [R, H'].
            let dist = (latents?.broadcast_sub(&goal)?.sqr()?.sum(D::Minus1)? + 1e-8)?.sqrt()?;
            let h_real = dist.dim(1)?;
            let terminal = dist.narrow(1, h_real - 1, 1)?.squeeze(1)?;
            let stage = dist.mean(1)?;
            let objective = ((terminal * f64::from(cost.terminal_weight))?
                + (stage * f64::from(cost.stage_weight))?)?;
            // Restarts are independent, so the gradient of the sum is each one's own.
            let grads = objective.sum_all()?.backward()?;
            let Some(g) = grads.get(actions.as_tensor()) else {
                candle_core::bail!("no gradient reached the actions");
            };
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
            for i in 0..x.len() {
                let gi = if g[i].is_finite() { g[i] } else { 0.0 };
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                x[i] -= c.lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
            }
            clip_sequence(&mut x, a, c.max_action_norm);
        }
        Ok(x.chunks_exact(h * a).map(<[f32]>::to_vec).collect())
    }
}

impl Planner for GradientPlanner {
    fn plan<M: WorldModel>(
        &mut self,
        model: &M,
        z0: &M::Latent,
        cost: &Cost<M::Latent>,
    ) -> Plan<M::Latent> {
        let c = self.cfg.clone();
        let len = c.horizon * c.action_dim;
        let mean = match &self.warm {
            Some(w) if w.len() == len => w.clone(),
            _ => vec![0.0; len],
        };
        let mut init = Vec::with_capacity(c.restarts * len);
        init.extend(&mean);
        for _ in 1..c.restarts {
            init.extend(
                mean.iter()
                    .map(|mu| mu + c.init_std * standard_normal(&mut self.rng) as f32),
            );
        }
        clip_sequence(&mut init, c.action_dim, c.max_action_norm);
        let optimised = match model.latent_values(&cost.goal) {
            Some(goal) => self.optimise(model, z0, &goal, cost, init.clone()),
            None => Err(candle_core::Error::Msg("latent is not a vector".into())),
        };
        let candidates = optimised.unwrap_or_else(|e| {
            // Not differentiable: the restarts are still valid candidates, only unoptimised.
            tracing::warn!(error = %e, "gradient planning unavailable; ranking the initial samples");
            init.chunks_exact(len).map(<[f32]>::to_vec).collect()
        });
        let rollouts = model.rollout_batch(z0, &candidates);
        let mut feasible = 0;
        let mut best: Option<Candidate<M::Latent>> = None;
        for (actions, predicted) in candidates.into_iter().zip(rollouts) {
            let candidate = Candidate::scored(actions, predicted, cost);
            feasible += usize::from(candidate.eval.feasible);
            if best
                .as_ref()
                .is_none_or(|b| feasible_first(&candidate.eval, &b.eval) == Ordering::Less)
            {
                best = Some(candidate);
            }
        }
        // restarts > 0 (validated), so a candidate exists; the fallback keeps this total.
        let best = best.unwrap_or_else(|| Candidate::rolled_out(model, z0, cost, mean));
        self.warm = Some(best.actions.clone());
        to_plan(best, cost, c.action_dim, feasible)
    }

    fn shift(&mut self, steps: usize) {
        shift_warm(&mut self.warm, steps, self.cfg.action_dim);
    }

    fn reset(&mut self) {
        self.warm = None;
    }
}
