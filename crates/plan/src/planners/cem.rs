//! The cross-entropy method and its constrained variants: [`Cem`] (hard guardrails as a
//! penalty), [`ConstrainedCem`] (feasible-first) and [`AugLagCem`] (augmented Lagrangian).

use std::cmp::Ordering;

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use super::{
    Candidate, Plan, Planner, feasible_first, penalised, sample_sequences, shift_warm, to_plan,
    warm_start,
};
use crate::cost::{Cost, Evaluation};
use crate::world::{PlanError, WorldModel};

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
/// Cross-entropy method with hard guardrails folded in as a penalty.
#[derive(Debug, Clone)]
pub struct Cem {
    cfg: CemConfig,
    ranking: Ranking,
    /// Under a Lagrangian ranking, return the cheapest feasible candidate seen rather than
    /// an infeasible best, or the least violating one when none was feasible (set by
    /// [`AugLagConfig::feasible_fallback`]).
    keep_feasible: bool,
    rng: ChaCha12Rng,
    warm: Option<Vec<f32>>,
}

impl Cem {
    pub fn new(cfg: CemConfig) -> Result<Self, PlanError> {
        cfg.validate()?;
        Ok(Cem {
            ranking: Ranking::Penalty(cfg.hard_penalty),
            keep_feasible: false,
            rng: ChaCha12Rng::seed_from_u64(cfg.seed),
            warm: None,
            cfg,
        })
    }

    pub fn config(&self) -> &CemConfig {
        &self.cfg
    }

    /// One planning call: [`Self::search`], then for the feasible-first ranking (constrained
    /// CEM) the backup plan where nothing feasible was sampled ([`with_backup`]).
    fn run<M: WorldModel>(
        &mut self,
        model: &M,
        z0: &M::Latent,
        cost: &Cost<M::Latent>,
    ) -> Plan<M::Latent> {
        let found = self.search(model, z0, cost);
        let mut best = found.best;
        if self.ranking == Ranking::FeasibleFirst {
            best = with_backup(best, found.safest, model, z0, cost);
        }
        self.warm = Some(best.actions.clone());
        to_plan(best, cost, self.cfg.action_dim, found.feasible_candidates)
    }

