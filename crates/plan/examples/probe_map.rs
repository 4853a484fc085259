//! Where a trained Two-Rooms JEPA's position probe misleads a planner near the goal, state or
//! pixels: on a fine grid of free positions, the probe's RMS error and the latent's change
//! per pixel, split by region (interior, within 4 px of the outer border, within 4 px of the
//! wall); then, for goals on a 2 px grid, the final approach from 5 px away with an exhaustive
//! one-action search on the model (8 held actions, each chosen on the evaluation's probed cost
//! plus `w` times the latent distance, `lcm wm eval --latent-weight`), and how often it ends
//! within the success radius. The search cannot be blamed there: what fails is the model's
//! one-action prediction near the goal, or the cost.
//!
//! ```text
//! cargo run --release --example probe_map -p lcm-plan -- ~/.lcm/wm/two-rooms-pixels-r48-6k [weights…]
//! ```

mod common;

use lcm_plan::cost::Cost;
use lcm_plan::env::two_rooms::dataset::render_state;
use lcm_plan::env::two_rooms::{Geometry, TwoRoomsConfig, Vec2};
use lcm_plan::evaluation::{EvalEnv, ProbedPathLength, with_latent_term};
use lcm_plan::world::WorldModel;
use lcm_plan::world::jepa::ObservationKind;
use lcm_plan::world::learned::{HostProbe, Latent, LearnedWorld, latent_distance};
use lcm_plan::world::load_world_model;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Fine grid step (px) for the neighbourhood search.
const STEP: f32 = 0.5;
/// Distance (px) of the final approach's start from its goal.
const APPROACH: f32 = 5.0;
/// Planning calls of the final approach, each followed by one held action.
const REPLANS: usize = 8;
/// Real steps per held action (`lcm wm eval --repeat`).
const REPEAT: usize = 5;
/// Success radius of the Two-Rooms evaluation (px).
const SUCCESS: f32 = std::f32::consts::SQRT_2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Region {
    Interior,
    Border,
    Wall,
}

impl Region {
    fn of(g: &Geometry, p: Vec2) -> Region {
        let to_border = (p[0] - g.border_lo)
            .min(g.border_hi - p[0])
            .min(p[1] - g.border_lo)
            .min(g.border_hi - p[1]);
        let to_wall = (g.wall_lo - p[0]).max(p[0] - g.wall_hi);
        if to_border < 4.0 {
            Region::Border
        } else if to_wall < 4.0 {
            Region::Wall
        } else {
            Region::Interior
        }
    }

    fn name(self) -> &'static str {
        match self {
            Region::Interior => "interior",
            Region::Border => "within 4 px of the border",
            Region::Wall => "within 4 px of the wall",
        }
    }

    const ALL: [Region; 3] = [Region::Interior, Region::Border, Region::Wall];
}

struct Point {
    p: Vec2,
    z: Latent,
    probed: Vec2,
    region: Region,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let run = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: probe_map RUN [latent weights…]"))?;
    let mut weights: Vec<f32> = args.map(|s| s.parse()).collect::<Result<_, _>>()?;
    if weights.is_empty() {
        weights = vec![0.0, 2.0, 5.0, 10.0, 20.0];
    }
    let loaded = load_world_model(std::path::Path::new(&run))?;
    let world = LearnedWorld::new(loaded.model);
    let probe = world.probe_position()?;
    let cfg = TwoRoomsConfig::default();
    let g = cfg.geometry();
    let points = grid(&world, &probe, &cfg, &g)?;
    println!(
        "model {run}, step {}, {} grid positions ({STEP} px apart)",
        loaded.step,
        points.len()
    );

