//! Training a [`Jepa`] world model on an environment's offline random-action dataset (`lcm
//! wm train`): PLDM's Two-Rooms random walks or DINO-WM's fully random PointMaze U-maze
//! trajectories ([`WmEnv`]).
//!
//! The trainer implements [`lcm_train::run::Trainer`], so the run directory, cadence,
//! budgets, checkpoints and the resume policy are the one training loop's
//! ([`lcm_train::run::run`]); `config.json` holds the full [`WmTrainConfig`] (what
//! [`super::load::load_world_model`] reads back). The dataset is regenerated from its seed
//! at every start (generation takes well under a second), so a run directory holds only
//! `config.json`, `metrics.jsonl`, `loss.png` and checkpoints, and the data position a
//! checkpoint records is empty: the batches are drawn from the run's checkpointed random
//! stream, so a resumed run takes the same batches and reaches bit-identical weights.
//!
//! Each step samples `batch_size` windows of `rollout_steps + 1` consecutive states (and
//! their actions) uniformly over trajectories and start times. Every `eval_every` steps the
//! held-out trajectories (a different seed) give the validation losses and the collapse
//! diagnostics (per-dimension std and effective rank of the latents), logged to
//! `metrics.jsonl`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use lcm_train::TrainError;
use lcm_train::checkpoint::{DataPosition, TrainRng};
use lcm_train::optim::{AdamW, AdamWConfig, clip_grad_norm, default_decay_filter};
use lcm_train::run::{self, Cadence, Identity, RunSpec, Step, Trainer, settings_without_budget};
use lcm_train::schedule::LrSchedule;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::jepa::{
    CollapseStats, Jepa, JepaConfig, JepaLossConfig, ObservationKind, collapse_stats, host,
    jepa_loss, seeded_init,
};
use crate::env::TwoRoomsConfig;
use crate::env::point_maze::PointMazeConfig;
use crate::env::point_maze::dataset::{
    PointMazeDataset, PointMazeDatasetConfig, generate as generate_maze,
    render_state as render_maze,
};
use crate::env::two_rooms::dataset::{Dataset, DatasetConfig, generate, render_state};

/// Title of the run's `loss.png`.
pub const PLOT_TITLE: &str = "JEPA world model";

/// Errors of world-model training and loading.
#[derive(Debug, thiserror::Error)]
pub enum WmError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Env(#[from] crate::env::EnvError),
    #[error("invalid world-model training configuration: {0}")]
    Config(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Run { path: PathBuf, reason: String },
}

/// The environment a world model learns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WmEnv {
    /// PLDM's Two-Rooms: state = position (2), PLDM's random-walk dataset.
    #[default]
    TwoRooms,
    /// DINO-WM's PointMaze U-maze: state = `[x, y, vx, vy]`, DINO-WM's fully random
    /// dataset; the probe reads the position.
    PointMaze,
}

impl WmEnv {
    pub fn is_two_rooms(&self) -> bool {
        *self == WmEnv::TwoRooms
    }

    pub fn name(self) -> &'static str {
        match self {
            WmEnv::TwoRooms => "two-rooms",
            WmEnv::PointMaze => "point-maze",
        }
    }
}

/// Everything that defines a training run (written to `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WmTrainConfig {
    /// The environment. Two-Rooms is left out of `config.json` (runs from before PointMaze
    /// read back as Two-Rooms and resume with the same settings).
    #[serde(default, skip_serializing_if = "WmEnv::is_two_rooms")]
    pub env: WmEnv,
    pub model: JepaConfig,
    pub loss: JepaLossConfig,
    /// Training trajectories and the random-walk recipe.
    pub data: DatasetSpec,
    /// Held-out trajectories (generated with `data.seed + 1`).
    pub valid_trajectories: usize,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub final_lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub eval_every: u64,
    pub checkpoint_every: u64,
    pub keep_last: usize,
    pub seed: u64,
    /// Stop (and checkpoint) after the step that exhausts this wall-clock budget.
    #[serde(default)]
    pub max_seconds: Option<f64>,
}

/// The serialisable part of [`DatasetConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    pub num_trajectories: usize,
    pub steps: usize,
    pub seed: u64,
}

impl DatasetSpec {
    fn to_config(&self, seed_offset: u64, num: usize) -> DatasetConfig {
        DatasetConfig {
            num_trajectories: num,
            steps: self.steps,
            seed: self.seed + seed_offset,
            ..DatasetConfig::default()
        }
    }
}

