//! `lcm fed-init` and `lcm fed-step`: one site's half of federated training, called by the
//! Flower app in `federated/` (flags → [`lcm_workflows::federated`] → one JSON line).

use std::path::PathBuf;

use anyhow::{Context, Result};
use lcm_model::builder::ModelKind;
use lcm_workflows::eos_embedding;
use lcm_workflows::federated::{FedStepRequest, fed_step, init_global};
use lcm_workflows::fused::Engine;
use lcm_workflows::train::{TrainConfig, TrainingInputs};

use super::EncoderArgs;
use super::train::OptimizerArg;

#[derive(clap::Args)]
pub struct InitArgs {
    /// A concept store in the federation's space (only its encoder id and dimension are
    /// read).
    store: PathBuf,
    /// The first global model (.safetensors).
    #[arg(long, short)]
    out: PathBuf,
    /// The federation's normaliser (default: STORE/normalizer.safetensors).
    #[arg(long)]
    normalizer: Option<PathBuf>,
    /// Architecture: base, two-tower, one-tower.
    #[arg(long, default_value = "base")]
    model: String,
    /// Model size: tiny, small, 1.6b.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Inner steps over the whole federation (rounds × steps per round): the length of
    /// every site's learning-rate schedule.
    #[arg(long)]
    total_steps: u64,
    /// Peak inner learning rate (AdamW).
    #[arg(long, default_value_t = 4e-4)]
    lr: f64,
    /// Linear warm-up steps (default: 5% of --total-steps, at most 1000).
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// Concepts per inner batch, padding included.
    #[arg(long, default_value_t = 4096)]
    max_concepts: usize,
    /// Seed of the initial weights and of every site's batches and draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of each site's documents held out for validation.
    #[arg(long, default_value_t = 0.01)]
    valid_fraction: f64,
    /// Training engine: fused or candle.
    #[arg(long, default_value = "fused")]
    engine: String,
    /// Update rule of every site's inner steps: `adamw` or plain `sgd` (FedAvg of one SGD
    /// step per site is synchronous data-parallel SGD).
    #[arg(long, value_enum, default_value = "adamw")]
    optimizer: OptimizerArg,
}

pub fn init(args: InitArgs) -> Result<()> {
    let inputs = TrainingInputs::open(&args.store, args.normalizer.as_deref())?;
    let model: ModelKind = args
        .model
        .parse()
        .map_err(|e| anyhow::anyhow!("--model: {e}"))?;
    let config = TrainConfig {
        model,
        preset: args.preset,
        steps: args.total_steps,
        max_concepts: args.max_concepts,
        lr: args.lr,
        warmup_steps: args
            .warmup_steps
            .unwrap_or((args.total_steps / 20).min(1000)),
        seed: args.seed,
        valid_fraction: args.valid_fraction,
        engine: Engine::parse(&args.engine)?,
        optimizer: args.optimizer.rule(),
        ..TrainConfig::default()
    };
    let report = init_global(&config, &args.store, &inputs.normalizer, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[derive(clap::Args)]
pub struct StepArgs {
    /// The global model of this round (written by `lcm fed-init` or the server).
    #[arg(long)]
    global: PathBuf,
    /// This site's concept store.
    #[arg(long)]
    store: PathBuf,
    /// This site's persistent state (optimiser moments, data position, RNG): a training
    /// run directory.
    #[arg(long)]
    state_dir: PathBuf,
    /// Inner AdamW steps this round (H).
    #[arg(long)]
    steps: u64,
    /// The local weights after the round (.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// The federation's round number (a rerun of the same round replays its result).
    #[arg(long, default_value_t = 0)]
    round: u64,
    /// The federation's normaliser (default: STORE/normalizer.safetensors).
    #[arg(long)]
    normalizer: Option<PathBuf>,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn step(args: StepArgs) -> Result<()> {
    let inputs = TrainingInputs::open(&args.store, args.normalizer.as_deref())?;
    let what = format!("the store {}", args.store.display());
    let encoder = args.encoder.load_for(&inputs.encoder_id, &what)?;
    inputs.check_encoder(&encoder)?;
    let eos = eos_embedding(&encoder)?;
    drop(encoder);
    let report = fed_step(&FedStepRequest {
        global: &args.global,
        store: &args.store,
        normalizer: &inputs.normalizer,
        normalizer_path: &inputs.normalizer_path,
        eos,
        state_dir: &args.state_dir,
        steps: args.steps,
        round: args.round,
        out: &args.out,
    })
    .with_context(|| format!("federated round at {}", args.state_dir.display()))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
