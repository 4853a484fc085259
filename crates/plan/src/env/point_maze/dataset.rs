//! Offline, reward-free PointMaze datasets following DINO-WM's "fully random" recipe.
//!
//! DINO-WM trains its PointMaze world model on 2000 trajectories of 100 steps with fully
//! random actions (its paper's dataset table; the generator itself is not in its
//! repository, only the downloaded `states.pth` / `actions.pth` / `seq_lengths.pth`).
//! Reading of "fully random", and of the parts the paper leaves open:
//! - every action is drawn independently, uniform on the action box `[−1, 1]²`;
//! - each trajectory starts from the same random state as DINO-WM's evaluation
//!   ([`PointMaze::sample_state`]: position uniform on the free region 0.2 from the walls,
//!   velocity uniform in ±5.226 per component), so the data covers the start states the
//!   planner is evaluated from;
//! - trajectories are never cut short: there is no goal, and the step budget of an
//!   evaluation episode does not apply.
//!
//! Everything is driven by one seeded ChaCha12 stream drawn in a fixed order (per
//! trajectory: start position by rejection, start velocity x then y, then per step action
//! x then y), so a seed fully determines the dataset. Frames are optional: at 2×64×64 f32
//! per state the default 2000 × 101 states would take 6.6 GB, so by default they are not
//! stored and [`render_state`] draws one on demand.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

use super::{BallState, PointMaze, PointMazeConfig, render_observation};
use crate::env::EnvError;
use crate::env::two_rooms::Vec2;

/// Settings of the random-action generator.
#[derive(Debug, Clone, PartialEq)]
pub struct PointMazeDatasetConfig {
    /// 2000 in DINO-WM.
    pub num_trajectories: usize,
    /// Actions per trajectory (each trajectory has `steps + 1` states); 100 in DINO-WM.
    pub steps: usize,
    pub seed: u64,
    /// Store the rendered 2×64×64 observation of every state.
    pub render: bool,
}

impl Default for PointMazeDatasetConfig {
    fn default() -> Self {
        PointMazeDatasetConfig {
            num_trajectories: 2000,
            steps: 100,
            seed: 0,
            render: false,
        }
    }
}

/// One trajectory: `states[t+1]` is the result of `actions[t]` from `states[t]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PointMazeTrajectory {
    pub states: Vec<BallState>,
    pub actions: Vec<Vec2>,
    /// Per step, whether the state after it is in a hazard (all false without hazards).
    pub violations: Vec<bool>,
    /// Per state, the observation (row-major C×H×W), when the config asks for frames.
    pub frames: Option<Vec<Vec<f32>>>,
}

/// A generated dataset with the configuration that produced it.
#[derive(Debug, Clone)]
pub struct PointMazeDataset {
    pub config: PointMazeDatasetConfig,
    pub env_config: PointMazeConfig,
    pub trajectories: Vec<PointMazeTrajectory>,
}

/// Renders the observation (2×N×N, CHW) of a stored state.
pub fn render_state(env_config: &PointMazeConfig, s: &BallState) -> Result<Vec<f32>, EnvError> {
    let env = PointMaze::new(env_config.clone())?;
    render_with(&env, s)
}

fn render_with(env: &PointMaze, s: &BallState) -> Result<Vec<f32>, EnvError> {
    let n = env.config().image_size;
    let mut out = vec![0.0; 2 * n * n];
    render_observation(env.config(), env.geometry(), [s[0], s[1]], &mut out)?;
    Ok(out)
}

/// Generates the dataset. Deterministic in `config.seed`.
pub fn generate(
    config: &PointMazeDatasetConfig,
    env_config: &PointMazeConfig,
) -> Result<PointMazeDataset, EnvError> {
    let env = PointMaze::new(env_config.clone())?;
    let dynamics = env.dynamics();
    let mut rng = ChaCha12Rng::seed_from_u64(config.seed);
    let mut trajectories = Vec::with_capacity(config.num_trajectories);
    for _ in 0..config.num_trajectories {
        let start = env.sample_state(&mut rng);
        let mut states = Vec::with_capacity(config.steps + 1);
        let mut actions = Vec::with_capacity(config.steps);
        let mut violations = Vec::with_capacity(config.steps);
        states.push(start);
        let mut s = start;
        for _ in 0..config.steps {
            let ax = 2.0 * rng.random::<f32>() - 1.0;
            let ay = 2.0 * rng.random::<f32>() - 1.0;
            // Step the dynamics directly: the dataset is not bound to an evaluation
            // episode's budget or success stop.
            s = dynamics.step(&s, [ax, ay]);
            states.push(s);
            actions.push([ax, ay]);
            violations.push(env.in_hazard([s[0], s[1]]));
        }
        let frames = if config.render {
            Some(
                states
                    .iter()
                    .map(|s| render_with(&env, s))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        } else {
            None
        };
        trajectories.push(PointMazeTrajectory {
            states,
            actions,
            violations,
            frames,
        });
    }
    Ok(PointMazeDataset {
        config: config.clone(),
        env_config: env_config.clone(),
        trajectories,
    })
}
