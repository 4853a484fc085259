//! The agent rows of `lcm wm eval --env point-maze`: DINO-WM's PointMaze U-maze with the
//! oracle (the exact dynamics) or a trained JEPA under the same planners as Two-Rooms.
//!
//! Episodes follow DINO-WM's evaluation: start and goal drawn independently as random states
//! of the free region ([`PointMaze::sample_start_goal`]), success within 0.5 of the goal's
//! position, 300 steps at most. The planner's actions are held for [`EvalSettings::repeat`]
//! steps (DINO-WM's frameskip 5). Actions live in the box `[−1, 1]²`: the planners sample
//! within the norm √2 and every candidate is clipped to the box before the model sees it,
//! as the environment clips what is executed, so model and environment see the same action.
//!
//! Objectives ([`OracleCost`] / [`JepaCost`] of the shared [`EvalSettings`]):
//! - the oracle minimises the straight-line distance of the ball's position to the goal, or
//!   the shortest free path to it ([`MazeDistanceField`]);
//! - the JEPA minimises the latent distance to the goal observation's latent (the goal at
//!   rest), or the shortest free path from the position the probe reads out of the
//!   predicted latent to the position it reads out of the goal latent.

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use super::EpisodeSummary;
use super::agents::{Agent, EvalSettings, JepaCost, OracleCost, with_latent_term};
use crate::cost::{Cost, HazardGuardrail, Severity};
use crate::env::Environment;
use crate::env::point_maze::dataset::render_state;
use crate::env::point_maze::distance::MazeDistanceField;
use crate::env::point_maze::{
    BallState, OraclePointMaze, PointMaze, PointMazeConfig, clip_action_box, position_distance,
};
use crate::planners::{
    AugLagCem, AugLagConfig, Cem, CemConfig, ConstrainedCem, EpisodeOptions, Mppi, MppiConfig,
    ObservationSource, Planner, RandomPolicy, RepeatActions, run_episode,
};
use crate::world::jepa::ObservationKind;
use crate::world::learned::{
    HostProbe, Latent, LearnedWorld, ProbedHazardGuardrail, latent_distance,
};
use crate::world::{PlanError, WorldModel};

/// Grid spacing of the maze's distance field (a twentieth of a cell).
const FIELD_STEP: f32 = 0.05;

/// The largest action norm the planners sample (the box `[−1, 1]²`'s corner).
const MAX_NORM: f32 = std::f32::consts::SQRT_2;

/// `n` seeded (start, goal) pairs: DINO-WM's independent random states, redrawn until both
/// positions keep `clearance` from every hazard of `cfg` (none without hazards) and the
/// shortest free path between them is at least `min_path` long.
pub fn maze_pairs(
    cfg: &PointMazeConfig,
    n: usize,
    seed: u64,
    min_path: f32,
) -> Result<Vec<(BallState, BallState)>, PlanError> {
    let env = PointMaze::new(cfg.clone())?;
    let longest = MazeDistanceField::new(env.geometry(), [0.8, 0.8], FIELD_STEP).value([2.8, 0.8]);
    if !(min_path.is_finite() && min_path < longest) {
        return Err(PlanError::Config(format!(
            "a minimum start-goal path of {min_path} leaves no pairs (the U's arm ends are {longest:.2} apart)"
        )));
    }
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let clearance = 0.1;
    let away = |s: &BallState| {
        cfg.hazards
            .iter()
            .all(|h| crate::cost::rect_signed_distance(h, [s[0], s[1]]) > clearance)
    };
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (start, goal) = env.sample_start_goal(&mut rng);
        let far = min_path <= 0.0
            || MazeDistanceField::new(env.geometry(), [goal[0], goal[1]], FIELD_STEP)
                .value([start[0], start[1]])
                >= min_path;
        if away(&start) && away(&goal) && far {
            out.push((start, goal));
        }
    }
    Ok(out)
}

/// A world model whose actions are clipped to the box `[−1, 1]²` first (what the
/// environment does to an executed action).
#[derive(Debug, Clone)]
pub struct BoxActions<M> {
    pub inner: M,
}

fn clip_all(actions: &[f32]) -> Vec<f32> {
    actions.chunks(2).flat_map(clip_action_box).collect()
}

impl<M: WorldModel> WorldModel for BoxActions<M> {
    type Latent = M::Latent;

    fn action_dim(&self) -> usize {
        self.inner.action_dim()
    }

    fn encode(&self, obs: &[f32]) -> Result<Self::Latent, PlanError> {
        self.inner.encode(obs)
    }

    fn predict(&self, z: &Self::Latent, action: &[f32]) -> Self::Latent {
        self.inner.predict(z, &clip_all(action))
    }

    fn rollout(&self, z0: &Self::Latent, actions: &[f32]) -> Vec<Self::Latent> {
        self.inner.rollout(z0, &clip_all(actions))
    }

