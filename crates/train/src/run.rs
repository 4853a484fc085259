//! The one training loop every trainer shares (LCMs, concept decoders, world models).
//!
//! A trainer supplies the model-specific parts through [`Trainer`]: one optimiser step on
//! the next batch, validation, and its data position. The loop owns everything else, the
//! same way for every trainer:
//!
//! - the **run directory** ([`RunDir`]): `config.json` (the full configuration, rewritten
//!   on every start), `metrics.jsonl` (one line per step), the same numbers as TensorBoard
//!   scalars in `events.out.tfevents.*` ([`crate::tensorboard`]; one new file per
//!   invocation), `checkpoints/` (`step-N/` with weights, AdamW moments, RNG and data
//!   position), `loss.png` (plotted at the end);
//! - the **cadence**: learning rate from the schedule before each step, validation every
//!   `eval_every` steps and at the last step, a checkpoint every `checkpoint_every` steps
//!   and at the last step, and the budgets (`steps`, `stop_at`, `max_seconds`): the step
//!   that exhausts a budget is validated and checkpointed, then the loop stops;
//! - the **resume policy** ([`RunSpec::resume`]):
//!   - a fresh run refuses a directory that already holds checkpoints, and starts an empty
//!     `metrics.jsonl` (and removes earlier event files);
//!   - a resumed run needs a checkpoint; it continues from the newest one only if the
//!     checkpoint's embedding space, model configuration, settings (the configuration
//!     without its budget fields) and normaliser hash all equal the requested ones, and
//!     each mismatch is refused with the differing values named. Budgets may change
//!     (the learning-rate schedule then follows the new `steps`, so such a run is not
//!     bit-identical to a straight one); `metrics.jsonl` and the event files are cut back
//!     to the checkpoint's step so a resumed run never logs a step twice;
//!   - with the same settings, a run interrupted at a checkpoint and resumed yields
//!     bit-identical weights to an uninterrupted one (the RNG stream position and the data
//!     position are checkpointed).
//! - **seeded re-initialisation** ([`reinit_vars`], [`seeded_init`]): candle initialises
//!   variables from an unseeded generator; every trainer refills them from the seed.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use serde::Serialize;
use serde_json::Value;

use crate::checkpoint::{
    CheckpointManager, DataPosition, NormalizerRef, RngState, STATE_FILE, TOOL_VERSION, TrainRng,
    TrainState, new_rng,
};
use crate::optim::AdamW;
use crate::schedule::LrSchedule;
use crate::tensorboard::{EventWriter, scalars_of};
use crate::{Result, TrainError, io_err};

/// The configuration file of a run directory.
pub const CONFIG_FILE: &str = "config.json";
/// The metrics log of a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The checkpoint sub-directory of a run directory.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// The loss-curve plot of a run directory.
pub const PLOT_FILE: &str = "loss.png";
/// ChaCha stream used for weight initialisation (training draws use stream 0).
pub const INIT_STREAM: u64 = 1;
/// Top-level configuration fields that may differ between a run and its resumption.
pub const BUDGET_FIELDS: &[&str] = &[
    "steps",
    "stop_at",
    "max_seconds",
    "eval_every",
    "checkpoint_every",
    "keep_last",
];

/// The files of a run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join(METRICS_FILE)
    }
    pub fn plot(&self) -> PathBuf {
        self.dir.join(PLOT_FILE)
    }
    pub fn checkpoints(&self, keep_last: usize) -> CheckpointManager {
        CheckpointManager::new(self.dir.join(CHECKPOINT_DIR), keep_last)
    }
    /// The run directory `path` names: the directory itself (it holds `checkpoints/` or
    /// `config.json`), or the run that owns a `checkpoints/step-N` directory.
    pub fn containing(path: &Path) -> Option<RunDir> {
        if path.join(CHECKPOINT_DIR).is_dir() || path.join(CONFIG_FILE).is_file() {
            return Some(RunDir::new(path));
        }
        let parent = path.parent()?;
        if parent.file_name()? == CHECKPOINT_DIR {
            return parent.parent().map(RunDir::new);
        }
        None
    }
}

