//! The two baselines the planner is measured against: the model's own continuation and
//! greedy retrieval toward the goal.

use super::planner::{Candidate, ConceptNeighbours, ConceptProposer, check_context, derive_seed};
use super::{Concept, Result, cosine};

/// Baseline: the model's own continuation, `steps` times, blind to goal and guardrails. Each
/// step takes the proposer's first candidate (its most likely continuation) that the rollout
/// has not said yet, falling back to the first one.
pub fn unconstrained_rollout<P: ConceptProposer + ?Sized>(
    proposer: &mut P,
    prompt: &[Concept],
    steps: usize,
    seed: u64,
) -> Result<Vec<Candidate>> {
    let dim = prompt.first().map_or(0, Vec::len);
    check_context(prompt, dim)?;
    let mut context: Vec<Concept> = prompt.to_vec();
    let mut out: Vec<Candidate> = Vec::with_capacity(steps);
    for depth in 0..steps {
        let mut proposed = proposer.propose(&[&context], 1, derive_seed(seed, depth as u64))?;
        let Some(list) = proposed.pop().filter(|l| !l.is_empty()) else {
            break;
        };
        let pick = list
            .iter()
            .find(|c| out.iter().all(|o| o.key != c.key))
            .unwrap_or(&list[0])
            .clone();
        context.push(pick.concept.clone());
        out.push(pick);
    }
    Ok(out)
}

/// Baseline: retrieval hill-climbing. Each step, among the `m` nearest neighbours of the
/// current concept (not yet visited), go to the one most similar to the goal. Blind to the
/// guardrails and to the model.
pub fn greedy_retrieval<N: ConceptNeighbours + ?Sized>(
    neighbours: &mut N,
    start: &[f32],
    goal: &[f32],
    steps: usize,
    m: usize,
) -> Result<Vec<Candidate>> {
    let mut current: Concept = start.to_vec();
    let mut out: Vec<Candidate> = Vec::with_capacity(steps);
    for _ in 0..steps {
        // One extra neighbour per visited concept, so visited ones never crowd out all M.
        let hits = neighbours.nearest(&current, m + out.len() + 1)?;
        let mut best: Option<(f32, Candidate)> = None;
        let fresh = hits.into_iter().filter(|h| {
            out.iter().all(|o| o.key != h.key) && cosine(&h.concept, &current) < 0.999_999
        });
        for hit in fresh.take(m) {
            let score = cosine(&hit.concept, goal);
            // Strictly better only: on a tie the closer neighbour (listed first) wins.
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, hit));
            }
        }
        let Some((_, best)) = best else {
            break;
        };
        current = best.concept.clone();
        out.push(best);
    }
    Ok(out)
}
