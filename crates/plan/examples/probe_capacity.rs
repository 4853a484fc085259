//! Is a trained JEPA's position error in its probe or in its latent? Fits fresh position
//! probes on the frozen encoder's latents of uniformly drawn free Two-Rooms positions — one
//! with the joint probe's shape (one hidden layer of `hidden_dim / 2`), larger ones — and
//! reports their held-out RMS error next to the joint probe's on the same positions. If a
//! larger probe reads the position much better, the hazard buffer can shrink with it; if not,
//! the encoder has lost the information and only a better world model helps.
//!
//! With a third argument, the refitted probe of the joint probe's shape replaces `probe.*` in
//! a copy of the newest checkpoint's `model.safetensors` written to that path (copy the run
//! directory first and point this at its newest `checkpoints/step-*/model.safetensors`).
//!
//! ```text
//! cargo run --release --example probe_capacity -p lcm-plan -- ~/.lcm/wm/two-rooms-pixels-r48-6k [steps] [model.safetensors to write]
//! ```

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Linear, Module};
use lcm_plan::env::two_rooms::{TwoRoomsConfig, Vec2};
use lcm_plan::world::learned::{Latent, LearnedWorld};
use lcm_plan::world::load_world_model;
use lcm_train::optim::{AdamW, AdamWConfig, default_decay_filter};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

const TRAIN: usize = 20_000;
const VALID: usize = 4_000;
const BATCH: usize = 512;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let run = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: probe_capacity RUN [steps]"))?;
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3000);
    let write_to = args.next().map(std::path::PathBuf::from);
    let loaded = load_world_model(std::path::Path::new(&run))?;
    let world = LearnedWorld::new(loaded.model);
    let joint = world.probe_position()?;
    let cfg = TwoRoomsConfig::default();
    let mut rng = ChaCha12Rng::seed_from_u64(11);
    let (train_p, train_z) = sample(&world, &cfg, TRAIN, &mut rng)?;
    let (valid_p, valid_z) = sample(&world, &cfg, VALID, &mut rng)?;
    let joint_rms = rms(
        valid_z.iter().map(|z| {
            let q = joint.position(z);
            [q[0], q[1]]
        }),
        &valid_p,
    );
    println!(
        "model {run}, step {}; {TRAIN} training / {VALID} held-out uniform free positions, {steps} Adam steps of {BATCH}",
        loaded.step
    );
    println!("\n| probe | hidden layers | held-out RMS error (px) |\n|---|---|---:|");
    println!("| joint (trained with the model) | as trained | {joint_rms:.2} |");
    let l = train_z[0].len();
    let half = world.model().config().hidden_dim / 2;
    for hidden in [vec![half], vec![256, 256], vec![512, 512, 512]] {
        let fitted = fit(&hidden, l, (&train_p, &train_z), steps)?;
        let predicted = fitted.predict(&valid_z)?;
        println!(
            "| refit | {hidden:?} | {:.2} |",
            rms(predicted.into_iter(), &valid_p)
        );
        if let (Some(out), true) = (&write_to, hidden == [half]) {
            write_probe(&loaded.checkpoint, out, &fitted)?;
            println!("(this probe written into {})", out.display());
        }
    }
    Ok(())
}

/// Copies the checkpoint's weights to `out` with `probe.{0,1}` replaced by `probe`'s layers,
/// mapped back from the fit's ±1 position scale to the model's (the same `(s − 32) / 32`).
fn write_probe(
    checkpoint: &std::path::Path,
    out: &std::path::Path,
    probe: &Probe,
) -> anyhow::Result<()> {
    let mut tensors =
        candle_core::safetensors::load(checkpoint.join("model.safetensors"), &Device::Cpu)?;
    for (i, layer) in probe.layers.iter().enumerate() {
        let bias = layer
            .bias()
            .ok_or_else(|| anyhow::anyhow!("probe layer {i} has no bias"))?;
        tensors.insert(format!("probe.{i}.weight"), layer.weight().clone());
        tensors.insert(format!("probe.{i}.bias"), bias.clone());
    }
    candle_core::safetensors::save(&tensors, out)?;
    Ok(())
}