    /// The CEM iterations from the warm start; the warm start becomes the best candidate.
    fn search<M: WorldModel>(
        &mut self,
        model: &M,
        z0: &M::Latent,
        cost: &Cost<M::Latent>,
    ) -> Search<M::Latent> {
        let c = &self.cfg;
        let len = c.horizon * c.action_dim;
        let mut mean = warm_start(&self.warm, len);
        let mut std = vec![c.init_std; len];
        let mut best: Option<Candidate<M::Latent>> = None;
        // The first candidate in feasible-first order seen (the cheapest feasible one, or
        // with none the least violating), for rankings that can put an infeasible candidate
        // first (the Lagrangian's): a hard guardrail must not be traded away.
        let mut safest: Option<Candidate<M::Latent>> = None;
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
            if self.keep_feasible
                && matches!(self.ranking, Ranking::Lagrangian { .. })
                && let Some(i) = cands
                    .iter()
                    .enumerate()
                    .min_by(|(_, a), (_, b)| feasible_first(&a.eval, &b.eval))
                    .map(|(i, _)| i)
                && safest
                    .as_ref()
                    .is_none_or(|b| feasible_first(&cands[i].eval, &b.eval) == Ordering::Less)
            {
                safest = Some(Candidate {
                    actions: cands[i].actions.clone(),
                    predicted: cands[i].predicted.clone(),
                    eval: cands[i].eval.clone(),
                });
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
        let (best, safest) = match safest {
            Some(s) if s.eval.feasible && !best.eval.feasible => (s, None),
            other => (best, other),
        };
        self.warm = Some(best.actions.clone());
        Search {
            best,
            safest,
            feasible_candidates,
        }
    }
}

/// What one CEM search found.
struct Search<L> {
    /// First under the search's ranking, except that a feasible candidate replaces an
    /// infeasible best where the search keeps feasibility.
    best: Candidate<L>,
    /// Under a Lagrangian ranking that keeps feasibility, the first candidate seen in
    /// feasible-first order (the cheapest feasible one, or with none the least violating).
    safest: Option<Candidate<L>>,
    feasible_candidates: usize,
}

/// Where `best` is infeasible: the least violating candidate `safest` if it violates less,
/// then the backup plan — standing still (the worlds here have no momentum, so an agent safe
/// where it stands stays safe), kept if it ranks before both in feasible-first order.
fn with_backup<M: WorldModel>(
    best: Candidate<M::Latent>,
    safest: Option<Candidate<M::Latent>>,
    model: &M,
    z0: &M::Latent,
    cost: &Cost<M::Latent>,
) -> Candidate<M::Latent> {
    if best.eval.feasible {
        return best;
    }
    let mut best = best;
    if let Some(s) = safest
        && feasible_first(&s.eval, &best.eval) == Ordering::Less
    {
        best = s;
    }
    let stop = Candidate::rolled_out(model, z0, cost, vec![0.0; best.actions.len()]);
    if feasible_first(&stop.eval, &best.eval) == Ordering::Less {
        best = stop;
    }
    best
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
    /// Return the cheapest feasible candidate sampled in any iteration when the Lagrangian's
    /// best is infeasible, so a hard guardrail is never traded for objective once a feasible
    /// plan was seen (as [`ConstrainedCem`]); with no feasible candidate, standing still if
    /// that is predicted feasible, else the least violating candidate. Off, a round's
    /// Lagrangian best is kept even if infeasible (the behaviour the issue-5 JEPA rows of
    /// EVALUATION.md were measured with).
    pub feasible_fallback: bool,
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
            feasible_fallback: true,
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
        let mut inner = Cem::new(cfg.cem.clone())?;
        inner.keep_feasible = cfg.feasible_fallback;
        Ok(AugLagCem {
            inner,
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
        let mut best: Option<Candidate<M::Latent>> = None;
        // Across rounds, the first candidate in feasible-first order (with the fallback on).
        let mut safest: Option<Candidate<M::Latent>> = None;
        let mut feasible_candidates = 0;
        for _ in 0..self.cfg.rounds {
            self.inner.ranking = Ranking::Lagrangian {
                lambda: self.lambda,
                rho,
            };
            let found = self.inner.search(model, z0, cost);
            feasible_candidates += found.feasible_candidates;
            let round = found.best;
            let v = round.eval.hard_violation;
            self.lambda = (self.lambda + rho * v).min(1.0e6);
            rho = (rho * self.cfg.rho_growth).min(self.cfg.rho_max);
            if let Some(s) = found.safest
                && safest
                    .as_ref()
                    .is_none_or(|b| feasible_first(&s.eval, &b.eval) == Ordering::Less)
            {
                safest = Some(s);
            }
            let better =
                best.as_ref()
                    .is_none_or(|b| match (round.eval.feasible, b.eval.feasible) {
                        (true, false) => true,
                        (false, true) => false,
                        (true, true) => round.eval.total() < b.eval.total(),
                        (false, false) => v < b.eval.hard_violation,
                    });
            if better {
                best = Some(round);
            }
        }
        // rounds > 0 (validated), so a candidate exists; the fallback keeps this panic-free.
        let best = match best {
            Some(b) => b,
            None => self.inner.search(model, z0, cost).best,
        };
        let best = if self.cfg.feasible_fallback {
            with_backup(best, safest, model, z0, cost)
        } else {
            best
        };
        // Warm-start the next call from the plan actually returned.
        self.inner.warm = Some(best.actions.clone());
        to_plan(best, cost, self.inner.cfg.action_dim, feasible_candidates)
    }

    fn shift(&mut self, steps: usize) {
        self.inner.shift(steps);
    }

    fn reset(&mut self) {
        self.inner.reset();
        self.lambda = 0.0;
    }
}
