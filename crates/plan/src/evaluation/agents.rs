//! The agent × planner matrix of `lcm wm eval`: each [`Agent`] is a world model (the exact
//! simulator or a trained JEPA) with a planner, or the random policy; this file builds the
//! agent's planner and cost per episode and runs its episodes, so every entry point gets the
//! same rows for the same [`EvalSettings`].

use std::path::{Path, PathBuf};

use super::{EpisodeSummary, RowResult, markdown_table, plot_trajectories, run_agent};
use crate::cost::{Cost, HazardGuardrail, Severity, euclidean};
use crate::env::TwoRoomsConfig;
use crate::env::two_rooms::Vec2;
use crate::env::two_rooms::dataset::render_state;
use crate::planners::{
    AugLagCem, AugLagConfig, Cem, CemConfig, ConstrainedCem, EpisodeOptions, GradientConfig,
    GradientPlanner, Mppi, MppiConfig, ObservationSource, RandomPolicy, RepeatActions,
};
use crate::world::jepa::ObservationKind;
use crate::world::learned::{Latent, LearnedWorld, ProbedHazardGuardrail, latent_distance};
use crate::world::{OracleTwoRooms, PlanError, WorldModel};

/// A row of the evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    /// CEM on the true simulator (no model error).
    OracleCem,
    /// Feasible-first CEM on the true simulator.
    OracleConstrainedCem,
    JepaCem,
    JepaMppi,
    JepaConstrainedCem,
    JepaAugLag,
    /// Gradient descent on the actions through the learned predictor.
    JepaGradient,
    Random,
}

impl Agent {
    /// The row's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Agent::OracleCem => "oracle + CEM",
            Agent::OracleConstrainedCem => "oracle + constrained CEM",
            Agent::JepaCem => "JEPA + CEM",
            Agent::JepaMppi => "JEPA + MPPI",
            Agent::JepaConstrainedCem => "JEPA + constrained CEM",
            Agent::JepaAugLag => "JEPA + augmented Lagrangian",
            Agent::JepaGradient => "JEPA + gradient",
            Agent::Random => "random policy",
        }
    }

    /// Whether the agent plans with a trained world model.
    pub fn needs_model(self) -> bool {
        !matches!(
            self,
            Agent::OracleCem | Agent::OracleConstrainedCem | Agent::Random
        )
    }
}

/// The settings every row shares.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSettings {
    /// The guardrail variant: one hazard square per room, a hard guardrail for every planner.
    pub hazards: bool,
    pub episodes: usize,
    /// Seed of the start/goal pairs (and, offset per episode, of the planners).
    pub seed: u64,
    /// Planner actions per plan; each is held for `repeat` real steps.
    pub horizon: usize,
    pub repeat: usize,
    /// Real steps executed per planning call (default: one whole held action).
    pub steps_per_call: Option<usize>,
    /// Candidates per iteration (CEM, MPPI).
    pub population: usize,
    pub iterations: usize,
    /// Safety buffer (px) subtracted from the JEPA's probed hazard margin.
    pub hazard_buffer: f32,
}

impl EvalSettings {
    /// The environment the episodes run in.
    pub fn env_config(&self) -> TwoRoomsConfig {
        if self.hazards {
            TwoRoomsConfig::with_default_hazards()
        } else {
            TwoRoomsConfig::default()
        }
    }

    fn cem(&self, seed: u64, init_std: f32) -> CemConfig {
        CemConfig {
            horizon: self.horizon,
            population: self.population,
            elites: (self.population / 10).max(1),
            iterations: self.iterations,
            init_std,
            min_std: 0.05,
            seed,
            ..CemConfig::default()
        }
    }

    fn options(&self, observation: ObservationSource) -> EpisodeOptions {
        EpisodeOptions {
            max_steps: 200,
            replan_every: 1,
            action_repeat: self.repeat,
            steps_per_call: self.steps_per_call,
            observation,
        }
    }

    /// The markdown report: a line of settings, then the table.
    pub fn markdown(&self, rows: &[RowResult]) -> String {
        format!(
            "Two-Rooms{}, {} episodes (seed {}), horizon {}×{} steps, population {}, {} iterations\n\n{}",
            if self.hazards { " with hazards" } else { "" },
            self.episodes,
            self.seed,
            self.horizon,
            self.repeat,
            self.population,
            self.iterations,
            markdown_table(rows)
        )
    }
}

/// Runs `agent` on every (start, goal) pair in `env_cfg`; the JEPA agents need `learned`.
pub fn run_agent_episodes(
    agent: Agent,
    settings: &EvalSettings,
    env_cfg: &TwoRoomsConfig,
    pairs: &[(Vec2, Vec2)],
    learned: Option<&LearnedWorld>,
) -> Result<Vec<EpisodeSummary>, PlanError> {
    if agent.needs_model() {
        let world = learned.ok_or_else(|| {
            PlanError::Config(format!(
                "the agent `{}` needs a trained world model",
                agent.name()
            ))
        })?;
        jepa_episodes(agent, settings, env_cfg, pairs, world)
    } else {
        oracle_episodes(agent, settings, env_cfg, pairs)
    }
}