    println!(
        "\n| region | positions | probe RMS error (px) | 95th / 99th percentile (px) | max (px) | median latent change per px |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let slopes = latent_slopes(&points);
    for region in Region::ALL {
        let mut errors: Vec<f32> = points
            .iter()
            .filter(|q| q.region == region)
            .map(|q| ((q.probed[0] - q.p[0]).powi(2) + (q.probed[1] - q.p[1]).powi(2)).sqrt())
            .collect();
        errors.sort_by(f32::total_cmp);
        let n = errors.len();
        let rms = (errors.iter().map(|e| f64::from(e * e)).sum::<f64>() / n.max(1) as f64).sqrt();
        let quantile = |q: f64| errors.get(((n as f64 * q) as usize).min(n.saturating_sub(1)));
        let mut s: Vec<f32> = slopes
            .iter()
            .filter(|(r, _)| *r == region)
            .map(|(_, s)| *s)
            .collect();
        s.sort_by(f32::total_cmp);
        println!(
            "| {} | {n} | {rms:.2} | {:.2} / {:.2} | {:.2} | {:.3} |",
            region.name(),
            quantile(0.95).copied().unwrap_or(f32::NAN),
            quantile(0.99).copied().unwrap_or(f32::NAN),
            errors.last().copied().unwrap_or(f32::NAN),
            s.get(s.len() / 2).copied().unwrap_or(f32::NAN),
        );
    }

    println!(
        "\n| latent weight | region of the goal | goals | reached (≤ √2 px after {REPLANS} held actions) | mean final distance (px) |"
    );
    println!("|---:|---|---:|---:|---:|");
    let goals: Vec<&Point> = points.iter().filter(|q| on_coarse_grid(q.p)).collect();
    for &w in &weights {
        let finals = final_approach(&world, &probe, &cfg, &goals, w)?;
        for region in Region::ALL {
            let d: Vec<f32> = goals
                .iter()
                .zip(&finals)
                .filter(|(q, _)| q.region == region)
                .map(|(_, d)| *d)
                .collect();
            let n = d.len().max(1) as f32;
            let reached = d.iter().filter(|&&x| x <= SUCCESS).count();
            println!(
                "| {w} | {} | {} | {reached} ({:.0}%) | {:.2} |",
                region.name(),
                d.len(),
                100.0 * reached as f32 / n,
                d.iter().sum::<f32>() / n
            );
        }
    }
    Ok(())
}

/// Every free position on the fine grid, encoded and probed.
fn grid(
    world: &LearnedWorld,
    probe: &HostProbe,
    cfg: &TwoRoomsConfig,
    g: &Geometry,
) -> anyhow::Result<Vec<Point>> {
    let steps = ((g.border_hi - g.border_lo) / STEP) as usize;
    let mut positions = Vec::new();
    for i in 0..=steps {
        for j in 0..=steps {
            let p = [g.border_lo + i as f32 * STEP, g.border_lo + j as f32 * STEP];
            if g.is_free(p) {
                positions.push(p);
            }
        }
    }
    let latents = common::encode_positions(world, cfg, &positions)?;
    Ok(positions
        .iter()
        .zip(latents)
        .map(|(&p, z)| {
            let q = probe.position(&z);
            Point {
                p,
                probed: [q[0], q[1]],
                region: Region::of(g, p),
                z,
            }
        })
        .collect())
}

/// Per grid position with a right-hand and an upper neighbour, the larger latent change per
/// pixel of the two moves.
fn latent_slopes(points: &[Point]) -> Vec<(Region, f32)> {
    let key = |p: Vec2| ((p[0] / STEP).round() as i64, (p[1] / STEP).round() as i64);
    let index: std::collections::HashMap<(i64, i64), &Point> =
        points.iter().map(|q| (key(q.p), q)).collect();
    let find = |p: Vec2| index.get(&key(p)).copied();
    points
        .iter()
        .filter_map(|a| {
            let right = find([a.p[0] + STEP, a.p[1]])?;
            let up = find([a.p[0], a.p[1] + STEP])?;
            let s = latent_distance(&a.z, &right.z).max(latent_distance(&a.z, &up.z)) / STEP;
            Some((a.region, s))
        })
        .collect()
}

fn on_coarse_grid(p: Vec2) -> bool {
    p[0].rem_euclid(2.0) < 1e-3 && p[1].rem_euclid(2.0) < 1e-3
}

/// The final approach with a perfect one-action search: from [`APPROACH`] px away (a seeded
/// direction per goal), [`REPLANS`] times pick the held action whose predicted outcome
/// minimises the evaluation's cost (probed path length, its Two-Rooms stage weight, plus `w` times the
/// latent distance) among a polar grid of actions, and take it in the simulator. Returns
/// the real final distance to each goal. Model and cost are then the only sources of error.
fn final_approach(
    world: &LearnedWorld,
    probe: &HostProbe,
    cfg: &TwoRoomsConfig,
    goals: &[&Point],
    w: f32,
) -> anyhow::Result<Vec<f32>> {
    let g = cfg.geometry();
    let max = cfg.max_action_norm;
    let mut candidates = vec![vec![0.0f32; 2 * REPEAT]];
    for k in 0..24 {
        let angle = k as f32 * std::f32::consts::TAU / 24.0;
        for frac in [0.1f32, 0.25, 0.5, 0.75, 1.0] {
            let a = [frac * max * angle.cos(), frac * max * angle.sin()];
            candidates.push((0..REPEAT).flat_map(|_| a).collect());
        }
    }
    let encode = |p: Vec2| -> anyhow::Result<Latent> {
        Ok(match world.observation() {
            ObservationKind::State { .. } => world.encode(&p)?,
            ObservationKind::Pixels { .. } => world.encode(&render_state(cfg, p)?)?,
        })
    };
    let mut finals = Vec::with_capacity(goals.len());
    for (i, goal) in goals.iter().enumerate() {
        let mut cost = Cost::new(goal.z.clone(), {
            let d = ProbedPathLength::new(probe.clone(), g, goal.z.clone());
            move |z: &Latent, gz: &Latent| d.distance(z, gz)
        });
        cost.stage_weight = EvalEnv::TwoRooms.default_jepa_stage_weight();
        let cost = with_latent_term(cost, w);
        let mut p = start_near(&g, goal.p, i as u64);
        for _ in 0..REPLANS {
            let z = encode(p)?;
            let rollouts = world.rollout_batch(&z, &candidates);
            let best = rollouts
                .iter()
                .map(|r| cost.evaluate(r).total())
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(k, _)| k);
            let a = [candidates[best][0], candidates[best][1]];
            for _ in 0..REPEAT {
                p = g.resolve_move(p, a).position;
            }
        }
        finals.push(((p[0] - goal.p[0]).powi(2) + (p[1] - goal.p[1]).powi(2)).sqrt());
    }
    Ok(finals)
}

/// A free position [`APPROACH`] px from `goal` in a direction drawn from `seed` (the goal
/// itself if no direction of 16 tries is free).
fn start_near(g: &Geometry, goal: Vec2, seed: u64) -> Vec2 {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    for _ in 0..16 {
        let angle = rng.random_range(0.0..std::f32::consts::TAU);
        let p = [
            goal[0] + APPROACH * angle.cos(),
            goal[1] + APPROACH * angle.sin(),
        ];
        if g.is_free(p) {
            return p;
        }
    }
    goal
}
