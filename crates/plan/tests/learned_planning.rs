//! Planning through a learned-model interface: a JEPA whose weights are set by hand to the
//! free-space dynamics (encoder = normalised position, predictor = position + action, probe =
//! identity), so the planners' behaviour on `LearnedWorld` can be checked against known
//! answers; frameskip; gradient planning; augmented Lagrangian; the evaluation statistics.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use lcm_plan::cost::{Cost, HazardGuardrail, Severity, euclidean};
use lcm_plan::env::two_rooms::Rect;
use lcm_plan::env::{Environment, TwoRooms, TwoRoomsConfig};
use lcm_plan::evaluation::{
    ProbedPathLength, WALL_PENALTY, opposite_room_pairs, spearman, wilson_interval,
};
use lcm_plan::planners::gradient::{GradientConfig, GradientPlanner};
use lcm_plan::planners::{
    AugLagCem, AugLagConfig, CemConfig, ConstrainedCem, EpisodeOptions, ObservationSource, Planner,
    RepeatActions, run_episode,
};
use lcm_plan::world::jepa::{Jepa, JepaConfig};
use lcm_plan::world::learned::{Latent, LearnedWorld, ProbedHazardGuardrail, latent_distance};
use lcm_plan::world::{OracleTwoRooms, WorldModel};

