//! The agent × planner matrix of `lcm wm eval`: each [`Agent`] is a world model (the exact
//! simulator or a trained JEPA) with a planner, or the random policy; this file builds the
//! agent's planner and cost per episode and runs its episodes, so every entry point gets the
//! same rows for the same [`EvalSettings`].

use std::path::{Path, PathBuf};

use super::{EpisodeSummary, RowResult, markdown_table, plot_trajectories, run_agent};
use crate::cost::{Cost, HazardGuardrail, Severity, euclidean};
use crate::env::TwoRoomsConfig;
use crate::env::two_rooms::dataset::render_state;
use crate::env::two_rooms::{Geometry, Vec2};
use crate::planners::{
    AugLagCem, AugLagConfig, Cem, CemConfig, ConstrainedCem, EpisodeOptions, GradientConfig,
    GradientPlanner, Mppi, MppiConfig, ObservationSource, RandomPolicy, RepeatActions,
};
use crate::world::jepa::ObservationKind;
use crate::world::learned::{
    HostProbe, Latent, LearnedWorld, ProbedHazardGuardrail, latent_distance,
};
use crate::world::{OracleTwoRooms, PlanError, WorldModel};

/// A row of the evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    /// CEM on the true simulator (no model error).
    OracleCem,
    /// Feasible-first CEM on the true simulator.
    OracleConstrainedCem,
    /// MPPI with PLDM's settings (σ = 12, λ = 0.005) on the true simulator.
    OracleMppi,
    /// Augmented-Lagrangian CEM on the true simulator.
    OracleAugLag,
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
            Agent::OracleMppi => "oracle + MPPI",
            Agent::OracleAugLag => "oracle + augmented Lagrangian",
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
            Agent::OracleCem
                | Agent::OracleConstrainedCem
                | Agent::OracleMppi
                | Agent::OracleAugLag
                | Agent::Random
        )
    }
}

/// The seed `lcm wm eval --eval-seed` defaults to: evaluation episodes (start/goal pairs from
/// this seed, planner seeds `EVAL_SEED + i`) and seeded hazard layouts disjoint from the
/// seeds the planners were tuned on (pairs and planners of seed 0, planner seeds 0–49, and
/// the fixed default hazard squares).
pub const EVAL_SEED: u64 = 1000;

/// How large a sampling planner's search is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchSize {
    /// Planner actions per plan; each is held for [`EvalSettings::repeat`] real steps.
    pub horizon: usize,
    /// Candidates per iteration.
    pub population: usize,
    pub iterations: usize,
}

impl SearchSize {
    /// The oracle planners' search: 19 held actions × 5 steps = 95 steps of look-ahead (PLDM
    /// plans up to 96), 2,000 candidates (PLDM's MPPI), 5 iterations. The look-ahead is what
    /// lets the planner see around the wall: with 60 steps, starts low in one room and goals
    /// low in the other leave the agent pressed against the wall, where the distance to the
    /// goal has a local minimum (EVALUATION.md, Two-Rooms).
    pub const ORACLE: SearchSize = SearchSize {
        horizon: 19,
        population: 2000,
        iterations: 5,
    };
}

/// What the oracle planners minimise on the way to the goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OracleCost {
    /// Straight-line distance to the goal (what the JEPA's latent distance stands for). It
    /// has a local minimum against the wall for goals low in the other room.
    Distance,
    /// Length of the shortest free path to the goal, through the door
    /// ([`Geometry::path_length`](crate::env::two_rooms::Geometry::path_length)): the door
    /// as a geometric waypoint, with no local minimum behind the wall.
    PathLength,
}

impl OracleCost {
    pub fn name(self) -> &'static str {
        match self {
            OracleCost::Distance => "distance",
            OracleCost::PathLength => "path length",
        }
    }
}

