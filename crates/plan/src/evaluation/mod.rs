//! Evaluation of planning agents on Two-Rooms and the PointMaze U-maze (`lcm wm eval`).
//! This file runs and aggregates episodes; `agents.rs` is the Two-Rooms agent × planner
//! matrix, `point_maze.rs` the same rows on the maze.
//!
//! Each row is one agent (a world model plus a planner, or the random policy) run for the
//! same seeded episodes: start and goal in opposite rooms (PLDM's setting: the agent must find
//! the door), 200 steps, success within √2 px. Reported per row:
//! - success rate with its Wilson 95% interval, success-and-safe rate (success with no
//!   guardrail violation), the share of episodes with any violation and of steps in a hazard;
//! - episodic cost: the mean true distance to the goal over the episode's steps (pixels; an
//!   agent that gets there fast and stays scores low), and the final distance;
//! - milliseconds per planning call and per real step;
//! - calibration of anticipation: Spearman's ρ between every planning call's predicted
//!   objective and the objective the same cost assigns to what really happened over the
//!   plan's look-ahead (real observations, encoded by the same model).

mod agents;
mod point_maze;

pub use agents::{
    Agent, CROSSING_PENALTY, CROSSING_TOLERANCE, EVAL_SEED, EvalEnv, EvalSettings, JepaCost,
    OracleCost, ProbedPathLength, SearchSize, WALL_PENALTY, plot_agent, run_agent_episodes,
    with_latent_term,
};
pub use point_maze::{BoxActions, ProbedMazePath, maze_pairs, run_maze_agent_episodes};

use std::path::Path;

use plotters::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::Serialize;

/// The interval and correlation the rows report (re-exported: callers of this module
/// need not know where the statistics live).
pub use lcm_util::stats::{spearman, wilson_interval};

use crate::cost::Cost;
use crate::env::point_maze::{BallState, PointMazeConfig};
use crate::env::two_rooms::{Rect, Room, Vec2};
use crate::env::{Environment, TwoRooms, TwoRoomsConfig};
use crate::planners::{EpisodeOptions, EpisodeTrace, Planner, run_episode};
use crate::world::learned::LearnedWorld;
use crate::world::{PlanError, WorldModel};

/// Seeded (start, goal) pairs in opposite rooms, both free and (with hazards) at least
/// `hazard_clearance` px from every hazard.
pub fn opposite_room_pairs(cfg: &TwoRoomsConfig, n: usize, seed: u64) -> Vec<(Vec2, Vec2)> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let g = cfg.geometry();
    let clearance = 3.0;
    let margin = 1.0;
    let sample_in = |rng: &mut ChaCha12Rng, room: Room| loop {
        let p = [
            rng.random_range(g.border_lo + margin..g.border_hi - margin),
            rng.random_range(g.border_lo + margin..g.border_hi - margin),
        ];
        let away = cfg
            .hazards
            .iter()
            .all(|h| crate::cost::rect_signed_distance(h, p) > clearance);
        if g.is_free(p) && g.room(p) == room && away {
            return p;
        }
    };
    (0..n)
        .map(|_| {
            let (a, b) = if rng.random_bool(0.5) {
                (Room::Left, Room::Right)
            } else {
                (Room::Right, Room::Left)
            };
            (sample_in(&mut rng, a), sample_in(&mut rng, b))
        })
        .collect()
}

/// The seeded episodes of an evaluation: the environment and its (start, goal) pairs.
#[derive(Debug, Clone)]
pub enum Episodes {
    TwoRooms {
        config: TwoRoomsConfig,
        pairs: Vec<(Vec2, Vec2)>,
    },
    PointMaze {
        config: PointMazeConfig,
        pairs: Vec<(BallState, BallState)>,
    },
}

impl Episodes {
    /// The episodes `settings` asks for (environment, variant, count and seed).
    pub fn new(settings: &EvalSettings) -> Result<Self, PlanError> {
        settings.validate()?;
        Ok(match settings.env {
            EvalEnv::TwoRooms => {
                let config = settings.env_config();
                let pairs = opposite_room_pairs(&config, settings.episodes, settings.seed);
                Episodes::TwoRooms { config, pairs }
            }
            EvalEnv::PointMaze => {
                let config = if settings.hazards {
                    PointMazeConfig::with_default_hazards()
                } else {
                    PointMazeConfig::default()
                };
                let pairs = maze_pairs(
                    &config,
                    settings.episodes,
                    settings.seed,
                    settings.min_goal_path,
                )?;
                Episodes::PointMaze { config, pairs }
            }
        })
    }

    /// Runs `agent` on every episode (the JEPA agents need `learned`).
    pub fn run(
        &self,
        agent: Agent,
        settings: &EvalSettings,
        learned: Option<&LearnedWorld>,
    ) -> Result<Vec<EpisodeSummary>, PlanError> {
        match self {
            Episodes::TwoRooms { config, pairs } => {
                run_agent_episodes(agent, settings, config, pairs, learned)
            }
            Episodes::PointMaze { config, pairs } => {
                run_maze_agent_episodes(agent, settings, config, pairs, learned)
            }
        }
    }
}

