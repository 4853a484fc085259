//! Sampling-based planners over action sequences, and the MPC loop that runs them.
//!
//! - [`Cem`]: the cross-entropy method (DINO-WM / LeWM style): a diagonal Gaussian over the
//!   `H × A` action sequence, refit to the `K` best of `N` samples for `I` iterations. Hard
//!   guardrail violations are folded in as a large penalty (a penalty method).
//! - [`ConstrainedCem`]: feasible-first CEM (Wen & Topcu 2018; OmniSafe's CCE): feasible
//!   candidates are ranked by cost before any infeasible one, infeasible ones by total
//!   violation, and the best feasible candidate seen in *any* iteration is returned, so it
//!   never returns an infeasible plan once a feasible one was sampled.
//! - [`Mppi`]: model-predictive path integral control (PLDM / TD-MPC2 style): the mean is the
//!   softmin(cost / λ)-weighted average of the samples.
//!
//! - [`AugLagCem`]: augmented-Lagrangian planning (as stable-worldmodel's `LagrangianSolver`):
//!   CEM minimises `J + λ·v + ρ/2·v²` for the total hard violation `v`, then the multiplier
//!   rises by `ρ·v`; repeated a few times per call, the best feasible plan of any round wins.
//! - [`RandomPolicy`]: the random baseline (a fresh random action every step).
//! - Gradient-based planning through a learned model: [`crate::gradient::GradientPlanner`].
//!
//! Every planner clips each step's action to the environment's norm cap (the env would clip
//! anyway; clipping in the planner keeps the Gaussian fitted to actions that actually happen).
//!
//! Long horizons: [`RepeatActions`] makes one planner action stand for `k` environment steps
//! (DINO-WM's frameskip), so a 12-action plan looks 60 steps ahead — far enough to go through
//! the door between the rooms — while the search stays 24-dimensional. Rollouts keep every
//! intermediate latent, so guardrails are still checked at every real step.

use std::cmp::Ordering;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use crate::cost::{Cost, Evaluation};
use crate::data::standard_normal;
use crate::env::Environment;
use crate::world::{PlanError, WorldModel};

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

/// Settings shared by the CEM variants.
#[derive(Debug, Clone, PartialEq)]
pub struct CemConfig {
    pub horizon: usize,
    pub population: usize,
    pub elites: usize,
    pub iterations: usize,
    /// Initial per-component standard deviation (pixels per step for Two-Rooms).
    pub init_std: f32,
    /// Floor on the refitted standard deviation, so the search never collapses completely.
    pub min_std: f32,
    pub action_dim: usize,
    /// Per-step action norm cap (the environment's).
    pub max_action_norm: f32,
    /// Weight on hard violation in plain [`Cem`]'s ranking (unused by [`ConstrainedCem`]).
    pub hard_penalty: f32,
    pub seed: u64,
}

impl Default for CemConfig {
    /// Sizes chosen for the oracle Two-Rooms model: horizon 8 covers ~20 px, enough to see
    /// around an 8 px hazard; 64 × 4 keeps a planning call to a few thousand model steps.
    fn default() -> Self {
        CemConfig {
            horizon: 8,
            population: 64,
            elites: 8,
            iterations: 4,
            init_std: 1.5,
            min_std: 0.05,
            action_dim: 2,
            max_action_norm: 2.45,
            hard_penalty: 1.0e3,
            seed: 0,
        }
    }
}

impl CemConfig {
    fn validate(&self) -> Result<(), PlanError> {
        let ok = self.horizon > 0
            && self.population > 0
            && self.elites > 0
            && self.elites <= self.population
            && self.iterations > 0
            && self.action_dim > 0
            && self.init_std.is_finite()
            && self.init_std > 0.0
            && self.min_std.is_finite()
            && self.min_std >= 0.0
            && self.max_action_norm.is_finite()
            && self.max_action_norm > 0.0
            && self.hard_penalty.is_finite()
            && self.hard_penalty >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(PlanError::Config(format!("{self:?}")))
        }
    }
}

/// How candidates are ordered (best first).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ranking {
    /// `total + hard_penalty · hard_violation`.
    Penalty(f32),
    /// Feasible before infeasible; feasible by total, infeasible by violation then total.
    FeasibleFirst,
    /// Augmented Lagrangian `total + λ·v + ρ/2·v²`.
    Lagrangian { lambda: f32, rho: f32 },
}

