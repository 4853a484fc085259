//! The concept-space cost: a goal concept reached at cosine τ, optional coherence, and
//! guardrail regions ([`ConceptBall`]; the linear classifier is in `classifier.rs`), summed
//! through [`crate::cost::GuardrailTally`] with the inclusive boundary
//! ([`Boundary::Inclusive`]: a concept exactly on a region's surface is inside).

use crate::cost::{Boundary, Guardrail, GuardrailTally, GuardrailTerm, Severity};

use super::{Concept, ConceptPlanError, Result, cosine, unit};

/// Whether a guardrail margin counts as a violation in concept space (boundary inclusive,
/// see [`Boundary::Inclusive`]).
pub fn violates(margin: f32) -> bool {
    Boundary::Inclusive.violates(margin)
}

/// A forbidden region: every concept whose cosine with `centre` reaches `threshold`.
/// Margin = `threshold − cos(c, centre)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptBall {
    pub name: String,
    /// Unit vector.
    pub centre: Concept,
    /// Cosine radius: `cos ≥ threshold` is inside.
    pub threshold: f32,
}

impl ConceptBall {
    pub fn new(name: impl Into<String>, centre: &[f32], threshold: f32) -> Result<Self> {
        let name = name.into();
        if !threshold.is_finite() {
            return Err(ConceptPlanError::InvalidConfig(format!(
                "the radius of `{name}` must be a finite cosine, got {threshold}"
            )));
        }
        Ok(ConceptBall {
            centre: unit(centre, &format!("the centre of `{name}`"))?,
            name,
            threshold,
        })
    }
}

impl Guardrail<Concept> for ConceptBall {
    fn name(&self) -> &str {
        &self.name
    }

    fn margin(&self, z: &Concept) -> f32 {
        self.threshold - cosine(z, &self.centre)
    }
}
/// The goal: reach a concept whose cosine with `goal` is at least `tau`, as early as possible,
/// optionally keeping consecutive concepts coherent.
///
/// The objective of a path `c_1..c_T` after the prompt's last concept `c_0` is
/// `terminal · (1 − cos(g, c_T)) + stage · mean_t (1 − cos(g, c_t))
///  + coherence · mean_t (1 − cos(c_{t−1}, c_t))`.
pub struct ConceptCost {
    /// Unit vector.
    pub goal: Concept,
    pub tau: f32,
    pub terminal_weight: f32,
    /// Rewards being near the goal early (the reach metric counts any step).
    pub stage_weight: f32,
    pub coherence_weight: f32,
    pub guardrails: Vec<GuardrailTerm<Concept>>,
}

/// What [`ConceptCost::evaluate`] says about one path.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptEvaluation {
    /// The objective (see [`ConceptCost`]).
    pub objective: f32,
    /// `Σ weight · Σ_t max(0, −margin_t)` over the soft guardrails.
    pub soft_penalty: f32,
    /// Hard guardrails: `Σ_t max(0, −margin_t)` plus one per violating concept, so a
    /// concept exactly on a boundary still counts against the path.
    pub hard_violation: f32,
    /// Per guardrail, the minimum margin over the path (`+∞` for an empty path).
    pub min_margins: Vec<f32>,
    /// No hard guardrail is violated anywhere on the path.
    pub feasible: bool,
    /// `cos(goal, c_t)` per step.
    pub goal_cosines: Vec<f32>,
    /// First step (0-based) whose goal cosine reaches τ.
    pub reached_at: Option<usize>,
}

impl ConceptEvaluation {
    /// Objective plus soft penalties; NaN ranks last.
    pub fn total(&self) -> f32 {
        let t = self.objective + self.soft_penalty;
        if t.is_nan() { f32::INFINITY } else { t }
    }
}

impl ConceptCost {
    /// A goal with `terminal_weight = 1`, `stage_weight = 0.1` (as [`crate::cost::Cost`]),
    /// no coherence term and no guardrails.
    pub fn new(goal: &[f32], tau: f32) -> Result<Self> {
        if !(tau.is_finite() && (-1.0..=1.0).contains(&tau)) {
            return Err(ConceptPlanError::InvalidConfig(format!(
                "τ is a cosine in [−1, 1], got {tau}"
            )));
        }
        Ok(ConceptCost {
            goal: unit(goal, "the goal concept")?,
            tau,
            terminal_weight: 1.0,
            stage_weight: 0.1,
            coherence_weight: 0.0,
            guardrails: Vec::new(),
        })
    }

    pub fn with_coherence(mut self, weight: f32) -> Self {
        self.coherence_weight = weight;
        self
    }

    /// Adds a guardrail (builder style).
    pub fn with_guardrail(
        mut self,
        guardrail: impl Guardrail<Concept> + 'static,
        severity: Severity,
    ) -> Self {
        self.guardrails.push(GuardrailTerm {
            guardrail: Box::new(guardrail),
            severity,
        });
        self
    }

    pub fn dim(&self) -> usize {
        self.goal.len()
    }

    pub fn guardrail_names(&self) -> Vec<String> {
        self.guardrails
            .iter()
            .map(|g| g.guardrail.name().to_string())
            .collect()
    }

    /// Per guardrail, the margin of one concept.
    pub fn margins(&self, c: &Concept) -> Vec<f32> {
        self.guardrails
            .iter()
            .map(|g| g.guardrail.margin(c))
            .collect()
    }

    /// Evaluates `path` (the future concepts) after the prompt's last concept `previous`.
    pub fn evaluate(&self, previous: &[f32], path: &[Concept]) -> ConceptEvaluation {
        let goal_cosines: Vec<f32> = path.iter().map(|c| cosine(c, &self.goal)).collect();
        let reached_at = goal_cosines.iter().position(|&c| c >= self.tau);
        let objective = match goal_cosines.last() {
            None => 0.0,
            Some(&last) => {
                let t = path.len() as f32;
                let stage = goal_cosines.iter().map(|c| 1.0 - c).sum::<f32>() / t;
                let mut coherence = 0.0;
                if self.coherence_weight != 0.0 {
                    let mut prev = previous;
                    for c in path {
                        coherence += 1.0 - cosine(prev, c);
                        prev = c;
                    }
                    coherence /= t;
                }
                self.terminal_weight * (1.0 - last)
                    + self.stage_weight * stage
                    + self.coherence_weight * coherence
            }
        };
        let tally = GuardrailTally::over(&self.guardrails, path, Boundary::Inclusive);
        ConceptEvaluation {
            objective,
            soft_penalty: tally.soft_penalty,
            hard_violation: tally.hard_violation,
            min_margins: tally.min_margins,
            feasible: tally.feasible,
            goal_cosines,
            reached_at,
        }
    }
}