impl WmTrainConfig {
    /// Defaults for Two-Rooms with state (`pixels = false`) or image observations. Both
    /// unroll the predictor 48 steps per window with VICReg's covariance weight 0.04: with
    /// issue 5's 8 steps, a 60-step plan drifted 9.7 px open loop and put 18% of agents that
    /// never left their room on the other side of the wall (EVALUATION.md, Two-Rooms); 48
    /// steps is the longest tried and the best at planning, from states and from pixels
    /// (the pixel encoder's im2col convolutions made the 6× longer windows affordable).
    pub fn two_rooms(pixels: bool) -> Self {
        WmTrainConfig {
            env: WmEnv::TwoRooms,
            model: if pixels {
                JepaConfig::two_rooms_pixels()
            } else {
                JepaConfig::two_rooms_state()
            },
            loss: JepaLossConfig {
                rollout_steps: 48,
                cov_weight: 0.04,
                ..JepaLossConfig::default()
            },
            data: DatasetSpec {
                num_trajectories: 1000,
                steps: 200,
                seed: 0,
            },
            valid_trajectories: 50,
            steps: if pixels { 3000 } else { 6000 },
            batch_size: if pixels { 32 } else { 128 },
            lr: 1e-3,
            final_lr: 1e-5,
            warmup_steps: 200,
            weight_decay: 1e-4,
            grad_clip: 1.0,
            eval_every: 250,
            checkpoint_every: 500,
            keep_last: 2,
            seed: 0,
            max_seconds: None,
        }
    }

    /// Defaults for the PointMaze U-maze: DINO-WM's dataset size (2,000 fully random
    /// trajectories of 100 steps), the state `[x, y, vx, vy]` (or the 2×64×64 frame) in, the
    /// same 16-d latent and losses as Two-Rooms, actions in the box `[−1, 1]²`.
    pub fn point_maze(pixels: bool) -> Self {
        let two_rooms = Self::two_rooms(pixels);
        let state = ObservationKind::State { dim: 4 };
        WmTrainConfig {
            env: WmEnv::PointMaze,
            model: JepaConfig {
                observation: if pixels {
                    two_rooms.model.observation
                } else {
                    state
                },
                action_scale: 1.0,
                // Positions lie in [0.3, 3.3] and speeds in ±5: centred and of order one.
                state_shift: 1.8,
                state_scale: 2.5,
                ..two_rooms.model
            },
            // The state recipe the U-maze results were measured with (`--cov-weight 0.04`).
            loss: if pixels {
                JepaLossConfig::default()
            } else {
                JepaLossConfig {
                    cov_weight: 0.04,
                    ..JepaLossConfig::default()
                }
            },
            data: DatasetSpec {
                num_trajectories: 2000,
                steps: 100,
                seed: 0,
            },
            ..two_rooms
        }
    }

    pub fn validate(&self) -> Result<(), WmError> {
        self.model.validate().map_err(WmError::Config)?;
        let state_dim = match self.env {
            WmEnv::TwoRooms => 2,
            WmEnv::PointMaze => 4,
        };
        if let ObservationKind::State { dim } = self.model.observation
            && dim != state_dim
        {
            return Err(WmError::Config(format!(
                "{} states have {state_dim} numbers, the model expects {dim}",
                self.env.name()
            )));
        }
        if self.model.probe_dim != 2 || self.model.action_dim != 2 {
            return Err(WmError::Config(
                "the probe reads a 2-d position and actions are 2-d".into(),
            ));
        }
        let bad = |m: String| Err(WmError::Config(m));
        if self.loss.rollout_steps == 0 || self.loss.rollout_steps >= self.data.steps {
            return bad(format!(
                "rollout_steps must be in 1..{} (trajectory length), got {}",
                self.data.steps, self.loss.rollout_steps
            ));
        }
        if self.data.num_trajectories == 0 || self.valid_trajectories == 0 {
            return bad("need at least one training and one validation trajectory".into());
        }
        if self.batch_size < 2 {
            return bad("batch_size must be ≥ 2 (VICReg needs a batch variance)".into());
        }
        if self.steps == 0 || self.eval_every == 0 || self.checkpoint_every == 0 {
            return bad("steps, eval_every and checkpoint_every must be > 0".into());
        }
        if let Some(s) = self.max_seconds
            && !(s.is_finite() && s > 0.0)
        {
            return bad(format!("max_seconds must be positive, got {s}"));
        }
        Ok(())
    }