fn penalised(e: &Evaluation, hard_penalty: f32) -> f32 {
    let v = e.total() + hard_penalty * e.hard_violation;
    if v.is_nan() { f32::INFINITY } else { v }
}

fn compare(ranking: Ranking, a: &Evaluation, b: &Evaluation) -> Ordering {
    match ranking {
        Ranking::Penalty(w) => penalised(a, w).total_cmp(&penalised(b, w)),
        Ranking::Lagrangian { lambda, rho } => {
            let l = |e: &Evaluation| {
                let v = e.hard_violation;
                let x = e.total() + lambda * v + 0.5 * rho * v * v;
                if x.is_nan() { f32::INFINITY } else { x }
            };
            l(a).total_cmp(&l(b))
        }
        Ranking::FeasibleFirst => feasible_first(a, b),
    }
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
fn warm_start(warm: &Option<Vec<f32>>, len: usize) -> Vec<f32> {
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

/// Cross-entropy method with hard guardrails folded in as a penalty.
#[derive(Debug, Clone)]
pub struct Cem {
    cfg: CemConfig,
    ranking: Ranking,
    rng: ChaCha12Rng,
    warm: Option<Vec<f32>>,
}

impl Cem {
    pub fn new(cfg: CemConfig) -> Result<Self, PlanError> {
        cfg.validate()?;
        Ok(Cem {
            ranking: Ranking::Penalty(cfg.hard_penalty),
            rng: ChaCha12Rng::seed_from_u64(cfg.seed),
            warm: None,
            cfg,
        })
    }

    pub fn config(&self) -> &CemConfig {
        &self.cfg
    }

    fn run<M: WorldModel>(
        &mut self,
        model: &M,
        z0: &M::Latent,
        cost: &Cost<M::Latent>,
    ) -> Plan<M::Latent> {
        let c = &self.cfg;
        let len = c.horizon * c.action_dim;
        let mut mean = warm_start(&self.warm, len);
        let mut std = vec![c.init_std; len];
        let mut best: Option<Candidate<M::Latent>> = None;
        let mut feasible_candidates = 0;
        for _ in 0..c.iterations {
            let seqs = sample_sequences(
                &mean,
                |i| std[i],
                c.population,
                (c.action_dim, c.max_action_norm),
                &mut self.rng,
            );
            let rollouts = model.rollout_batch(z0, &seqs);
            let mut cands: Vec<Candidate<M::Latent>> = seqs
                .into_iter()
                .zip(rollouts)
                .map(|(actions, predicted)| Candidate::scored(actions, predicted, cost))
                .collect();
            feasible_candidates += cands.iter().filter(|k| k.eval.feasible).count();
            // Stable sort: ties keep sampling order, so results are deterministic per seed.
            cands.sort_by(|a, b| compare(self.ranking, &a.eval, &b.eval));
            let elites = &cands[..c.elites.min(cands.len())];
            let k = elites.len() as f32;
            for i in 0..len {
                let mu = elites.iter().map(|e| e.actions[i]).sum::<f32>() / k;
                let var = elites
                    .iter()
                    .map(|e| (e.actions[i] - mu).powi(2))
                    .sum::<f32>()
                    / k;
                mean[i] = mu;
                std[i] = var.sqrt().max(c.min_std);
            }
            // Keep the best candidate across iterations (for FeasibleFirst this is what makes
            // "never infeasible once a feasible one was seen" hold even if the refit drifts).
            let top = cands.swap_remove(0);
            if best
                .as_ref()
                .is_none_or(|b| compare(self.ranking, &top.eval, &b.eval) == Ordering::Less)
            {
                best = Some(top);
            }
        }
        // iterations > 0 and population > 0 (validated), so a best candidate exists; the
        // fallback only keeps this total without a panic path.
        let best = best.unwrap_or_else(|| Candidate::rolled_out(model, z0, cost, mean));
        self.warm = Some(best.actions.clone());
        to_plan(best, cost, c.action_dim, feasible_candidates)
    }
}

impl Planner for Cem {
    fn plan<M: WorldModel>(
        &mut self,
        model: &M,
        z0: &M::Latent,
        cost: &Cost<M::Latent>,
    ) -> Plan<M::Latent> {
        self.run(model, z0, cost)
    }

    fn shift(&mut self, steps: usize) {
        shift_warm(&mut self.warm, steps, self.cfg.action_dim);
    }

    fn reset(&mut self) {
        self.warm = None;
    }
}

/// Feasible-first constrained CEM (see the module docs).
#[derive(Debug, Clone)]
pub struct ConstrainedCem {
    inner: Cem,
}

impl ConstrainedCem {
    pub fn new(cfg: CemConfig) -> Result<Self, PlanError> {
        let mut inner = Cem::new(cfg)?;
        inner.ranking = Ranking::FeasibleFirst;
        Ok(ConstrainedCem { inner })
    }

    pub fn config(&self) -> &CemConfig {
        &self.inner.cfg
    }
}

impl Planner for ConstrainedCem {
    fn plan<M: WorldModel>(
        &mut self,
        model: &M,
        z0: &M::Latent,
        cost: &Cost<M::Latent>,
    ) -> Plan<M::Latent> {
        self.inner.run(model, z0, cost)
    }

    fn shift(&mut self, steps: usize) {
        self.inner.shift(steps);
    }

    fn reset(&mut self) {
        self.inner.reset();
    }
}

/// Augmented-Lagrangian settings on top of the CEM ones.
#[derive(Debug, Clone, PartialEq)]
pub struct AugLagConfig {
    pub cem: CemConfig,
    /// Multiplier/penalty rounds per planning call (each runs `cem.iterations` CEM steps).
    pub rounds: usize,
    /// Initial penalty weight ρ and its growth per round (capped at `rho_max`).
    pub rho: f32,
    pub rho_growth: f32,
    pub rho_max: f32,
}

impl Default for AugLagConfig {
    fn default() -> Self {
        AugLagConfig {
            cem: CemConfig {
                iterations: 2,
                ..CemConfig::default()
            },
            rounds: 3,
            rho: 1.0,
            rho_growth: 4.0,
            rho_max: 1.0e4,
        }
    }
}

/// Augmented-Lagrangian planning (see the module docs). The multiplier persists across the
/// calls of one episode (the constraint's price learnt so far), and resets with the episode.
#[derive(Debug, Clone)]
pub struct AugLagCem {
    inner: Cem,
    cfg: AugLagConfig,
    lambda: f32,
}

impl AugLagCem {
    pub fn new(cfg: AugLagConfig) -> Result<Self, PlanError> {
        let ok = cfg.rounds > 0
            && cfg.rho.is_finite()
            && cfg.rho > 0.0
            && cfg.rho_growth.is_finite()
            && cfg.rho_growth >= 1.0
            && cfg.rho_max.is_finite()
            && cfg.rho_max >= cfg.rho;
        if !ok {
            return Err(PlanError::Config(format!("{cfg:?}")));
        }
        Ok(AugLagCem {
            inner: Cem::new(cfg.cem.clone())?,
            cfg,
            lambda: 0.0,
        })
    }

    /// The current multiplier λ.
    pub fn multiplier(&self) -> f32 {
        self.lambda
    }
}

impl Planner for AugLagCem {
    fn plan<M: WorldModel>(
        &mut self,
        model: &M,
        z0: &M::Latent,
        cost: &Cost<M::Latent>,
    ) -> Plan<M::Latent> {
        let mut rho = self.cfg.rho;
        let mut best: Option<Plan<M::Latent>> = None;
        let mut feasible_candidates = 0;
        for _ in 0..self.cfg.rounds {
            self.inner.ranking = Ranking::Lagrangian {
                lambda: self.lambda,
                rho,
            };
            let plan = self.inner.run(model, z0, cost);
            feasible_candidates += plan.feasible_candidates;
            let v = plan.hard_violation;
            self.lambda = (self.lambda + rho * v).min(1.0e6);
            rho = (rho * self.cfg.rho_growth).min(self.cfg.rho_max);
            let better = best
                .as_ref()
                .is_none_or(|b| match (plan.feasible, b.feasible) {
                    (true, false) => true,
                    (false, true) => false,
                    (true, true) => plan.objective < b.objective,
                    (false, false) => v < b.hard_violation,
                });
            if better {
                best = Some(plan);
            }
        }
        // rounds > 0 (validated), so a plan exists; the fallback keeps this panic-free.
        let mut best = best.unwrap_or_else(|| self.inner.run(model, z0, cost));
        best.feasible_candidates = feasible_candidates;
        // Warm-start the next call from the plan actually returned.
        self.inner.warm = Some(best.actions.concat());
        best
    }

    fn shift(&mut self, steps: usize) {
        self.inner.shift(steps);
    }

    fn reset(&mut self) {
        self.inner.reset();
        self.lambda = 0.0;
    }
}

/// The random baseline: every call returns one random action (uniform heading, uniform
/// length up to the norm cap), ignoring model and cost.
#[derive(Debug, Clone)]
pub struct RandomPolicy {
    rng: ChaCha12Rng,
    max_action_norm: f32,
}

impl RandomPolicy {
    pub fn new(max_action_norm: f32, seed: u64) -> Self {
        RandomPolicy {
            rng: ChaCha12Rng::seed_from_u64(seed),
            max_action_norm,
        }
    }
}

impl Planner for RandomPolicy {
    fn plan<M: WorldModel>(
        &mut self,
        model: &M,
        z0: &M::Latent,
        cost: &Cost<M::Latent>,
    ) -> Plan<M::Latent> {
        use rand::Rng;
        let heading = self.rng.random_range(0.0..std::f32::consts::TAU);
        let len = self.rng.random_range(0.0..=self.max_action_norm);
        let mut action = vec![0.0; model.action_dim()];
        if let [x, y, ..] = action.as_mut_slice() {
            *x = len * heading.cos();
            *y = len * heading.sin();
        }
        to_plan(
            Candidate::rolled_out(model, z0, cost, action),
            cost,
            model.action_dim(),
            0,
        )
    }
}

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

/// Outcome of one MPC episode on the real environment.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeReport {
    pub success: bool,
    /// Real steps that ended in a guardrail violation (as the environment reports it).
    pub violations: usize,
    pub steps: usize,
    /// Wall-clock milliseconds of each planning call.
    pub plan_ms: Vec<f64>,
    /// Planning calls whose returned plan was predicted infeasible.
    pub infeasible_plans: usize,
}

/// Runs MPC on `env`, which the caller has already reset to its start and goal (the goal is
/// carried by `cost`): encode the real state, plan, execute the first `replan_every` actions,
/// repeat until success, the environment ends the episode, or `max_steps` real steps.
pub fn mpc_episode<E, M, P>(
    env: &mut E,
    model: &M,
    planner: &mut P,
    cost: &Cost<M::Latent>,
    max_steps: usize,
    replan_every: usize,
) -> Result<EpisodeReport, PlanError>
where
    E: Environment,
    M: WorldModel,
    P: Planner,
{
    let options = EpisodeOptions {
        max_steps,
        replan_every,
        action_repeat: 1,
        steps_per_call: None,
        observation: ObservationSource::State,
    };
    run_episode(env, model, planner, cost, &options).map(|t| t.report)
}

/// What the world model is fed from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservationSource {
    /// [`Environment::observe_state`].
    State,
    /// [`Environment::render`].
    Pixels,
}

