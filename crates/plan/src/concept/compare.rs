//! The three methods `lcm plan` compares on one case, behind the proposer traits: the
//! planner, unconstrained generation (the model's own continuation) and greedy retrieval.

use std::time::Instant;

use super::baselines::{greedy_retrieval, unconstrained_rollout};
use super::cost::ConceptCost;
use super::metrics::{RolloutScore, score_rollout};
use super::planner::{Candidate, ConceptNeighbours, ConceptPlan, ConceptPlanner, ConceptProposer};
use super::{Concept, Result};

/// What one method produced for one case.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub steps: Vec<Candidate>,
    pub score: RolloutScore,
    /// Wall-clock milliseconds the method took.
    pub millis: f64,
}

/// The three methods on one case, with the cost they were scored by.
pub struct CaseResult {
    pub plan: ConceptPlan,
    pub planner: Outcome,
    pub unconstrained: Outcome,
    pub greedy: Outcome,
    pub cost: ConceptCost,
}

impl CaseResult {
    /// The outcomes in report order: planner, unconstrained generation, greedy retrieval.
    pub fn outcomes(&self) -> [&Outcome; 3] {
        [&self.planner, &self.unconstrained, &self.greedy]
    }
}

/// Where each method's candidates come from.
pub struct Methods<'a> {
    pub planner: &'a ConceptPlanner,
    /// The planner's proposals (possibly steered toward the goal, or bank neighbours).
    pub proposer: &'a mut dyn ConceptProposer,
    /// Unconstrained generation: the model's own, unsteered continuation.
    pub continuation: &'a mut dyn ConceptProposer,
    /// Greedy retrieval's neighbourhood (the sentence bank) and its size M.
    pub neighbours: &'a mut dyn ConceptNeighbours,
    pub greedy_neighbours: usize,
}

/// Runs the planner, then unconstrained generation, then greedy retrieval (in this order:
/// each draws from its proposer's seeded noise) for `prompt` toward `goal`, each continuing
/// for the planner's `steps` concepts and scored by `cost`. `seed` seeds the continuation;
/// greedy retrieval hops toward `goal` as given (not normalised).
pub fn compare_methods(
    methods: Methods<'_>,
    prompt: &[Concept],
    goal: &[f32],
    cost: ConceptCost,
    seed: u64,
) -> Result<CaseResult> {
    let steps = methods.planner.config.steps;
    let last = prompt.last().ok_or(super::ConceptPlanError::EmptyContext)?;
    let realised =
        |steps: &[Candidate]| -> Vec<Concept> { steps.iter().map(|s| s.concept.clone()).collect() };

    let started = Instant::now();
    let plan = methods.planner.plan(methods.proposer, prompt, &cost)?;
    let planner = Outcome {
        score: score_rollout(&cost, last, &realised(&plan.steps)),
        steps: plan.steps.clone(),
        millis: started.elapsed().as_secs_f64() * 1e3,
    };

    let started = Instant::now();
    let said = unconstrained_rollout(methods.continuation, prompt, steps, seed)?;
    let unconstrained = Outcome {
        score: score_rollout(&cost, last, &realised(&said)),
        steps: said,
        millis: started.elapsed().as_secs_f64() * 1e3,
    };

    let started = Instant::now();
    let hops = greedy_retrieval(
        methods.neighbours,
        last,
        goal,
        steps,
        methods.greedy_neighbours,
    )?;
    let greedy = Outcome {
        score: score_rollout(&cost, last, &realised(&hops)),
        steps: hops,
        millis: started.elapsed().as_secs_f64() * 1e3,
    };
    Ok(CaseResult {
        plan,
        planner,
        unconstrained,
        greedy,
        cost,
    })
}
