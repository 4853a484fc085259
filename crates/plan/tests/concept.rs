//! Concept-space planning on a synthetic world: concepts on the unit sphere in 16-d, and a
//! proposer whose candidates are noisy steps around the current concept.

use lcm_plan::concept::{
    Candidate, Concept, ConceptBall, ConceptCost, ConceptNeighbours, ConceptPlanError,
    ConceptPlanner, ConceptPlannerConfig, ConceptProposer, LogisticConfig, RolloutScore, Summary,
    cosine, greedy_retrieval, score_rollout, train_logistic, unconstrained_rollout, unit, violates,
};
use lcm_plan::cost::{Guardrail, Severity};
use lcm_util::random::standard_normal;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

const DIM: usize = 16;

fn basis(i: usize) -> Concept {
    let mut v = vec![0.0; DIM];
    v[i] = 1.0;
    v
}

fn noise(rng: &mut ChaCha12Rng, scale: f32) -> Concept {
    (0..DIM)
        .map(|_| scale * standard_normal(rng) as f32)
        .collect()
}

fn add(a: &[f32], b: &[f32]) -> Concept {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Each candidate is `normalise(last + σ·ξ)`: a random step of ≈ 30° from the context's last
/// concept. Keys count up, so every candidate is a distinct "sentence".
struct NoisySteps {
    sigma: f32,
    next_key: usize,
}

impl NoisySteps {
    fn new() -> Self {
        NoisySteps {
            sigma: 0.15,
            next_key: 0,
        }
    }
}

impl ConceptProposer for NoisySteps {
    fn propose(
        &mut self,
        contexts: &[&[Concept]],
        n: usize,
        seed: u64,
    ) -> Result<Vec<Vec<Candidate>>, ConceptPlanError> {
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(contexts.len());
        for context in contexts {
            let last = context.last().expect("non-empty context");
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                let step = noise(&mut rng, self.sigma);
                list.push(Candidate {
                    key: self.next_key,
                    concept: unit(&add(last, &step), "candidate")?,
                });
                self.next_key += 1;
            }
            out.push(list);
        }
        Ok(out)
    }
}

/// Start on e0, goal on e1 (90° away): out of reach of a random walk, four or five
/// goal-directed steps for a planner.
fn setting() -> (Vec<Concept>, Concept) {
    (vec![basis(2), basis(0)], basis(1))
}

/// A ball on the great circle between start and goal, where the direct route passes.
fn blocking_ball() -> ConceptBall {
    let centre = unit(&add(&basis(0), &basis(1)), "centre").expect("unit");
    ConceptBall::new("between", &centre, 0.85).expect("ball")
}

const TAU: f32 = 0.8;

fn config(seed: u64) -> ConceptPlannerConfig {
    ConceptPlannerConfig {
        steps: 6,
        beam_width: 4,
        candidates: 16,
        seed,
    }
}

fn realised(steps: &[Candidate]) -> Vec<Concept> {
    steps.iter().map(|s| s.concept.clone()).collect()
}

#[test]
fn planner_reaches_goals_the_unconstrained_proposer_rarely_does() {
    let (prompt, goal) = setting();
    let cost = ConceptCost::new(&goal, TAU).expect("cost");
    let (mut planned, mut unplanned) = (Vec::new(), Vec::new());
    for seed in 0..20 {
        let mut proposer = NoisySteps::new();
        let plan = ConceptPlanner::new(config(seed))
            .expect("planner")
            .plan(&mut proposer, &prompt, &cost)
            .expect("plan");
        assert_eq!(plan.steps.len(), 6);
        assert_eq!(plan.anticipated.len(), 6);
        // The anticipation of the whole plan is the plan's objective.
        assert!((plan.anticipated[5] - plan.objective).abs() < 1e-6);
        planned.push(score_rollout(&cost, &prompt[1], &realised(&plan.steps)));
        let free = unconstrained_rollout(&mut proposer, &prompt, 6, seed).expect("rollout");
        unplanned.push(score_rollout(&cost, &prompt[1], &realised(&free)));
    }
    let planned = Summary::from_scores(&planned);
    let unplanned = Summary::from_scores(&unplanned);
    assert!(planned.goal_reach_rate >= 0.9, "planner reach {planned:?}");
    assert!(
        unplanned.goal_reach_rate <= 0.1,
        "random walk reach {unplanned:?}"
    );
    assert!(planned.mean_best_goal_cosine > unplanned.mean_best_goal_cosine + 0.3);
}