/// How an MPC episode is run.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeOptions {
    /// Real environment steps at most.
    pub max_steps: usize,
    /// Planner actions executed between planning calls.
    pub replan_every: usize,
    /// Real steps per planner action (must match a [`RepeatActions`] model's `repeat`).
    pub action_repeat: usize,
    /// Real steps executed per planning call; `None` means `replan_every · action_repeat`.
    /// Fewer than a whole held action replans mid-action (finer control near the goal, at
    /// more planning calls per step); the warm start then shifts by whole actions only.
    pub steps_per_call: Option<usize>,
    pub observation: ObservationSource,
}

/// One planning call of an episode.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanCall {
    /// Real steps taken before the call.
    pub step: usize,
    /// The plan's predicted objective (the agent's anticipated cost).
    pub predicted_objective: f32,
    /// Number of latents the plan predicted (its look-ahead in real steps).
    pub lookahead: usize,
    pub feasible: bool,
}

/// An episode with everything an evaluation needs afterwards.
#[derive(Debug, Clone)]
pub struct EpisodeTrace<L> {
    pub report: EpisodeReport,
    /// The environment's state vector at the start and after every real step.
    pub states: Vec<Vec<f32>>,
    /// The world model's encoding of the real observation at the start and after every step.
    pub latents: Vec<L>,
    pub calls: Vec<PlanCall>,
}