fn t(rows: &[&[f32]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

fn v(values: &[f32]) -> Tensor {
    Tensor::new(values, &Device::Cpu).unwrap()
}

/// Latent = (position − 32) / 32; prediction = latent + action / 32 (free space, no walls);
/// probe = identity. ReLUs are kept inactive by a +1 offset (latents lie in (−1, 1)).
fn free_space_jepa() -> Jepa {
    let cfg = JepaConfig {
        latent_dim: 2,
        hidden_dim: 4,
        ..JepaConfig::two_rooms_state()
    };
    let c = 2.45 / 32.0; // the predictor sees a / 2.45
    let id4: [&[f32]; 4] = [
        &[1., 0., 0., 0.],
        &[0., 1., 0., 0.],
        &[0., 0., 1., 0.],
        &[0., 0., 0., 1.],
    ];
    let mut m: HashMap<String, Tensor> = HashMap::new();
    m.insert(
        "encoder.mlp.0.weight".into(),
        t(&[&[1., 0.], &[0., 1.], &[0., 0.], &[0., 0.]]),
    );
    m.insert("encoder.mlp.0.bias".into(), v(&[1., 1., 0., 0.]));
    m.insert("encoder.mlp.1.weight".into(), t(&id4));
    m.insert("encoder.mlp.1.bias".into(), v(&[0.; 4]));
    m.insert(
        "encoder.mlp.2.weight".into(),
        t(&[&[1., 0., 0., 0.], &[0., 1., 0., 0.]]),
    );
    m.insert("encoder.mlp.2.bias".into(), v(&[-1., -1.]));
    // [z1, z2, a1', a2'] → [relu(a1'), relu(−a1'), relu(a2'), relu(−a2')] → c·(a1', a2').
    m.insert(
        "predictor.0.weight".into(),
        t(&[
            &[0., 0., 1., 0.],
            &[0., 0., -1., 0.],
            &[0., 0., 0., 1.],
            &[0., 0., 0., -1.],
        ]),
    );
    m.insert("predictor.0.bias".into(), v(&[0.; 4]));
    m.insert("predictor.1.weight".into(), t(&id4));
    m.insert("predictor.1.bias".into(), v(&[0.; 4]));
    m.insert(
        "predictor.2.weight".into(),
        t(&[&[c, -c, 0., 0.], &[0., 0., c, -c]]),
    );
    m.insert("predictor.2.bias".into(), v(&[0., 0.]));
    m.insert("probe.0.weight".into(), t(&[&[1., 0.], &[0., 1.]]));
    m.insert("probe.0.bias".into(), v(&[1., 1.]));
    m.insert("probe.1.weight".into(), t(&[&[1., 0.], &[0., 1.]]));
    m.insert("probe.1.bias".into(), v(&[-1., -1.]));
    Jepa::new(&cfg, VarBuilder::from_tensors(m, DType::F32, &Device::Cpu)).unwrap()
}

fn free_world(repeat: usize) -> RepeatActions<LearnedWorld> {
    RepeatActions {
        inner: LearnedWorld::new(free_space_jepa()),
        repeat,
    }
}

#[test]
fn free_space_model_predicts_free_space_and_frameskip_expands_actions() {
    let world = free_world(3);
    let z0 = world.encode(&[10.0, 20.0]).unwrap();
    assert!(latent_distance(&z0, &vec![(10.0 - 32.0) / 32.0, (20.0 - 32.0) / 32.0]) < 1e-6);
    let actions = vec![1.0, 0.0, 0.0, -2.0];
    let rollout = world.rollout(&z0, &actions);
    // Two planner actions × 3 repeats = 6 latents, one per real step.
    assert_eq!(rollout.len(), 6);
    let probe = world.inner.probe_position().unwrap();
    let expected = [
        [11., 20.],
        [12., 20.],
        [13., 20.],
        [13., 18.],
        [13., 16.],
        [13., 14.],
    ];
    for (z, want) in rollout.iter().zip(expected) {
        let p = probe.position(z);
        assert!(
            (p[0] - want[0]).abs() < 1e-4 && (p[1] - want[1]).abs() < 1e-4,
            "{p:?} vs {want:?}"
        );
    }
    // The tensor rollout (used for gradients) agrees with the batched one.
    let a = Tensor::from_vec(actions.clone(), (1, 2, 2), &Device::Cpu).unwrap();
    let tensor = world.rollout_tensor(&z0, &a).unwrap().unwrap();
    assert_eq!(tensor.dims(), &[1, 6, 2]);
    let flat = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let batched: Vec<f32> = rollout.concat();
    for (x, y) in flat.iter().zip(&batched) {
        assert!((x - y).abs() < 1e-6);
    }
    // The oracle has no tensor rollout: gradient planning must fall back, not crash.
    assert!(
        OracleTwoRooms::new(&TwoRoomsConfig::default())
            .rollout_tensor(&[1.0, 1.0], &a)
            .is_none()
    );
}

fn learned_cost(
    world: &RepeatActions<LearnedWorld>,
    goal: [f32; 2],
    hazards: &[Rect],
) -> Cost<Latent> {
    let mut cost = Cost::new(world.encode(&goal).unwrap(), latent_distance);
    if !hazards.is_empty() {
        cost = cost.with_guardrail(
            ProbedHazardGuardrail {
                probe: world.inner.probe_position().unwrap(),
                hazards: HazardGuardrail::new(hazards.to_vec()).with_buffer(0.5),
            },
            Severity::Hard,
        );
    }
    cost
}

fn options() -> EpisodeOptions {
    EpisodeOptions {
        max_steps: 120,
        replan_every: 1,
        action_repeat: 2,
        steps_per_call: None,
        observation: ObservationSource::State,
    }
}

#[test]
fn gradient_planning_through_the_model_reaches_same_room_goals() {
    let world = free_world(2);
    for seed in 0..3 {
        let mut env = TwoRooms::new(TwoRoomsConfig::default()).unwrap();
        let (start, goal) = ([8.0, 12.0], [26.0, 50.0]);
        env.reset(start, goal).unwrap();
        let cost = learned_cost(&world, goal, &[]);
        let mut planner = GradientPlanner::new(GradientConfig {
            horizon: 10,
            restarts: 8,
            steps: 15,
            seed,
            ..GradientConfig::default()
        })
        .unwrap();
        let trace = run_episode(&mut env, &world, &mut planner, &cost, &options()).unwrap();
        assert!(
            trace.report.success,
            "seed {seed}: {:?}",
            trace.states.last()
        );
        assert_eq!(trace.states.len(), trace.report.steps + 1);
        assert_eq!(trace.latents.len(), trace.states.len());
        assert!(trace.calls.iter().all(|c| c.lookahead == 20 && c.feasible));
    }
}

#[test]
fn gradient_descent_improves_on_its_starting_samples() {
    let world = free_world(1);
    let z0 = world.encode(&[10.0, 30.0]).unwrap();
    let cost = learned_cost(&world, [26.0, 30.0], &[]);
    let plan = |steps| {
        let mut p = GradientPlanner::new(GradientConfig {
            horizon: 6,
            restarts: 4,
            steps,
            init_std: 0.5,
            seed: 5,
            ..GradientConfig::default()
        })
        .unwrap();
        p.plan(&world, &z0, &cost).objective
    };
    let (before, after) = (plan(0), plan(30));
    assert!(after < 0.5 * before, "{before} → {after}");
}

#[test]
fn constrained_planners_on_learned_latents_detour_around_a_probed_hazard() {
    let hazard = Rect::square(14.0, 26.0, 8.0);
    let cfg = TwoRoomsConfig {
        hazards: vec![hazard],
        ..TwoRoomsConfig::default()
    };
    let world = free_world(2);
    for seed in 0..3 {
        let cem = CemConfig {
            horizon: 10,
            population: 128,
            elites: 12,
            iterations: 4,
            seed,
            ..CemConfig::default()
        };
        let planners: Vec<(&str, MakePlanner)> = vec![
            (
                "constrained",
                Box::new(|| Box::new(ConstrainedCem::new(cem.clone()).unwrap())),
            ),
            (
                "auglag",
                Box::new(|| {
                    Box::new(
                        AugLagCem::new(AugLagConfig {
                            cem: cem.clone(),
                            ..AugLagConfig::default()
                        })
                        .unwrap(),
                    )
                }),
            ),
        ];
        for (name, mut make) in planners {
            let mut env = TwoRooms::new(cfg.clone()).unwrap();
            let (start, goal) = ([18.0, 16.0], [18.0, 44.0]);
            env.reset(start, goal).unwrap();
            let cost = learned_cost(&world, goal, &[hazard]);
            let mut planner = make();
            let report = planner.episode(&mut env, &world, &cost);
            assert!(report.0, "{name} seed {seed}: no success");
            assert_eq!(report.1, 0, "{name} seed {seed}: entered the hazard");
        }
    }
}

type MakePlanner<'a> = Box<dyn FnMut() -> Box<dyn ErasedPlanner> + 'a>;

/// Object-safe wrapper so one loop can run both planners.
trait ErasedPlanner {
    fn episode(
        &mut self,
        env: &mut TwoRooms,
        world: &RepeatActions<LearnedWorld>,
        cost: &Cost<Latent>,
    ) -> (bool, usize);
}

impl<P: Planner> ErasedPlanner for P {
    fn episode(
        &mut self,
        env: &mut TwoRooms,
        world: &RepeatActions<LearnedWorld>,
        cost: &Cost<Latent>,
    ) -> (bool, usize) {
        let trace = run_episode(env, world, self, cost, &options()).unwrap();
        (trace.report.success, trace.report.violations)
    }
}

#[test]
fn augmented_lagrangian_prices_violations() {
    // A goal inside the hazard: every plan that reaches it violates, so the multiplier must
    // grow while the returned plan stays as safe as any sampled.
    let hazard = Rect::square(20.0, 20.0, 10.0);
    let world = RepeatActions {
        inner: OracleTwoRooms::new(&TwoRoomsConfig::default()),
        repeat: 1,
    };
    let cost = Cost::new([25.0, 25.0], euclidean)
        .with_guardrail(HazardGuardrail::new(vec![hazard]), Severity::Hard);
    let mut planner = AugLagCem::new(AugLagConfig::default()).unwrap();
    let plan = planner.plan(&world, &[10.0, 10.0], &cost);
    assert!(planner.multiplier() > 0.0 || plan.feasible);
    if plan.feasible_candidates > 0 {
        assert!(
            plan.feasible,
            "a feasible candidate existed but an infeasible plan came back"
        );
    }
    planner.reset();
    assert_eq!(planner.multiplier(), 0.0);
}

#[test]
fn evaluation_statistics() {
    let close = |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9;
    // Reference values from the closed form (checked with Python).
    assert!(close(wilson_interval(0, 50), (0.0, 0.07134759913335872)));
    assert!(close(
        wilson_interval(45, 50),
        (0.7863976856252035, 0.9565242350681096)
    ));
    assert!(close(wilson_interval(50, 50), (0.9286524008666414, 1.0)));
    assert!(close(
        wilson_interval(17, 20),
        (0.6395811352592431, 0.9476312541037835)
    ));
    // Spearman with ties equals scipy.stats.spearmanr.
    let rho = spearman(&[1., 2., 2., 3., 5.], &[2., 1., 4., 4., 9.]).unwrap();
    assert!((rho - 0.7631578947368421).abs() < 1e-12, "{rho}");
    assert_eq!(spearman(&[1., 2., 3.], &[3., 2., 1.]), Some(-1.0));
    assert_eq!(spearman(&[1., 1., 1.], &[3., 2., 1.]), None);

    // Episode pairs: opposite rooms, free, deterministic in the seed.
    let cfg = TwoRoomsConfig::with_default_hazards();
    let pairs = opposite_room_pairs(&cfg, 40, 3);
    assert_eq!(pairs, opposite_room_pairs(&cfg, 40, 3));
    assert_ne!(pairs, opposite_room_pairs(&cfg, 40, 4));
    let env = TwoRooms::new(cfg.clone()).unwrap();
    let g = env.geometry();
    for (s, goal) in pairs {
        assert!(g.is_free(s) && g.is_free(goal));
        assert_ne!(g.room(s), g.room(goal));
        assert!(
            cfg.hazards
                .iter()
                .all(|h| !h.contains(s) && !h.contains(goal))
        );
    }
}

#[test]
fn probed_path_length_is_the_path_length_of_the_probed_positions() {
    // The free-space JEPA's probe reads positions exactly, so the probed objective must be
    // the map's path length between the encoded positions, across the wall included.
    let world = free_world(1);
    let probe = world.inner.probe_position().unwrap();
    let geometry = TwoRoomsConfig::default().geometry();
    let goal = [55.0, 55.0];
    let goal_latent = world.encode(&goal).unwrap();
    let d = ProbedPathLength::new(probe, geometry, goal_latent.clone());
    let g = d.goal_position();
    assert!((g[0] - goal[0]).abs() < 1e-4 && (g[1] - goal[1]).abs() < 1e-4);
    for p in [
        [8.0, 55.0],
        [20.0, 10.0],
        [40.0, 60.0],
        [31.0, 30.0],
        [55.0, 50.0],
    ] {
        let z = world.encode(&p).unwrap();
        let want = geometry.path_length(p, goal);
        let got = d.distance(&z, &goal_latent);
        assert!((got - want).abs() < 1e-3, "{p:?}: {got} vs {want}");
    }
    // Another goal latent is probed on the fly, not mistaken for the cached one.
    let other = world.encode(&[10.0, 10.0]).unwrap();
    let z = world.encode(&[20.0, 10.0]).unwrap();
    assert!((d.distance(&z, &other) - 10.0).abs() < 1e-3);
    // A predicted position inside the wall (the model has moved through it) is measured from
    // the nearest face plus the penalty per pixel of depth, never as the straight line.
    let inside = world.encode(&[32.5, 40.0]).unwrap();
    let face = geometry.path_length([31.5, 40.0], goal);
    let got = d.distance(&inside, &goal_latent);
    assert!(
        (got - (face + WALL_PENALTY * 1.0)).abs() < 1e-2,
        "{got} vs {face}"
    );
    assert!(got > geometry.path_length([31.5, 40.0], goal));
    // Behind the wall the latent distance is the straight line, the probed cost is not.
    let behind = world.encode(&[8.0, 55.0]).unwrap();
    assert!(
        d.distance(&behind, &goal_latent) > latent_distance(&behind, &goal_latent) * 32.0 + 20.0
    );
}
