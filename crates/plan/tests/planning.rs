//! Planners on the oracle Two-Rooms world model (the exact simulator), so failures here are
//! planner failures, not model error. The first tests keep goals in the start's room; the
//! last ones cross the door with the evaluation's oracle agents (issue 15: 95 steps of
//! look-ahead reach goals a 60-step plan cannot see around the wall).

use lcm_plan::Environment;
use lcm_plan::cost::{Cost, Guardrail, HazardGuardrail, Severity, euclidean, rect_signed_distance};
use lcm_plan::env::two_rooms::{Rect, TwoRooms, TwoRoomsConfig, Vec2};
use lcm_plan::evaluation::{
    Agent, EpisodeSummary, EvalEnv, EvalSettings, JepaCost, OracleCost, SearchSize,
    run_agent_episodes, with_latent_term,
};
use lcm_plan::planners::{
    AugLagCem, AugLagConfig, Cem, CemConfig, ConstrainedCem, Mppi, MppiConfig, Planner, mpc_episode,
};
use lcm_plan::world::{OracleTwoRooms, PlanError, WorldModel};

fn setup(cfg: TwoRoomsConfig, start: Vec2, goal: Vec2) -> (TwoRooms, OracleTwoRooms) {
    let model = OracleTwoRooms::new(&cfg);
    let mut env = TwoRooms::new(cfg).expect("valid config");
    env.reset(start, goal).expect("free start and goal");
    (env, model)
}

fn hazard_cost(cfg: &TwoRoomsConfig, goal: Vec2, severity: Severity) -> Cost<Vec2> {
    // The 0.5 px buffer keeps predicted positions strictly outside the closed hazard squares.
    Cost::new(goal, euclidean).with_guardrail(
        HazardGuardrail::new(cfg.hazards.clone()).with_buffer(0.5),
        severity,
    )
}

#[test]
fn cem_and_mppi_reach_a_goal_in_the_same_room() -> Result<(), PlanError> {
    let (start, goal) = ([8.0, 30.0], [27.0, 50.0]);
    for seed in 0..3 {
        let (mut env, model) = setup(TwoRoomsConfig::default(), start, goal);
        let cost = Cost::new(goal, euclidean);
        let mut cem = Cem::new(CemConfig {
            seed,
            ..Default::default()
        })?;
        let r = mpc_episode(&mut env, &model, &mut cem, &cost, 60, 1)?;
        assert!(r.success, "CEM seed {seed}: {r:?}");

        let (mut env, model) = setup(TwoRoomsConfig::default(), start, goal);
        let mut mppi = Mppi::new(MppiConfig {
            seed,
            ..Default::default()
        })?;
        let r = mpc_episode(&mut env, &model, &mut mppi, &cost, 60, 1)?;
        assert!(r.success, "MPPI seed {seed}: {r:?}");
    }
    Ok(())
}

#[test]
fn constrained_cem_detours_around_a_hazard_without_violations() -> Result<(), PlanError> {
    // The default left-room hazard is [14, 22] × [40, 48]; the straight line y = 44 from start
    // to goal runs through its middle.
    let cfg = TwoRoomsConfig::with_default_hazards();
    let (start, goal) = ([8.0, 44.0], [28.0, 44.0]);
    for seed in 0..3 {
        let (mut env, model) = setup(cfg.clone(), start, goal);
        let cost = hazard_cost(&cfg, goal, Severity::Hard);
        let mut planner = ConstrainedCem::new(CemConfig {
            seed,
            ..Default::default()
        })?;
        // Check each returned plan by hand as well as through mpc_episode's report.
        env.reset(start, goal)?;
        let z = model.encode(&env.observe_state())?;
        let plan = planner.plan(&model, &z, &cost);
        assert!(plan.feasible_candidates > 0);
        assert!(
            plan.feasible && plan.margins.iter().all(|(_, m)| *m >= 0.0),
            "{plan:?}"
        );

        let r = mpc_episode(&mut env, &model, &mut planner, &cost, 60, 1)?;
        assert!(r.success, "seed {seed}: {r:?}");
        assert_eq!(r.violations, 0, "seed {seed}: {r:?}");
        assert_eq!(r.infeasible_plans, 0, "seed {seed}: {r:?}");
    }
    // Plain CEM without any guardrail term is free to cut through; only report what it did.
    let (mut env, model) = setup(cfg, start, goal);
    let mut cem = Cem::new(CemConfig::default())?;
    let r = mpc_episode(
        &mut env,
        &model,
        &mut cem,
        &Cost::new(goal, euclidean),
        60,
        1,
    )?;
    println!(
        "unconstrained CEM: success {} violations {}",
        r.success, r.violations
    );
    Ok(())
}