/// What the JEPA planners minimise on the way to the goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JepaCost {
    /// Euclidean distance between the predicted latent and the goal observation's latent
    /// (issue 5). VICReg bends the position map over the latent's dimensions, so this has
    /// shallow minima away from the goal and the straight-line minimum behind the wall.
    Latent,
    /// The shortest free path (through the door) from the position the stop-gradient probe
    /// reads out of the predicted latent to the position it reads out of the goal latent
    /// ([`ProbedPathLength`]): the map's geometry is known, the positions are the model's.
    ProbedPathLength,
    /// [`JepaCost::ProbedPathLength`] plus [`CROSSING_PENALTY`] for every predicted transition
    /// whose probed positions jump through the solid wall
    /// ([`ProbedPathLength::impossible_transitions`]): over a 60-step plan the model's
    /// open-loop drift puts the agent on the other side of the wall in ~18% of rollouts
    /// that never left their room (`examples/wall_error.rs`), and such plans look cheapest.
    /// Two-Rooms only.
    ProbedPathTransitions,
}

impl JepaCost {
    pub fn name(self) -> &'static str {
        match self {
            JepaCost::Latent => "latent distance",
            JepaCost::ProbedPathLength => "probed path length",
            JepaCost::ProbedPathTransitions => {
                "probed path length, impossible transitions penalised"
            }
        }
    }
}

/// The JEPA objective of [`JepaCost::ProbedPathLength`]: `path_length(probe(z), probe(g))`
/// in pixels. The goal's probed position is computed once (the distance is asked for the
/// same goal latent every time); any other second argument is probed on the fly.
#[derive(Debug, Clone)]
pub struct ProbedPathLength {
    pub probe: HostProbe,
    pub geometry: Geometry,
    goal: Latent,
    goal_position: Vec2,
}

impl ProbedPathLength {
    pub fn new(probe: HostProbe, geometry: Geometry, goal: Latent) -> Self {
        let goal_position = probed(&probe, &goal);
        ProbedPathLength {
            probe,
            geometry,
            goal,
            goal_position,
        }
    }

    /// The probed position of the goal latent.
    pub fn goal_position(&self) -> Vec2 {
        self.goal_position
    }

    /// Path length from the probed position of `z` to the probed position of `goal`. A
    /// probed position inside the wall (no real state is there: the model has predicted a
    /// move through it) is measured from the wall's nearest face plus
    /// [`WALL_PENALTY`] per pixel of depth, so a plan the model wrongly sends through the
    /// wall is not rewarded with the straight-line distance.
    pub fn distance(&self, z: &Latent, goal: &Latent) -> f32 {
        let q = if *goal == self.goal {
            self.goal_position
        } else {
            probed(&self.probe, goal)
        };
        let p = probed(&self.probe, z);
        let g = &self.geometry;
        let in_wall =
            p[0] > g.wall_lo && p[0] < g.wall_hi && !(p[1] > g.door_lo && p[1] < g.door_hi);
        if in_wall {
            let (face, depth) = if p[0] - g.wall_lo < g.wall_hi - p[0] {
                (g.wall_lo, p[0] - g.wall_lo)
            } else {
                (g.wall_hi, g.wall_hi - p[0])
            };
            return g.path_length([face, p[1]], q) + WALL_PENALTY * depth;
        }
        g.path_length(p, q)
    }

    /// How many consecutive pairs of `path` have probed positions whose straight segment
    /// passes through the wall's solid core — the wall shrunk by [`CROSSING_TOLERANCE`] on
    /// every side, so that the probe's sub-pixel error for an agent resting against the wall
    /// is not a crossing. A real step cannot do that (the agent stops at the wall), so the
    /// model has drifted through it.
    pub fn impossible_transitions(&self, path: &[Latent]) -> usize {
        let positions: Vec<Vec2> = path.iter().map(|z| probed(&self.probe, z)).collect();
        positions
            .windows(2)
            .filter(|pair| self.segment_hits_wall_core(pair[0], pair[1]))
            .count()
    }