    fn rollout_batch(&self, z0: &Self::Latent, candidates: &[Vec<f32>]) -> Vec<Vec<Self::Latent>> {
        let clipped: Vec<Vec<f32>> = candidates.iter().map(|c| clip_all(c)).collect();
        self.inner.rollout_batch(z0, &clipped)
    }

    fn latent_values(&self, z: &Self::Latent) -> Option<Vec<f32>> {
        self.inner.latent_values(z)
    }
}

/// Runs `agent` on every pair in the maze `env_cfg`; the JEPA agents need `learned` (a model
/// trained with `lcm wm train --env point-maze`).
pub fn run_maze_agent_episodes(
    agent: Agent,
    settings: &EvalSettings,
    env_cfg: &PointMazeConfig,
    pairs: &[(BallState, BallState)],
    learned: Option<&LearnedWorld>,
) -> Result<Vec<EpisodeSummary>, PlanError> {
    if settings.hazard_seed.is_some() {
        return Err(PlanError::Config(
            "seeded hazard layouts are Two-Rooms only; PointMaze has its default hazard cells"
                .into(),
        ));
    }
    let env = PointMaze::new(env_cfg.clone())?;
    let geometry = env.geometry().clone();
    let hazards = || HazardGuardrail::new(env_cfg.hazards.clone());
    let s = |i: usize| settings.seed + i as u64;
    let cem = |size: super::SearchSize, seed: u64| CemConfig {
        horizon: size.horizon,
        population: size.population,
        elites: (size.population / 10).max(1),
        iterations: size.iterations,
        init_std: 1.0,
        min_std: 0.05,
        max_action_norm: MAX_NORM,
        seed,
        ..CemConfig::default()
    };
    let mppi = |size: super::SearchSize, seed: u64| MppiConfig {
        horizon: size.horizon,
        population: size.population,
        iterations: size.iterations,
        sigma: 0.7,
        lambda: 0.05,
        max_action_norm: MAX_NORM,
        seed,
        ..MppiConfig::default()
    };
    let aug_lag = |size: super::SearchSize, seed: u64| AugLagConfig {
        cem: CemConfig {
            iterations: 2,
            ..cem(size, seed)
        },
        feasible_fallback: true,
        ..AugLagConfig::default()
    };
    if !agent.needs_model() {
        let model = BoxActions {
            inner: RepeatActions {
                inner: OraclePointMaze::new(env_cfg)?,
                repeat: settings.repeat,
            },
        };
        let build = |goal: BallState| -> Result<Cost<BallState>, PlanError> {
            let mut cost = match settings.oracle_cost {
                OracleCost::Distance => Cost::new(goal, position_distance),
                OracleCost::PathLength => {
                    let field = MazeDistanceField::new(&geometry, [goal[0], goal[1]], FIELD_STEP);
                    Cost::new(goal, move |z: &BallState, _: &BallState| {
                        field.value([z[0], z[1]])
                    })
                }
            };
            if settings.hazards {
                cost = cost.with_guardrail(hazards().with_buffer(0.05), Severity::Hard);
            }
            Ok(cost)
        };
        let opts = options(settings, ObservationSource::State, settings.repeat);
        let size = settings.oracle;
        return match agent {
            Agent::OracleCem => run(
                env_cfg,
                pairs,
                &model,
                |i| Cem::new(cem(size, s(i))),
                build,
                &opts,
            ),
            Agent::OracleConstrainedCem => run(
                env_cfg,
                pairs,
                &model,
                |i| ConstrainedCem::new(cem(size, s(i))),
                build,
                &opts,
            ),
            Agent::OracleAugLag => run(
                env_cfg,
                pairs,
                &model,
                |i| AugLagCem::new(aug_lag(size, s(i))),
                build,
                &opts,
            ),
            Agent::OracleMppi => run(
                env_cfg,
                pairs,
                &model,
                |i| Mppi::new(mppi(size, s(i))),
                build,
                &opts,
            ),
            _ => {
                let single = RepeatActions {
                    inner: OraclePointMaze::new(env_cfg)?,
                    repeat: 1,
                };
                let opts = options(settings, ObservationSource::State, 1);
                run(
                    env_cfg,
                    pairs,
                    &single,
                    |i| Ok(RandomPolicy::new(1.0, s(i))),
                    build,
                    &opts,
                )
            }
        };
    }
    let world = learned.ok_or_else(|| {
        PlanError::Config(format!(
            "the agent `{}` needs a trained world model",
            agent.name()
        ))
    })?;
    let source = match world.observation() {
        ObservationKind::State { .. } => ObservationSource::State,
        ObservationKind::Pixels { .. } => ObservationSource::Pixels,
    };
    let probe = world.probe_position()?;
    let model = BoxActions {
        inner: RepeatActions {
            inner: world.clone(),
            repeat: settings.repeat,
        },
    };
    let build = |goal: BallState| -> Result<Cost<Latent>, PlanError> {
        // The goal is a place: encoded at rest.
        let at_rest = [goal[0], goal[1], 0.0, 0.0];
        let obs = match source {
            ObservationSource::State => at_rest.to_vec(),
            ObservationSource::Pixels => render_state(env_cfg, &at_rest)?,
        };
        let goal_latent = world.encode(&obs)?;
        let mut cost = match settings.jepa_cost {
            JepaCost::Latent => Cost::new(goal_latent, latent_distance),
            JepaCost::ProbedPathLength => {
                let d = ProbedMazePath::new(probe.clone(), &geometry, &goal_latent);
                Cost::new(goal_latent, move |z: &Latent, _: &Latent| d.distance(z))
            }
            JepaCost::ProbedPathTransitions => {
                return Err(PlanError::Config(
                    "--jepa-cost probed-path-transitions checks transitions against the Two-Rooms \
                     wall only; on the PointMaze use --jepa-cost probed-path"
                        .into(),
                ));
            }
        };
        cost.stage_weight = settings.jepa_stage_weight;
        cost = with_latent_term(cost, settings.jepa_latent_weight);
        if settings.hazards {
            cost = cost.with_guardrail(
                ProbedHazardGuardrail {
                    probe: probe.clone(),
                    hazards: hazards().with_buffer(settings.hazard_buffer),
                },
                Severity::Hard,
            );
        }
        Ok(cost)
    };
    let opts = options(settings, source, settings.repeat);
    let size = super::SearchSize {
        horizon: settings.horizon,
        population: settings.population,
        iterations: settings.iterations,
    };
    match agent {
        Agent::JepaCem => run(
            env_cfg,
            pairs,
            &model,
            |i| Cem::new(cem(size, s(i))),
            build,
            &opts,
        ),
        Agent::JepaConstrainedCem => run(
            env_cfg,
            pairs,
            &model,
            |i| ConstrainedCem::new(cem(size, s(i))),
            build,
            &opts,
        ),
        Agent::JepaAugLag => run(
            env_cfg,
            pairs,
            &model,
            |i| AugLagCem::new(aug_lag(size, s(i))),
            build,
            &opts,
        ),
        Agent::JepaMppi => run(
            env_cfg,
            pairs,
            &model,
            |i| Mppi::new(mppi(size, s(i))),
            build,
            &opts,
        ),
        other => Err(PlanError::Config(format!(
            "agent `{}` is not run on PointMaze",
            other.name()
        ))),
    }
}

