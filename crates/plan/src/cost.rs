//! Costs a planner minimises: an objective (reach the goal latent) plus named guardrail terms.
//!
//! Each guardrail reports a *margin* per predicted latent: positive means safe, negative
//! means violated, and its magnitude says by how much. A term is either
//! - [`Severity::Hard`]: a constraint. Any negative margin makes the rollout infeasible; the
//!   violation amount is reported separately and never mixed into the objective, so a
//!   feasible-first planner can rank on it; or
//! - [`Severity::Soft`]: a penalty `weight · Σ_t max(0, −margin_t)` added to the objective.
//!
//! Every cost of the crate (this [`Cost`] on physical latents, and
//! [`crate::concept::ConceptCost`] on sentence embeddings) sums its guardrail terms through
//! one [`GuardrailTally`], under one of two stated [`Boundary`] conventions:
//! - [`Boundary::Exclusive`] (physical worlds): a margin of exactly 0 is safe. Hazards are
//!   closed sets, and the environment flags a position on their boundary, so costs on
//!   positions keep plans strictly outside with a safety buffer instead.
//! - [`Boundary::Inclusive`] (concept space): a margin `≤ 0` violates. A sentence exactly
//!   on a ball's surface is as close to the forbidden topic as the radius allows, so it is
//!   refused; because its `max(0, −margin)` is 0, each violating step adds 1 to the hard
//!   violation, so it still counts against the path.
//!
//! The two conventions are kept (not merged) because each one's numbers are pinned: planning
//! outputs of `lcm wm eval` and `lcm plan` must not change. A NaN margin violates under both.

use crate::env::two_rooms::{Rect, Vec2};

/// How a guardrail term enters the cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Severity {
    /// Must never be violated: any margin < 0 makes the rollout infeasible.
    Hard,
    /// Violations are allowed but cost `weight` per unit of negative margin per step.
    Soft { weight: f32 },
}

/// A per-latent safety margin (positive = safe, negative = violated).
pub trait Guardrail<L> {
    fn name(&self) -> &str;
    fn margin(&self, z: &L) -> f32;
}

/// A guardrail with its severity.
pub struct GuardrailTerm<L> {
    pub guardrail: Box<dyn Guardrail<L>>,
    pub severity: Severity,
}

/// Distance between two latents (the objective's building block): a plain function; a
/// [`Cost`] also takes closures, e.g. the path length over a map
/// ([`Geometry::path_length`](crate::env::two_rooms::Geometry::path_length)).
pub type Distance<L> = fn(&L, &L) -> f32;

/// A boxed distance, as a [`Cost`] holds it.
pub type BoxedDistance<L> = Box<dyn Fn(&L, &L) -> f32>;

/// Euclidean distance between positions (the oracle latent). Not squared, so the cost is in
/// pixels and temperatures / penalty weights keep an intuitive scale.
pub fn euclidean(a: &Vec2, b: &Vec2) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// A penalty on a whole predicted path, added to the objective: what no single latent shows,
/// such as a transition between two consecutive predicted states that the map makes
/// impossible ([`ProbedPathLength::impossible_transitions`](crate::evaluation::ProbedPathLength::impossible_transitions)).
pub type PathPenalty<L> = Box<dyn Fn(&[L]) -> f32>;

/// Objective plus guardrails for one goal.
pub struct Cost<L> {
    pub goal: L,
    /// Distance from a predicted latent to the goal (a [`Distance`] or a closure).
    pub distance: BoxedDistance<L>,
    /// Weight of the mean distance over all predicted latents (rewards getting there early).
    pub stage_weight: f32,
    /// Weight of the distance of the final predicted latent.
    pub terminal_weight: f32,
    pub guardrails: Vec<GuardrailTerm<L>>,
    /// Added to the objective of every rollout (none by default).
    pub path_penalty: Option<PathPenalty<L>>,
}

