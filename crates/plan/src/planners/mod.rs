//! Sampling-based planners over action sequences, and the MPC loop that runs them.
//!
//! - [`Cem`]: the cross-entropy method (DINO-WM / LeWM style): a diagonal Gaussian over the
//!   `H × A` action sequence, refit to the `K` best of `N` samples for `I` iterations. Hard
//!   guardrail violations are folded in as a large penalty (a penalty method).
//! - [`ConstrainedCem`]: feasible-first CEM (Wen & Topcu 2018; OmniSafe's CCE): feasible
//!   candidates are ranked by cost before any infeasible one, infeasible ones by total
//!   violation, and the best feasible candidate seen in *any* iteration is returned, so it
//!   never returns an infeasible plan once a feasible one was sampled. When no sample is
//!   feasible it falls back on standing still if that is predicted feasible (a backup plan:
//!   the worlds here have no momentum), else on the least violating plan.
//! - [`Mppi`]: model-predictive path integral control (PLDM / TD-MPC2 style): the mean is the
//!   softmin(cost / λ)-weighted average of the samples.
//!
//! - [`AugLagCem`]: augmented-Lagrangian planning (as stable-worldmodel's `LagrangianSolver`):
//!   CEM minimises `J + λ·v + ρ/2·v²` for the total hard violation `v`, then the multiplier
//!   rises by `ρ·v`; repeated a few times per call, the best feasible plan of any round wins,
//!   and (with [`AugLagConfig::feasible_fallback`], the default) the cheapest feasible
//!   candidate sampled in any iteration is returned rather than an infeasible one, so like
//!   [`ConstrainedCem`] it never returns an infeasible plan once a feasible one was sampled,
//!   and with none it falls back the same way (standing still, else the least violating).
//! - [`RandomPolicy`]: the random baseline (a fresh random action every step).
//! - Gradient-based planning through a learned model: [`GradientPlanner`].
//!
//! Every planner clips each step's action to the environment's norm cap (the env would clip
//! anyway; clipping in the planner keeps the Gaussian fitted to actions that actually happen).
//!
//! Long horizons: [`RepeatActions`] makes one planner action stand for `k` environment steps
//! (DINO-WM's frameskip), so a 12-action plan looks 60 steps ahead — far enough to go through
//! the door between the rooms — while the search stays 24-dimensional. Rollouts keep every
//! intermediate latent, so guardrails are still checked at every real step.
//!
//! Files: `cem.rs` (CEM, constrained CEM, augmented Lagrangian), `mppi.rs`, `random.rs`,
//! `gradient.rs`, `repeat.rs` (frameskip), `episode.rs` (the MPC loop and its trace); this
//! file holds the [`Planner`] interface and the sampling helpers they share.

mod cem;
mod episode;
pub mod gradient;
mod mppi;
mod random;
mod repeat;

pub use cem::{AugLagCem, AugLagConfig, Cem, CemConfig, ConstrainedCem};
pub use episode::{
    EpisodeOptions, EpisodeReport, EpisodeTrace, ObservationSource, PlanCall, mpc_episode,
    run_episode,
};
pub use gradient::{GradientConfig, GradientPlanner};
pub use mppi::{Mppi, MppiConfig};
pub use random::RandomPolicy;
pub use repeat::RepeatActions;

use std::cmp::Ordering;

use lcm_util::random::standard_normal;
use rand_chacha::ChaCha12Rng;

use crate::cost::{Cost, Evaluation};
use crate::world::WorldModel;

/// A planner's answer for one planning call.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<L> {
    /// `H` actions of `A` components each.
    pub actions: Vec<Vec<f32>>,
    /// The world model's predicted latents after each action.
    pub predicted: Vec<L>,
    /// Objective plus soft penalties of the returned plan.
    pub objective: f32,
    /// Per guardrail, the minimum predicted margin of the returned plan.
    pub margins: Vec<(String, f32)>,
    /// The returned plan satisfies every hard guardrail (as predicted).
    pub feasible: bool,
    /// Total predicted hard violation of the returned plan (0 when feasible).
    pub hard_violation: f32,
    /// How many sampled candidates (all iterations) were feasible.
    pub feasible_candidates: usize,
}

/// A planner: picks an action sequence minimising `cost` from latent `z0`.
pub trait Planner {
    fn plan<M: WorldModel>(
        &mut self,
        model: &M,
        z0: &M::Latent,
        cost: &Cost<M::Latent>,
    ) -> Plan<M::Latent>;