/// When to validate, checkpoint and stop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cadence {
    /// Length of the schedule: the run ends after this many optimiser steps.
    pub steps: u64,
    /// Stop (with a checkpoint) after this step although the schedule spans `steps`.
    pub stop_at: Option<u64>,
    /// Wall-clock budget in seconds, counted from [`RunSpec::started`].
    pub max_seconds: Option<f64>,
    /// Validation every this many steps (0: only at the last step).
    pub eval_every: u64,
    /// Checkpoint every this many steps (0: only at the last step).
    pub checkpoint_every: u64,
    /// Newest checkpoints kept (0: all).
    pub keep_last: usize,
}

impl Cadence {
    /// The step after which the loop stops (`stop_at` never extends the schedule).
    pub fn last_step(&self) -> u64 {
        self.stop_at.unwrap_or(self.steps).min(self.steps)
    }
}

/// What a checkpoint must match for a run to resume from it, and what it records.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Id of the space the model lives in (a concept encoder's id, a world's id); every
    /// checkpoint records it and loading checks it.
    pub space_id: String,
    /// The architecture's configuration.
    pub model_config: Value,
    /// The training settings compared on resume: see [`settings_without_budget`].
    pub settings: Value,
    /// The full configuration, written to `config.json` and kept in the checkpoint.
    pub config: Value,
    /// The normaliser the data was scaled with, if any (checked by hash on resume).
    pub normalizer: Option<NormalizerRef>,
}

/// A serialisable configuration as JSON with the [`BUDGET_FIELDS`] (and `extra` fields)
/// removed: the part that must not change when a run is resumed.
pub fn settings_without_budget(config: &impl Serialize, extra: &[&str]) -> Result<Value> {
    let mut value = serde_json::to_value(config)
        .map_err(|e| TrainError::Config(format!("serialising the configuration: {e}")))?;
    if let Value::Object(map) = &mut value {
        for field in BUDGET_FIELDS.iter().chain(extra) {
            map.remove(*field);
        }
    }
    Ok(value)
}

/// Everything the loop needs besides the trainer.
pub struct RunSpec<'a> {
    pub dir: &'a Path,
    pub resume: bool,
    pub seed: u64,
    pub cadence: Cadence,
    pub schedule: LrSchedule,
    pub identity: Identity,
    /// When the command started: `max_seconds` counts from here, so data loading and
    /// tokeniser training spend the same budget as steps.
    pub started: Instant,
    /// Title of `loss.png`.
    pub plot_title: String,
}

/// One optimiser step handed to [`Trainer::step`].
pub struct Step<'a> {
    /// Steps completed before this one; the step being taken is `index + 1`.
    pub index: u64,
    /// The learning rate already set on `opt` for this step.
    pub lr: f64,
    pub opt: &'a mut AdamW,
    /// The run's random stream (checkpointed, so resumed runs continue it exactly).
    pub rng: &'a mut TrainRng,
}

/// The model-specific half of a training run.
pub trait Trainer {
    /// One line of `metrics.jsonl`; it should carry the step number.
    type Metrics: Serialize;
    type Error: From<TrainError>;

