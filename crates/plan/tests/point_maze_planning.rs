//! Planning on the PointMaze U-maze through `lcm wm`'s library path: the shortest-free-path
//! field, the oracle reaching the other arm of the U, and a tiny JEPA trained and evaluated
//! end to end (train → load → two episodes), deterministic under a seed.

use lcm_plan::env::point_maze::distance::MazeDistanceField;
use lcm_plan::env::point_maze::{PointMaze, PointMazeConfig};
use lcm_plan::evaluation::{
    Agent, Episodes, EvalEnv, EvalSettings, JepaCost, OracleCost, SearchSize, summarise,
};
use lcm_plan::world::learned::LearnedWorld;
use lcm_plan::world::load::load_world_model;
use lcm_plan::world::train::{DatasetSpec, WmEnv, WmTrainConfig, train_world_model};

fn field(goal: [f32; 2]) -> MazeDistanceField {
    let env = PointMaze::new(PointMazeConfig::default()).unwrap();
    MazeDistanceField::new(env.geometry(), goal, 0.05)
}

#[test]
fn maze_distance_goes_around_the_wall_between_the_arms() {
    // Arms of the U along y at x ≈ 0.8 and x ≈ 2.8, joined at y ∈ [2.3, 3.3].
    let f = field([2.8, 0.8]);
    // Same arm, along an axis: the straight distance (grid exact along axes).
    assert!(
        (f.value([2.8, 1.8]) - 1.0).abs() < 0.02,
        "{}",
        f.value([2.8, 1.8])
    );
    assert!(f.value([2.8, 0.8]) < 0.03);
    // Other arm: the taut path around the wall's corners inflated by the ball radius,
    // (1.2, 2.4) and (2.4, 2.4), is 2·√(0.4² + 1.6²) + 1.2 ≈ 4.50; the grid is ≤ 8% longer.
    let taut = 2.0 * (0.4f32.powi(2) + 1.6f32.powi(2)).sqrt() + 1.2;
    let v = f.value([0.8, 0.8]);
    assert!(v >= taut - 0.02 && v <= taut * 1.08, "{v} vs {taut}");
    // No local minimum behind the wall: climbing the far arm towards the bend always helps,
    // where the straight-line distance would grow.
    for k in 0..16 {
        let y = 0.6 + 0.1 * k as f32;
        assert!(
            f.value([0.8, y + 0.1]) < f.value([0.8, y]),
            "y {y}: {} !< {}",
            f.value([0.8, y + 0.1]),
            f.value([0.8, y])
        );
    }
    // Inside the wall costs more than beside it; non-finite positions rank last.
    assert!(f.value([1.8, 0.8]) > f.value([1.1, 0.8]) + 1.0);
    assert_eq!(f.value([f32::NAN, 1.0]), f32::INFINITY);
}

fn settings(agent_size: SearchSize, seed: u64) -> EvalSettings {
    EvalSettings {
        env: EvalEnv::PointMaze,
        hazards: false,
        hazard_seed: None,
        episodes: 2,
        seed,
        horizon: agent_size.horizon,
        repeat: 5,
        steps_per_call: None,
        population: agent_size.population,
        iterations: agent_size.iterations,
        oracle: agent_size,
        oracle_cost: OracleCost::PathLength,
        jepa_cost: JepaCost::ProbedPathLength,
        jepa_stage_weight: 0.1,
        jepa_latent_weight: 0.0,
        hazard_buffer: 0.05,
        min_goal_path: 0.0,
    }
}

#[test]
fn oracle_cem_on_the_path_length_reaches_the_other_arm() {
    let small = SearchSize {
        horizon: 8,
        population: 64,
        iterations: 3,
    };
    let s = settings(small, 0);
    let episodes = Episodes::PointMaze {
        config: PointMazeConfig::default(),
        pairs: vec![([0.8, 0.6, 0.0, 0.0], [2.8, 0.6, 0.0, 0.0])],
    };
    let run = episodes.run(Agent::OracleCem, &s, None).unwrap();
    let last = run[0].positions.last().copied();
    assert!(run[0].success, "ended at {last:?}");
}

#[test]
fn tiny_point_maze_jepa_trains_and_plans_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WmTrainConfig {
        data: DatasetSpec {
            num_trajectories: 12,
            steps: 40,
            seed: 3,
        },
        valid_trajectories: 2,
        steps: 6,
        batch_size: 16,
        eval_every: 6,
        checkpoint_every: 6,
        keep_last: 0,
        ..WmTrainConfig::point_maze(false)
    };
    train_world_model(&cfg, dir.path(), false, |_| {}).unwrap();
    let loaded = load_world_model(dir.path()).unwrap();
    assert_eq!(loaded.config.env, WmEnv::PointMaze);
    assert_eq!(loaded.config.space_id(), "point-maze/state4");
    let world = LearnedWorld::new(loaded.model);
    let tiny = SearchSize {
        horizon: 3,
        population: 8,
        iterations: 1,
    };
    let s = settings(tiny, 5);
    let episodes = Episodes::new(&s).unwrap();
    let Episodes::PointMaze { pairs, .. } = &episodes else {
        panic!("PointMaze settings gave {episodes:?}");
    };
    assert_eq!(pairs.len(), 2);
    // Far pairs: every start is at least 3 (a path into the other arm) from its goal.
    let far = EvalSettings {
        min_goal_path: 3.0,
        ..s.clone()
    };
    let Episodes::PointMaze {
        pairs: far_pairs, ..
    } = Episodes::new(&far).unwrap()
    else {
        panic!("PointMaze settings gave another environment");
    };
    for (start, goal) in &far_pairs {
        let d = field([goal[0], goal[1]]).value([start[0], start[1]]);
        assert!(d >= 3.0, "{start:?} -> {goal:?}: {d}");
    }
    assert!(
        Episodes::new(&EvalSettings {
            min_goal_path: 50.0,
            ..s.clone()
        })
        .is_err()
    );
    let a = episodes.run(Agent::JepaCem, &s, Some(&world)).unwrap();
    let row = summarise("JEPA + CEM", &a);
    assert_eq!(row.episodes, 2);
    assert!(row.planning_calls > 0);
    assert!(row.ms_per_step.is_finite() && row.mean_final_distance.is_finite());
    // Every planning call's anticipation is recorded.
    assert!(a.iter().all(|e| !e.anticipation.is_empty()));
    // Same seed, same trajectories.
    let b = episodes.run(Agent::JepaCem, &s, Some(&world)).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.positions, y.positions);
    }
    // A Two-Rooms agent row that is not run on the maze is an error, not a panic.
    assert!(episodes.run(Agent::JepaGradient, &s, Some(&world)).is_err());
}