/// What [`Cost::evaluate`] says about one predicted rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Stage + terminal distance terms.
    pub objective: f32,
    /// Sum of the soft terms' penalties.
    pub soft_penalty: f32,
    /// Sum over hard terms and steps of `max(0, −margin)`; 0 exactly when feasible.
    pub hard_violation: f32,
    /// Per guardrail (in [`Cost::guardrails`] order), the minimum margin over the rollout
    /// (`+∞` for an empty rollout).
    pub min_margins: Vec<f32>,
    /// No hard term has a negative margin anywhere.
    pub feasible: bool,
}

impl Evaluation {
    /// Objective plus soft penalties (hard terms excluded; see [`Severity::Hard`]).
    /// NaN is mapped to `+∞` so a broken candidate always ranks last.
    pub fn total(&self) -> f32 {
        let t = self.objective + self.soft_penalty;
        if t.is_nan() { f32::INFINITY } else { t }
    }
}

impl<L> Cost<L> {
    /// A pure objective with `stage_weight = 0.1`, `terminal_weight = 1` and no guardrails.
    pub fn new(goal: L, distance: impl Fn(&L, &L) -> f32 + 'static) -> Self {
        Cost {
            goal,
            distance: Box::new(distance),
            stage_weight: 0.1,
            terminal_weight: 1.0,
            guardrails: Vec::new(),
            path_penalty: None,
        }
    }

    /// Adds a whole-path penalty to the objective (builder style).
    pub fn with_path_penalty(mut self, penalty: impl Fn(&[L]) -> f32 + 'static) -> Self {
        self.path_penalty = Some(Box::new(penalty));
        self
    }

    /// Adds a guardrail term (builder style).
    pub fn with_guardrail(
        mut self,
        guardrail: impl Guardrail<L> + 'static,
        severity: Severity,
    ) -> Self {
        self.guardrails.push(GuardrailTerm {
            guardrail: Box::new(guardrail),
            severity,
        });
        self
    }

    pub fn guardrail_names(&self) -> Vec<String> {
        self.guardrails
            .iter()
            .map(|g| g.guardrail.name().to_string())
            .collect()
    }

    /// Evaluates a predicted rollout (the latents after each action, start excluded: the
    /// current state is a fact the plan cannot change, so it must not make every plan
    /// infeasible).
    pub fn evaluate(&self, predicted: &[L]) -> Evaluation {
        let objective = match predicted.last() {
            None => 0.0,
            Some(last) => {
                let stage: f32 = predicted
                    .iter()
                    .map(|z| (self.distance)(z, &self.goal))
                    .sum::<f32>()
                    / predicted.len() as f32;
                let path = self.path_penalty.as_ref().map_or(0.0, |p| p(predicted));
                self.stage_weight * stage
                    + self.terminal_weight * (self.distance)(last, &self.goal)
                    + path
            }
        };
        let tally = GuardrailTally::over(&self.guardrails, predicted, Boundary::Exclusive);
        Evaluation {
            objective,
            soft_penalty: tally.soft_penalty,
            hard_violation: tally.hard_violation,
            min_margins: tally.min_margins,
            feasible: tally.feasible,
        }
    }
}

/// Whether a latent exactly on a guardrail's boundary (margin 0) is inside it; see the
/// module docs for which cost uses which and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// Margin 0 is safe; only a negative margin violates (physical worlds).
    Exclusive,
    /// Margin `≤ 0` violates, and each violating step adds 1 to the hard violation
    /// (concept space).
    Inclusive,
}

impl Boundary {
    /// Whether `margin` counts as a violation (NaN cannot be trusted to be safe).
    pub fn violates(self, margin: f32) -> bool {
        margin.is_nan()
            || match self {
                Boundary::Exclusive => margin < 0.0,
                Boundary::Inclusive => margin <= 0.0,
            }
    }
}