    /// Forward, loss, backward, clipping and `opt.step` on the next batch. `Ok(None)` when
    /// the batch could not be used (e.g. too short): no step was taken, the data position
    /// still moved on.
    fn step(&mut self, step: Step<'_>) -> std::result::Result<Option<Self::Metrics>, Self::Error>;

    /// Validation at an eval step; writes its numbers into `metrics`.
    fn validate(&mut self, metrics: &mut Self::Metrics) -> std::result::Result<(), Self::Error>;

    /// Where the next batch comes from (saved in checkpoints).
    fn data_position(&self) -> DataPosition;

    /// Continue from a checkpointed data position.
    fn seek(&mut self, position: DataPosition) -> std::result::Result<(), Self::Error>;
}

/// What a finished (or stopped) run reports.
#[derive(Debug)]
pub struct RunSummary<M> {
    /// The step the run started from (0, or the resumed checkpoint's).
    pub start_step: u64,
    pub final_step: u64,
    /// Metrics of the last step taken in this invocation.
    pub last: Option<M>,
    /// The last step's checkpoint (the resumed one when no step was taken).
    pub checkpoint: Option<PathBuf>,
    pub metrics: PathBuf,
    /// Seconds since [`RunSpec::started`].
    pub seconds: f64,
    /// Seconds spent in the loop itself.
    pub train_seconds: f64,
}

/// Runs `trainer` on the variables of `varmap` (optimised by `opt`) under `spec`'s
/// directory, cadence and resume policy. `on_step` sees every step's metrics.
pub fn run<T: Trainer>(
    spec: RunSpec<'_>,
    varmap: &VarMap,
    opt: &mut AdamW,
    trainer: &mut T,
    on_step: &mut dyn FnMut(&T::Metrics),
) -> std::result::Result<RunSummary<T::Metrics>, T::Error> {
    run_from(spec, varmap, opt, trainer, on_step, &mut |_| Ok(()))
}

/// [`run`] whose weights are replaced by `start` after the run is initialised or resumed
/// and before its first step, everything else (AdamW moments, RNG, data position, step
/// count) kept: a federated round starts from the global model with the site's own
/// optimiser state. `run` is `run_from` with a `start` that changes nothing.
pub fn run_from<T: Trainer>(
    spec: RunSpec<'_>,
    varmap: &VarMap,
    opt: &mut AdamW,
    trainer: &mut T,
    on_step: &mut dyn FnMut(&T::Metrics),
    start: &mut dyn FnMut(&VarMap) -> std::result::Result<(), T::Error>,
) -> std::result::Result<RunSummary<T::Metrics>, T::Error> {
    let run_dir = RunDir::new(spec.dir);
    fs::create_dir_all(spec.dir).map_err(io_err(spec.dir))?;
    let ckpt = run_dir.checkpoints(spec.cadence.keep_last);
    let metrics_path = run_dir.metrics();
    let identity = &spec.identity;

    let mut rng = new_rng(spec.seed);
    let mut step = 0u64;
    let mut checkpoint = None;
    let has_checkpoints = !ckpt.steps()?.is_empty();
    if spec.resume {
        if !has_checkpoints {
            return Err(TrainError::Config(format!(
                "nothing to resume: no checkpoint in {}; run without --resume",
                ckpt.dir().display()
            ))
            .into());
        }
        // The model is compared before any weight is read, so that resuming as another
        // model names both models instead of a missing or misshapen tensor.
        if let Some(&newest) = ckpt.steps()?.last()
            && let Ok(bytes) = fs::read(ckpt.step_dir(newest).join(STATE_FILE))
            && let Ok(recorded) = serde_json::from_slice::<TrainState>(&bytes)
        {
            check_model(&recorded, identity, ckpt.dir())?;
        }
        let state = ckpt
            .load_latest(varmap, Some(opt), &identity.space_id)?
            .ok_or_else(|| TrainError::Config("the newest checkpoint vanished".into()))?;
        check_resumable(&state, identity, ckpt.dir())?;
        rng = state.rng.restore()?;
        trainer.seek(state.data)?;
        step = state.step;
        checkpoint = Some(ckpt.step_dir(step));
        truncate_metrics(&metrics_path, step)?;
        crate::tensorboard::truncate_events(spec.dir, step)?;
        tracing::info!(step, dir = %spec.dir.display(), "resumed");
    } else {
        if has_checkpoints {
            return Err(TrainError::Config(format!(
                "{} already holds checkpoints; pass --resume to continue or choose another \
                 output directory",
                ckpt.dir().display()
            ))
            .into());
        }
        write_file(&metrics_path, b"")?;
        crate::tensorboard::remove_events(spec.dir)?;
    }
    start(varmap)?;
    let config_text = serde_json::to_vec_pretty(&identity.config)
        .map_err(|e| TrainError::Config(format!("serialising the configuration: {e}")))?;
    write_file(&run_dir.config(), &config_text)?;

    let start_step = step;
    let mut metrics_file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&metrics_path)
        .map_err(io_err(&metrics_path))?;
    let mut events = EventWriter::create(spec.dir)?;
    if spec.resume {
        events.session_start(step + 1)?;
    }
    let save = |step: u64, data: DataPosition, rng: &TrainRng, opt: &AdamW| {
        let state = TrainState {
            step,
            rng: RngState::capture(rng),
            data,
            space_id: identity.space_id.clone(),
            normalizer: identity.normalizer.clone(),
            tool_version: TOOL_VERSION.to_string(),
            model_config: identity.model_config.clone(),
            extra: serde_json::json!({
                "settings": identity.settings,
                "config": identity.config,
            }),
        };
        ckpt.save(varmap, opt, &state)
    };

