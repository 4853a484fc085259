//! `lcm wm`: world models learned from observation (train a JEPA on an environment's offline
//! dataset, evaluate planners with it).

use std::path::PathBuf;

use anyhow::{Context, Result};
use lcm_plan::evaluation;
use lcm_plan::world::train::{WmTrainConfig, train_world_model};

/// Which environment to learn / plan in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Env {
    /// PLDM's Two-Rooms (64×64 px, a wall with a door).
    TwoRooms,
    /// DINO-WM's PointMaze U-maze (state [x, y, vx, vy]).
    PointMaze,
}

use crate::progress::Progress;

/// A row of `lcm wm eval`: a world model with a planner, or the random policy.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    /// CEM on the true simulator (no model error).
    OracleCem,
    /// Feasible-first CEM on the true simulator.
    OracleConstrainedCem,
    /// MPPI with PLDM's σ and λ on the true simulator.
    OracleMppi,
    /// Augmented-Lagrangian CEM on the true simulator.
    OracleAugLag,
    JepaCem,
    JepaMppi,
    JepaConstrainedCem,
    JepaAugLag,
    /// Gradient descent on the actions through the learned predictor.
    JepaGradient,
    Random,
}

impl From<Agent> for evaluation::Agent {
    fn from(agent: Agent) -> Self {
        match agent {
            Agent::OracleCem => evaluation::Agent::OracleCem,
            Agent::OracleConstrainedCem => evaluation::Agent::OracleConstrainedCem,
            Agent::OracleMppi => evaluation::Agent::OracleMppi,
            Agent::OracleAugLag => evaluation::Agent::OracleAugLag,
            Agent::JepaCem => evaluation::Agent::JepaCem,
            Agent::JepaMppi => evaluation::Agent::JepaMppi,
            Agent::JepaConstrainedCem => evaluation::Agent::JepaConstrainedCem,
            Agent::JepaAugLag => evaluation::Agent::JepaAugLag,
            Agent::JepaGradient => evaluation::Agent::JepaGradient,
            Agent::Random => evaluation::Agent::Random,
        }
    }
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Train a JEPA world model (encoder + action-conditioned predictor, VICReg) on the
    /// seeded random-action dataset of Two-Rooms or the PointMaze U-maze; resumable
    /// checkpoints.
    Train(TrainArgs),
    /// Plan with a trained world model (and the oracle / random baselines) for 50 seeded
    /// episodes; success with Wilson intervals, violations, cost calibration, trajectory PNGs.
    Eval(super::wm_eval::Args),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The agent position (2 numbers).
    State,
    /// The rendered 2×64×64 image.
    Pixels,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The environment.
    #[arg(long, value_enum, default_value = "two-rooms")]
    env: Env,
    /// What the encoder sees.
    #[arg(long, value_enum, default_value = "state")]
    obs: Observation,
    /// Output directory: config.json, metrics.jsonl (and TensorBoard events.out.tfevents.*),
    /// checkpoints/, loss.png.
    #[arg(long, short)]
    out: PathBuf,
    /// Optimiser steps (default: 6000 for state, 3000 for pixels).
    #[arg(long)]
    steps: Option<u64>,
    /// Windows per batch (default: 128 state, 32 pixels).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Predictor steps unrolled per window (default: 48 on Two-Rooms, 8 on the PointMaze).
    #[arg(long)]
    rollout_steps: Option<usize>,
    /// Random-action trajectories in the training set (default: 1000 of 200 steps for
    /// Two-Rooms, 2000 of 100 for PointMaze).
    #[arg(long)]
    trajectories: Option<usize>,
    /// Latent width.
    #[arg(long)]
    latent_dim: Option<usize>,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// VICReg variance weight.
    #[arg(long, default_value_t = 1.0)]
    std_weight: f64,
    /// VICReg covariance weight (default: 0.04, except 1 for PointMaze pixels).
    #[arg(long)]
    cov_weight: Option<f64>,
    /// Seed of the dataset (the validation set uses seed + 1).
    #[arg(long, default_value_t = 0)]
    data_seed: u64,
    /// Seed of initialisation and batch sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 250)]
    eval_every: u64,
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Continue from the newest checkpoint in --out (same flags required; only the budget
    /// flags --steps, --eval-every, --checkpoint-every and --max-minutes may change).
    #[arg(long)]
    resume: bool,
    /// Wall-clock budget: stop (validated and checkpointed) once it is spent.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Train(args) => train(args),
        Command::Eval(args) => super::wm_eval::run(args),
    }
}

fn train(args: TrainArgs) -> Result<()> {
    let pixels = args.obs == Observation::Pixels;
    let mut cfg = match args.env {
        Env::TwoRooms => WmTrainConfig::two_rooms(pixels),
        Env::PointMaze => WmTrainConfig::point_maze(pixels),
    };
    if let Some(s) = args.steps {
        cfg.steps = s;
    }
    if let Some(b) = args.batch_size {
        cfg.batch_size = b;
    }
    if let Some(l) = args.latent_dim {
        cfg.model.latent_dim = l;
    }
    if let Some(h) = args.rollout_steps {
        cfg.loss.rollout_steps = h;
    }
    cfg.loss.std_weight = args.std_weight;
    if let Some(w) = args.cov_weight {
        cfg.loss.cov_weight = w;
    }
    if let Some(n) = args.trajectories {
        cfg.data.num_trajectories = n;
    }
    cfg.data.seed = args.data_seed;
    cfg.lr = args.lr;
    cfg.seed = args.seed;
    cfg.eval_every = args.eval_every;
    cfg.checkpoint_every = args.checkpoint_every;
    cfg.max_seconds = args.max_minutes.map(|m| m * 60.0);

    let bar = Progress::new(cfg.steps, "steps", args.quiet);
    let summary = train_world_model(&cfg, &args.out, args.resume, |m| {
        let mut msg = format!("loss {:.4} pred {:.4} std {:.3}", m.loss, m.prediction, m.std);
        if let (Some(v), Some(p)) = (m.valid_loss, m.valid_probe_rms) {
            msg.push_str(&format!(" | valid pred {v:.4} probe {p:.2}px"));
        }
        if let Some(c) = &m.collapse {
            msg.push_str(&format!(" rank {:.1}", c.effective_rank));
            tracing::info!(step = m.step, valid_pred = ?m.valid_loss, probe_px = ?m.valid_probe_rms,
                mean_std = c.mean_std, min_std = c.min_std, effective_rank = c.effective_rank, "validation");
        }
        bar.update(m.step, msg);
    })
    .with_context(|| format!("training a world model in {}", args.out.display()))?;
    // The training loop has written config.json, metrics.jsonl, checkpoints/ and loss.png.
    bar.finish();
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
