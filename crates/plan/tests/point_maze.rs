//! PointMaze U-maze: dynamics against hand-computed MuJoCo-Euler integration, walls,
//! rendering, errors, hazards, the dataset generator, and planning on the oracle model.

use lcm_plan::Environment;
use lcm_plan::cost::{Cost, HazardGuardrail, Severity};
use lcm_plan::env::EnvError;
use lcm_plan::env::point_maze::dataset::{PointMazeDatasetConfig, generate, render_state};
use lcm_plan::env::point_maze::{
    BallState, OraclePointMaze, PointMaze, PointMazeConfig, U_MAZE, position_distance,
    u_maze_eval_pairs,
};
use lcm_plan::env::two_rooms::Rect;
use lcm_plan::planners::{Cem, CemConfig, ConstrainedCem, Mppi, MppiConfig, mpc_episode};
use lcm_plan::world::{PlanError, WorldModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

const MASS: f64 = 4.0 / 3.0 * std::f64::consts::PI * 0.001 * 1000.0;
const DT: f64 = 0.01;

fn env_with(cfg: PointMazeConfig, start: BallState) -> PointMaze {
    let mut env = PointMaze::new(cfg).expect("valid config");
    // A goal far away in the other arm, so no test episode ends by success by accident.
    env.reset(start, [2.8, 0.8, 0.0, 0.0]).expect("free start");
    env
}

/// MuJoCo's Euler step of one axis with implicit damping 1 and gear 100, from the already
/// clipped velocity, written out independently of the crate.
fn euler_axis(mut p: f64, mut v: f64, a: f64, substeps: usize) -> (f64, f64) {
    for _ in 0..substeps {
        v = (MASS * v + DT * 100.0 * a) / (MASS + DT * 1.0);
        p += DT * v;
    }
    (p, v)
}

fn close(a: f32, b: f64, tol: f64) -> bool {
    (f64::from(a) - b).abs() <= tol
}

#[test]
fn default_config_matches_the_reference_constants() {
    let cfg = PointMazeConfig::default();
    assert!((f64::from(cfg.mass) - 4.18879).abs() < 1e-5);
    assert_eq!(
        (
            cfg.gear,
            cfg.damping,
            cfg.dt,
            cfg.frame_skip,
            cfg.max_velocity
        ),
        (100.0, 1.0, 0.01, 5, 5.0)
    );
    assert_eq!((cfg.ball_radius, cfg.success_radius), (0.1, 0.5));
    let env = PointMaze::new(cfg.clone()).unwrap();
    assert_eq!(
        env.free_cells(),
        vec![(1, 1), (1, 2), (1, 3), (2, 3), (3, 1), (3, 2), (3, 3)]
    );
    assert_eq!(env.max_action_norm(), std::f32::consts::SQRT_2);
    assert_eq!(env.image_shape(), (2, 64, 64));
    // D4RL's free position range [0.39, 3.22] ≈ cells 1..=3 minus the radius.
    let g = env.geometry();
    assert!(g.is_free([0.4, 0.4]) && g.is_free([3.2, 3.2]) && g.is_free([1.8, 2.8]));
    assert!(!g.is_free([0.39, 0.8]) && !g.is_free([1.8, 1.8]) && !g.is_free([0.8, 3.25]));
    // Frames: cell (1, 1)'s centre is Gymnasium-Robotics' (−1, 1); round trip is exact.
    let gym = cfg.to_gymnasium([0.8, 0.8]);
    assert!(
        (gym[0] + 1.0).abs() < 1e-6 && (gym[1] - 1.0).abs() < 1e-6,
        "{gym:?}"
    );
    let back = cfg.from_gymnasium(gym);
    assert!((back[0] - 0.8).abs() < 1e-6 && (back[1] - 0.8).abs() < 1e-6);
}

#[test]
fn free_corridor_move_matches_hand_computed_euler() -> Result<(), EnvError> {
    // Row-1 arm, pushing +y along its axis: no wall within reach for 4 steps.
    let mut env = env_with(PointMazeConfig::default(), [0.8, 0.8, 0.0, 0.0]);
    let (mut py, mut vy) = (0.8, 0.0);
    for _ in 0..4 {
        let s = env.step(&[0.0, 1.0])?.state;
        (py, vy) = euler_axis(py, vy, 1.0, 5);
        assert!(
            close(s[1], py, 1e-5) && close(s[3], vy, 1e-5),
            "{s:?} vs {py} {vy}"
        );
        assert_eq!((s[0], s[2]), (0.8, 0.0));
    }
    // Out-of-box actions are clipped per component, not by norm: [0, 3] acts like [0, 1].
    let mut a = env_with(PointMazeConfig::default(), [0.8, 0.8, 0.0, 0.0]);
    let mut b = env_with(PointMazeConfig::default(), [0.8, 0.8, 0.0, 0.0]);
    assert_eq!(a.step(&[0.0, 3.0])?.state, b.step(&[0.0, 1.0])?.state);
    let s = a.step(&[-0.3, 0.7])?.state;
    let (px, vx) = euler_axis(0.8, 0.0, -0.3, 5);
    assert!(close(s[0], px, 1e-5) && close(s[2], vx, 1e-5));
    Ok(())
}

#[test]
fn zero_action_decays_velocity_by_damping() -> Result<(), EnvError> {
    let mut env = env_with(PointMazeConfig::default(), [0.8, 1.8, 0.5, -0.5]);
    let (mut p, mut v) = ((0.8, 1.8), 0.5);
    for _ in 0..6 {
        let s = env.step(&[0.0, 0.0])?.state;
        let (px, vx) = euler_axis(p.0, v, 0.0, 5);
        let (py, _) = euler_axis(p.1, -v, 0.0, 5);
        (p, v) = ((px, py), vx);
        assert!(close(s[0], px, 1e-5) && close(s[1], py, 1e-5), "{s:?}");
        assert!(close(s[2], vx, 1e-6) && close(s[3], -vx, 1e-6), "{s:?}");
    }
    // Closed form: each substep multiplies the speed by m / (m + dt·damping).
    let factor = (MASS / (MASS + DT)).powi(30);
    assert!((v - 0.5 * factor).abs() < 1e-9);
    assert!(v < 0.5 * 0.97);
    Ok(())
}

#[test]
fn velocity_is_clipped_to_5_before_each_step() -> Result<(), EnvError> {
    // Start at 10 (allowed: reset takes the state as given, like D4RL); the step clips to
    // 5 first, then integrates.
    let mut env = env_with(PointMazeConfig::default(), [0.8, 1.0, 0.0, 10.0]);
    let s = env.step(&[0.0, 0.0])?.state;
    let (py, vy) = euler_axis(1.0, 5.0, 0.0, 5);
    assert!(close(s[1], py, 1e-5) && close(s[3], vy, 1e-5), "{s:?}");

    // Sustained full force along the long bottom arm: speeds never exceed five substeps of
    // growth from the clip (D4RL's order), and reach the clip.
    let (_, bound) = euler_axis(0.0, 5.0, 1.0, 5);
    let mut env = env_with(PointMazeConfig::default(), [0.4, 0.4, 0.0, 0.0]);
    let mut peak = 0.0_f32;
    for _ in 0..12 {
        let s = env.step(&[0.0, 1.0])?.state;
        peak = peak.max(s[3]);
        assert!(f64::from(s[3]) <= bound + 1e-4, "{s:?}");
    }
    assert!(peak > 5.0, "the ball never reached the clip: {peak}");

    // The per-substep variant keeps every observed speed at the clip.
    let cfg = PointMazeConfig {
        clip_velocity_each_substep: true,
        ..Default::default()
    };
    let mut env = env_with(cfg, [0.4, 0.4, 0.0, 0.0]);
    for _ in 0..12 {
        let s = env.step(&[1.0, 1.0])?.state;
        assert!(s[2].abs() <= 5.0 && s[3].abs() <= 5.0, "{s:?}");
    }
    Ok(())
}

#[test]
fn walls_stop_the_ball_and_it_slides_without_friction() -> Result<(), EnvError> {
    // Pushed −x into the outer wall at x = 0.3: rests at 0.3 + r with no velocity into it,
    // while the +y push slides it along exactly as in free space.
    let mut env = env_with(PointMazeConfig::default(), [0.6, 0.8, 0.0, 0.0]);
    let (mut py, mut vy) = (0.8, 0.0_f64);
    for _ in 0..6 {
        let s = env.step(&[-1.0, 1.0])?.state;
        // D4RL clips the velocity to ±5 before the step's substeps.
        (py, vy) = euler_axis(py, vy.clamp(-5.0, 5.0), 1.0, 5);
        assert!(close(s[1], py, 1e-4) && close(s[3], vy, 1e-4), "{s:?}");
    }
    let s = env.state();
    assert!((s[0] - 0.4).abs() < 1e-4 && s[2] == 0.0, "{s:?}");

    // The inner wall block (row 2, columns 0..=2): from the bottom of arm 1 at full speed
    // +x, the ball stops at x = 1.3 − r and cannot enter the block.
    let mut env = env_with(PointMazeConfig::default(), [0.8, 1.5, 5.0, 0.0]);
    for _ in 0..10 {
        env.step(&[1.0, 0.0])?;
    }
    let s = env.state();
    assert!(
        (s[0] - 1.2).abs() < 1e-4 && s[2] == 0.0 && s[1] == 1.5,
        "{s:?}"
    );

    // No tunnelling even when a substep would jump two cells: with the clip raised to 200
    // the same run must still stop at the block's face.
    let fast = PointMazeConfig {
        max_velocity: 200.0,
        ..Default::default()
    };
    let mut env = env_with(fast, [0.8, 1.5, 200.0, 0.0]);
    for _ in 0..3 {
        env.step(&[1.0, 0.0])?;
    }
    let s = env.state();
    assert!((s[0] - 1.2).abs() < 1e-4 && s[2] == 0.0, "{s:?}");
    Ok(())
}

#[test]
fn no_wall_penetration_under_random_starts_and_actions() -> Result<(), EnvError> {
    let cfg = PointMazeConfig::default();
    let mut rng = ChaCha12Rng::seed_from_u64(7);
    let mut env = PointMaze::new(cfg.clone())?;
    let mut contacts = 0;
    for _ in 0..200 {
        let start = env.sample_state(&mut rng);
        env.reset(start, [2.8, 2.8, 0.0, 0.0])?;
        for _ in 0..60 {
            // Mostly saturated actions, held for a few steps, to hit walls hard and often.
            let a = [
                3.0 * (2.0 * rng.random::<f32>() - 1.0),
                3.0 * (2.0 * rng.random::<f32>() - 1.0),
            ];
            let r = env.step(&a)?;
            let s = r.state;
            assert!(s.iter().all(|v| v.is_finite()), "{s:?}");
            let g = env.geometry();
            let clearance = g.clearance([s[0], s[1]]);
            assert!(clearance >= 0.1 - 1e-4, "penetration {clearance} at {s:?}");
            assert!((0.4 - 1e-4..=3.2 + 1e-4).contains(&s[0]), "{s:?}");
            assert!((0.4 - 1e-4..=3.2 + 1e-4).contains(&s[1]), "{s:?}");
            contacts += usize::from(clearance < 0.1 + 1e-3);
            if r.done {
                break;
            }
        }
    }
    assert!(contacts > 100, "the test barely touched a wall: {contacts}");
    Ok(())
}

#[test]
fn rendering_dot_and_mask() -> Result<(), EnvError> {
    let env = env_with(PointMazeConfig::default(), [0.8, 0.8, 0.0, 0.0]);
    let img = env.render();
    let n = 64;
    assert_eq!(img.len(), 2 * n * n);
    let (dot, mask) = img.split_at(n * n);
    // The dot peaks at the pixel whose centre is nearest the ball: (0.8 + 0.7)·12.8 − 0.5.
    let argmax = (0..n * n)
        .max_by(|&a, &b| dot[a].total_cmp(&dot[b]))
        .unwrap();
    assert_eq!((argmax / n, argmax % n), (19, 19));
    assert!(dot[argmax] > 0.9 && dot[argmax] <= 1.0);
    assert!(dot[5 * n + 50] < 1e-6);
    // Mask: pixel centre (r, c) ↦ cell (⌊(r + 0.5)·5/64⌋, ⌊(c + 0.5)·5/64⌋) of U_MAZE.
    for r in 0..n {
        for c in 0..n {
            let cell = |k: usize| ((k as f32 + 0.5) * 5.0 / 64.0).floor() as usize;
            let want = f32::from(U_MAZE[cell(r)][cell(c)]);
            assert_eq!(mask[r * n + c], want, "pixel ({r}, {c})");
        }
    }
    // Spot checks independent of the formula: corners are wall, the U's bend is free, the
    // inner block (row 2, columns 0..=2) is wall.
    assert_eq!(mask[0], 1.0);
    assert_eq!(mask[32 * n + 45], 0.0);
    assert_eq!(mask[32 * n + 19], 1.0);
    assert_eq!(mask[45 * n + 19], 0.0);
    // render_into checks the buffer; render_state draws the same image.
    let mut small = vec![0.0; 10];
    assert!(matches!(
        env.render_into(&mut small),
        Err(EnvError::RenderBuffer { .. })
    ));
    assert_eq!(
        render_state(env.config(), &[0.8, 0.8, 3.0, 3.0])?,
        img,
        "velocity does not show"
    );
    Ok(())
}

#[test]
fn bad_input_is_reported() {
    let mut env = PointMaze::new(PointMazeConfig::default()).unwrap();
    assert_eq!(env.step(&[0.0, 0.0]), Err(EnvError::NotReset));
    let goal = [0.8, 2.8, 0.0, 0.0];
    // Inside the wall block, overlapping the outer wall, not finite.
    for p in [
        [1.8, 0.8],
        [0.35, 0.8],
        [0.8, 3.25],
        [f32::NAN, 1.0],
        [9.0, 9.0],
    ] {
        let e = env.reset([p[0], p[1], 0.0, 0.0], goal);
        assert!(
            matches!(e, Err(EnvError::InvalidPosition { what: "start", .. })),
            "{p:?}: {e:?}"
        );
    }
    let e = env.reset([0.8, 0.8, 0.0, 0.0], [1.8, 1.8, 0.0, 0.0]);
    assert!(matches!(
        e,
        Err(EnvError::InvalidPosition { what: "goal", .. })
    ));
    assert!(matches!(
        env.reset([0.8, 0.8, f32::INFINITY, 0.0], goal),
        Err(EnvError::Config(_))
    ));
    env.reset([0.8, 0.8, 0.0, 0.0], goal).unwrap();
    assert_eq!(
        env.step(&[1.0]),
        Err(EnvError::ActionDim {
            expected: 2,
            got: 1
        })
    );
    assert!(matches!(
        env.step(&[0.0, f32::NAN]),
        Err(EnvError::NonFiniteAction(_))
    ));
    // The budget ends the episode; further steps are refused.
    let mut short = PointMaze::new(PointMazeConfig {
        max_steps: 3,
        ..Default::default()
    })
    .unwrap();
    short.reset([0.8, 0.8, 0.0, 0.0], goal).unwrap();
    let mut last = None;
    for _ in 0..3 {
        last = Some(short.step(&[0.0, 0.0]).unwrap());
    }
    assert!(last.is_some_and(|r| r.done && !r.success));
    assert_eq!(
        short.step(&[0.0, 0.0]),
        Err(EnvError::EpisodeOver { steps: 3 })
    );
    // Invalid configurations.
    for cfg in [
        PointMazeConfig {
            ball_radius: 0.6,
            ..Default::default()
        },
        PointMazeConfig {
            map: vec![vec![1, 1], vec![1]],
            ..Default::default()
        },
        PointMazeConfig {
            map: vec![vec![1, 1], vec![1, 1]],
            ..Default::default()
        },
        PointMazeConfig {
            dt: 0.0,
            ..Default::default()
        },
        PointMazeConfig {
            sample_margin: 0.05,
            ..Default::default()
        },
    ] {
        assert!(matches!(PointMaze::new(cfg), Err(EnvError::Config(_))));
    }
    let model = OraclePointMaze::new(&PointMazeConfig::default()).unwrap();
    assert!(matches!(
        model.encode(&[1.0, 2.0]),
        Err(PlanError::Observation {
            expected: 4,
            got: 2
        })
    ));
    assert!(matches!(
        model.encode(&[1.0, 2.0, f32::NAN, 0.0]),
        Err(PlanError::NonFiniteObservation)
    ));
}

#[test]
fn success_within_half_a_unit() -> Result<(), EnvError> {
    let mut env = PointMaze::new(PointMazeConfig::default())?;
    env.reset([0.8, 0.8, 0.0, 0.0], [0.8, 1.9, 0.0, 0.0])?;
    let mut steps = 0;
    let last = loop {
        let r = env.step(&[0.0, 1.0])?;
        steps += 1;
        if r.done {
            break r;
        }
    };
    assert!(last.success && steps < 10, "{last:?} after {steps}");
    let d = position_distance(&last.state, &env.goal());
    assert!(d < 0.5 && d > 0.2, "{d}");
    Ok(())
}

#[test]
fn hazards_flag_violations_but_do_not_block() -> Result<(), EnvError> {
    let cfg = PointMazeConfig::with_default_hazards();
    // Along the outer wall of arm 1 (x = 0.6) the ball crosses the hazard at y ∈ [1.55, 2.05].
    let mut env = env_with(cfg.clone(), [0.6, 0.8, 0.0, 0.0]);
    let mut flagged = 0;
    for _ in 0..12 {
        let r = env.step(&[0.0, 1.0])?;
        let inside = (1.55..=2.05).contains(&r.state[1]);
        assert_eq!(r.violation, inside, "{r:?}");
        flagged += usize::from(r.violation);
    }
    assert!(flagged > 0);
    assert!(
        env.state()[1] > 2.05,
        "the hazard must not block: {:?}",
        env.state()
    );
    // The lane beside it (x = 1.0) is safe.
    let mut env = env_with(cfg, [1.0, 0.8, 0.0, 0.0]);
    for _ in 0..12 {
        assert!(!env.step(&[0.0, 1.0])?.violation);
    }
    // The guardrail margin on ball states is the centre's signed distance.
    let g = HazardGuardrail::new(vec![Rect {
        x0: 0.3,
        y0: 1.55,
        x1: 0.8,
        y1: 2.05,
    }]);
    let m = |s: BallState| lcm_plan::cost::Guardrail::margin(&g, &s);
    assert!((m([1.0, 1.8, 4.0, 4.0]) - 0.2).abs() < 1e-6);
    assert!((m([0.7, 1.8, 0.0, 0.0]) + 0.1).abs() < 1e-6);
    Ok(())
}

#[test]
fn eval_pairs_follow_dino_wm_sampling() {
    let pairs = u_maze_eval_pairs(3, 400);
    assert_eq!(pairs, u_maze_eval_pairs(3, 400));
    assert_ne!(pairs, u_maze_eval_pairs(4, 400));
    let env = PointMaze::new(PointMazeConfig::default()).unwrap();
    let mut arms = [0usize; 3];
    let mut near = 0;
    for (s, g) in &pairs {
        for st in [s, g] {
            let (x, y) = (st[0], st[1]);
            // DINO-WM's `generate_state` acceptance region, verbatim.
            let valid = ((0.5..=1.1).contains(&x) || (2.5..=3.1).contains(&x))
                && (0.5..=3.1).contains(&y)
                || (x > 1.1 && x < 2.5 && (2.5..=3.1).contains(&y));
            assert!(valid, "{st:?}");
            assert!(env.geometry().is_free([x, y]));
            assert!(st[2].abs() <= 5.226_256 && st[3].abs() <= 5.226_256);
            arms[if x <= 1.1 {
                0
            } else if x >= 2.5 {
                2
            } else {
                1
            }] += 1;
        }
        near += usize::from(position_distance(s, g) < 0.5);
    }
    // Uniform on the region: areas 1.56 : 0.84 : 1.56.
    let total = arms.iter().sum::<usize>() as f64;
    assert!(
        (arms[0] as f64 / total - 1.56 / 3.96).abs() < 0.05,
        "{arms:?}"
    );
    assert!(
        (arms[1] as f64 / total - 0.84 / 3.96).abs() < 0.05,
        "{arms:?}"
    );
    println!(
        "pairs already within the success radius: {near} / {}",
        pairs.len()
    );
}

#[test]
fn dataset_is_reproducible_and_follows_the_recipe() -> Result<(), EnvError> {
    let env_cfg = PointMazeConfig::with_default_hazards();
    let cfg = PointMazeDatasetConfig {
        num_trajectories: 12,
        steps: 40,
        seed: 5,
        render: false,
    };
    let a = generate(&cfg, &env_cfg)?;
    let b = generate(&cfg, &env_cfg)?;
    assert_eq!(a.trajectories, b.trajectories);
    let c = generate(
        &PointMazeDatasetConfig {
            seed: 6,
            ..cfg.clone()
        },
        &env_cfg,
    )?;
    assert_ne!(a.trajectories, c.trajectories);

    let env = PointMaze::new(env_cfg.clone())?;
    let model = OraclePointMaze::new(&env_cfg)?;
    let mut flagged = 0;
    for t in &a.trajectories {
        assert_eq!(
            (t.states.len(), t.actions.len(), t.violations.len()),
            (41, 40, 40)
        );
        assert!(t.frames.is_none());
        for (k, act) in t.actions.iter().enumerate() {
            assert!(act.iter().all(|v| (-1.0..=1.0).contains(v)));
            // Replaying through the oracle reproduces the next state exactly.
            assert_eq!(model.predict(&t.states[k], act), t.states[k + 1]);
            let s = t.states[k + 1];
            assert_eq!(t.violations[k], env.in_hazard([s[0], s[1]]));
        }
        assert!(
            t.states
                .iter()
                .all(|s| env.geometry().is_free([s[0], s[1]]))
        );
        flagged += t.violations.iter().filter(|&&v| v).count();
    }
    // Random actions are centred: the mean action is near 0 over 480 draws per axis.
    let all: Vec<_> = a.trajectories.iter().flat_map(|t| &t.actions).collect();
    let mean_x = all.iter().map(|a| f64::from(a[0])).sum::<f64>() / all.len() as f64;
    assert!(mean_x.abs() < 0.1, "{mean_x}");
    println!("hazard steps in the sample dataset: {flagged}");

    // With frames: one 2×64×64 image per state, equal to render_state.
    let small = PointMazeDatasetConfig {
        num_trajectories: 2,
        steps: 3,
        seed: 5,
        render: true,
    };
    let d = generate(&small, &env_cfg)?;
    let t = &d.trajectories[0];
    let frames = t.frames.as_ref().expect("frames were requested");
    assert_eq!(frames.len(), 4);
    assert_eq!(frames[2], render_state(&env_cfg, &t.states[2])?);
    // Same seed, same trajectories whether or not frames are stored.
    assert_eq!(t.states, a.trajectories[0].states[..4].to_vec());
    Ok(())
}

fn cem_cfg(seed: u64) -> CemConfig {
    CemConfig {
        horizon: 8,
        population: 64,
        elites: 8,
        iterations: 4,
        init_std: 1.0,
        min_std: 0.05,
        action_dim: 2,
        max_action_norm: std::f32::consts::SQRT_2,
        seed,
        ..Default::default()
    }
}

#[test]
fn oracle_matches_the_environment() -> Result<(), PlanError> {
    let cfg = PointMazeConfig::default();
    let model = OraclePointMaze::new(&cfg)?;
    let mut env = env_with(cfg, [0.6, 0.8, 0.0, 0.0]);
    let actions = [
        1.0, 0.5, -2.0, 1.0, 0.0, 1.0, 0.3, -0.7, 1.0, 1.0, -1.0, 0.0,
    ];
    let z0 = model.encode(&env.observe_state())?;
    let predicted = model.rollout(&z0, &actions);
    for (a, p) in actions.chunks_exact(2).zip(&predicted) {
        assert_eq!(env.step(a)?.state, *p);
    }
    Ok(())
}

#[test]
fn cem_and_mppi_reach_a_goal_along_the_arm() -> Result<(), PlanError> {
    let cfg = PointMazeConfig::default();
    let model = OraclePointMaze::new(&cfg)?;
    let (start, goal) = ([0.8, 0.6, 0.0, 0.0], [0.8, 3.0, 0.0, 0.0]);
    let cost = Cost::new(goal, position_distance);
    for seed in 0..3 {
        let mut env = PointMaze::new(cfg.clone())?;
        env.reset(start, goal)?;
        let mut cem = Cem::new(cem_cfg(seed))?;
        let r = mpc_episode(&mut env, &model, &mut cem, &cost, 40, 1)?;
        assert!(r.success, "CEM seed {seed}: {r:?}");

        env.reset(start, goal)?;
        let mut mppi = Mppi::new(MppiConfig {
            horizon: 8,
            population: 64,
            iterations: 4,
            sigma: 0.7,
            lambda: 0.05,
            action_dim: 2,
            max_action_norm: std::f32::consts::SQRT_2,
            seed,
            ..Default::default()
        })?;
        let r = mpc_episode(&mut env, &model, &mut mppi, &cost, 40, 1)?;
        assert!(r.success, "MPPI seed {seed}: {r:?}");
    }
    Ok(())
}

#[test]
fn constrained_cem_detours_around_a_hazard_on_the_direct_path() -> Result<(), PlanError> {
    // The default arm-1 hazard covers x ∈ [0.3, 0.8], y ∈ [1.55, 2.05]; the straight run at
    // x = 0.6 passes through it, the lane x ∈ (0.8, 1.2] is safe.
    let cfg = PointMazeConfig::with_default_hazards();
    let model = OraclePointMaze::new(&cfg)?;
    let (start, goal) = ([0.6, 0.6, 0.0, 0.0], [0.6, 3.0, 0.0, 0.0]);
    let cost = Cost::new(goal, position_distance).with_guardrail(
        HazardGuardrail::new(cfg.hazards.clone()).with_buffer(0.02),
        Severity::Hard,
    );
    for seed in 0..3 {
        let mut env = PointMaze::new(cfg.clone())?;
        env.reset(start, goal)?;
        let mut planner = ConstrainedCem::new(cem_cfg(seed))?;
        let r = mpc_episode(&mut env, &model, &mut planner, &cost, 60, 1)?;
        assert!(r.success, "seed {seed}: {r:?}");
        assert_eq!(r.violations, 0, "seed {seed}: {r:?}");
        assert_eq!(r.infeasible_plans, 0, "seed {seed}: {r:?}");
    }
    // Without the guardrail the same planner cuts straight through; only report it.
    let mut env = PointMaze::new(cfg.clone())?;
    env.reset(start, goal)?;
    let mut cem = Cem::new(cem_cfg(0))?;
    let r = mpc_episode(
        &mut env,
        &model,
        &mut cem,
        &Cost::new(goal, position_distance),
        60,
        1,
    )?;
    println!(
        "unconstrained CEM: success {} violations {}",
        r.success, r.violations
    );
    Ok(())
}