    let cadence = spec.cadence;
    let last_step = cadence.last_step();
    let loop_started = Instant::now();
    let mut last = None;
    while step < last_step {
        let lr = spec.schedule.lr_at(step);
        opt.set_lr(lr);
        let Some(mut metrics) = trainer.step(Step {
            index: step,
            lr,
            opt: &mut *opt,
            rng: &mut rng,
        })?
        else {
            continue;
        };
        step += 1;
        let out_of_time = cadence
            .max_seconds
            .is_some_and(|limit| spec.started.elapsed().as_secs_f64() >= limit);
        let final_step = step == last_step || out_of_time;
        if final_step || (cadence.eval_every > 0 && step.is_multiple_of(cadence.eval_every)) {
            trainer.validate(&mut metrics)?;
        }
        let serialise_err =
            |e: serde_json::Error| TrainError::Config(format!("serialising metrics: {e}"));
        let line = serde_json::to_string(&metrics).map_err(serialise_err)?;
        writeln!(metrics_file, "{line}")
            .and_then(|()| metrics_file.flush())
            .map_err(io_err(&metrics_path))?;
        let value = serde_json::to_value(&metrics).map_err(serialise_err)?;
        events.scalars(step, &scalars_of(&value))?;
        on_step(&metrics);
        if final_step
            || (cadence.checkpoint_every > 0 && step.is_multiple_of(cadence.checkpoint_every))
        {
            checkpoint = Some(save(step, trainer.data_position(), &rng, opt)?);
        }
        last = Some(metrics);
        if out_of_time {
            tracing::info!(step, "time budget spent; stopped with a checkpoint");
            break;
        }
    }
    let plot = run_dir.plot();
    if let Err(error) = crate::plot::plot_metrics(&metrics_path, &plot, &spec.plot_title) {
        tracing::warn!(%error, "could not plot {}", plot.display());
    }
    Ok(RunSummary {
        start_step,
        final_step: step,
        last,
        checkpoint,
        metrics: metrics_path,
        seconds: spec.started.elapsed().as_secs_f64(),
        train_seconds: loop_started.elapsed().as_secs_f64(),
    })
}

/// The resume policy's checks, each refusal naming what differs.
fn check_resumable(state: &TrainState, identity: &Identity, dir: &Path) -> Result<()> {
    check_model(state, identity, dir)?;
    let Some(recorded) = state.extra.get("settings") else {
        // Checkpoints written before the one loop recorded no settings: they resume on the
        // model, space and normaliser checks alone.
        tracing::warn!(
            dir = %dir.display(),
            "the checkpoint records no training settings (older format); only the model, \
             space and normaliser were checked"
        );
        return check_normalizer(state, identity, dir);
    };
    if *recorded != identity.settings {
        return Err(TrainError::Config(format!(
            "the checkpoint in {} was trained with other settings; {}; resume with the \
             original settings (only {} may change)",
            dir.display(),
            differences(recorded, &identity.settings),
            BUDGET_FIELDS.join(", ")
        )));
    }
    check_normalizer(state, identity, dir)
}

/// The resume policy's first check: the run's model (kind, preset, configuration).
fn check_model(state: &TrainState, identity: &Identity, dir: &Path) -> Result<()> {
    if state.model_config != identity.model_config {
        // Models recorded as `{kind, preset, config}` (the LCMs) are named the way the
        // user chose them.
        let named = |v: &Value| match (v.get("kind"), v.get("preset")) {
            (Some(Value::String(kind)), Some(Value::String(preset))) => {
                Some(format!("{kind}/{preset}"))
            }
            _ => None,
        };
        return Err(TrainError::Config(
            match (named(&state.model_config), named(&identity.model_config)) {
                (Some(trained), Some(asked)) if trained != asked => format!(
                    "the run in {} was trained as {trained}; you asked for {asked}. Resume \
                     with the run's model and preset, or train into another directory",
                    dir.display()
                ),
                _ => format!(
                    "the checkpoint in {} has another model than the requested one ({}); \
                     resume with the original settings",
                    dir.display(),
                    differences(&state.model_config, &identity.model_config)
                ),
            },
        ));
    }
    Ok(())
}

