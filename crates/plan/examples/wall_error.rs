//! Where a trained Two-Rooms JEPA is wrong: the error of its probed position after one held
//! action (the planner's unit, `--repeat` real steps) against the simulator, split by what
//! the real move did — free, stopped by the wall (the agent does not slide along it), or
//! stopped by the border — and how often the model predicts a crossing of the wall that did
//! not happen; then the open-loop error over a whole 12-action plan.
//!
//! ```text
//! cargo run --release --example wall_error -p lcm-plan -- ~/.lcm/wm/two-rooms-state-cov004 [samples] [repeat]
//! ```

use lcm_plan::env::two_rooms::{Room, TwoRoomsConfig, Vec2, clip_action};
use lcm_plan::world::WorldModel;
use lcm_plan::world::learned::LearnedWorld;
use lcm_plan::world::load_world_model;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

#[derive(Default)]
struct Bin {
    n: usize,
    sq_err: f64,
    false_crossings: usize,
    /// Error along y only: the direction a stopped agent would have slid.
    sq_err_y: f64,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let run = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: wall_error RUN [samples] [repeat]"))?;
    let samples: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4000);
    let repeat: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let loaded = load_world_model(std::path::Path::new(&run))?;
    let world = LearnedWorld::new(loaded.model);
    let probe = world.probe_position()?;
    let cfg = TwoRoomsConfig::default();
    let g = cfg.geometry();
    let mut rng = ChaCha12Rng::seed_from_u64(7);
    let (mut free, mut wall, mut border) = (Bin::default(), Bin::default(), Bin::default());
    let mut near_wall_free = Bin::default();
    for _ in 0..samples {
        // Half the starts within 4 px of the wall, where the planner's failures end.
        let p: Vec2 = loop {
            let x = if rng.random_bool(0.5) {
                if rng.random_bool(0.5) {
                    g.wall_lo - rng.random_range(0.5..4.0)
                } else {
                    g.wall_hi + rng.random_range(0.5..4.0)
                }
            } else {
                rng.random_range(g.border_lo..g.border_hi)
            };
            let y = rng.random_range(g.border_lo..g.border_hi);
            if g.is_free([x, y]) {
                break [x, y];
            }
        };
        let angle = rng.random_range(0.0..std::f32::consts::TAU);
        let len = rng.random_range(0.3..1.0) * cfg.max_action_norm;
        let a = clip_action([len * angle.cos(), len * angle.sin()], cfg.max_action_norm);
        let mut real = p;
        let mut hit_wall = false;
        let mut hit_border = false;
        for _ in 0..repeat {
            let m = g.resolve_move(real, a);
            if let Some(c) = m.contact {
                let x = m.position[0];
                if c.axis == 0 && ((x - g.wall_lo).abs() < 1.5 || (x - g.wall_hi).abs() < 1.5) {
                    hit_wall = true;
                } else {
                    hit_border = true;
                }
            }
            real = m.position;
        }
        let z0 = world.encode(&p)?;
        let actions: Vec<f32> = (0..repeat).flat_map(|_| a).collect();
        let predicted = world.rollout(&z0, &actions);
        let Some(last) = predicted.last() else {
            continue;
        };
        let q = probe.position(last);
        let (dx, dy) = ((q[0] - real[0]) as f64, (q[1] - real[1]) as f64);
        let crossed = matches!(
            (g.room([q[0], q[1]]), g.room(real)),
            (Room::Left, Room::Right) | (Room::Right, Room::Left)
        );
        let near = (p[0] - g.wall_lo).abs() < 4.5 || (p[0] - g.wall_hi).abs() < 4.5;
        let bin = if hit_wall {
            &mut wall
        } else if hit_border {
            &mut border
        } else if near {
            &mut near_wall_free
        } else {
            &mut free
        };
        bin.n += 1;
        bin.sq_err += dx * dx + dy * dy;
        bin.sq_err_y += dy * dy;
        bin.false_crossings += usize::from(crossed);
    }
    println!(
        "model {run}, step {}, {samples} held actions of {repeat} steps",
        loaded.step
    );
    print_single(&free, &near_wall_free, &wall, &border);
    open_loop(&world, &probe, &cfg, samples / 4, repeat, &mut rng)?;
    Ok(())
}