/// Margin `30 − y`: every position with y > 30 is infeasible, so from a start on the line
/// half of the first action's directions are infeasible.
struct StayBelow;

impl Guardrail<Vec2> for StayBelow {
    fn name(&self) -> &str {
        "stay_below"
    }
    fn margin(&self, z: &Vec2) -> f32 {
        30.0 - z[1]
    }
}

#[test]
fn constrained_cem_never_returns_an_infeasible_plan_when_one_was_seen() -> Result<(), PlanError> {
    let cfg = TwoRoomsConfig::default();
    let model = OracleTwoRooms::new(&cfg);
    // The goal lies in the infeasible half, pulling the Gaussian towards it.
    let cost = Cost::new([16.0, 50.0], euclidean).with_guardrail(StayBelow, Severity::Hard);
    for seed in 0..20 {
        let mut planner = ConstrainedCem::new(CemConfig {
            seed,
            population: 16,
            elites: 4,
            ..Default::default()
        })?;
        let plan = planner.plan(&model, &[16.0, 30.0], &cost);
        assert!(plan.feasible_candidates > 0, "seed {seed}");
        assert!(plan.feasible, "seed {seed}: {plan:?}");
        assert!(
            plan.predicted.iter().all(|p| p[1] <= 30.0),
            "seed {seed}: {plan:?}"
        );
        assert_eq!(plan.margins[0].0, "stay_below");
        assert!(plan.margins[0].1 >= 0.0);
        // The Gaussian may drift into the infeasible half; the answer must not.
        let mut penalty = Cem::new(CemConfig {
            seed,
            hard_penalty: 0.0,
            ..Default::default()
        })?;
        let greedy = penalty.plan(&model, &[16.0, 30.0], &cost);
        assert!(
            !greedy.feasible,
            "with no penalty plain CEM should head for the goal"
        );
    }
    // Starting 0.5 px inside the infeasible half, standing still is infeasible too: feasible
    // candidates are now rare, and the plan must be feasible exactly when one was sampled.
    let mut seen = 0;
    for seed in 0..20 {
        let mut planner = ConstrainedCem::new(CemConfig {
            seed,
            population: 16,
            elites: 4,
            ..Default::default()
        })?;
        let plan = planner.plan(&model, &[16.0, 30.5], &cost);
        assert_eq!(
            plan.feasible,
            plan.feasible_candidates > 0,
            "seed {seed}: {plan:?}"
        );
        seen += usize::from(plan.feasible);
    }
    assert!(seen > 0, "no seed sampled a feasible candidate");
    Ok(())
}