fn check_normalizer(state: &TrainState, identity: &Identity, dir: &Path) -> Result<()> {
    if let (Some(old), Some(new)) = (&state.normalizer, &identity.normalizer)
        && old.hash != new.hash
    {
        return Err(TrainError::Config(format!(
            "the checkpoint in {} was trained with another normaliser ({}); pass that one",
            dir.display(),
            old.path
        )));
    }
    Ok(())
}

/// `key: checkpoint → requested` for the top-level keys that differ.
fn differences(old: &Value, new: &Value) -> String {
    let (Value::Object(a), Value::Object(b)) = (old, new) else {
        return format!("checkpoint {old} → requested {new}");
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("(absent)".to_string(), Value::to_string);
            format!("{k}: {} → {}", show(a.get(k)), show(b.get(k)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    lcm_util::fs::write_atomic(path, bytes).map_err(|e| TrainError::Io {
        path: e.path,
        source: e.source,
    })
}

/// Keeps the lines of a `metrics.jsonl` whose `step` is at most `max_step` (what a resumed
/// run reproduces from its checkpoint on would otherwise be logged twice); the file is
/// replaced atomically. A missing file is left missing.
pub fn truncate_metrics(path: &Path, max_step: u64) -> Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(Value::as_u64))
                .is_some_and(|s| s <= max_step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    write_file(path, kept.as_bytes())
}

/// Refills the variables of `varmap` from `seed`: `fill(name, var, rng)` returns the new
/// values of a variable, or `None` to keep its initialisation. Variables are visited in
/// name order on the [`INIT_STREAM`] of the seed's generator, so one seed gives the same
/// weights whatever order candle created them in.
pub fn reinit_vars(
    varmap: &VarMap,
    seed: u64,
    fill: impl FnMut(&str, &Var, &mut TrainRng) -> Result<Option<Tensor>>,
) -> Result<()> {
    let mut rng = new_rng(seed);
    rng.set_stream(INIT_STREAM);
    reinit_vars_with(varmap, &mut rng, fill)
}

/// [`reinit_vars`] drawing from a caller's generator instead of the seed's
/// [`INIT_STREAM`]: for an initialisation whose draws were fixed before that convention (the
/// world model's He initialisation reads stream 0 of its seed), so its weights stay
/// bit-identical.
pub fn reinit_vars_with(
    varmap: &VarMap,
    rng: &mut TrainRng,
    mut fill: impl FnMut(&str, &Var, &mut TrainRng) -> Result<Option<Tensor>>,
) -> Result<()> {
    let mut named: Vec<(String, Var)> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Config("variable map lock poisoned".into()))?;
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in named {
        if let Some(fresh) = fill(&name, &var, rng)? {
            var.set(&fresh.to_dtype(var.dtype())?)?;
        }
    }
    Ok(())
}

/// A standard-normal tensor of `dims` drawn from `rng` (both halves of each Box–Muller
/// pair, see [`lcm_util::random::standard_normals`]).
pub fn normal_tensor(dims: &[usize], rng: &mut TrainRng, var: &Var) -> Result<Tensor> {
    let n = dims.iter().product();
    let values = lcm_util::random::standard_normals(rng, n);
    Ok(Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)
}

/// The LCM and world-model initialisation: every variable whose values are not all equal
/// (i.e. was randomly initialised) is refilled with `N(0, σ²)`, σ = 1/√fan_in for matrices
/// (fan_in = second dimension), 0.02 for a learned position table (`pos_embed`) and for
/// vectors and higher-rank tensors. Constant initialisations (norm gains, zero modulators
/// and biases) are kept.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    reinit_vars(varmap, seed, |name, var, rng| {
        let values = var.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let Some(&first) = values.first() else {
            return Ok(None);
        };
        if values.iter().all(|&v| v == first) {
            return Ok(None);
        }
        let std = match var.dims() {
            [_, fan_in] if !name.contains("pos_embed") => 1.0 / (*fan_in as f64).sqrt(),
            _ => 0.02,
        };
        Ok(Some((normal_tensor(var.dims(), rng, var)? * std)?))
    })
}
