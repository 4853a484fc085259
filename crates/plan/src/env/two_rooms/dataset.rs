//! Offline, reward-free Two-Rooms datasets following PLDM's random-walk recipe.
//!
//! Each trajectory starts at a uniformly random free position (either room, or the door)
//! with a uniformly random heading. Every step:
//! - the heading turns by a von Mises(0, κ = 5) angle (a smooth random walk of directions);
//! - the step length is drawn from a normal(1, 0.4) truncated to [0.2, 1.8] and multiplied by
//!   `step_scale`;
//! - the action `length · (cos θ, sin θ)` is applied through the environment's dynamics
//!   (so collisions and the action cap apply exactly as at evaluation time).
//!
//! Reading of "scaled to the action cap": the truncated normal is in units of
//! `cap / upper`, so its upper bound 1.8 maps onto the cap 2.45 px and no sampled action is
//! ever clipped (mean step ≈ 1.36 px). Set `step_scale = 1.0` for steps in plain pixels.
//! The step length is drawn per step (not once per trajectory); the heading walk carries
//! the trajectory's persistence.
//!
//! Everything is driven by one seeded ChaCha12 stream, drawn in a fixed order, so a seed
//! fully determines the dataset. Images are not stored; [`render_state`] draws one on demand.

use lcm_util::random::standard_normal;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::env::two_rooms::{
    Room, TwoRooms, TwoRoomsConfig, Vec2, clip_action, render_observation,
};
use crate::env::{EnvError, Environment};

/// Settings of the random-walk generator.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetConfig {
    pub num_trajectories: usize,
    /// Actions per trajectory (each trajectory has `steps + 1` states).
    pub steps: usize,
    pub seed: u64,
    /// Von Mises concentration of the per-step heading change (5).
    pub kappa: f64,
    /// Truncated normal of the step length, before `step_scale`: mean 1, std 0.4, [0.2, 1.8].
    pub step_mean: f64,
    pub step_std: f64,
    pub step_min: f64,
    pub step_max: f64,
    /// Multiplier from truncated-normal units to pixels; `None` means `cap / step_max`.
    pub step_scale: Option<f64>,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            num_trajectories: 1000,
            steps: 200,
            seed: 0,
            kappa: 5.0,
            step_mean: 1.0,
            step_std: 0.4,
            step_min: 0.2,
            step_max: 1.8,
            step_scale: None,
        }
    }
}

/// One random-walk trajectory: `states[t+1]` is the result of `actions[t]` from `states[t]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    pub states: Vec<Vec2>,
    pub actions: Vec<Vec2>,
    /// Per step, whether the state after it is in a hazard (all false without hazards).
    pub violations: Vec<bool>,
}

impl Trajectory {
    /// The trajectory visits both rooms, i.e. it went through the door.
    pub fn crosses_wall(&self, env: &TwoRooms) -> bool {
        let g = env.geometry();
        let mut left = false;
        let mut right = false;
        for &p in &self.states {
            match g.room(p) {
                Room::Left => left = true,
                Room::Right => right = true,
                Room::Door => {}
            }
        }
        left && right
    }
}

/// A generated dataset with the configuration that produced it.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub config: DatasetConfig,
    pub env_config: TwoRoomsConfig,
    pub trajectories: Vec<Trajectory>,
}

impl Dataset {
    /// Share of trajectories that visit both rooms (went through the door).
    pub fn crossing_share(&self) -> Result<f64, EnvError> {
        if self.trajectories.is_empty() {
            return Ok(0.0);
        }
        let env = TwoRooms::new(self.env_config.clone())?;
        let n = self
            .trajectories
            .iter()
            .filter(|t| t.crosses_wall(&env))
            .count();
        Ok(n as f64 / self.trajectories.len() as f64)
    }
}

/// Renders the observation (2×64×64, CHW) of a stored state.
pub fn render_state(env_config: &TwoRoomsConfig, p: Vec2) -> Result<Vec<f32>, EnvError> {
    let mut out = vec![0.0; 2 * env_config.size * env_config.size];
    render_observation(env_config, p, &mut out)?;
    Ok(out)
}

fn invalid(msg: &str) -> EnvError {
    EnvError::Config(msg.to_string())
}