/// The guardrail terms of one path, summed the one way every cost shares.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardrailTally {
    /// `Σ weight · Σ_t max(0, −margin_t)` over the soft terms.
    pub soft_penalty: f32,
    /// Over the hard terms, `Σ_t max(0, −margin_t)` (plus one per violating step under
    /// [`Boundary::Inclusive`]); 0 exactly when feasible.
    pub hard_violation: f32,
    /// Per term (in order), the minimum margin over the path (`+∞` for an empty path, −∞
    /// where a margin was NaN).
    pub min_margins: Vec<f32>,
    /// No hard term is violated anywhere on the path.
    pub feasible: bool,
}

impl GuardrailTally {
    /// Sums `terms` over the latents of `path` under `boundary`.
    pub fn over<L>(terms: &[GuardrailTerm<L>], path: &[L], boundary: Boundary) -> Self {
        let mut tally = GuardrailTally {
            soft_penalty: 0.0,
            hard_violation: 0.0,
            min_margins: Vec::with_capacity(terms.len()),
            feasible: true,
        };
        for term in terms {
            let mut min_m = f32::INFINITY;
            let mut amount = 0.0;
            let mut count = 0usize;
            for z in path {
                let m = term.guardrail.margin(z);
                // A NaN margin cannot be trusted to be safe.
                let m = if m.is_nan() { f32::NEG_INFINITY } else { m };
                min_m = min_m.min(m);
                // A safe margin adds exactly 0, so the amount is the same sum under both
                // conventions; only the count of violating steps differs.
                amount += (-m).max(0.0);
                count += usize::from(boundary.violates(m));
            }
            match term.severity {
                Severity::Hard => {
                    if count > 0 {
                        tally.feasible = false;
                    }
                    tally.hard_violation += match boundary {
                        Boundary::Exclusive => amount,
                        Boundary::Inclusive => amount + count as f32,
                    };
                }
                Severity::Soft { weight } => tally.soft_penalty += weight * amount,
            }
            tally.min_margins.push(min_m);
        }
        tally
    }
}

/// The order every feasible-first search uses, on `(feasible, hard violation, total cost)`:
/// feasible before infeasible; feasible ones by cost, infeasible ones by violation, then cost.
pub fn feasible_first_order(a: (bool, f32, f32), b: (bool, f32, f32)) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.0, b.0) {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (true, true) => a.2.total_cmp(&b.2),
        (false, false) => a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)),
    }
}

/// Two-Rooms guardrail: stay out of the hazard rectangles. The margin of a position is its
/// signed distance to the union of hazards (distance to the nearest one outside, minus the
/// depth inside), minus an optional safety buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct HazardGuardrail {
    pub hazards: Vec<Rect>,
    /// Subtracted from the signed distance. The environment's hazards are closed sets, so a
    /// plan skimming the boundary at margin 0 would still be flagged; a small buffer keeps
    /// plans strictly outside.
    pub buffer: f32,
}

impl HazardGuardrail {
    pub fn new(hazards: Vec<Rect>) -> Self {
        HazardGuardrail {
            hazards,
            buffer: 0.0,
        }
    }

    pub fn with_buffer(mut self, buffer: f32) -> Self {
        self.buffer = buffer;
        self
    }
}

/// Signed distance from `p` to the closed rectangle `r` (negative inside).
pub fn rect_signed_distance(r: &Rect, p: Vec2) -> f32 {
    // Per-axis distance outside the slab (positive) or minus depth inside it (negative).
    let dx = (r.x0 - p[0]).max(p[0] - r.x1);
    let dy = (r.y0 - p[1]).max(p[1] - r.y1);
    let outside = (dx.max(0.0).powi(2) + dy.max(0.0).powi(2)).sqrt();
    outside + dx.max(dy).min(0.0)
}

impl Guardrail<Vec2> for HazardGuardrail {
    fn name(&self) -> &str {
        "hazard"
    }

    fn margin(&self, z: &Vec2) -> f32 {
        self.hazards
            .iter()
            .map(|r| rect_signed_distance(r, *z))
            .fold(f32::INFINITY, f32::min)
            - self.buffer
    }
}