/// The JEPA's maze objective: the shortest free path from the probed position of a latent
/// to the probed position of the goal latent (one distance field per goal).
#[derive(Debug, Clone)]
pub struct ProbedMazePath {
    probe: HostProbe,
    field: MazeDistanceField,
}

impl ProbedMazePath {
    pub fn new(
        probe: HostProbe,
        geometry: &crate::env::point_maze::MazeGeometry,
        goal: &Latent,
    ) -> Self {
        let g = probe.position(goal);
        let goal_position = [
            g.first().copied().unwrap_or(f32::NAN),
            g.get(1).copied().unwrap_or(f32::NAN),
        ];
        ProbedMazePath {
            field: MazeDistanceField::new(geometry, goal_position, FIELD_STEP),
            probe,
        }
    }

    /// The goal position the probe reads out of the goal latent.
    pub fn goal_position(&self) -> [f32; 2] {
        self.field.goal()
    }

    pub fn distance(&self, z: &Latent) -> f32 {
        match self.probe.position(z).as_slice() {
            [x, y, ..] => self.field.value([*x, *y]),
            _ => f32::INFINITY,
        }
    }
}

fn options(
    settings: &EvalSettings,
    observation: ObservationSource,
    repeat: usize,
) -> EpisodeOptions {
    EpisodeOptions {
        max_steps: PointMazeConfig::default().max_steps,
        replan_every: 1,
        action_repeat: repeat,
        steps_per_call: settings.steps_per_call,
        observation,
    }
}

fn run<M, P>(
    env_cfg: &PointMazeConfig,
    pairs: &[(BallState, BallState)],
    model: &M,
    mut planner: impl FnMut(usize) -> Result<P, PlanError>,
    mut build: impl FnMut(BallState) -> Result<Cost<M::Latent>, PlanError>,
    options: &EpisodeOptions,
) -> Result<Vec<EpisodeSummary>, PlanError>
where
    M: WorldModel,
    P: Planner,
{
    let mut env = PointMaze::new(env_cfg.clone())?;
    let mut out = Vec::with_capacity(pairs.len());
    for (i, &(start, goal)) in pairs.iter().enumerate() {
        env.reset(start, goal)?;
        let cost = build(goal)?;
        let mut p = planner(i)?;
        let trace = run_episode(&mut env, model, &mut p, &cost, options)?;
        out.push(EpisodeSummary::from_trace(
            &trace,
            &cost,
            [start[0], start[1]],
            [goal[0], goal[1]],
        ));
    }
    Ok(out)
}