#[test]
fn no_plan_enters_a_hard_ball_when_a_feasible_plan_exists() {
    let (prompt, goal) = setting();
    let ball = blocking_ball();
    let cost = ConceptCost::new(&goal, TAU)
        .expect("cost")
        .with_guardrail(ball.clone(), Severity::Hard);
    let blind = ConceptCost::new(&goal, TAU).expect("cost");
    let (mut reached, mut blind_violations) = (0, 0);
    for seed in 0..40 {
        let planner = ConceptPlanner::new(config(seed)).expect("planner");
        let plan = planner
            .plan(&mut NoisySteps::new(), &prompt, &cost)
            .expect("plan");
        assert!(plan.feasible_plans > 0, "seed {seed}: no feasible plan");
        assert!(plan.feasible, "seed {seed}: infeasible plan returned");
        // Checked independently of the planner's own bookkeeping.
        for (t, step) in plan.steps.iter().enumerate() {
            let m = ball.margin(&step.concept);
            assert!(!violates(m), "seed {seed}, step {t}: margin {m}");
        }
        assert!(plan.margins[0].1 > 0.0);
        assert!(plan.feasible_candidates <= plan.candidates);
        reached += usize::from(plan.reached_at.is_some());

        // The same search without the guardrail walks straight through the ball, so the
        // guardrail is what keeps the plans out.
        let free = planner
            .plan(&mut NoisySteps::new(), &prompt, &blind)
            .expect("plan");
        blind_violations +=
            usize::from(free.steps.iter().any(|s| violates(ball.margin(&s.concept))));
    }
    assert!(
        reached >= 30,
        "only {reached}/40 feasible plans reach the goal"
    );
    assert!(
        blind_violations >= 5,
        "the unguarded planner entered the ball in only {blind_violations}/40 seeds"
    );
}

#[test]
fn a_plan_is_flagged_infeasible_when_every_candidate_violates() {
    let (prompt, goal) = setting();
    // Every concept has cos ≥ −1 > −2 with the centre: the whole sphere is forbidden.
    let everywhere = ConceptBall::new("everywhere", &basis(3), -2.0).expect("ball");
    let cost = ConceptCost::new(&goal, TAU)
        .expect("cost")
        .with_guardrail(everywhere, Severity::Hard);
    let plan = ConceptPlanner::new(config(7))
        .expect("planner")
        .plan(&mut NoisySteps::new(), &prompt, &cost)
        .expect("plan");
    assert!(!plan.feasible);
    assert_eq!(plan.feasible_candidates, 0);
    assert_eq!(plan.feasible_plans, 0);
    assert!(plan.complete_plans > 0);
    assert_eq!(
        plan.steps.len(),
        6,
        "the least-violating full plan is still returned"
    );
    assert!(plan.margins[0].1 < 0.0);

    // A soft guardrail never makes a plan infeasible; it only costs.
    let soft = ConceptCost::new(&goal, TAU).expect("cost").with_guardrail(
        ConceptBall::new("everywhere", &basis(3), -2.0).expect("ball"),
        Severity::Soft { weight: 1.0 },
    );
    let plan = ConceptPlanner::new(config(7))
        .expect("planner")
        .plan(&mut NoisySteps::new(), &prompt, &soft)
        .expect("plan");
    assert!(plan.feasible);
    assert!(
        plan.objective > 6.0,
        "soft penalty missing: {}",
        plan.objective
    );
}

#[test]
fn plans_are_deterministic_under_a_seed() {
    let (prompt, goal) = setting();
    let cost = ConceptCost::new(&goal, TAU)
        .expect("cost")
        .with_guardrail(blocking_ball(), Severity::Hard);
    let plan = |seed| {
        ConceptPlanner::new(config(seed))
            .expect("planner")
            .plan(&mut NoisySteps::new(), &prompt, &cost)
            .expect("plan")
    };
    assert_eq!(plan(3), plan(3));
    assert_ne!(plan(3).steps, plan(4).steps);
}

