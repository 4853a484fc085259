//! The concept planner: feasible-first beam search over proposer candidates, and the
//! proposer / neighbour interfaces through which the world model (an LCM) and the set of
//! sayable sentences (a sentence bank) enter.

use std::cmp::Ordering;

use super::cost::{ConceptCost, ConceptEvaluation};
use super::{Concept, ConceptPlanError, Result};

/// A candidate next concept with the proposer's identifier for it (the CLI: the bank row of
/// the sentence it will say). The planner never puts two candidates with the same key into
/// one plan, so a plan does not repeat a sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub key: usize,
    pub concept: Concept,
}

/// The world model as the planner sees it: candidate next concepts for a context.
pub trait ConceptProposer {
    /// For each context (all of the same length, each starting with the prompt), up to `n`
    /// candidates for the next concept, the model's most likely continuation first. The
    /// same `seed` must give the same candidates.
    fn propose(
        &mut self,
        contexts: &[&[Concept]],
        n: usize,
        seed: u64,
    ) -> Result<Vec<Vec<Candidate>>>;
}

/// Nearest neighbours in the space of sayable concepts (the CLI: the sentence bank).
pub trait ConceptNeighbours {
    /// The `m` candidates closest to `query` by cosine, closest first.
    fn nearest(&mut self, query: &[f32], m: usize) -> Result<Vec<Candidate>>;
}

/// Settings of [`ConceptPlanner`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptPlannerConfig {
    /// Future concepts planned, `K`.
    pub steps: usize,
    /// Partial plans kept per depth.
    pub beam_width: usize,
    /// Candidates requested from the proposer per partial plan.
    pub candidates: usize,
    pub seed: u64,
}

impl Default for ConceptPlannerConfig {
    fn default() -> Self {
        ConceptPlannerConfig {
            steps: 4,
            beam_width: 4,
            candidates: 16,
            seed: 0,
        }
    }
}

/// A planner's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptPlan {
    /// The planned concepts (proposer candidates, so realisable).
    pub steps: Vec<Candidate>,
    /// `cos(goal, c_t)` per step.
    pub goal_cosines: Vec<f32>,
    /// The anticipation: the objective the plan would have if it stopped after step `t`.
    pub anticipated: Vec<f32>,
    /// Objective plus soft penalties of the whole plan.
    pub objective: f32,
    /// Per guardrail, the minimum margin over the plan.
    pub margins: Vec<(String, f32)>,
    /// No hard guardrail is violated by any planned concept.
    pub feasible: bool,
    /// First step (0-based) whose goal cosine reaches τ.
    pub reached_at: Option<usize>,
    /// Candidate expansions scored (all depths) and how many of them were feasible.
    pub candidates: usize,
    pub feasible_candidates: usize,
    /// Complete `K`-step plans scored and how many were feasible.
    pub complete_plans: usize,
    pub feasible_plans: usize,
}

/// Feasible-first beam search over `K` future concepts.
///
/// At each depth every partial plan in the beam asks the proposer for `N` candidates (one
/// batched call for the whole beam); each extension is scored by [`ConceptCost::evaluate`]
/// and the best `B` are kept, ranked feasible-first: feasible paths by total cost, then
/// infeasible ones by hard violation and cost. Infeasibility is permanent along a path
/// (a violating sentence cannot be unsaid), so ranking feasible paths first keeps every
/// feasible branch alive while there is room, and the returned plan is the best feasible
/// complete plan whenever one was scored. With none, the least-violating plan is returned
/// with `feasible = false`.
pub struct ConceptPlanner {
    pub config: ConceptPlannerConfig,
}

struct Node {
    steps: Vec<Candidate>,
    eval: ConceptEvaluation,
}

/// Feasible before infeasible; then cost (feasible) or violation, then cost (infeasible).
fn rank(a: &ConceptEvaluation, b: &ConceptEvaluation) -> Ordering {
    crate::cost::feasible_first_order(
        (a.feasible, a.hard_violation, a.total()),
        (b.feasible, b.hard_violation, b.total()),
    )
}