/// One row of the results table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowResult {
    pub name: String,
    pub episodes: usize,
    pub successes: usize,
    pub success_rate: f64,
    pub success_ci95: (f64, f64),
    pub success_and_safe_rate: f64,
    /// Share of episodes with at least one step in a hazard.
    pub violation_rate: f64,
    /// Share of all real steps spent in a hazard.
    pub violation_step_rate: f64,
    /// Mean over episodes of the mean true distance to the goal (pixels).
    pub episodic_cost: f64,
    pub mean_final_distance: f64,
    pub ms_per_plan: f64,
    /// Planning milliseconds per real environment step.
    pub ms_per_step: f64,
    /// Planning calls whose returned plan was predicted infeasible.
    pub infeasible_plan_rate: f64,
    /// Spearman's ρ between predicted and realised objective over all planning calls.
    pub calibration_spearman: Option<f64>,
    pub planning_calls: usize,
}

/// The per-episode facts a row aggregates (and the trajectory plot draws).
#[derive(Debug, Clone)]
pub struct EpisodeSummary {
    pub start: Vec2,
    pub goal: Vec2,
    pub positions: Vec<Vec2>,
    pub success: bool,
    pub violations: usize,
    pub steps: usize,
    pub plan_ms: Vec<f64>,
    pub infeasible_plans: usize,
    /// (predicted, realised) objective per planning call.
    pub anticipation: Vec<(f64, f64)>,
}

impl EpisodeSummary {
    fn from_trace<L: Clone>(
        trace: &EpisodeTrace<L>,
        cost: &Cost<L>,
        start: Vec2,
        goal: Vec2,
    ) -> Self {
        let positions = trace
            .states
            .iter()
            .map(|s| {
                [
                    s.first().copied().unwrap_or(0.0),
                    s.get(1).copied().unwrap_or(0.0),
                ]
            })
            .collect();
        let anticipation = (0..trace.calls.len())
            .filter_map(|i| {
                let realised = trace.realised_objective(cost, i)?;
                Some((
                    f64::from(trace.calls[i].predicted_objective),
                    f64::from(realised),
                ))
            })
            .filter(|(p, r)| p.is_finite() && r.is_finite())
            .collect();
        EpisodeSummary {
            start,
            goal,
            positions,
            success: trace.report.success,
            violations: trace.report.violations,
            steps: trace.report.steps,
            plan_ms: trace.report.plan_ms.clone(),
            infeasible_plans: trace.report.infeasible_plans,
            anticipation,
        }
    }
}

/// Runs one agent on every pair. `build` makes the cost for a goal (latent goal, guardrails)
/// and `planner` a fresh planner for episode `i` (seeded per episode).
pub fn run_agent<M, P>(
    env_cfg: &TwoRoomsConfig,
    pairs: &[(Vec2, Vec2)],
    model: &M,
    mut planner: impl FnMut(usize) -> Result<P, PlanError>,
    mut build: impl FnMut(Vec2) -> Result<Cost<M::Latent>, PlanError>,
    options: &EpisodeOptions,
) -> Result<Vec<EpisodeSummary>, PlanError>
where
    M: WorldModel,
    P: Planner,
{
    let mut env = TwoRooms::new(env_cfg.clone())?;
    let mut out = Vec::with_capacity(pairs.len());
    for (i, &(start, goal)) in pairs.iter().enumerate() {
        env.reset(start, goal)?;
        let cost = build(goal)?;
        let mut p = planner(i)?;
        let trace = run_episode(&mut env, model, &mut p, &cost, options)?;
        out.push(EpisodeSummary::from_trace(&trace, &cost, start, goal));
    }
    Ok(out)
}

/// Aggregates episodes into a table row.
pub fn summarise(name: &str, episodes: &[EpisodeSummary]) -> RowResult {
    let n = episodes.len();
    let successes = episodes.iter().filter(|e| e.success).count();
    let safe = episodes
        .iter()
        .filter(|e| e.success && e.violations == 0)
        .count();
    let violating = episodes.iter().filter(|e| e.violations > 0).count();
    let steps: usize = episodes.iter().map(|e| e.steps).sum();
    let violation_steps: usize = episodes.iter().map(|e| e.violations).sum();
    let dist = |p: Vec2, g: Vec2| f64::from(((p[0] - g[0]).powi(2) + (p[1] - g[1]).powi(2)).sqrt());
    let episodic_cost = episodes
        .iter()
        .map(|e| {
            let after: Vec<f64> = e
                .positions
                .iter()
                .skip(1)
                .map(|&p| dist(p, e.goal))
                .collect();
            if after.is_empty() {
                dist(e.start, e.goal)
            } else {
                after.iter().sum::<f64>() / after.len() as f64
            }
        })
        .sum::<f64>()
        / n.max(1) as f64;
    let mean_final_distance = episodes
        .iter()
        .map(|e| dist(*e.positions.last().unwrap_or(&e.start), e.goal))
        .sum::<f64>()
        / n.max(1) as f64;
    let plan_ms: Vec<f64> = episodes
        .iter()
        .flat_map(|e| e.plan_ms.iter().copied())
        .collect();
    let total_ms: f64 = plan_ms.iter().sum();
    let (pred, real): (Vec<f64>, Vec<f64>) = episodes
        .iter()
        .flat_map(|e| e.anticipation.iter().copied())
        .unzip();
    let infeasible: usize = episodes.iter().map(|e| e.infeasible_plans).sum();
    let rate = |k: usize| k as f64 / n.max(1) as f64;
    RowResult {
        name: name.to_string(),
        episodes: n,
        successes,
        success_rate: rate(successes),
        success_ci95: wilson_interval(successes, n),
        success_and_safe_rate: rate(safe),
        violation_rate: rate(violating),
        violation_step_rate: violation_steps as f64 / steps.max(1) as f64,
        episodic_cost,
        mean_final_distance,
        ms_per_plan: total_ms / plan_ms.len().max(1) as f64,
        ms_per_step: total_ms / steps.max(1) as f64,
        infeasible_plan_rate: infeasible as f64 / plan_ms.len().max(1) as f64,
        calibration_spearman: spearman(&pred, &real),
        planning_calls: plan_ms.len(),
    }
}