#[test]
fn logistic_regression_separates_a_linearly_separable_set() {
    let mut rng = ChaCha12Rng::seed_from_u64(11);
    let normal = unit(&noise(&mut rng, 1.0), "normal").expect("unit");
    // Unit vectors at least 0.1 away from the hyperplane through the origin.
    let mut sample = |count: usize| {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        while xs.len() < count {
            let x = unit(&noise(&mut rng, 1.0), "x").expect("unit");
            let d = cosine(&x, &normal);
            if d.abs() > 0.1 {
                ys.push(d > 0.0);
                xs.push(x);
            }
        }
        (xs, ys)
    };
    let (train, train_y) = sample(400);
    let (test, test_y) = sample(400);
    let classifier =
        train_logistic("half", &train, &train_y, &LogisticConfig::default()).expect("train");
    let accuracy = |xs: &[Concept], ys: &[bool]| {
        xs.iter()
            .zip(ys)
            .filter(|(x, y)| (classifier.logit(x) > 0.0) == **y)
            .count() as f64
            / xs.len() as f64
    };
    assert_eq!(accuracy(&train, &train_y), 1.0);
    assert!(
        accuracy(&test, &test_y) >= 0.97,
        "{}",
        accuracy(&test, &test_y)
    );
    // Forbidden examples have negative margins.
    for (x, y) in train.iter().zip(&train_y) {
        assert_eq!(violates(classifier.margin(x)), *y);
    }
    // The same seed trains the same classifier.
    let again =
        train_logistic("half", &train, &train_y, &LogisticConfig::default()).expect("train");
    assert_eq!(classifier, again);

    let err = train_logistic(
        "x",
        &train[..3],
        &[true, true, true],
        &LogisticConfig::default(),
    )
    .expect_err("one class");
    assert!(err.to_string().contains("both classes"), "{err}");
}

#[test]
fn a_trained_classifier_works_as_a_hard_guardrail() {
    let (prompt, goal) = setting();
    // Forbid the half-space beyond the midpoint direction, learned from examples.
    let mid = unit(&add(&basis(0), &basis(1)), "mid").expect("unit");
    let mut rng = ChaCha12Rng::seed_from_u64(5);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        let x = unit(&noise(&mut rng, 1.0), "x").expect("unit");
        let c = cosine(&x, &mid);
        if (c - 0.8).abs() > 0.05 {
            ys.push(c > 0.8);
            xs.push(x);
        }
    }
    // Draw forbidden examples near the region too, so both classes are well represented.
    for _ in 0..100 {
        let x = unit(&add(&mid, &noise(&mut rng, 0.08)), "x").expect("unit");
        if cosine(&x, &mid) > 0.85 {
            ys.push(true);
            xs.push(x);
        }
    }
    let classifier = train_logistic("topic", &xs, &ys, &LogisticConfig::default()).expect("train");
    let cost = ConceptCost::new(&goal, TAU)
        .expect("cost")
        .with_guardrail(classifier.clone(), Severity::Hard);
    let mut feasible = 0;
    for seed in 0..10 {
        let plan = ConceptPlanner::new(config(seed))
            .expect("planner")
            .plan(&mut NoisySteps::new(), &prompt, &cost)
            .expect("plan");
        if plan.feasible_plans > 0 {
            feasible += 1;
            assert!(plan.feasible);
            for s in &plan.steps {
                assert!(classifier.logit(&s.concept) < 0.0, "seed {seed}");
            }
        } else {
            assert!(!plan.feasible);
        }
    }
    assert!(
        feasible >= 5,
        "only {feasible}/10 seeds found a feasible plan"
    );
}

/// A fixed cloud of concepts, searched exhaustively.
struct Cloud(Vec<Concept>);

impl ConceptNeighbours for Cloud {
    fn nearest(&mut self, query: &[f32], m: usize) -> Result<Vec<Candidate>, ConceptPlanError> {
        let mut order: Vec<usize> = (0..self.0.len()).collect();
        order.sort_by(|&a, &b| cosine(&self.0[b], query).total_cmp(&cosine(&self.0[a], query)));
        Ok(order
            .into_iter()
            .take(m)
            .map(|key| Candidate {
                key,
                concept: self.0[key].clone(),
            })
            .collect())
    }
}