    /// Identifies the observation space in checkpoints, so a model is never loaded for
    /// the wrong kind of observation.
    pub fn space_id(&self) -> String {
        let env = self.env.name();
        match self.model.observation {
            ObservationKind::State { dim } => format!("{env}/state{dim}"),
            ObservationKind::Pixels {
                channels,
                height,
                width,
            } => format!("{env}/pixels{channels}x{height}x{width}"),
        }
    }

    fn schedule(&self) -> Result<LrSchedule, WmError> {
        Ok(LrSchedule::cosine_with_final_lr(
            self.lr,
            0.0,
            self.final_lr,
            // Short runs (tests, smoke runs) keep a tenth of their steps for warm-up.
            self.warmup_steps.min(self.steps / 10),
            self.steps,
        )?)
    }
}

/// One line of `metrics.jsonl` (`loss`, `valid_loss` and `lr` are what `lcm plot` draws).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WmMetrics {
    pub step: u64,
    pub loss: f64,
    pub prediction: f64,
    pub std: f64,
    pub cov: f64,
    pub probe: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub elapsed_s: f64,
    /// Validation prediction loss (same rollout length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
    /// Validation probe error in environment units (pixels), RMS over both axes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_probe_rms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse: Option<CollapseStats>,
}

/// What a training call did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WmTrainSummary {
    pub start_step: u64,
    pub final_step: u64,
    pub last: Option<WmMetrics>,
    pub seconds: f64,
}

/// Windows sampled from trajectories, as tensors ready for [`jepa_loss`].
struct WindowBatch {
    obs: Tensor,
    actions: Tensor,
    states: Tensor,
}

/// The offline trajectories of either environment, read the one way training needs.
enum TrainData {
    TwoRooms(Dataset),
    PointMaze(PointMazeDataset),
}

impl TrainData {
    /// `num` trajectories of the run's recipe, seeded `spec.seed + seed_offset`.
    fn generate(
        env: WmEnv,
        spec: &DatasetSpec,
        seed_offset: u64,
        num: usize,
    ) -> Result<Self, WmError> {
        Ok(match env {
            WmEnv::TwoRooms => TrainData::TwoRooms(generate(
                &spec.to_config(seed_offset, num),
                &TwoRoomsConfig::default(),
            )?),
            WmEnv::PointMaze => TrainData::PointMaze(generate_maze(
                &PointMazeDatasetConfig {
                    num_trajectories: num,
                    steps: spec.steps,
                    seed: spec.seed + seed_offset,
                    render: false,
                },
                &PointMazeConfig::default(),
            )?),
        })
    }

    fn len(&self) -> usize {
        match self {
            TrainData::TwoRooms(d) => d.trajectories.len(),
            TrainData::PointMaze(d) => d.trajectories.len(),
        }
    }

    /// Actions of trajectory `ti`.
    fn actions(&self, ti: usize) -> &[[f32; 2]] {
        match self {
            TrainData::TwoRooms(d) => &d.trajectories[ti].actions,
            TrainData::PointMaze(d) => &d.trajectories[ti].actions,
        }
    }

    /// The probed quantity (the position) of state `t` of trajectory `ti`.
    fn position(&self, ti: usize, t: usize) -> [f32; 2] {
        match self {
            TrainData::TwoRooms(d) => d.trajectories[ti].states[t],
            TrainData::PointMaze(d) => {
                let s = d.trajectories[ti].states[t];
                [s[0], s[1]]
            }
        }
    }

    /// What the encoder sees of state `t` of trajectory `ti`.
    fn observation(
        &self,
        kind: &ObservationKind,
        ti: usize,
        t: usize,
    ) -> Result<Vec<f32>, WmError> {
        let pixels = matches!(kind, ObservationKind::Pixels { .. });
        Ok(match self {
            TrainData::TwoRooms(d) => {
                let p = d.trajectories[ti].states[t];
                if pixels {
                    render_state(&d.env_config, p)?
                } else {
                    p.to_vec()
                }
            }
            TrainData::PointMaze(d) => {
                let s = &d.trajectories[ti].states[t];
                if pixels {
                    render_maze(&d.env_config, s)?
                } else {
                    s.to_vec()
                }
            }
        })
    }
}