#[test]
fn planners_are_deterministic_per_seed() -> Result<(), PlanError> {
    let cfg = TwoRoomsConfig::with_default_hazards();
    let model = OracleTwoRooms::new(&cfg);
    let cost = hazard_cost(&cfg, [28.0, 44.0], Severity::Hard);
    let z0 = [8.0, 44.0];
    let cem = |seed| -> Result<_, PlanError> {
        Ok(Cem::new(CemConfig {
            seed,
            ..Default::default()
        })?
        .plan(&model, &z0, &cost))
    };
    let ccem = |seed| -> Result<_, PlanError> {
        Ok(ConstrainedCem::new(CemConfig {
            seed,
            ..Default::default()
        })?
        .plan(&model, &z0, &cost))
    };
    let mppi = |seed| -> Result<_, PlanError> {
        Ok(Mppi::new(MppiConfig {
            seed,
            ..Default::default()
        })?
        .plan(&model, &z0, &cost))
    };
    assert_eq!(cem(1)?, cem(1)?);
    assert_ne!(cem(1)?.actions, cem(2)?.actions);
    assert_eq!(ccem(1)?, ccem(1)?);
    assert_ne!(ccem(1)?.actions, ccem(2)?.actions);
    assert_eq!(mppi(1)?, mppi(1)?);
    assert_ne!(mppi(1)?.actions, mppi(2)?.actions);
    Ok(())
}

#[test]
fn hard_and_soft_guardrail_semantics() {
    let hazard = Rect::square(10.0, 10.0, 4.0);
    let goal = [20.0, 12.0];
    let guard = || HazardGuardrail::new(vec![hazard]);
    // Passes through the hazard's centre (12, 12), 2 px deep.
    let through: Vec<Vec2> = vec![[8.0, 12.0], [12.0, 12.0], [16.0, 12.0]];
    let around: Vec<Vec2> = vec![[8.0, 12.0], [12.0, 17.0], [16.0, 12.0]];

    let pure = Cost::new(goal, euclidean).evaluate(&through);
    let hard = Cost::new(goal, euclidean).with_guardrail(guard(), Severity::Hard);
    let soft = |w| Cost::new(goal, euclidean).with_guardrail(guard(), Severity::Soft { weight: w });

    let h = hard.evaluate(&through);
    assert!(!h.feasible);
    assert!((h.hard_violation - 2.0).abs() < 1e-5, "{h:?}");
    assert!((h.min_margins[0] + 2.0).abs() < 1e-5);
    // Hard terms never leak into the objective.
    assert_eq!(h.total(), pure.total());

    let s1 = soft(1.0).evaluate(&through);
    let s3 = soft(3.0).evaluate(&through);
    assert!(s1.feasible && s3.feasible);
    assert_eq!(s1.hard_violation, 0.0);
    assert!((s1.soft_penalty - 2.0).abs() < 1e-5);
    assert!((s3.total() - pure.total() - 6.0).abs() < 1e-4);

    // Outside the hazard: feasible and unpenalised either way; margin = distance (3 px).
    let h = hard.evaluate(&around);
    let s = soft(1.0).evaluate(&around);
    assert!(h.feasible && s.feasible);
    assert_eq!(s.soft_penalty, 0.0);
    assert!((h.min_margins[0] - 2.0).abs() < 1e-5, "{h:?}");

    // Signed distance: outside corner, edge, inside.
    assert!((rect_signed_distance(&hazard, [17.0, 18.0]) - 5.0).abs() < 1e-5);
    assert!(rect_signed_distance(&hazard, [14.0, 12.0]).abs() < 1e-6);
    assert!((rect_signed_distance(&hazard, [11.0, 12.0]) + 1.0).abs() < 1e-6);
}

/// The stage weight (`--stage-weight`) ranks plans by how soon they get close: two plans that
/// end on the goal, one there from its first step and one arriving at its last, tie under a
/// terminal-only cost and are separated by exactly the stage weight times the difference of
/// their mean distances.
#[test]
fn stage_weight_prefers_plans_that_arrive_early() {
    let goal = [20.0, 12.0];
    let early: Vec<Vec2> = vec![goal; 3];
    let late: Vec<Vec2> = vec![[14.0, 12.0], [17.0, 12.0], goal];
    let mut cost = Cost::new(goal, euclidean);
    cost.stage_weight = 0.0;
    assert_eq!(cost.evaluate(&early).total(), cost.evaluate(&late).total());
    cost.stage_weight = 3.0;
    let gap = cost.evaluate(&late).total() - cost.evaluate(&early).total();
    // Mean distance of the late plan: (6 + 3 + 0) / 3 = 3 px; of the early one: 0.
    assert!((gap - 3.0 * 3.0).abs() < 1e-5, "gap {gap}");
}