fn print_single(free: &Bin, near_wall_free: &Bin, wall: &Bin, border: &Bin) {
    println!(
        "| real move | n | probe RMS error (px) | RMS error along y (px) | predicted wall crossings that did not happen |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, b) in [
        ("free, away from the wall", &free),
        ("free, within 4 px of the wall", &near_wall_free),
        ("stopped by the wall", &wall),
        ("stopped by the border", &border),
    ] {
        let n = b.n.max(1) as f64;
        println!(
            "| {name} | {} | {:.2} | {:.2} | {} ({:.1}%) |",
            b.n,
            (b.sq_err / n).sqrt(),
            (b.sq_err_y / n).sqrt(),
            b.false_crossings,
            100.0 * b.false_crossings as f64 / n
        );
    }
}

/// Open-loop error along 12 held actions with a persistent random heading (the plans the
/// planner samples look like this): RMS probe error after k held actions, and whether the
/// model puts the agent in the right room at the end.
fn open_loop(
    world: &LearnedWorld,
    probe: &lcm_plan::world::learned::HostProbe,
    cfg: &TwoRoomsConfig,
    sequences: usize,
    repeat: usize,
    rng: &mut ChaCha12Rng,
) -> anyhow::Result<()> {
    const HELD: usize = 12;
    let g = cfg.geometry();
    let mut sq = [0.0f64; HELD];
    let (mut changed, mut changed_right, mut stayed, mut stayed_right) = (0, 0, 0, 0);
    for _ in 0..sequences {
        let p: Vec2 = loop {
            let q = [
                rng.random_range(g.border_lo..g.border_hi),
                rng.random_range(g.border_lo..g.border_hi),
            ];
            if g.is_free(q) {
                break q;
            }
        };
        let mut heading = rng.random_range(0.0..std::f32::consts::TAU);
        let mut actions = Vec::with_capacity(HELD * repeat * 2);
        let mut real = vec![p];
        let mut at = p;
        for _ in 0..HELD {
            heading += 0.6 * lcm_util::random::standard_normal(rng) as f32;
            let len = rng.random_range(0.5..1.0) * cfg.max_action_norm;
            let a = [len * heading.cos(), len * heading.sin()];
            for _ in 0..repeat {
                at = g.resolve_move(at, a).position;
                actions.extend(a);
            }
            real.push(at);
        }
        let predicted = world.rollout(&world.encode(&p)?, &actions);
        for k in 0..HELD {
            let q = probe.position(&predicted[(k + 1) * repeat - 1]);
            let r = real[k + 1];
            sq[k] += ((q[0] - r[0]) as f64).powi(2) + ((q[1] - r[1]) as f64).powi(2);
        }
        let q = probe.position(&predicted[HELD * repeat - 1]);
        let end = real[HELD];
        let same_room_real = g.room(p) == g.room(end);
        let same_room_model = g.room(p) == g.room([q[0], q[1]]);
        if same_room_real {
            stayed += 1;
            stayed_right += usize::from(same_room_model);
        } else {
            changed += 1;
            changed_right += usize::from(!same_room_model);
        }
    }
    println!(
        "\nopen loop, {sequences} sequences of {HELD} held actions ({repeat} steps each), persistent random heading"
    );
    println!("| held actions | RMS probe error (px) |\n|---:|---:|");
    for (k, v) in sq.iter().enumerate() {
        println!(
            "| {} | {:.2} |",
            k + 1,
            (v / sequences.max(1) as f64).sqrt()
        );
    }
    println!(
        "real agent changed rooms in {changed} sequences, the model agreed in {changed_right}; stayed in {stayed}, the model agreed in {stayed_right}"
    );
    Ok(())
}