    fn segment_hits_wall_core(&self, p: Vec2, q: Vec2) -> bool {
        let g = &self.geometry;
        let (x0, x1) = (
            g.wall_lo + CROSSING_TOLERANCE,
            g.wall_hi - CROSSING_TOLERANCE,
        );
        let (y0, y1) = (
            g.door_lo - CROSSING_TOLERANCE,
            g.door_hi + CROSSING_TOLERANCE,
        );
        let solid = |x: f32, y: f32| x > x0 && x < x1 && !(y > y0 && y < y1);
        if !(p[0].is_finite() && p[1].is_finite() && q[0].is_finite() && q[1].is_finite()) {
            return false;
        }
        if solid(p[0], p[1]) || solid(q[0], q[1]) {
            return true;
        }
        // The segment's part inside the core's x band, if any: solid unless all of it lies in
        // the door's rows.
        let (lo, hi) = if p[0] <= q[0] { (p, q) } else { (q, p) };
        if hi[0] <= x0 || lo[0] >= x1 {
            return false;
        }
        let y_at = |x: f32| {
            if (hi[0] - lo[0]).abs() < f32::EPSILON {
                lo[1]
            } else {
                lo[1] + (hi[1] - lo[1]) * (x - lo[0]) / (hi[0] - lo[0])
            }
        };
        let (ya, yb) = (y_at(x0.max(lo[0])), y_at(x1.min(hi[0])));
        !(ya > y0 && ya < y1 && yb > y0 && yb < y1)
    }
}

/// Adds `weight · ‖z − g‖` to a probed cost's distance. The probe reads positions with about
/// a pixel of error that varies from place to place, so the probed distance can bottom out a
/// pixel or two beside the goal; the goal observation's own latent is the one place where the
/// latent distance is exactly 0. Where the latent term's slope (weight times the latent's
/// change per pixel) exceeds the probed distance's slope of 1, the sum's minimum near the goal
/// is the goal itself; far away, where VICReg bends the latent, the path length dominates.
pub fn with_latent_term(mut cost: Cost<Latent>, weight: f32) -> Cost<Latent> {
    if weight > 0.0 {
        let probed = std::mem::replace(&mut cost.distance, Box::new(latent_distance));
        cost.distance =
            Box::new(move |z: &Latent, g: &Latent| probed(z, g) + weight * latent_distance(z, g));
    }
    cost
}

/// Cost per pixel of depth of a probed position inside the wall ([`ProbedPathLength`]).
pub const WALL_PENALTY: f32 = 20.0;

/// Cost (px) of one predicted transition through the wall
/// ([`JepaCost::ProbedPathTransitions`]): more than the longest free path on the map
/// (~150 px), so no shortcut through the wall can pay for itself.
pub const CROSSING_PENALTY: f32 = 200.0;

/// How far (px) inside the wall a probed position may read before a transition through it
/// counts as impossible (the probe's error is ~0.6 px RMS).
pub const CROSSING_TOLERANCE: f32 = 1.0;

/// The first two probe outputs as a position (NaN when the probe has fewer, which every
/// cost ranks last).
fn probed(probe: &HostProbe, z: &[f32]) -> Vec2 {
    match probe.position(z).as_slice() {
        [x, y, ..] => [*x, *y],
        _ => [f32::NAN, f32::NAN],
    }
}

/// Which environment the episodes run in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EvalEnv {
    /// PLDM's Two-Rooms: start and goal in opposite rooms.
    #[default]
    TwoRooms,
    /// DINO-WM's PointMaze U-maze: independent random start and goal states.
    PointMaze,
}