#[test]
fn oracle_matches_the_environment_and_rejects_bad_observations() -> Result<(), PlanError> {
    let cfg = TwoRoomsConfig::default();
    let (mut env, model) = setup(cfg, [30.0, 40.0], [10.0, 10.0]);
    let actions = [2.0, 0.5, 3.0, 0.0, -1.0, -2.0, 0.0, -2.4];
    let predicted = model.rollout(&[30.0, 40.0], &actions);
    for (a, p) in actions.chunks_exact(2).zip(&predicted) {
        assert_eq!(env.step(a)?.state, *p);
    }
    assert!(matches!(
        model.encode(&[1.0]),
        Err(PlanError::Observation {
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        model.encode(&[f32::NAN, 1.0]),
        Err(PlanError::NonFiniteObservation)
    ));
    assert!(
        Cem::new(CemConfig {
            elites: 100,
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        Mppi::new(MppiConfig {
            lambda: 0.0,
            ..Default::default()
        })
        .is_err()
    );
    Ok(())
}

#[test]
fn cem_planning_step_timing() -> Result<(), PlanError> {
    let cfg = TwoRoomsConfig::with_default_hazards();
    let model = OracleTwoRooms::new(&cfg);
    let cost = hazard_cost(&cfg, [28.0, 44.0], Severity::Hard);
    let mut cem = ConstrainedCem::new(CemConfig::default())?;
    let n = 20;
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        cem.reset();
        let _ = cem.plan(&model, &[8.0, 44.0], &cost);
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3 / n as f64;
    println!("constrained CEM plan (H=8, N=64, K=8, I=4): {ms:.3} ms/call");
    Ok(())
}

/// The evaluation's settings for `episodes` oracle episodes (JEPA sizes unused).
fn oracle_settings(hazards: bool, oracle: SearchSize, seed: u64) -> EvalSettings {
    EvalSettings {
        env: EvalEnv::TwoRooms,
        hazards,
        hazard_seed: None,
        episodes: 1,
        seed,
        horizon: 12,
        repeat: 5,
        steps_per_call: None,
        population: 300,
        iterations: 5,
        oracle,
        oracle_cost: OracleCost::Distance,
        jepa_cost: JepaCost::Latent,
        jepa_stage_weight: 0.1,
        jepa_latent_weight: 0.0,
        hazard_buffer: 2.5,
        min_goal_path: 0.0,
    }
}

fn oracle_run(
    agent: Agent,
    settings: &EvalSettings,
    pairs: &[(Vec2, Vec2)],
) -> Result<Vec<EpisodeSummary>, PlanError> {
    run_agent_episodes(agent, settings, &settings.env_config(), pairs, None)
}

/// Bottom-left corner to bottom-right corner: the door is ~45 px above both, so every path
/// first climbs away from the goal.
const FAR_ROOM: (Vec2, Vec2) = ([8.0, 55.0], [55.0, 55.0]);

#[test]
fn oracle_cem_reaches_the_goal_across_the_door_from_the_far_room() -> Result<(), PlanError> {
    let long = oracle_settings(false, SearchSize::ORACLE, 0);
    let run = oracle_run(Agent::OracleCem, &long, &[FAR_ROOM])?;
    let e = &run[0];
    assert!(e.success, "{:?}", e.positions.last());
    // It went through the door (the only way), within the 200-step episode.
    let g = long.env_config().geometry();
    assert!(
        e.positions
            .iter()
            .any(|p| p[0] > g.wall_lo && p[0] < g.wall_hi && p[1] > g.door_lo && p[1] < g.door_hi)
    );
    assert!(e.steps < 200);

    // The cause, kept as evidence: the earlier search (60 steps of look-ahead, 300
    // candidates) ends pressed against the wall, where the distance to the goal has a local
    // minimum: no sampled plan climbs far enough to come back down on the other side.
    let short = oracle_settings(
        false,
        SearchSize {
            horizon: 12,
            population: 300,
            iterations: 5,
        },
        0,
    );
    let stuck = &oracle_run(Agent::OracleCem, &short, &[FAR_ROOM])?[0];
    assert!(!stuck.success);
    let last = stuck.positions.last().copied().unwrap_or(FAR_ROOM.0);
    assert!(
        (g.wall_lo - last[0]).abs() < 3.0 && last[1] > 40.0,
        "expected to stop below the door against the wall, stopped at {last:?}"
    );
    Ok(())
}

#[test]
fn constrained_oracle_planners_cross_the_door_past_a_hazard_with_only_feasible_plans()
-> Result<(), PlanError> {
    // The default hazards are [14, 22] × [40, 48] and [43, 51] × [40, 48]: the start sits
    // above the left one, the goal below the right one.
    let settings = oracle_settings(true, SearchSize::ORACLE, 0);
    let pair = ([18.0, 36.0], [47.0, 53.0]);
    for agent in [Agent::OracleConstrainedCem, Agent::OracleAugLag] {
        let e = &oracle_run(agent, &settings, &[pair])?[0];
        assert!(e.success, "{agent:?}: {:?}", e.positions.last());
        assert_eq!(e.violations, 0, "{agent:?}");
        // Standing still is always feasible from a safe position, so a feasible plan exists
        // at every call: none returned may be infeasible.
        assert_eq!(e.infeasible_plans, 0, "{agent:?}");
    }
    Ok(())
}

/// One round with a vanishing penalty: the Lagrangian ranks by the objective alone, so only
/// the feasible fallback keeps its answer out of a guardrail.
fn objective_led_aug_lag(cem: CemConfig, feasible_fallback: bool) -> Result<AugLagCem, PlanError> {
    AugLagCem::new(AugLagConfig {
        cem,
        rounds: 1,
        rho: 1.0e-6,
        rho_growth: 1.0,
        rho_max: 1.0e-6,
        feasible_fallback,
    })
}

#[test]
fn augmented_lagrangian_never_returns_an_infeasible_plan_when_one_was_seen() -> Result<(), PlanError>
{
    // With a vanishing penalty the Lagrangian ranks by the objective alone, so its best
    // candidate heads for the goal through the hazard; a feasible candidate (the zero-action
    // mean, standing still) is sampled in the first iteration and must be returned instead.
    let cfg = TwoRoomsConfig::with_default_hazards();
    let model = OracleTwoRooms::new(&cfg);
    let cost = hazard_cost(&cfg, [18.0, 52.0], Severity::Hard);
    let planner = |seed, feasible_fallback| {
        objective_led_aug_lag(
            CemConfig {
                seed,
                ..CemConfig::default()
            },
            feasible_fallback,
        )
    };
    let mut traded = 0;
    for seed in 0..5 {
        let plan = planner(seed, true)?.plan(&model, &[18.0, 36.0], &cost);
        assert!(plan.feasible_candidates > 0, "seed {seed}");
        assert!(plan.feasible, "seed {seed}: {plan:?}");
        assert!(plan.margins.iter().all(|(_, m)| *m >= 0.0), "seed {seed}");
        // Without the fallback the same search returns its infeasible Lagrangian best.
        let plain = planner(seed, false)?.plan(&model, &[18.0, 36.0], &cost);
        traded += usize::from(!plain.feasible && plain.feasible_candidates > 0);
    }
    assert!(
        traded > 0,
        "the scenario should tempt the Lagrangian into the hazard"
    );
    Ok(())
}

/// Feasible only within 0.01 px of `centre`: any sampled motion breaks it, standing still
/// does not.
struct StayPut {
    centre: Vec2,
}

impl Guardrail<Vec2> for StayPut {
    fn name(&self) -> &str {
        "stay_put"
    }
    fn margin(&self, z: &Vec2) -> f32 {
        0.01 - euclidean(z, &self.centre)
    }
}

#[test]
fn constrained_planners_stand_still_when_no_sampled_plan_is_feasible() -> Result<(), PlanError> {
    let cfg = TwoRoomsConfig::default();
    let model = OracleTwoRooms::new(&cfg);
    let start = [16.0, 30.0];
    let goal = [16.0, 50.0];
    let free = Cost::new(goal, euclidean);
    let guarded =
        Cost::new(goal, euclidean).with_guardrail(StayPut { centre: start }, Severity::Hard);
    let cem = |seed| CemConfig {
        seed,
        population: 16,
        elites: 4,
        ..Default::default()
    };
    let aug_lag = |seed, feasible_fallback| AugLagConfig {
        cem: cem(seed),
        feasible_fallback,
        ..AugLagConfig::default()
    };
    for seed in 0..5 {
        // A first call without the guardrail leaves a warm start that moves towards the
        // goal, so no sample of the second call stands still.
        let mut constrained = ConstrainedCem::new(cem(seed))?;
        constrained.plan(&model, &start, &free);
        let plan = constrained.plan(&model, &start, &guarded);
        assert_eq!(plan.feasible_candidates, 0, "seed {seed}");
        assert!(plan.feasible, "seed {seed}: {plan:?}");
        assert!(
            plan.actions.iter().flatten().all(|a| *a == 0.0),
            "seed {seed}"
        );

        let mut lagrangian = AugLagCem::new(aug_lag(seed, true))?;
        lagrangian.plan(&model, &start, &free);
        let plan = lagrangian.plan(&model, &start, &guarded);
        assert_eq!(plan.feasible_candidates, 0, "seed {seed}");
        assert!(plan.feasible, "seed {seed}: {plan:?}");
        // Without the fallback the augmented Lagrangian keeps an infeasible best.
        let mut plain = AugLagCem::new(aug_lag(seed, false))?;
        plain.plan(&model, &start, &free);
        assert!(
            !plain.plan(&model, &start, &guarded).feasible,
            "seed {seed}"
        );
    }
    Ok(())
}

#[test]
fn augmented_lagrangian_returns_the_least_violating_plan_when_nothing_is_feasible()
-> Result<(), PlanError> {
    // Half a pixel inside the infeasible half with the goal deeper in it: standing still
    // violates too, and a vanishing penalty lets the Lagrangian head for the goal.
    let cfg = TwoRoomsConfig::default();
    let model = OracleTwoRooms::new(&cfg);
    let cost = Cost::new([16.0, 50.0], euclidean).with_guardrail(StayBelow, Severity::Hard);
    let planner = |seed, feasible_fallback| {
        objective_led_aug_lag(
            CemConfig {
                seed,
                population: 16,
                elites: 4,
                ..CemConfig::default()
            },
            feasible_fallback,
        )
    };
    let mut safer = 0;
    for seed in 0..10 {
        let fallback = planner(seed, true)?.plan(&model, &[16.0, 30.5], &cost);
        let plain = planner(seed, false)?.plan(&model, &[16.0, 30.5], &cost);
        if fallback.feasible_candidates > 0 {
            assert!(fallback.feasible, "seed {seed}");
            continue;
        }
        assert!(!fallback.feasible, "seed {seed}");
        assert!(
            fallback.hard_violation <= plain.hard_violation,
            "seed {seed}: {} > {}",
            fallback.hard_violation,
            plain.hard_violation
        );
        safer += usize::from(fallback.hard_violation < plain.hard_violation);
    }
    assert!(
        safer > 0,
        "the Lagrangian's best should violate more than the least violating plan"
    );
    Ok(())
}

#[test]
fn oracle_agents_give_the_same_trajectory_for_the_same_seed() -> Result<(), PlanError> {
    let small = SearchSize {
        horizon: 19,
        population: 64,
        iterations: 2,
    };
    let pairs = [FAR_ROOM, ([20.0, 20.0], [50.0, 30.0])];
    for (agent, cost) in [
        (Agent::OracleCem, OracleCost::Distance),
        (Agent::OracleConstrainedCem, OracleCost::PathLength),
        (Agent::OracleMppi, OracleCost::PathLength),
        (Agent::OracleAugLag, OracleCost::Distance),
    ] {
        let hazards = agent != Agent::OracleCem;
        let settings = |seed| EvalSettings {
            oracle_cost: cost,
            ..oracle_settings(hazards, small, seed)
        };
        let a = oracle_run(agent, &settings(7), &pairs)?;
        let b = oracle_run(agent, &settings(7), &pairs)?;
        let c = oracle_run(agent, &settings(8), &pairs)?;
        for i in 0..pairs.len() {
            assert_eq!(a[i].positions, b[i].positions, "{agent:?} episode {i}");
            assert_eq!(a[i].success, b[i].success);
        }
        assert_ne!(
            a[0].positions, c[0].positions,
            "{agent:?}: another seed should sample other plans"
        );
    }
    Ok(())
}

#[test]
fn seeded_hazard_layouts_are_reproducible_and_keep_the_door_open() {
    let g = TwoRoomsConfig::default().geometry();
    let mut layouts = Vec::new();
    for seed in 0..50 {
        let cfg = TwoRoomsConfig::with_seeded_hazards(seed);
        assert_eq!(cfg, TwoRoomsConfig::with_seeded_hazards(seed));
        assert_eq!(cfg.hazards.len(), 2);
        let [left, right] = [cfg.hazards[0], cfg.hazards[1]];
        // One square per room, inside it, clear of the border and the wall.
        assert!(
            left.x0 >= g.border_lo + 2.0 && left.x1 <= g.wall_lo - 2.0,
            "{left:?}"
        );
        assert!(
            right.x0 >= g.wall_hi + 2.0 && right.x1 <= g.border_hi - 2.0,
            "{right:?}"
        );
        for h in [left, right] {
            assert!((h.x1 - h.x0 - 8.0).abs() < 1e-4 && (h.y1 - h.y0 - 8.0).abs() < 1e-4);
            assert!(
                h.y0 >= g.border_lo + 2.0 && h.y1 <= g.border_hi - 2.0,
                "{h:?}"
            );
            // At least 8 px from every point of the door's opening.
            for y in [g.door_lo, 10.0, g.door_hi] {
                for x in [g.wall_lo, g.wall_hi] {
                    assert!(rect_signed_distance(&h, [x, y]) >= 8.0 - 1e-4, "{h:?}");
                }
            }
        }
        layouts.push(cfg.hazards);
    }
    layouts.sort_by(|a, b| {
        a[0].x0
            .total_cmp(&b[0].x0)
            .then(a[0].y0.total_cmp(&b[0].y0))
    });
    layouts.dedup();
    assert!(layouts.len() > 40, "seeds should give different layouts");
}

#[test]
fn path_length_goes_through_the_door() {
    let g = TwoRoomsConfig::default().geometry();
    let d = |a: Vec2, b: Vec2| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    // Same room, and straight through the door: the straight line.
    assert_eq!(
        g.path_length([8.0, 30.0], [27.0, 50.0]),
        d([8.0, 30.0], [27.0, 50.0])
    );
    assert_eq!(g.path_length([20.0, 10.0], [45.0, 10.0]), 25.0);
    // Low in opposite rooms: around the lower door corners (31.5, 14.5) and (34.5, 14.5).
    let (p, q) = FAR_ROOM;
    let expected = d(p, [31.5, 14.5]) + 3.0 + d([34.5, 14.5], q);
    assert!((g.path_length(p, q) - expected).abs() < 1e-3);
    assert!((g.path_length(q, p) - expected).abs() < 1e-3);
    // High in opposite rooms: around the upper corners.
    let (p, q) = ([10.0, 4.5], [50.0, 4.5]);
    let expected = d(p, [31.5, 5.5]) + 3.0 + d([34.5, 5.5], q);
    assert!((g.path_length(p, q) - expected).abs() < 1e-3);
    // Along the wall there is no dip: from any point against the wall's lower left face,
    // moving up (toward the door) shortens the path to a goal low in the other room.
    for y in (20..58).map(|y| y as f32) {
        let here = g.path_length([31.0, y], FAR_ROOM.1);
        let up = g.path_length([31.0, y - 1.0], FAR_ROOM.1);
        assert!(up < here, "y {y}: {up} !< {here}");
    }
}

#[test]
fn path_length_cost_reaches_the_far_room_with_the_small_search() -> Result<(), PlanError> {
    // The search that stays stuck behind the wall on the straight-line distance (60 steps,
    // 300 candidates) gets there when the cost is the path length.
    let small = SearchSize {
        horizon: 12,
        population: 300,
        iterations: 5,
    };
    let settings = EvalSettings {
        oracle_cost: OracleCost::PathLength,
        ..oracle_settings(false, small, 0)
    };
    let e = &oracle_run(Agent::OracleCem, &settings, &[FAR_ROOM])?[0];
    assert!(e.success, "{:?}", e.positions.last());
    Ok(())
}

#[test]
fn constrained_planners_on_path_length_keep_out_of_seeded_hazards() -> Result<(), PlanError> {
    // A held-out layout; start above the left square, goal below the right one.
    let settings = EvalSettings {
        oracle_cost: OracleCost::PathLength,
        hazard_seed: Some(3),
        ..oracle_settings(true, SearchSize::ORACLE, 0)
    };
    let cfg = settings.env_config();
    let (l, r) = (cfg.hazards[0], cfg.hazards[1]);
    let start = [(l.x0 + l.x1) / 2.0, l.y0 - 4.0];
    let goal = [(r.x0 + r.x1) / 2.0, r.y1 + 4.0];
    let (start, goal) = if start[1] > 6.0 && goal[1] < 57.0 {
        (start, goal)
    } else {
        (
            [(l.x0 + l.x1) / 2.0, l.y1 + 4.0],
            [(r.x0 + r.x1) / 2.0, r.y0 - 4.0],
        )
    };
    for agent in [Agent::OracleConstrainedCem, Agent::OracleAugLag] {
        let e = &oracle_run(agent, &settings, &[(start, goal)])?[0];
        assert!(
            e.success,
            "{agent:?}: {start:?} -> {goal:?}: {:?}",
            e.positions.last()
        );
        assert_eq!(e.violations, 0, "{agent:?}");
        assert_eq!(e.infeasible_plans, 0, "{agent:?}");
    }
    Ok(())
}

#[test]
fn the_latent_term_moves_a_biased_probed_minimum_onto_the_goal_latent() {
    // A stand-in for a probed distance whose probe is 1.5 units off along the first axis:
    // its minimum lies beside the goal, where the real probe's error would leave the agent.
    let biased =
        |z: &Vec<f32>, g: &Vec<f32>| ((z[0] - g[0] - 1.5).powi(2) + (z[1] - g[1]).powi(2)).sqrt();
    let goal = vec![10.0_f32, 20.0];
    let beside = vec![11.5_f32, 20.0];
    let objective =
        |cost: &Cost<Vec<f32>>, z: &Vec<f32>| cost.evaluate(std::slice::from_ref(z)).objective;

    let plain = with_latent_term(Cost::new(goal.clone(), biased), 0.0);
    assert!(objective(&plain, &beside) < objective(&plain, &goal));

    // Slope 2 > the probed distance's slope 1: the goal itself is now the minimum, and
    // every point around it costs more.
    let anchored = with_latent_term(Cost::new(goal.clone(), biased), 2.0);
    let at_goal = objective(&anchored, &goal);
    assert!(at_goal < objective(&anchored, &beside));
    for (dx, dy) in [(0.5, 0.0), (-0.5, 0.0), (0.0, 0.5), (0.0, -0.5), (1.0, 0.0)] {
        let near = vec![goal[0] + dx, goal[1] + dy];
        assert!(at_goal < objective(&anchored, &near), "({dx}, {dy})");
    }
}