/// A markdown table of rows.
pub fn markdown_table(rows: &[RowResult]) -> String {
    let mut s = String::from(
        "| agent | success | 95% CI | success & safe | episodes with violation | steps in hazard | episodic cost (px) | final dist (px) | ms / plan | ms / step | Spearman(pred, real) |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let rho = r
            .calibration_spearman
            .map_or("–".to_string(), |v| format!("{v:.2}"));
        s.push_str(&format!(
            "| {} | {:.2} ({}/{}) | [{:.2}, {:.2}] | {:.2} | {:.2} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} | {} |\n",
            r.name,
            r.success_rate,
            r.successes,
            r.episodes,
            r.success_ci95.0,
            r.success_ci95.1,
            r.success_and_safe_rate,
            r.violation_rate,
            r.violation_step_rate,
            r.episodic_cost,
            r.mean_final_distance,
            r.ms_per_plan,
            r.ms_per_step,
            rho
        ));
    }
    s
}

/// Draws episodes' trajectories on the Two-Rooms map (walls grey, hazards red, start
/// circle, goal cross; green path = success, orange = failure) as a PNG, 8 px per unit.
pub fn plot_trajectories(
    path: &Path,
    cfg: &TwoRoomsConfig,
    episodes: &[EpisodeSummary],
) -> Result<(), String> {
    let scale = 8.0f32;
    let side = (cfg.size as f32 * scale) as u32;
    let root = BitMapBackend::new(path, (side, side)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let px = |p: Vec2| ((p[0] * scale) as i32, (p[1] * scale) as i32);
    let rect = |r: &Rect| [px([r.x0, r.y0]), px([r.x1, r.y1])];
    let g = cfg.geometry();
    let grey = RGBColor(120, 120, 120);
    let lo = g.border_lo - 0.5;
    let hi = g.border_hi + 0.5;
    let solid = [
        Rect {
            x0: 0.0,
            y0: 0.0,
            x1: cfg.size as f32,
            y1: lo,
        },
        Rect {
            x0: 0.0,
            y0: hi,
            x1: cfg.size as f32,
            y1: cfg.size as f32,
        },
        Rect {
            x0: 0.0,
            y0: 0.0,
            x1: lo,
            y1: cfg.size as f32,
        },
        Rect {
            x0: hi,
            y0: 0.0,
            x1: cfg.size as f32,
            y1: cfg.size as f32,
        },
        Rect {
            x0: g.wall_lo,
            y0: 0.0,
            x1: g.wall_hi,
            y1: g.door_lo,
        },
        Rect {
            x0: g.wall_lo,
            y0: g.door_hi,
            x1: g.wall_hi,
            y1: cfg.size as f32,
        },
    ];
    for r in &solid {
        root.draw(&Rectangle::new(rect(r), grey.filled()))
            .map_err(|e| err(&e))?;
    }
    for h in &cfg.hazards {
        root.draw(&Rectangle::new(rect(h), RGBColor(240, 120, 120).filled()))
            .map_err(|e| err(&e))?;
    }
    for e in episodes {
        let colour = if e.success {
            RGBColor(30, 150, 60)
        } else {
            RGBColor(230, 130, 0)
        };
        let pts: Vec<(i32, i32)> = e.positions.iter().map(|&p| px(p)).collect();
        root.draw(&PathElement::new(pts, colour.stroke_width(2)))
            .map_err(|e| err(&e))?;
        root.draw(&Circle::new(px(e.start), 6, BLUE.filled()))
            .map_err(|e| err(&e))?;
        let (gx, gy) = px(e.goal);
        for (a, b) in [
            ((gx - 7, gy - 7), (gx + 7, gy + 7)),
            ((gx - 7, gy + 7), (gx + 7, gy - 7)),
        ] {
            root.draw(&PathElement::new(vec![a, b], BLACK.stroke_width(3)))
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))
}