/// A seed per (planner seed, depth): SplitMix64 of their combination, so the proposer's
/// noise differs between depths but is reproducible.
pub fn derive_seed(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn check_context(prompt: &[Concept], dim: usize) -> Result<()> {
    if prompt.is_empty() {
        return Err(ConceptPlanError::EmptyContext);
    }
    for (i, c) in prompt.iter().enumerate() {
        if c.len() != dim {
            return Err(ConceptPlanError::DimensionMismatch {
                what: format!("prompt concept {i}"),
                expected: dim,
                got: c.len(),
            });
        }
    }
    Ok(())
}

impl ConceptPlanner {
    pub fn new(config: ConceptPlannerConfig) -> Result<Self> {
        let c = &config;
        if c.steps == 0 || c.beam_width == 0 || c.candidates == 0 {
            return Err(ConceptPlanError::InvalidConfig(format!(
                "steps, beam width and candidates must all be at least 1, got {c:?}"
            )));
        }
        Ok(ConceptPlanner { config })
    }

    /// Plans `K` concepts after `prompt` (its concepts, oldest first).
    pub fn plan<P: ConceptProposer + ?Sized>(
        &self,
        proposer: &mut P,
        prompt: &[Concept],
        cost: &ConceptCost,
    ) -> Result<ConceptPlan> {
        check_context(prompt, cost.dim())?;
        let previous = &prompt[prompt.len() - 1];
        let mut beam: Vec<Node> = vec![Node {
            steps: Vec::new(),
            eval: cost.evaluate(previous, &[]),
        }];
        let (mut candidates, mut feasible_candidates) = (0usize, 0usize);
        let (mut complete_plans, mut feasible_plans) = (0usize, 0usize);
        for depth in 0..self.config.steps {
            let contexts: Vec<Vec<Concept>> = beam
                .iter()
                .map(|node| {
                    prompt
                        .iter()
                        .cloned()
                        .chain(node.steps.iter().map(|s| s.concept.clone()))
                        .collect()
                })
                .collect();
            let refs: Vec<&[Concept]> = contexts.iter().map(Vec::as_slice).collect();
            let proposals = proposer.propose(
                &refs,
                self.config.candidates,
                derive_seed(self.config.seed, depth as u64),
            )?;
            if proposals.len() != beam.len() {
                return Err(ConceptPlanError::Proposer(
                    format!(
                        "{} candidate lists for {} contexts",
                        proposals.len(),
                        beam.len()
                    )
                    .into(),
                ));
            }
            let mut next: Vec<Node> = Vec::new();
            for (node, proposed) in beam.iter().zip(proposals) {
                for candidate in proposed {
                    if candidate.concept.len() != cost.dim() {
                        return Err(ConceptPlanError::DimensionMismatch {
                            what: "a proposed concept".into(),
                            expected: cost.dim(),
                            got: candidate.concept.len(),
                        });
                    }
                    if node.steps.iter().any(|s| s.key == candidate.key) {
                        continue;
                    }
                    let mut steps = node.steps.clone();
                    steps.push(candidate);
                    let path: Vec<Concept> = steps.iter().map(|s| s.concept.clone()).collect();
                    let eval = cost.evaluate(previous, &path);
                    candidates += 1;
                    feasible_candidates += usize::from(eval.feasible);
                    next.push(Node { steps, eval });
                }
            }
            if next.is_empty() {
                // The proposer had nothing new to say; keep the longest plan found so far.
                break;
            }
            next.sort_by(|a, b| rank(&a.eval, &b.eval));
            if depth + 1 == self.config.steps {
                complete_plans = next.len();
                feasible_plans = next.iter().filter(|n| n.eval.feasible).count();
            }
            // Same sentences in another order make the same plan twice; keep one.
            let mut kept: Vec<Node> = Vec::with_capacity(self.config.beam_width);
            for node in next {
                if kept.len() == self.config.beam_width {
                    break;
                }
                let mut keys: Vec<usize> = node.steps.iter().map(|s| s.key).collect();
                keys.sort_unstable();
                let duplicate = kept.iter().any(|k| {
                    let mut other: Vec<usize> = k.steps.iter().map(|s| s.key).collect();
                    other.sort_unstable();
                    other == keys
                });
                if !duplicate {
                    kept.push(node);
                }
            }
            beam = kept;
        }
        let best = beam
            .into_iter()
            .min_by(|a, b| rank(&a.eval, &b.eval))
            .ok_or_else(|| ConceptPlanError::Proposer("empty beam".into()))?;
        let anticipated = (1..=best.steps.len())
            .map(|t| {
                let path: Vec<Concept> =
                    best.steps[..t].iter().map(|s| s.concept.clone()).collect();
                cost.evaluate(previous, &path).total()
            })
            .collect();
        Ok(ConceptPlan {
            goal_cosines: best.eval.goal_cosines.clone(),
            anticipated,
            objective: best.eval.total(),
            margins: cost
                .guardrail_names()
                .into_iter()
                .zip(best.eval.min_margins.iter().copied())
                .collect(),
            feasible: best.eval.feasible,
            reached_at: best.eval.reached_at,
            steps: best.steps,
            candidates,
            feasible_candidates,
            complete_plans,
            feasible_plans,
        })
    }
}