impl EvalEnv {
    /// The JEPA cost's default [`EvalSettings::jepa_stage_weight`]. Two-Rooms: 3, chosen on
    /// the development range (`--seed 100`, 50 episodes, JEPA + CEM: 0.84 / 0.88 / 0.92 / 0.94
    /// at 0.1 / 1 / 3 / 10 with the 24-step model, 0.88 → 1.00 from 0.1 to 3 with the
    /// 48-step one): the model's first held actions are predicted far better than its
    /// sixtieth step, so a plan should be judged by where it gets early, not only where it
    /// ends. PointMaze: [`Cost::new`]'s 0.1, with which its results were measured.
    pub fn default_jepa_stage_weight(self) -> f32 {
        match self {
            EvalEnv::TwoRooms => 3.0,
            EvalEnv::PointMaze => 0.1,
        }
    }

    /// The JEPA cost's default [`EvalSettings::jepa_latent_weight`] for a model observing
    /// `observation` with `cost`. Two-Rooms pixels: 20, chosen on the development range
    /// (`--seed 100`, 50 episodes, plain, 3,000-step 48-step model; CEM / MPPI 0.76 / 0.86 at
    /// 0, 0.90 / 0.94 at 5, 0.92 / 0.98 at 20, 0.90 / 0.96 at 50): the pixel probe's error
    /// near the goal is as large as the success radius, and `examples/probe_map.rs` shows the
    /// final approach from 5 px with an exhaustive search ending within it for 27% of interior
    /// goals at 0 and 88–92% at 10–20 (same 3,000-step model; 34% and 94–96% with the
    /// 6,000-step one). Everything else: 0, as it was measured (the state model is at the
    /// bar without it; the PointMaze results predate it).
    pub fn default_jepa_latent_weight(self, observation: ObservationKind, cost: JepaCost) -> f32 {
        match (self, observation, cost) {
            (_, _, JepaCost::Latent) => 0.0,
            (EvalEnv::TwoRooms, ObservationKind::Pixels { .. }, _) => 20.0,
            _ => 0.0,
        }
    }
}

/// The settings every row shares.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSettings {
    pub env: EvalEnv,
    /// The guardrail variant: one hazard square per room, a hard guardrail for every planner.
    pub hazards: bool,
    /// Place the hazard squares with [`TwoRoomsConfig::with_seeded_hazards`] from this seed
    /// instead of the fixed default squares.
    pub hazard_seed: Option<u64>,
    pub episodes: usize,
    /// Seed of the start/goal pairs (and, offset per episode, of the planners).
    pub seed: u64,
    /// The JEPA planners' actions per plan; each is held for `repeat` real steps.
    pub horizon: usize,
    pub repeat: usize,
    /// Real steps executed per planning call (default: one whole held action).
    pub steps_per_call: Option<usize>,
    /// The JEPA planners' candidates per iteration (CEM, MPPI).
    pub population: usize,
    pub iterations: usize,
    /// The oracle planners' search.
    pub oracle: SearchSize,
    /// The oracle planners' objective.
    pub oracle_cost: OracleCost,
    /// The JEPA planners' objective.
    pub jepa_cost: JepaCost,
    /// Weight of the JEPA cost's mean distance over the predicted path next to the terminal
    /// distance's 1 ([`Cost::stage_weight`]): larger values prefer plans that get close
    /// early, where the model's open-loop prediction is still accurate.
    pub jepa_stage_weight: f32,
    /// Weight (px per latent unit) of the latent distance added to a probed JEPA cost
    /// ([`with_latent_term`]); 0 leaves the probed cost alone.
    pub jepa_latent_weight: f32,
    /// Safety buffer (px) subtracted from the JEPA's probed hazard margin.
    pub hazard_buffer: f32,
    /// PointMaze only: keep the pairs whose shortest free path from start to goal is at
    /// least this long (0 keeps DINO-WM's pairs, many of them a short straight run).
    pub min_goal_path: f32,
}