fn sample(
    world: &LearnedWorld,
    cfg: &TwoRoomsConfig,
    n: usize,
    rng: &mut ChaCha12Rng,
) -> anyhow::Result<(Vec<Vec2>, Vec<Latent>)> {
    let g = cfg.geometry();
    let mut positions = Vec::with_capacity(n);
    while positions.len() < n {
        let p = [
            rng.random_range(g.border_lo..g.border_hi),
            rng.random_range(g.border_lo..g.border_hi),
        ];
        if g.is_free(p) {
            positions.push(p);
        }
    }
    let latents = common::encode_positions(world, cfg, &positions)?;
    Ok((positions, latents))
}

fn rms(predicted: impl Iterator<Item = Vec2>, truth: &[Vec2]) -> f64 {
    let (n, sq) = predicted
        .zip(truth)
        .fold((0usize, 0.0f64), |(n, sq), (q, p)| {
            let (dx, dy) = (q[0] - p[0], q[1] - p[1]);
            (n + 1, sq + f64::from(dx * dx + dy * dy))
        });
    (sq / n.max(1) as f64).sqrt()
}

/// A ReLU MLP probe from latents to positions scaled to about [−1, 1].
struct Probe {
    layers: Vec<Linear>,
}

const CENTRE: f32 = 32.0;

impl Probe {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    fn predict(&self, z: &[Latent]) -> candle_core::Result<Vec<Vec2>> {
        let x = latents_tensor(z)?;
        let y = ((self.forward(&x)? * f64::from(CENTRE))? + f64::from(CENTRE))?;
        Ok(y.to_vec2::<f32>()?
            .into_iter()
            .map(|r| [r[0], r[1]])
            .collect())
    }
}

fn latents_tensor(z: &[Latent]) -> candle_core::Result<Tensor> {
    let l = z.first().map_or(0, Vec::len);
    let flat: Vec<f32> = z.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (z.len(), l), &Device::Cpu)
}

fn fit(
    hidden: &[usize],
    latent_dim: usize,
    (positions, latents): (&[Vec2], &[Latent]),
    steps: usize,
) -> anyhow::Result<Probe> {
    // Kaiming-uniform weights and zero biases from an explicit seed, so a refit is
    // reproducible (candle's own initialisers draw from an unseeded generator).
    let mut init = ChaCha12Rng::seed_from_u64(3);
    let mut dims = vec![latent_dim];
    dims.extend_from_slice(hidden);
    dims.push(2);
    let mut named = Vec::new();
    let mut layers = Vec::new();
    for (i, d) in dims.windows(2).enumerate() {
        let bound = (6.0 / d[0] as f32).sqrt();
        let w: Vec<f32> = (0..d[0] * d[1])
            .map(|_| init.random_range(-bound..bound))
            .collect();
        let w = Var::from_tensor(&Tensor::from_vec(w, (d[1], d[0]), &Device::Cpu)?)?;
        let b = Var::zeros(d[1], DType::F32, &Device::Cpu)?;
        layers.push(Linear::new(
            w.as_tensor().clone(),
            Some(b.as_tensor().clone()),
        ));
        named.push((format!("l{i}.weight"), w));
        named.push((format!("l{i}.bias"), b));
    }
    let probe = Probe { layers };
    let mut opt = AdamW::new(
        named,
        AdamWConfig {
            lr: 1e-3,
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
        default_decay_filter,
    )?;
    let x_all = latents_tensor(latents)?;
    let targets: Vec<f32> = positions
        .iter()
        .flat_map(|p| [(p[0] - CENTRE) / CENTRE, (p[1] - CENTRE) / CENTRE])
        .collect();
    let y_all = Tensor::from_vec(targets, (positions.len(), 2), &Device::Cpu)?;
    let mut rng = ChaCha12Rng::seed_from_u64(5);
    for step in 0..steps {
        // Cosine decay to 5% of the initial rate.
        let progress = step as f64 / steps.max(1) as f64;
        opt.set_lr(1e-3 * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())));
        let idx: Vec<u32> = (0..BATCH)
            .map(|_| rng.random_range(0..positions.len()) as u32)
            .collect();
        let idx = Tensor::from_vec(idx, BATCH, &Device::Cpu)?;
        let x = x_all.index_select(&idx, 0)?;
        let y = y_all.index_select(&idx, 0)?;
        let loss = (probe.forward(&x)? - y)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
    }
    Ok(probe)
}
