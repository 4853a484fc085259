//! How a realised continuation fared, and the per-method summary over cases.

use lcm_util::stats::wilson_interval;

use super::cost::{ConceptCost, violates};
use super::{Concept, cosine};

/// How one realised continuation fared.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutScore {
    /// Concepts realised.
    pub steps: usize,
    pub reached_at: Option<usize>,
    /// Highest goal cosine over the continuation (`−∞` when empty).
    pub best_goal_cosine: f32,
    /// Steps inside any guardrail region (hard or soft).
    pub violating_steps: usize,
    /// Mean cosine between consecutive concepts, the prompt's last one included
    /// (NaN when empty).
    pub coherence: f32,
}

/// Scores a realised continuation `path` of a prompt ending in `previous`.
pub fn score_rollout(cost: &ConceptCost, previous: &[f32], path: &[Concept]) -> RolloutScore {
    let eval = cost.evaluate(previous, path);
    let violating_steps = path
        .iter()
        .filter(|c| cost.margins(c).into_iter().any(violates))
        .count();
    let mut prev = previous;
    let mut sum = 0.0;
    for c in path {
        sum += cosine(prev, c);
        prev = c;
    }
    RolloutScore {
        steps: path.len(),
        reached_at: eval.reached_at,
        best_goal_cosine: eval
            .goal_cosines
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max),
        violating_steps,
        coherence: if path.is_empty() {
            f32::NAN
        } else {
            sum / path.len() as f32
        },
    }
}

/// Metrics of one method over a set of cases.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub cases: usize,
    /// Share of cases whose continuation reaches the goal (cos ≥ τ) within its steps.
    pub goal_reach_rate: f64,
    pub goal_reach_ci: (f64, f64),
    /// Share of cases with any concept inside a guardrail region.
    pub violation_rate: f64,
    /// Share of realised concepts inside a guardrail region.
    pub step_violation_rate: f64,
    /// Mean over cases of [`RolloutScore::coherence`] (cases without concepts skipped).
    pub coherence: f64,
    /// Mean over cases of the best goal cosine.
    pub mean_best_goal_cosine: f64,
    /// Share of cases that reach the goal with no concept inside a guardrail region.
    pub reach_and_safe_rate: f64,
}

impl Summary {
    pub fn from_scores(scores: &[RolloutScore]) -> Summary {
        let n = scores.len();
        let reached = scores.iter().filter(|s| s.reached_at.is_some()).count();
        let violating = scores.iter().filter(|s| s.violating_steps > 0).count();
        let safe_reach = scores
            .iter()
            .filter(|s| s.reached_at.is_some() && s.violating_steps == 0)
            .count();
        let steps: usize = scores.iter().map(|s| s.steps).sum();
        let bad_steps: usize = scores.iter().map(|s| s.violating_steps).sum();
        let coherent: Vec<f64> = scores
            .iter()
            .filter(|s| s.coherence.is_finite())
            .map(|s| s.coherence as f64)
            .collect();
        let best: Vec<f64> = scores
            .iter()
            .filter(|s| s.best_goal_cosine.is_finite())
            .map(|s| s.best_goal_cosine as f64)
            .collect();
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let rate = |k: usize, of: usize| if of == 0 { 0.0 } else { k as f64 / of as f64 };
        Summary {
            cases: n,
            goal_reach_rate: rate(reached, n),
            goal_reach_ci: wilson_interval(reached, n),
            violation_rate: rate(violating, n),
            step_violation_rate: rate(bad_steps, steps),
            coherence: mean(&coherent),
            mean_best_goal_cosine: mean(&best),
            reach_and_safe_rate: rate(safe_reach, n),
        }
    }
}