impl<L: Clone> EpisodeTrace<L> {
    /// The objective the cost assigns to what really happened after call `i`: the real
    /// latents over the call's look-ahead (the last one repeated if the episode ended
    /// sooner, since the agent stays where it stopped).
    pub fn realised_objective(&self, cost: &Cost<L>, i: usize) -> Option<f32> {
        let call = self.calls.get(i)?;
        let last = self.latents.last()?;
        let real: Vec<L> = (1..=call.lookahead.max(1))
            .map(|k| self.latents.get(call.step + k).unwrap_or(last).clone())
            .collect();
        Some(cost.evaluate(&real).total())
    }
}

fn observe<E: Environment>(env: &E, source: ObservationSource) -> Vec<f32> {
    match source {
        ObservationSource::State => env.observe_state(),
        ObservationSource::Pixels => env.render(),
    }
}

/// [`mpc_episode`] with options and a full trace (states, real latents, planning calls).
pub fn run_episode<E, M, P>(
    env: &mut E,
    model: &M,
    planner: &mut P,
    cost: &Cost<M::Latent>,
    options: &EpisodeOptions,
) -> Result<EpisodeTrace<M::Latent>, PlanError>
where
    E: Environment,
    M: WorldModel,
    P: Planner,
{
    planner.reset();
    let mut trace = EpisodeTrace {
        report: EpisodeReport {
            success: false,
            violations: 0,
            steps: 0,
            plan_ms: Vec::new(),
            infeasible_plans: 0,
        },
        states: vec![env.observe_state()],
        latents: vec![model.encode(&observe(env, options.observation))?],
        calls: Vec::new(),
    };
    let repeat = options.action_repeat.max(1);
    // Real steps of a partly executed held action, carried to the next warm-start shift.
    let mut pending_steps = 0;
    'episode: while trace.report.steps < options.max_steps {
        let z = trace
            .latents
            .last()
            .cloned()
            .ok_or(PlanError::NonFiniteObservation)?;
        let t0 = Instant::now();
        let plan = planner.plan(model, &z, cost);
        let report = &mut trace.report;
        report.plan_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        if !plan.feasible {
            report.infeasible_plans += 1;
        }
        trace.calls.push(PlanCall {
            step: report.steps,
            predicted_objective: plan.objective,
            lookahead: plan.predicted.len(),
            feasible: plan.feasible,
        });
        let k = options.replan_every.clamp(1, plan.actions.len().max(1));
        let budget = options
            .steps_per_call
            .unwrap_or(k * repeat)
            .clamp(1, k * repeat);
        let mut executed_steps = 0;
        for a in plan.actions.iter().take(k) {
            for _ in 0..repeat {
                if executed_steps == budget {
                    break;
                }
                executed_steps += 1;
                let r = env.step(a)?;
                trace.report.steps += 1;
                trace.report.violations += usize::from(r.violation);
                trace.states.push(env.observe_state());
                trace
                    .latents
                    .push(model.encode(&observe(env, options.observation))?);
                if r.success {
                    trace.report.success = true;
                    break 'episode;
                }
                if r.done || trace.report.steps >= options.max_steps {
                    break 'episode;
                }
            }
        }
        if executed_steps == 0 {
            // An empty plan cannot make progress; stop rather than loop forever.
            break;
        }
        pending_steps += executed_steps;
        planner.shift(pending_steps / repeat);
        pending_steps %= repeat;
    }
    Ok(trace)
}

/// The candidates of one iteration: the current `mean` first (so a refit can never lose it),
/// then `population − 1` Gaussian perturbations with per-element standard deviation
/// `std(i)`; every step of every sequence is clipped to the action-norm cap.
fn sample_sequences(
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