    /// The first `steps` actions of the last plan were executed: shift the warm start.
    fn shift(&mut self, _steps: usize) {}

    /// Forget the warm start (a new episode).
    fn reset(&mut self) {}
}
/// Total plus the weighted hard violation; NaN ranks last.
pub(crate) fn penalised(e: &Evaluation, hard_penalty: f32) -> f32 {
    let v = e.total() + hard_penalty * e.hard_violation;
    if v.is_nan() { f32::INFINITY } else { v }
}
/// Feasible before infeasible; feasible by total, infeasible by violation then total.
pub(crate) fn feasible_first(a: &Evaluation, b: &Evaluation) -> Ordering {
    crate::cost::feasible_first_order(
        (a.feasible, a.hard_violation, a.total()),
        (b.feasible, b.hard_violation, b.total()),
    )
}

/// Scales each step's action down to the norm cap.
pub(crate) fn clip_sequence(seq: &mut [f32], action_dim: usize, max_norm: f32) {
    for a in seq.chunks_exact_mut(action_dim) {
        let norm = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > max_norm {
            let s = max_norm / norm;
            a.iter_mut().for_each(|v| *v *= s);
        }
    }
}

/// Drops the first `steps` actions of a flat warm start and pads with zeros (no move).
pub(crate) fn shift_warm(warm: &mut Option<Vec<f32>>, steps: usize, action_dim: usize) {
    if let Some(w) = warm {
        let n = (steps * action_dim).min(w.len());
        w.drain(..n);
        w.resize(w.len() + n, 0.0);
    }
}

/// The first sampling mean: the shifted previous plan when it has the right length, else
/// zeros (no motion).
pub(crate) fn warm_start(warm: &Option<Vec<f32>>, len: usize) -> Vec<f32> {
    match warm {
        Some(w) if w.len() == len => w.clone(),
        _ => vec![0.0; len],
    }
}

pub(crate) struct Candidate<L> {
    pub(crate) actions: Vec<f32>,
    pub(crate) predicted: Vec<L>,
    pub(crate) eval: Evaluation,
}

impl<L> Candidate<L> {
    /// Scores an already rolled-out sequence.
    pub(crate) fn scored(actions: Vec<f32>, predicted: Vec<L>, cost: &Cost<L>) -> Self {
        let eval = cost.evaluate(&predicted);
        Candidate {
            actions,
            predicted,
            eval,
        }
    }

    /// Rolls `actions` out from `z0` and scores them.
    pub(crate) fn rolled_out<M: WorldModel<Latent = L>>(
        model: &M,
        z0: &L,
        cost: &Cost<L>,
        actions: Vec<f32>,
    ) -> Self {
        let predicted = model.rollout(z0, &actions);
        Self::scored(actions, predicted, cost)
    }
}

pub(crate) fn to_plan<L>(
    c: Candidate<L>,
    cost: &Cost<L>,
    action_dim: usize,
    feasible_candidates: usize,
) -> Plan<L> {
    let margins = cost
        .guardrail_names()
        .into_iter()
        .zip(c.eval.min_margins.iter().copied())
        .collect();
    Plan {
        actions: c
            .actions
            .chunks_exact(action_dim)
            .map(<[f32]>::to_vec)
            .collect(),
        predicted: c.predicted,
        objective: c.eval.total(),
        margins,
        feasible: c.eval.feasible,
        hard_violation: c.eval.hard_violation,
        feasible_candidates,
    }
}
/// The candidates of one iteration: the current `mean` first (so a refit can never lose it),
/// then `population − 1` Gaussian perturbations with per-element standard deviation
/// `std(i)`; every step of every sequence is clipped to the action-norm cap.
pub(crate) fn sample_sequences(
    mean: &[f32],
    std: impl Fn(usize) -> f32,
    population: usize,
    (action_dim, max_action_norm): (usize, f32),
    rng: &mut ChaCha12Rng,
) -> Vec<Vec<f32>> {
    let mut seqs = Vec::with_capacity(population);
    let mut m = mean.to_vec();
    clip_sequence(&mut m, action_dim, max_action_norm);
    seqs.push(m);
    while seqs.len() < population {
        let mut s: Vec<f32> = mean
            .iter()
            .enumerate()
            .map(|(i, mu)| mu + std(i) * standard_normal(rng) as f32)
            .collect();
        clip_sequence(&mut s, action_dim, max_action_norm);
        seqs.push(s);
    }
    seqs
}