/// Builds a batch from `(trajectory, start)` pairs.
fn window_batch(
    data: &TrainData,
    kind: &ObservationKind,
    windows: &[(usize, usize)],
    horizon: usize,
    device: &Device,
) -> Result<WindowBatch, WmError> {
    let b = windows.len();
    let obs_len = kind.len();
    let mut obs = Vec::with_capacity(b * (horizon + 1) * obs_len);
    let mut actions = Vec::with_capacity(b * horizon * 2);
    let mut states = Vec::with_capacity(b * (horizon + 1) * 2);
    for &(ti, start) in windows {
        for t in start..=start + horizon {
            obs.extend(data.observation(kind, ti, t)?);
            states.extend(data.position(ti, t));
            if t < start + horizon {
                actions.extend(data.actions(ti)[t]);
            }
        }
    }
    Ok(WindowBatch {
        obs: Tensor::from_vec(obs, (b, horizon + 1, obs_len), device)?,
        actions: Tensor::from_vec(actions, (b, horizon, 2), device)?,
        states: Tensor::from_vec(states, (b, horizon + 1, 2), device)?,
    })
}

fn sample_windows(
    rng: &mut TrainRng,
    data: &TrainData,
    n: usize,
    horizon: usize,
) -> Vec<(usize, usize)> {
    (0..n)
        .map(|_| {
            let ti = rng.random_range(0..data.len());
            let len = data.actions(ti).len();
            (ti, rng.random_range(0..=len - horizon))
        })
        .collect()
}

/// Fixed validation windows: evenly spaced starts in every held-out trajectory.
fn validation_windows(
    data: &TrainData,
    horizon: usize,
    per_trajectory: usize,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for ti in 0..data.len() {
        let last = data.actions(ti).len() - horizon;
        for k in 0..per_trajectory {
            out.push((ti, k * last / per_trajectory.max(1)));
        }
    }
    out
}

/// The world-model half of a training run: the model, both datasets and the fixed
/// validation windows.
struct WmTrainer<'a> {
    cfg: &'a WmTrainConfig,
    model: Jepa,
    vars: Vec<Var>,
    train_data: TrainData,
    valid_data: TrainData,
    valid_windows: Vec<(usize, usize)>,
    device: Device,
    started: Instant,
}

impl Trainer for WmTrainer<'_> {
    type Metrics = WmMetrics;
    type Error = WmError;

    fn step(&mut self, step: Step<'_>) -> Result<Option<WmMetrics>, WmError> {
        let cfg = self.cfg;
        let horizon = cfg.loss.rollout_steps;
        let windows = sample_windows(step.rng, &self.train_data, cfg.batch_size, horizon);
        let batch = window_batch(
            &self.train_data,
            &cfg.model.observation,
            &windows,
            horizon,
            &self.device,
        )?;
        let loss = jepa_loss(
            &self.model,
            &batch.obs,
            &batch.actions,
            &batch.states,
            &cfg.loss,
        )?;
        let mut grads = loss.total.backward()?;
        let grad_norm = clip_grad_norm(&mut grads, &self.vars, cfg.grad_clip)?;
        step.opt.step(&grads)?;
        let scalar = |t: &Tensor| -> Result<f64, WmError> { Ok(f64::from(t.to_scalar::<f32>()?)) };
        Ok(Some(WmMetrics {
            step: step.index + 1,
            loss: scalar(&loss.total)?,
            prediction: scalar(&loss.prediction)?,
            std: scalar(&loss.std)?,
            cov: scalar(&loss.cov)?,
            probe: scalar(&loss.probe)?,
            lr: step.lr,
            grad_norm,
            elapsed_s: self.started.elapsed().as_secs_f64(),
            valid_loss: None,
            valid_probe_rms: None,
            collapse: None,
        }))
    }

    fn validate(&mut self, metrics: &mut WmMetrics) -> Result<(), WmError> {
        let v = validate(
            &self.model,
            &self.valid_data,
            &self.cfg.model,
            &self.valid_windows,
            self.cfg.loss.rollout_steps,
            &self.cfg.loss,
            &self.device,
        )?;
        metrics.valid_loss = Some(v.prediction);
        metrics.valid_probe_rms = Some(v.probe_rms);
        metrics.collapse = Some(v.collapse);
        Ok(())
    }

    fn data_position(&self) -> DataPosition {
        // The batches come from the checkpointed random stream alone.
        DataPosition::default()
    }

    fn seek(&mut self, _position: DataPosition) -> Result<(), WmError> {
        Ok(())
    }
}

