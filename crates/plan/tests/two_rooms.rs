//! Behaviour of PLDM's Two-Rooms environment and of the random-walk dataset generator.

use lcm_plan::env::two_rooms::dataset::{
    DatasetConfig, generate, render_state, truncated_normal, von_mises,
};
use lcm_plan::env::two_rooms::{Room, TwoRooms, TwoRoomsConfig, clip_action};
use lcm_plan::{EnvError, Environment};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

fn env() -> TwoRooms {
    TwoRooms::new(TwoRoomsConfig::default()).expect("default config is valid")
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// Strictly inside the wall solid (x ∈ [31.5, 34.5], y outside the door (5.5, 14.5)) with a
/// small margin, so that points on the surface do not count.
fn deep_in_wall(p: [f32; 2]) -> bool {
    let m = 1e-3;
    p[0] > 31.5 + m && p[0] < 34.5 - m && (p[1] < 5.5 - m || p[1] > 14.5 + m)
}

fn directions(n: usize, norm: f32) -> Vec<[f32; 2]> {
    (0..n)
        .map(|k| {
            let th = k as f32 * std::f32::consts::TAU / n as f32;
            [norm * th.cos(), norm * th.sin()]
        })
        .collect()
}

#[test]
fn cannot_cross_wall_outside_door_from_a_grid_of_starts_and_actions() {
    let g = env().geometry();
    let mut actions = directions(32, 2.45);
    actions.extend(directions(8, 1.0));
    actions.extend(directions(8, 7.0).into_iter().map(|a| clip_action(a, 2.45)));
    let mut checked = 0;
    // Starts on both sides near the wall, including rows just outside the door.
    for xi in 0..=24 {
        let x = 27.0 + xi as f32 * 0.5; // 27 .. 39
        for yi in 0..=110 {
            let y = 4.0 + yi as f32 * 0.5;
            let p = [x, y];
            if !g.is_free(p) {
                continue;
            }
            for &a in &actions {
                let q = g.resolve_move(p, a).position;
                assert!(g.is_free(q), "{p:?} + {a:?} -> {q:?} is not free");
                // The straight path old -> new never goes through the wall's interior
                // (also catches corner cutting).
                for s in 0..=64 {
                    let t = s as f32 / 64.0;
                    let m = [p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])];
                    assert!(
                        !deep_in_wall(m),
                        "{p:?} + {a:?} -> {q:?} passes through {m:?}"
                    );
                }
                // A Door-room position is only ever in the door rows.
                if g.room(q) == Room::Door {
                    assert!(q[1] > 5.5 && q[1] < 14.5, "{q:?}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 50_000, "{checked}");

    // Pushing straight at the wall for many steps from rows outside the door never crosses.
    let mut e = env();
    for y in [4.0f32, 5.0, 5.4, 15.0, 16.0, 30.0, 59.0] {
        for (start, a) in [([20.0f32, y], [2.45f32, 0.0]), ([50.0, y], [-2.45, 0.0])] {
            e.reset(start, [10.0, 50.0]).expect("free start");
            let room = g.room(start);
            for _ in 0..30 {
                let r = e.step(&a).expect("valid step");
                assert_eq!(g.room(r.state), room, "crossed from {start:?}");
            }
        }
    }
}

#[test]
fn passes_through_the_door_both_ways() {
    let mut e = env();
    for (start, a, target_room) in [
        ([26.0f32, 10.0f32], [2.0f32, 0.0f32], Room::Right),
        ([40.0, 7.0], [-2.0, 0.0], Room::Left),
    ] {
        e.reset(start, [50.0, 50.0]).expect("free");
        let mut last = start;
        for _ in 0..8 {
            last = e.step(&a).expect("step").state;
        }
        assert_eq!(e.geometry().room(last), target_room, "ended at {last:?}");
        assert!(
            (last[1] - start[1]).abs() < 1e-6,
            "no vertical drift: {last:?}"
        );
        assert!(
            (dist(last, start) - 16.0).abs() < 1e-4,
            "no collision on the way: {last:?}"
        );
    }
}

#[test]
fn never_leaves_the_borders_under_random_large_actions() {
    let mut e = env();
    let mut rng = ChaCha12Rng::seed_from_u64(7);
    let g = e.geometry();
    for ep in 0..20 {
        let (s, goal) = e.sample_start_goal(&mut rng);
        assert_ne!(g.room(s), g.room(goal), "start and goal in opposite rooms");
        e.reset(s, [-100.0, -100.0])
            .expect_err("goal outside is refused");
        e.reset(s, goal).expect("free");
        for _ in 0..200 {
            let a = [
                rng.random_range(-6.0f32..6.0),
                rng.random_range(-6.0f32..6.0),
            ];
            let before = e.position();
            let r = e.step(&a).expect("step");
            let p = r.state;
            assert!(
                (4.0..=59.0).contains(&p[0]) && (4.0..=59.0).contains(&p[1]),
                "{p:?}"
            );
            assert!(g.is_free(p), "{p:?}");
            // Collisions only shorten moves, except for the 0.5 px push back.
            assert!(
                dist(before, p) <= 2.45 + 0.5 + 1e-4,
                "ep {ep}: {before:?} -> {p:?}"
            );
            if r.done {
                break;
            }
        }
    }
}

#[test]
fn action_norm_is_clipped_to_2_45() {
    let c = clip_action([30.0, 40.0], 2.45);
    assert!(((c[0] * c[0] + c[1] * c[1]).sqrt() - 2.45).abs() < 1e-6);
    assert!((c[0] / c[1] - 0.75).abs() < 1e-6, "direction kept");
    assert_eq!(clip_action([1.0, -1.0], 2.45), [1.0, -1.0]);
    let mut e = env();
    assert_eq!(e.max_action_norm(), 2.45);
    assert_eq!(e.action_dim(), 2);
    e.reset([10.0, 30.0], [50.0, 30.0]).expect("free");
    let p = e.step(&[100.0, 0.0]).expect("step").state;
    assert!((p[0] - 12.45).abs() < 1e-5 && p[1] == 30.0, "{p:?}");
}

#[test]
fn collisions_snap_and_push_back_half_a_pixel() {
    let g = env().geometry();
    let cases: [([f32; 2], [f32; 2], [f32; 2]); 6] = [
        ([30.0, 30.0], [2.4, 0.0], [31.0, 30.0]), // left face of the wall at 31.5
        ([36.0, 30.0], [-2.0, 0.0], [35.0, 30.0]), // right face at 34.5
        ([33.0, 7.0], [0.0, -2.0], [33.0, 6.0]),  // door's top edge at 5.5 (inside the door)
        ([33.0, 13.0], [0.0, 2.0], [33.0, 14.0]), // door's bottom edge at 14.5
        ([58.0, 30.0], [2.0, 0.0], [58.5, 30.0]), // right border at 59
        ([10.0, 5.0], [1.0, -2.0], [10.5, 4.5]),  // top border at 4, snapped at contact
    ];
    for (p, a, want) in cases {
        let m = g.resolve_move(p, a);
        assert!(m.contact.is_some(), "{p:?} + {a:?} should collide");
        assert!(
            dist(m.position, want) < 1e-5,
            "{p:?} + {a:?} -> {:?}, want {want:?}",
            m.position
        );
    }
    // Diagonal into the wall: stop at the contact point (no sliding), then push back in x.
    let m = g.resolve_move([30.5, 30.0], [2.0, 2.0]);
    assert!(dist(m.position, [31.0, 31.0]) < 1e-5, "{:?}", m.position);
    // No contact: the plain move.
    let m = g.resolve_move([20.0, 20.0], [1.0, 1.0]);
    assert_eq!((m.position, m.contact), ([21.0, 21.0], None));
}

#[test]
fn rendering_dot_and_mask() {
    let mut e = env();
    assert_eq!(e.image_shape(), (2, 64, 64));
    let n = 64;
    for pos in [[20.0f32, 30.0f32], [20.3, 29.6], [45.0, 10.0]] {
        e.reset(pos, [10.0, 10.0]).expect("free");
        let img = e.render();
        assert_eq!(img.len(), 2 * n * n);
        let dot = &img[..n * n];
        let argmax = (0..n * n)
            .max_by(|&i, &j| dot[i].total_cmp(&dot[j]))
            .expect("non-empty");
        assert_eq!(
            (argmax / n, argmax % n),
            (pos[1].round() as usize, pos[0].round() as usize)
        );
    }
    // Integer position: peak 1 and the 4-neighbours at exp(−1 / 2σ²).
    e.reset([20.0, 30.0], [10.0, 10.0]).expect("free");
    let img = e.render();
    let at = |r: usize, c: usize| img[r * n + c];
    assert!((at(30, 20) - 1.0).abs() < 1e-6);
    let expect = (-1.0f32 / (2.0 * 1.3 * 1.3)).exp();
    for v in [at(29, 20), at(31, 20), at(30, 19), at(30, 21)] {
        assert!((v / at(30, 20) - expect).abs() < 1e-5, "{v} vs {expect}");
    }
    assert!((at(31, 21) - expect * expect).abs() < 1e-5, "diagonal");

    let mask = &img[n * n..];
    for r in 0..n {
        for c in 0..n {
            let border = !(4..=59).contains(&r) || !(4..=59).contains(&c);
            let wall = (32..35).contains(&c) && !(6..=14).contains(&r);
            let want = if border || wall { 1.0 } else { 0.0 };
            assert_eq!(mask[r * n + c], want, "mask at row {r} col {c}");
        }
    }
    // Door rows are open at the wall columns; the columns beside the wall are free.
    assert_eq!(mask[10 * n + 33], 0.0);
    assert_eq!(mask[30 * n + 31] + mask[30 * n + 35], 0.0);
    // The dataset helper renders the same picture; wrong buffer sizes are refused.
    assert_eq!(render_state(e.config(), [20.0, 30.0]).expect("render"), img);
    assert!(matches!(
        e.render_into(&mut [0.0; 5]),
        Err(EnvError::RenderBuffer { .. })
    ));
}

#[test]
fn hazards_flag_violations_but_do_not_block() {
    let mut e = TwoRooms::new(TwoRoomsConfig::with_default_hazards()).expect("valid");
    let hz = e.config().hazards.clone();
    assert_eq!(hz.len(), 2);
    let g = e.geometry();
    assert_eq!(g.room([18.0, 44.0]), Room::Left);
    assert_eq!(g.room([47.0, 44.0]), Room::Right);
    assert!(e.in_hazard([18.0, 44.0]) && e.in_hazard([47.0, 44.0]));
    assert!(
        e.in_hazard([14.0, 40.0]) && e.in_hazard([22.0, 48.0]),
        "closed squares"
    );
    assert!(!e.in_hazard([33.0, 10.0]) && !e.in_hazard([13.9, 44.0]) && !e.in_hazard([30.0, 44.0]));

    // Walk right through the left hazard: flags exactly while inside.
    e.reset([10.0, 44.0], [50.0, 10.0]).expect("free");
    let mut flags = Vec::new();
    for _ in 0..8 {
        let r = e.step(&[2.0, 0.0]).expect("step");
        assert_eq!(r.violation, e.in_hazard(r.state));
        flags.push(r.violation);
    }
    // x = 12, 14, ..., 26: inside for 14..=22.
    assert_eq!(flags, [false, true, true, true, true, true, false, false]);

    // No hazards in the plain environment.
    let mut plain = env();
    plain.reset([10.0, 44.0], [50.0, 10.0]).expect("free");
    for _ in 0..8 {
        assert!(!plain.step(&[2.0, 0.0]).expect("step").violation);
    }
}

#[test]
fn success_radius_episode_end_and_errors() {
    let mut e = env();
    e.reset([10.0, 10.0], [20.0, 20.0]).expect("free");
    assert!(e.is_success([21.4, 20.0]) && e.is_success([21.0, 21.0 - 1e-3]));
    assert!(
        !e.is_success([21.42, 20.0]) && !e.is_success([21.0, 21.0]),
        "strictly < √2"
    );

    e.reset([10.0, 10.0], [13.0, 10.0]).expect("free");
    let r = e.step(&[1.5, 0.0]).expect("step");
    assert!(!r.success && !r.done);
    let r = e.step(&[0.2, 0.0]).expect("step");
    assert!(r.success && r.done, "distance 1.3 < √2");
    assert!(matches!(
        e.step(&[0.0, 0.0]),
        Err(EnvError::EpisodeOver { steps: 2 })
    ));

    // The step budget ends the episode after 200 steps.
    e.reset([10.0, 10.0], [50.0, 50.0]).expect("free");
    for t in 1..=200 {
        let r = e.step(&[0.0, 0.0]).expect("step");
        assert_eq!(r.done, t == 200);
    }
    assert_eq!(e.steps(), 200);

    assert!(matches!(
        e.reset([33.0, 30.0], [10.0, 10.0]),
        Err(EnvError::InvalidPosition { .. })
    ));
    assert!(matches!(
        e.reset([2.0, 30.0], [10.0, 10.0]),
        Err(EnvError::InvalidPosition { .. })
    ));
    e.reset([10.0, 10.0], [50.0, 50.0]).expect("free");
    assert!(matches!(
        e.step(&[1.0]),
        Err(EnvError::ActionDim {
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        e.step(&[f32::NAN, 0.0]),
        Err(EnvError::NonFiniteAction(_))
    ));
    assert_eq!(e.observe_state(), vec![10.0, 10.0]);
    assert!(matches!(env().step(&[0.0, 0.0]), Err(EnvError::NotReset)));
    let bad = TwoRoomsConfig {
        wall_x: 70,
        ..Default::default()
    };
    assert!(matches!(TwoRooms::new(bad), Err(EnvError::Config(_))));
}

#[test]
fn dataset_is_deterministic_and_follows_the_recipe() {
    let cfg = DatasetConfig {
        num_trajectories: 200,
        steps: 200,
        seed: 3,
        ..Default::default()
    };
    let env_cfg = TwoRoomsConfig::default();
    let a = generate(&cfg, &env_cfg).expect("generate");
    let b = generate(&cfg, &env_cfg).expect("generate");
    assert_eq!(a.trajectories, b.trajectories, "same seed, same data");
    let c = generate(
        &DatasetConfig {
            seed: 4,
            ..cfg.clone()
        },
        &env_cfg,
    )
    .expect("generate");
    assert_ne!(a.trajectories, c.trajectories, "other seed, other data");

    let e = env();
    let g = e.geometry();
    let scale = 2.45 / 1.8;
    for t in &a.trajectories {
        assert_eq!(
            (t.states.len(), t.actions.len(), t.violations.len()),
            (201, 200, 200)
        );
        for (k, act) in t.actions.iter().enumerate() {
            let len = (act[0] * act[0] + act[1] * act[1]).sqrt();
            assert!(
                len >= 0.2 * scale - 1e-4 && len <= 1.8 * scale + 1e-4,
                "{len}"
            );
            // The stored transition is the environment's dynamics.
            let next = g
                .resolve_move(t.states[k], clip_action(*act, 2.45))
                .position;
            assert_eq!(next, t.states[k + 1]);
            assert!(g.is_free(t.states[k + 1]));
        }
    }
    let share = a.crossing_share().expect("share");
    println!("share of trajectories crossing through the door: {share:.3}");
    assert!(share > 0.0 && share < 1.0, "{share}");
    // Plain-pixel steps (mean 1 px) explore less, so fewer trajectories reach the other room.
    let px = DatasetConfig {
        step_scale: Some(1.0),
        ..cfg.clone()
    };
    let share_px = generate(&px, &env_cfg)
        .expect("generate")
        .crossing_share()
        .expect("share");
    println!("with step_scale = 1 (mean step 1 px): {share_px:.3}");
    assert!(share_px < share, "{share_px} vs {share}");

    // Invalid settings are reported, not looped on.
    let bad = DatasetConfig {
        step_mean: f64::NAN,
        ..cfg.clone()
    };
    assert!(matches!(generate(&bad, &env_cfg), Err(EnvError::Config(_))));
    let bad = DatasetConfig {
        step_min: 5.0,
        step_max: 6.0,
        ..cfg
    };
    assert!(matches!(generate(&bad, &env_cfg), Err(EnvError::Config(_))));
}

#[test]
fn truncated_normal_respects_bounds_and_moments() {
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let xs: Vec<f64> = (0..20_000)
        .map(|_| truncated_normal(&mut rng, 1.0, 0.4, 0.2, 1.8))
        .collect();
    assert!(xs.iter().all(|x| (0.2..=1.8).contains(x)));
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
    // Symmetric truncation at ±2σ: mean 1, std 0.4·√(1 − 2·2φ(2)/(2Φ(2)−1)) ≈ 0.352.
    assert!((mean - 1.0).abs() < 0.01, "{mean}");
    assert!((var.sqrt() - 0.352).abs() < 0.01, "{}", var.sqrt());
}

#[test]
fn von_mises_has_the_right_mean_direction_and_concentration() {
    let mut rng = ChaCha12Rng::seed_from_u64(2);
    let mu = 1.0;
    let n = 20_000;
    let (mut s, mut c) = (0.0, 0.0);
    for _ in 0..n {
        let th = von_mises(&mut rng, mu, 5.0);
        s += th.sin();
        c += th.cos();
    }
    let (s, c) = (s / n as f64, c / n as f64);
    let r = (s * s + c * c).sqrt();
    // Mean resultant length of von Mises(κ = 5) is I1(5)/I0(5) = 0.893383.
    assert!((r - 0.893383).abs() < 0.01, "R = {r}");
    assert!(
        (s.atan2(c) - mu).abs() < 0.02,
        "mean direction {}",
        s.atan2(c)
    );
    // κ = 0 is uniform: resultant near zero.
    let (mut s0, mut c0) = (0.0, 0.0);
    for _ in 0..n {
        let th = von_mises(&mut rng, 0.0, 0.0);
        s0 += th.sin();
        c0 += th.cos();
    }
    assert!(((s0 * s0 + c0 * c0).sqrt() / n as f64) < 0.03);
}
