//! The MPC loop: plan, execute, re-encode the real observation, repeat; with the trace an
//! evaluation needs afterwards.

use std::time::Instant;

use super::Planner;
use crate::cost::Cost;
use crate::env::Environment;
use crate::world::{PlanError, WorldModel};

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
    /// Real steps per planner action (must match a [`RepeatActions`](crate::planners::RepeatActions) model's `repeat`).
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