/// Trains (or, with `resume`, continues from the newest checkpoint of) a world model in
/// `out` under the one training loop's resume policy: a fresh run refuses a directory with
/// checkpoints, a resumed one needs a checkpoint and the same settings (only the budget
/// fields may change). `on_step` sees every step's metrics (progress bars, logs).
pub fn train_world_model(
    cfg: &WmTrainConfig,
    out: &Path,
    resume: bool,
    mut on_step: impl FnMut(&WmMetrics),
) -> Result<WmTrainSummary, WmError> {
    let started = Instant::now();
    cfg.validate()?;
    let device = Device::Cpu;
    let train_data = TrainData::generate(cfg.env, &cfg.data, 0, cfg.data.num_trajectories)?;
    let valid_data = TrainData::generate(cfg.env, &cfg.data, 1, cfg.valid_trajectories)?;
    let valid_windows = validation_windows(&valid_data, cfg.loss.rollout_steps, 4);

    let varmap = VarMap::new();
    let model = Jepa::new(
        &cfg.model,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    seeded_init(&varmap, cfg.seed)?;
    let mut opt = AdamW::from_varmap(
        &varmap,
        AdamWConfig {
            lr: cfg.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        },
        default_decay_filter,
    )?;
    let to_json = |what: &str, value: serde_json::Result<serde_json::Value>| {
        value.map_err(|e| WmError::Config(format!("serialising the {what}: {e}")))
    };
    let spec = RunSpec {
        dir: out,
        resume,
        seed: cfg.seed,
        cadence: Cadence {
            steps: cfg.steps,
            stop_at: None,
            max_seconds: cfg.max_seconds,
            eval_every: cfg.eval_every,
            checkpoint_every: cfg.checkpoint_every,
            keep_last: cfg.keep_last,
        },
        schedule: cfg.schedule()?,
        identity: Identity {
            space_id: cfg.space_id(),
            model_config: to_json("model configuration", serde_json::to_value(&cfg.model))?,
            settings: settings_without_budget(cfg, &[])?,
            config: to_json("configuration", serde_json::to_value(cfg))?,
            normalizer: None,
        },
        started,
        plot_title: PLOT_TITLE.to_string(),
    };
    let mut trainer = WmTrainer {
        cfg,
        vars: opt.vars(),
        model,
        train_data,
        valid_data,
        valid_windows,
        device,
        started: Instant::now(),
    };
    let summary = run::run(spec, &varmap, &mut opt, &mut trainer, &mut on_step)?;
    Ok(WmTrainSummary {
        start_step: summary.start_step,
        final_step: summary.final_step,
        last: summary.last,
        seconds: summary.train_seconds,
    })
}

struct Validation {
    prediction: f64,
    probe_rms: f64,
    collapse: CollapseStats,
}

fn validate(
    model: &Jepa,
    data: &TrainData,
    mcfg: &JepaConfig,
    windows: &[(usize, usize)],
    horizon: usize,
    lcfg: &JepaLossConfig,
    device: &Device,
) -> Result<Validation, WmError> {
    let mut prediction = 0.0;
    let mut sq = 0.0;
    let mut count = 0usize;
    let mut latents = Vec::new();
    for chunk in windows.chunks(64) {
        let batch = window_batch(data, &mcfg.observation, chunk, horizon, device)?;
        let loss = jepa_loss(model, &batch.obs, &batch.actions, &batch.states, lcfg)?;
        prediction += f64::from(loss.prediction.to_scalar::<f32>()?) * chunk.len() as f64;
        let (b, t1, len) = batch.obs.dims3()?;
        let z = model.encode(&batch.obs.reshape((b * t1, len))?)?;
        let probed = host(&model.probe(&z)?)?;
        let truth = host(&batch.states)?;
        for (p, s) in probed.iter().zip(&truth) {
            let p = p * mcfg.state_scale + mcfg.state_shift;
            sq += f64::from((p - s) * (p - s));
            count += 1;
        }
        latents.extend(host(&z)?);
    }
    Ok(Validation {
        prediction: prediction / windows.len().max(1) as f64,
        probe_rms: (sq / count.max(1) as f64).sqrt(),
        collapse: collapse_stats(&latents, mcfg.latent_dim),
    })
}