/// Generates the dataset. Deterministic in `config.seed`.
pub fn generate(config: &DatasetConfig, env_config: &TwoRoomsConfig) -> Result<Dataset, EnvError> {
    let finite = [
        config.step_mean,
        config.step_std,
        config.step_min,
        config.step_max,
    ]
    .iter()
    .all(|v| v.is_finite());
    if !finite {
        return Err(invalid("step length parameters must be finite"));
    }
    if !(config.kappa.is_finite() && config.kappa >= 0.0) {
        return Err(invalid("kappa must be finite and non-negative"));
    }
    if !(config.step_std > 0.0 && config.step_min < config.step_max && config.step_min >= 0.0) {
        return Err(invalid("step length: need std > 0 and 0 <= min < max"));
    }
    // Rejection sampling must accept with reasonable probability: the mean has to be
    // within a few std of the interval.
    let lo_z = (config.step_min - config.step_mean) / config.step_std;
    let hi_z = (config.step_max - config.step_mean) / config.step_std;
    if lo_z > 3.0 || hi_z < -3.0 {
        return Err(invalid(
            "step length interval is too far from the mean for rejection sampling",
        ));
    }
    let env = TwoRooms::new(env_config.clone())?;
    let scale = config
        .step_scale
        .unwrap_or(f64::from(env.max_action_norm()) / config.step_max);
    if !(scale.is_finite() && scale > 0.0) {
        return Err(invalid("step_scale must be positive"));
    }
    let mut rng = ChaCha12Rng::seed_from_u64(config.seed);
    let mut trajectories = Vec::with_capacity(config.num_trajectories);
    for _ in 0..config.num_trajectories {
        let start = sample_free(&env, &mut rng);
        let mut heading = rng.random::<f64>() * std::f64::consts::TAU;
        let mut states = Vec::with_capacity(config.steps + 1);
        let mut actions = Vec::with_capacity(config.steps);
        let mut violations = Vec::with_capacity(config.steps);
        states.push(start);
        let mut pos = start;
        for _ in 0..config.steps {
            heading = (heading + von_mises(&mut rng, 0.0, config.kappa))
                .rem_euclid(std::f64::consts::TAU);
            let len = scale
                * truncated_normal(
                    &mut rng,
                    config.step_mean,
                    config.step_std,
                    config.step_min,
                    config.step_max,
                );
            let a = [(len * heading.cos()) as f32, (len * heading.sin()) as f32];
            // Step the geometry directly: the dataset is not bound to the episode budget
            // or the success stop of an evaluation episode.
            pos = env
                .geometry()
                .resolve_move(pos, clip_action(a, env.max_action_norm()))
                .position;
            states.push(pos);
            actions.push(a);
            violations.push(env.in_hazard(pos));
        }
        trajectories.push(Trajectory {
            states,
            actions,
            violations,
        });
    }
    Ok(Dataset {
        config: config.clone(),
        env_config: env_config.clone(),
        trajectories,
    })
}

/// A uniformly random free position (either room or the door).
fn sample_free<R: Rng + ?Sized>(env: &TwoRooms, rng: &mut R) -> Vec2 {
    let g = env.geometry();
    let span = g.border_hi - g.border_lo;
    loop {
        let p = [
            g.border_lo + rng.random::<f32>() * span,
            g.border_lo + rng.random::<f32>() * span,
        ];
        if g.is_free(p) {
            return p;
        }
    }
}

/// Normal(mean, std) conditioned on `[lo, hi]`, by rejection (cheap when the interval holds
/// most of the mass, as PLDM's ±2σ interval does: ≈95% acceptance).
pub fn truncated_normal<R: Rng + ?Sized>(
    rng: &mut R,
    mean: f64,
    std: f64,
    lo: f64,
    hi: f64,
) -> f64 {
    loop {
        let x = mean + std * standard_normal(rng);
        if (lo..=hi).contains(&x) {
            return x;
        }
    }
}

/// A von Mises(mu, κ) angle in `(mu − π, mu + π]`, by Best & Fisher's (1979) rejection
/// algorithm: a wrapped-Cauchy envelope whose acceptance rate stays above ~65% for all κ.
/// κ ≈ 0 is the uniform distribution on the circle.
pub fn von_mises<R: Rng + ?Sized>(rng: &mut R, mu: f64, kappa: f64) -> f64 {
    use std::f64::consts::PI;
    if kappa < 1e-8 {
        return mu + PI * (2.0 * rng.random::<f64>() - 1.0);
    }
    // Envelope parameter r of the wrapped Cauchy that best fits the von Mises(κ) density.
    let tau = 1.0 + (1.0 + 4.0 * kappa * kappa).sqrt();
    let rho = (tau - (2.0 * tau).sqrt()) / (2.0 * kappa);
    let r = (1.0 + rho * rho) / (2.0 * rho);
    loop {
        let u1 = rng.random::<f64>();
        // (0, 1] so the log below is finite.
        let u2 = 1.0 - rng.random::<f64>();
        let u3 = rng.random::<f64>();
        let z = (PI * u1).cos();
        let f = (1.0 + r * z) / (r + z);
        let c = kappa * (r - f);
        // Quick acceptance (squeeze), then the exact test.
        if c * (2.0 - c) - u2 > 0.0 || (c / u2).ln() + 1.0 - c >= 0.0 {
            let theta = f.clamp(-1.0, 1.0).acos();
            return if u3 > 0.5 { mu + theta } else { mu - theta };
        }
    }
}