#[test]
fn greedy_retrieval_climbs_toward_the_goal_blind_to_guardrails() {
    let (prompt, goal) = setting();
    let mut rng = ChaCha12Rng::seed_from_u64(2);
    // A cloud concentrated on the start–goal plane, like a bank with sentences on the way.
    let cloud: Vec<Concept> = (0..3000)
        .map(|_| {
            let mut v = noise(&mut rng, 0.15);
            v[0] += standard_normal(&mut rng) as f32;
            v[1] += standard_normal(&mut rng) as f32;
            unit(&v, "point").expect("unit")
        })
        .collect();
    let path = greedy_retrieval(&mut Cloud(cloud), &prompt[1], &goal, 8, 16).expect("greedy");
    assert_eq!(path.len(), 8);
    let cosines: Vec<f32> = path.iter().map(|s| cosine(&s.concept, &goal)).collect();
    assert!(cosines[7] > cosines[0], "{cosines:?}");
    let mut keys: Vec<usize> = path.iter().map(|s| s.key).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 8, "a step revisited a concept");
    let ball = blocking_ball();
    let cost = ConceptCost::new(&goal, 0.8)
        .expect("cost")
        .with_guardrail(ball, Severity::Hard);
    let score = score_rollout(&cost, &prompt[1], &realised(&path));
    assert!(score.reached_at.is_some(), "{cosines:?}");
    assert!(
        score.violating_steps > 0,
        "greedy retrieval should cross the ball"
    );
}

#[test]
fn summary_metrics_are_the_documented_means() {
    let scores = [
        RolloutScore {
            steps: 4,
            reached_at: Some(2),
            best_goal_cosine: 0.8,
            violating_steps: 0,
            coherence: 0.5,
        },
        RolloutScore {
            steps: 4,
            reached_at: None,
            best_goal_cosine: 0.4,
            violating_steps: 2,
            coherence: 0.7,
        },
        RolloutScore {
            steps: 2,
            reached_at: Some(0),
            best_goal_cosine: 0.9,
            violating_steps: 1,
            coherence: 0.3,
        },
    ];
    let s = Summary::from_scores(&scores);
    assert_eq!(s.cases, 3);
    assert!((s.goal_reach_rate - 2.0 / 3.0).abs() < 1e-9);
    assert!((s.violation_rate - 2.0 / 3.0).abs() < 1e-9);
    assert!((s.step_violation_rate - 0.3).abs() < 1e-9);
    assert!((s.coherence - 0.5).abs() < 1e-6);
    assert!((s.reach_and_safe_rate - 1.0 / 3.0).abs() < 1e-9);
    assert!(s.goal_reach_ci.0 < s.goal_reach_rate && s.goal_reach_rate < s.goal_reach_ci.1);

    // Coherence counts the step from the prompt's last concept.
    let cost = ConceptCost::new(&basis(1), 0.9).expect("cost");
    let score = score_rollout(&cost, &basis(0), &[basis(0), basis(1)]);
    assert!((score.coherence - 0.5).abs() < 1e-6);
    assert_eq!(score.reached_at, Some(1));
}

#[test]
fn bad_inputs_are_refused_with_a_reason() {
    let (prompt, goal) = setting();
    let cost = ConceptCost::new(&goal, TAU).expect("cost");
    let planner = ConceptPlanner::new(config(0)).expect("planner");
    let err = planner
        .plan(&mut NoisySteps::new(), &[], &cost)
        .expect_err("empty prompt");
    assert!(matches!(err, ConceptPlanError::EmptyContext));
    let err = planner
        .plan(&mut NoisySteps::new(), &[vec![1.0; 3]], &cost)
        .expect_err("wrong dim");
    assert!(err.to_string().contains("dimensions"), "{err}");
    assert!(ConceptCost::new(&goal, 1.5).is_err());
    assert!(ConceptCost::new(&[0.0; DIM], 0.5).is_err());
    assert!(ConceptBall::new("x", &goal, f32::NAN).is_err());
    assert!(
        ConceptPlanner::new(ConceptPlannerConfig {
            beam_width: 0,
            ..config(0)
        })
        .is_err()
    );
    let _ = prompt;
}
