//! The JEPA cost's check of predicted transitions against the Two-Rooms wall
//! (`JepaCost::ProbedPathTransitions`), on latents that are the position itself (an identity
//! probe), so every expected count can be read off the map.

use lcm_plan::cost::Cost;
use lcm_plan::env::two_rooms::TwoRoomsConfig;
use lcm_plan::evaluation::{CROSSING_PENALTY, ProbedPathLength};
use lcm_plan::world::PlanError;
use lcm_plan::world::learned::HostProbe;

/// `position(z) = z` for positive `z` (every position on the map is positive): ReLU of the
/// identity, then the identity.
fn identity_probe() -> Result<HostProbe, PlanError> {
    let eye = vec![1.0, 0.0, 0.0, 1.0];
    HostProbe::new(
        [eye.clone(), vec![0.0; 2], eye, vec![0.0; 2]],
        (2, 2, 2),
        (0.0, 1.0),
    )
}

fn path(points: &[[f32; 2]]) -> Vec<Vec<f32>> {
    points.iter().map(|p| p.to_vec()).collect()
}

#[test]
fn transitions_through_the_wall_are_counted_and_the_door_is_not() -> Result<(), PlanError> {
    let geometry = TwoRoomsConfig::default().geometry();
    let goal = vec![50.0, 30.0];
    let cost = ProbedPathLength::new(identity_probe()?, geometry, goal);
    // The wall's solid spans x ∈ [31.5, 34.5] outside the door rows y ∈ (5.5, 14.5).
    let hop = path(&[[28.0, 30.0], [30.5, 30.0], [36.0, 30.5], [38.0, 31.0]]);
    assert_eq!(
        cost.impossible_transitions(&hop),
        1,
        "a hop across the wall at mid-height"
    );
    let door = path(&[[28.0, 10.0], [30.5, 10.0], [36.0, 10.5], [38.0, 11.0]]);
    assert_eq!(cost.impossible_transitions(&door), 0, "through the door");
    // Resting against the wall, the probe reading 0.4 px inside it (its error is ~0.6 px).
    let resting = path(&[[31.0, 30.0], [31.9, 30.2], [31.2, 29.8], [31.4, 40.0]]);
    assert_eq!(
        cost.impossible_transitions(&resting),
        0,
        "sub-pixel readings inside the face"
    );
    // Drifting into the wall's core and out of the other side: both transitions counted.
    let drift = path(&[[30.0, 40.0], [33.0, 40.0], [36.0, 40.0]]);
    assert_eq!(cost.impossible_transitions(&drift), 2);
    // A diagonal that enters the band in the door's rows but leaves it below them.
    let corner = path(&[[30.0, 12.0], [36.0, 20.0]]);
    assert_eq!(
        cost.impossible_transitions(&corner),
        1,
        "clips the wall below the door"
    );
    Ok(())
}

#[test]
fn the_path_penalty_adds_to_the_objective_of_each_rollout() -> Result<(), PlanError> {
    let geometry = TwoRoomsConfig::default().geometry();
    let goal = vec![40.0, 30.0];
    let d = ProbedPathLength::new(identity_probe()?, geometry, goal.clone());
    let transitions = d.clone();
    let plain = {
        let d = d.clone();
        Cost::new(goal.clone(), move |z: &Vec<f32>, g: &Vec<f32>| {
            d.distance(z, g)
        })
    };
    let penalised = Cost::new(goal, move |z: &Vec<f32>, g: &Vec<f32>| d.distance(z, g))
        .with_path_penalty(move |p: &[Vec<f32>]| {
            CROSSING_PENALTY * transitions.impossible_transitions(p) as f32
        });
    let hop = path(&[[28.0, 30.0], [30.5, 30.0], [36.0, 30.5], [38.0, 31.0]]);
    let around = path(&[[28.0, 20.0], [30.0, 12.0], [36.0, 10.0], [38.0, 20.0]]);
    for (p, crossings) in [(&hop, 1.0), (&around, 0.0)] {
        let (a, b) = (plain.evaluate(p), penalised.evaluate(p));
        let expected = CROSSING_PENALTY * crossings;
        assert!(
            (b.objective - a.objective - expected).abs() < 1e-3,
            "{a:?} vs {b:?}"
        );
    }
    // Without the penalty the hop looks cheaper than going round; with it, it does not.
    assert!(plain.evaluate(&hop).objective < plain.evaluate(&around).objective);
    assert!(penalised.evaluate(&hop).objective > penalised.evaluate(&around).objective);
    Ok(())
}