fn oracle_episodes(
    agent: Agent,
    settings: &EvalSettings,
    env_cfg: &TwoRoomsConfig,
    pairs: &[(Vec2, Vec2)],
) -> Result<Vec<EpisodeSummary>, PlanError> {
    let seed = settings.seed;
    let oracle = RepeatActions {
        inner: OracleTwoRooms::new(env_cfg),
        repeat: settings.repeat,
    };
    let build = |goal: Vec2| -> Result<Cost<Vec2>, PlanError> {
        let mut cost = Cost::new(goal, euclidean);
        if settings.hazards {
            cost = cost.with_guardrail(
                HazardGuardrail::new(env_cfg.hazards.clone()).with_buffer(0.5),
                Severity::Hard,
            );
        }
        Ok(cost)
    };
    let opts = settings.options(ObservationSource::State);
    let s = |i: usize| seed + i as u64;
    match agent {
        Agent::OracleCem => run_agent(
            env_cfg,
            pairs,
            &oracle,
            |i| Cem::new(settings.cem(s(i), 1.5)),
            build,
            &opts,
        ),
        Agent::OracleConstrainedCem => run_agent(
            env_cfg,
            pairs,
            &oracle,
            |i| ConstrainedCem::new(settings.cem(s(i), 1.5)),
            build,
            &opts,
        ),
        _ => {
            // One random action per real step.
            let single = RepeatActions {
                inner: OracleTwoRooms::new(env_cfg),
                repeat: 1,
            };
            let opts = EpisodeOptions {
                action_repeat: 1,
                ..opts
            };
            run_agent(
                env_cfg,
                pairs,
                &single,
                |i| Ok(RandomPolicy::new(env_cfg.max_action_norm, s(i))),
                build,
                &opts,
            )
        }
    }
}

fn jepa_episodes(
    agent: Agent,
    settings: &EvalSettings,
    env_cfg: &TwoRoomsConfig,
    pairs: &[(Vec2, Vec2)],
    world: &LearnedWorld,
) -> Result<Vec<EpisodeSummary>, PlanError> {
    let source = match world.observation() {
        ObservationKind::State { .. } => ObservationSource::State,
        ObservationKind::Pixels { .. } => ObservationSource::Pixels,
    };
    let probe = world.probe_position()?;
    let model = RepeatActions {
        inner: world.clone(),
        repeat: settings.repeat,
    };
    let build = |goal: Vec2| -> Result<Cost<Latent>, PlanError> {
        let obs = match source {
            ObservationSource::State => goal.to_vec(),
            ObservationSource::Pixels => render_state(env_cfg, goal)?,
        };
        let mut cost = Cost::new(world.encode(&obs)?, latent_distance);
        if settings.hazards {
            cost = cost.with_guardrail(
                ProbedHazardGuardrail {
                    probe: probe.clone(),
                    hazards: HazardGuardrail::new(env_cfg.hazards.clone())
                        .with_buffer(settings.hazard_buffer),
                },
                Severity::Hard,
            );
        }
        Ok(cost)
    };
    let opts = settings.options(source);
    let s = |i: usize| settings.seed + i as u64;
    match agent {
        Agent::JepaCem => run_agent(
            env_cfg,
            pairs,
            &model,
            |i| Cem::new(settings.cem(s(i), 1.5)),
            build,
            &opts,
        ),
        Agent::JepaConstrainedCem => run_agent(
            env_cfg,
            pairs,
            &model,
            |i| ConstrainedCem::new(settings.cem(s(i), 1.5)),
            build,
            &opts,
        ),
        Agent::JepaAugLag => run_agent(
            env_cfg,
            pairs,
            &model,
            |i| {
                AugLagCem::new(AugLagConfig {
                    cem: CemConfig {
                        iterations: 2,
                        ..settings.cem(s(i), 1.5)
                    },
                    ..AugLagConfig::default()
                })
            },
            build,
            &opts,
        ),
        Agent::JepaMppi => run_agent(
            env_cfg,
            pairs,
            &model,
            |i| {
                Mppi::new(MppiConfig {
                    horizon: settings.horizon,
                    population: settings.population,
                    iterations: settings.iterations,
                    sigma: 1.5,
                    lambda: 0.05,
                    seed: s(i),
                    ..MppiConfig::default()
                })
            },
            build,
            &opts,
        ),
        Agent::JepaGradient => run_agent(
            env_cfg,
            pairs,
            &model,
            |i| {
                GradientPlanner::new(GradientConfig {
                    horizon: settings.horizon,
                    seed: s(i),
                    ..GradientConfig::default()
                })
            },
            build,
            &opts,
        ),
        other => Err(PlanError::Config(format!(
            "agent {other:?} needs no world model"
        ))),
    }
}

/// The trajectory PNG of an agent's first `n` episodes in `dir`
/// (`{plain|hazards}-{agent slug}.png`); returns its path.
pub fn plot_agent(
    dir: &Path,
    agent: Agent,
    cfg: &TwoRoomsConfig,
    episodes: &[EpisodeSummary],
    n: usize,
    hazards: bool,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let slug: String = agent
        .name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let variant = if hazards { "hazards" } else { "plain" };
    let path = dir.join(format!("{variant}-{slug}.png").replace("---", "-"));
    plot_trajectories(&path, cfg, &episodes[..n.min(episodes.len())])?;
    Ok(path)
}
