//! What the Two-Rooms diagnostics share: observing and encoding many positions at once.

use lcm_plan::env::two_rooms::dataset::render_state;
use lcm_plan::env::two_rooms::{TwoRoomsConfig, Vec2};
use lcm_plan::world::jepa::ObservationKind;
use lcm_plan::world::learned::{Latent, LearnedWorld};

/// The model's latent of the observation at each position (the state itself, or the rendered
/// frame for a pixel model), encoded 256 at a time.
pub fn encode_positions(
    world: &LearnedWorld,
    cfg: &TwoRoomsConfig,
    positions: &[Vec2],
) -> anyhow::Result<Vec<Latent>> {
    let mut latents = Vec::with_capacity(positions.len());
    for chunk in positions.chunks(256) {
        let mut obs = Vec::new();
        for &p in chunk {
            match world.observation() {
                ObservationKind::State { .. } => obs.extend_from_slice(&p),
                ObservationKind::Pixels { .. } => obs.extend(render_state(cfg, p)?),
            }
        }
        latents.extend(world.encode_batch(&obs, chunk.len())?);
    }
    Ok(latents)
}
