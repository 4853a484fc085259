//! The random baseline policy.

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use super::{Candidate, Plan, Planner, to_plan};
use crate::cost::Cost;
use crate::world::WorldModel;

/// The random baseline: every call returns one random action (uniform heading, uniform
/// length up to the norm cap), ignoring model and cost.
#[derive(Debug, Clone)]
pub struct RandomPolicy {
    rng: ChaCha12Rng,
    max_action_norm: f32,
}

impl RandomPolicy {
    pub fn new(max_action_norm: f32, seed: u64) -> Self {
        RandomPolicy {
            rng: ChaCha12Rng::seed_from_u64(seed),
            max_action_norm,
        }
    }
}

impl Planner for RandomPolicy {
    fn plan<M: WorldModel>(
        &mut self,
        model: &M,
        z0: &M::Latent,
        cost: &Cost<M::Latent>,
    ) -> Plan<M::Latent> {
        use rand::Rng;
        let heading = self.rng.random_range(0.0..std::f32::consts::TAU);
        let len = self.rng.random_range(0.0..=self.max_action_norm);
        let mut action = vec![0.0; model.action_dim()];
        if let [x, y, ..] = action.as_mut_slice() {
            *x = len * heading.cos();
            *y = len * heading.sin();
        }
        to_plan(
            Candidate::rolled_out(model, z0, cost, action),
            cost,
            model.action_dim(),
            0,
        )
    }
}