impl EvalSettings {
    /// Refuses sizes and weights no evaluation can run with, naming `lcm wm eval`'s flags.
    pub fn validate(&self) -> Result<(), PlanError> {
        let sizes_ok = self.episodes > 0
            && self.horizon > 0
            && self.repeat > 0
            && self.population >= 2
            && self.iterations > 0
            && self.oracle.horizon > 0
            && self.oracle.population >= 2
            && self.oracle.iterations > 0;
        if !sizes_ok {
            return Err(PlanError::Config(
                "--episodes, --horizon, --oracle-horizon, --repeat, --iterations and \
                 --oracle-iterations must be > 0, --population and --oracle-population ≥ 2"
                    .into(),
            ));
        }
        if !(self.jepa_stage_weight.is_finite() && self.jepa_stage_weight >= 0.0) {
            return Err(PlanError::Config(format!(
                "--stage-weight must be a finite number ≥ 0, got {}",
                self.jepa_stage_weight
            )));
        }
        if !(self.jepa_latent_weight.is_finite() && self.jepa_latent_weight >= 0.0) {
            return Err(PlanError::Config(format!(
                "--latent-weight must be a finite number ≥ 0, got {}",
                self.jepa_latent_weight
            )));
        }
        if self.jepa_latent_weight > 0.0 && self.jepa_cost == JepaCost::Latent {
            return Err(PlanError::Config(
                "--latent-weight adds the latent distance to a probed cost; with --jepa-cost \
                 latent the cost already is the latent distance"
                    .into(),
            ));
        }
        if self.hazard_seed.is_some() && !self.hazards {
            return Err(PlanError::Config(
                "--hazard-seed places the hazard squares of the --hazards variant: add --hazards"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The environment the episodes run in.
    pub fn env_config(&self) -> TwoRoomsConfig {
        if self.hazards {
            match self.hazard_seed {
                Some(seed) => TwoRoomsConfig::with_seeded_hazards(seed),
                None => TwoRoomsConfig::with_default_hazards(),
            }
        } else {
            TwoRoomsConfig::default()
        }
    }

    /// The JEPA planners' search.
    fn jepa(&self) -> SearchSize {
        SearchSize {
            horizon: self.horizon,
            population: self.population,
            iterations: self.iterations,
        }
    }

    fn cem(&self, size: SearchSize, seed: u64, init_std: f32) -> CemConfig {
        CemConfig {
            horizon: size.horizon,
            population: size.population,
            elites: (size.population / 10).max(1),
            iterations: size.iterations,
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

    /// The JEPA objective as the report names it.
    fn jepa_cost_name(&self) -> String {
        if self.jepa_latent_weight > 0.0 {
            format!(
                "{} + {} × latent distance",
                self.jepa_cost.name(),
                self.jepa_latent_weight
            )
        } else {
            self.jepa_cost.name().to_string()
        }
    }

    /// The markdown report: a line of settings, then the table.
    pub fn markdown(&self, rows: &[RowResult]) -> String {
        let layout = match (self.hazards, self.hazard_seed) {
            (true, Some(seed)) => format!(" (layout seed {seed})"),
            _ => String::new(),
        };
        let env = match self.env {
            EvalEnv::TwoRooms => "Two-Rooms",
            EvalEnv::PointMaze => "PointMaze U-maze",
        };
        format!(
            "{env}{}{layout}, {} episodes (seed {}), held actions of {} steps; JEPA: horizon {}, population {}, {} iterations, cost {} (stage weight {}); oracle: horizon {}, population {}, {} iterations, cost {}\n\n{}",
            if self.hazards { " with hazards" } else { "" },
            self.episodes,
            self.seed,
            self.repeat,
            self.horizon,
            self.population,
            self.iterations,
            self.jepa_cost_name(),
            self.jepa_stage_weight,
            self.oracle.horizon,
            self.oracle.population,
            self.oracle.iterations,
            self.oracle_cost.name(),
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
    let geom = env_cfg.geometry();
    let build = |goal: Vec2| -> Result<Cost<Vec2>, PlanError> {
        let mut cost = match settings.oracle_cost {
            OracleCost::Distance => Cost::new(goal, euclidean),
            OracleCost::PathLength => {
                Cost::new(goal, move |a: &Vec2, b: &Vec2| geom.path_length(*a, *b))
            }
        };
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
    let size = settings.oracle;
    match agent {
        Agent::OracleCem => run_agent(
            env_cfg,
            pairs,
            &oracle,
            |i| Cem::new(settings.cem(size, s(i), 1.5)),
            build,
            &opts,
        ),
        Agent::OracleConstrainedCem => run_agent(
            env_cfg,
            pairs,
            &oracle,
            |i| ConstrainedCem::new(settings.cem(size, s(i), 1.5)),
            build,
            &opts,
        ),
        Agent::OracleAugLag => run_agent(
            env_cfg,
            pairs,
            &oracle,
            |i| {
                AugLagCem::new(AugLagConfig {
                    cem: CemConfig {
                        iterations: 2,
                        ..settings.cem(size, s(i), 1.5)
                    },
                    ..AugLagConfig::default()
                })
            },
            build,
            &opts,
        ),
        Agent::OracleMppi => run_agent(
            env_cfg,
            pairs,
            &oracle,
            |i| {
                // PLDM's MPPI: σ = 12 (in pixels here, so every sampled step is clipped to
                // the action cap: a random direction at full speed) and λ = 0.005 (nearly
                // the best sample's actions).
                Mppi::new(MppiConfig {
                    horizon: size.horizon,
                    population: size.population,
                    iterations: size.iterations,
                    sigma: 12.0,
                    lambda: 0.005,
                    seed: s(i),
                    ..MppiConfig::default()
                })
            },
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
    let geom = env_cfg.geometry();
    let model = RepeatActions {
        inner: world.clone(),
        repeat: settings.repeat,
    };
    let build = |goal: Vec2| -> Result<Cost<Latent>, PlanError> {
        let obs = match source {
            ObservationSource::State => goal.to_vec(),
            ObservationSource::Pixels => render_state(env_cfg, goal)?,
        };
        let goal_latent = world.encode(&obs)?;
        let mut cost = match settings.jepa_cost {
            JepaCost::Latent => Cost::new(goal_latent, latent_distance),
            JepaCost::ProbedPathLength => {
                let d = ProbedPathLength::new(probe.clone(), geom, goal_latent.clone());
                Cost::new(goal_latent, move |z: &Latent, g: &Latent| d.distance(z, g))
            }
            JepaCost::ProbedPathTransitions => {
                let d = ProbedPathLength::new(probe.clone(), geom, goal_latent.clone());
                let transitions = d.clone();
                Cost::new(goal_latent, move |z: &Latent, g: &Latent| d.distance(z, g))
                    .with_path_penalty(move |path: &[Latent]| {
                        CROSSING_PENALTY * transitions.impossible_transitions(path) as f32
                    })
            }
        };
        cost.stage_weight = settings.jepa_stage_weight;
        cost = with_latent_term(cost, settings.jepa_latent_weight);
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
    let jepa = settings.jepa();
    match agent {
        Agent::JepaCem => run_agent(
            env_cfg,
            pairs,
            &model,
            |i| Cem::new(settings.cem(jepa, s(i), 1.5)),
            build,
            &opts,
        ),
        Agent::JepaConstrainedCem => run_agent(
            env_cfg,
            pairs,
            &model,
            |i| ConstrainedCem::new(settings.cem(jepa, s(i), 1.5)),
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
                        ..settings.cem(jepa, s(i), 1.5)
                    },
                    // The issue-5 configuration (latent cost, the Lagrangian best even when
                    // predicted infeasible) stays as measured in EVALUATION.md and pinned;
                    // with the probed cost (issue 15) the cheapest feasible plan is returned.
                    feasible_fallback: settings.jepa_cost != JepaCost::Latent,
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
