//! The fused training engine ([`lcm_engine`]) as the LCM trainer drives it: which engine a
//! run uses, and one optimiser step of a Base-LCM, Two-Tower or One-Tower LCM (loss,
//! gradients, clipping, AdamW) computed over flat buffers instead of candle's autograd
//! graph, one engine replica per thread over shares of the batch's sequences.
//!
//! The engine reads the weights from the model's `Var`s before each step (so a checkpoint
//! loaded on resume, or any other write to the `Var`s, is seen) and AdamW writes the new
//! weights back into them: the candle model, the checkpoints and everything that loads
//! them stay as they are.

use candle_core::{Storage, Tensor};
use candle_nn::VarMap;
use lcm_engine::base_lcm::{ConceptBatch, SummedLoss};
use lcm_engine::one_tower::OneTowerBatch;
use lcm_engine::two_tower::TwoTowerBatch;
use lcm_engine::{BaseLcmEngine, FlatParams, OneTowerEngine, TwoTowerEngine, parallel};
use lcm_model::builder::ModelConfig;
use lcm_model::diffusion::NoiseSchedule;
use lcm_model::generate::Lcm;
use lcm_model::two_tower::standard_normal;
use lcm_model::{one_tower, two_tower};
use lcm_train::optim::{AdamW, clip_grad_norm_flat};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{Result, WorkflowError};

/// Which code computes the training step's loss and gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The fused engine where it covers the architecture (Base-LCM, Two-Tower and
    /// One-Tower), candle autograd elsewhere.
    #[default]
    Fused,
    /// candle autograd for every architecture (the reference the engine is tested against).
    Candle,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Fused => "fused",
            Engine::Candle => "candle",
        }
    }

    /// Parses `fused` or `candle`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "fused" => Ok(Engine::Fused),
            "candle" => Ok(Engine::Candle),
            other => Err(WorkflowError::Config(format!(
                "unknown engine `{other}`; use `fused` or `candle`"
            ))),
        }
    }
}

/// One engine bound to the model's `Var`s, with its own activation arena and gradient
/// buffer.
enum Replica {
    Base(Box<BaseLcmEngine>),
    TwoTower(Box<TwoTowerEngine>),
    OneTower(Box<OneTowerEngine>),
}

impl Replica {
    fn refresh(&mut self) -> lcm_engine::Result<()> {
        match self {
            Replica::Base(e) => e.refresh(),
            Replica::TwoTower(e) => e.refresh(),
            Replica::OneTower(e) => e.refresh(),
        }
    }

    fn gradients_mut(&mut self) -> &mut [f32] {
        match self {
            Replica::Base(e) => e.gradients_mut(),
            Replica::TwoTower(e) => e.gradients_mut(),
            Replica::OneTower(e) => e.gradients_mut(),
        }
    }

    fn gradients(&self) -> &[f32] {
        match self {
            Replica::Base(e) => e.gradients(),
            Replica::TwoTower(e) => e.gradients(),
            Replica::OneTower(e) => e.gradients(),
        }
    }

    fn params(&self) -> &FlatParams {
        match self {
            Replica::Base(e) => e.params(),
            Replica::TwoTower(e) => e.params(),
            Replica::OneTower(e) => e.params(),
        }
    }

    /// Whether autograd gives parameter `name` a gradient at all (the optimiser skips
    /// the others, as PyTorch's and candle's AdamW do).
    fn has_gradient(&self, name: &str) -> bool {
        match self {
            Replica::Base(_) => true,
            Replica::TwoTower(e) => e.has_gradient(name),
            Replica::OneTower(e) => e.has_gradient(name),
        }
    }
}

/// The diffusion randomness of one step, drawn for the whole batch in the order of the
/// candle model's `loss_sampled`, so that both engines see the same noise and a resumed
/// run continues alike.
struct Draws {
    timesteps: Vec<usize>,
    noisy: Tensor,
    target: Tensor,
    dropped: Dropped,
}

/// CFG-dropped rows: Two-Tower drops query positions shared by every sequence,
/// One-Tower `(sequence, position)` pairs.
enum Dropped {
    Positions(Vec<usize>),
    Rows(Vec<(usize, usize)>),
}

/// A model bound to the fused engine (Base-LCM, Two-Tower or One-Tower), data parallel
/// over the batch's sequences ([`lcm_engine::parallel`]): one replica per thread.
pub struct FusedLcm {
    replicas: Vec<Replica>,
    /// The noise schedule the candle model trains with (diffusion LCMs).
    schedule: Option<NoiseSchedule>,
}

impl FusedLcm {
    /// Binds the engine to the `Var`s of `net` (built from `config` over `varmap`); `Err`
    /// inside `Ok` when the engine does not cover the architecture, with the reason.
    pub fn new(
        net: &Lcm,
        config: &ModelConfig,
        varmap: &VarMap,
    ) -> Result<std::result::Result<Self, String>> {
        Self::with_replicas(net, config, varmap, parallel::replica_count())
    }

    /// As [`Self::new`] with `replicas` engine replicas (at least one): the batch is split
    /// into that many shares of sequences, run in parallel where threads allow.
    pub fn with_replicas(
        net: &Lcm,
        config: &ModelConfig,
        varmap: &VarMap,
        replicas: usize,
    ) -> Result<std::result::Result<Self, String>> {
        let bind = || -> lcm_engine::Result<Replica> {
            Ok(match config {
                ModelConfig::Base(c) => Replica::Base(Box::new(BaseLcmEngine::new(c, varmap)?)),
                ModelConfig::TwoTower(c) => {
                    Replica::TwoTower(Box::new(TwoTowerEngine::new(c, varmap)?))
                }
                ModelConfig::OneTower(c) => {
                    Replica::OneTower(Box::new(OneTowerEngine::new(c, varmap)?))
                }
            })
        };
        let schedule = match (net, config) {
            (Lcm::Base(_), ModelConfig::Base(_)) => None,
            (Lcm::TwoTower(_, s), ModelConfig::TwoTower(_))
            | (Lcm::OneTower(_, s), ModelConfig::OneTower(_)) => Some(s.clone()),
            _ => {
                return Err(WorkflowError::Config(
                    "the model and its configuration describe different architectures".into(),
                ));
            }
        };
        let mut bound = Vec::new();
        for _ in 0..replicas.max(1) {
            match bind() {
                Ok(replica) => bound.push(replica),
                Err(lcm_engine::EngineError::Unsupported(why)) => return Ok(Err(why)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Ok(Self {
            replicas: bound,
            schedule,
        }))
    }

    /// The gradient of the last [`Self::loss_and_gradients`] (before clipping), in the
    /// layout of the engine's [`FlatParams`].
    pub fn gradients(&self) -> (&FlatParams, &[f32]) {
        (self.replicas[0].params(), self.replicas[0].gradients())
    }

    /// The summed loss of a `[B, T, D]` batch with real `lengths`, diffusion randomness
    /// drawn from `rng` exactly as the candle model's `loss_sampled` draws it.
    pub fn loss<R: Rng + ?Sized>(
        &mut self,
        x: &Tensor,
        lengths: &[usize],
        cfg_p: f64,
        rng: &mut R,
    ) -> Result<SummedLoss> {
        self.run(x, lengths, &[], cfg_p, rng, false)
    }

    /// [`Self::loss`] with the targets of row `b` before position `first_target[b]` left
    /// out (instruction fine-tuning's prompt mask; empty: none left out).
    pub fn masked_loss<R: Rng + ?Sized>(
        &mut self,
        x: &Tensor,
        lengths: &[usize],
        first_target: &[usize],
        cfg_p: f64,
        rng: &mut R,
    ) -> Result<SummedLoss> {
        self.run(x, lengths, first_target, cfg_p, rng, false)
    }

    /// The mean loss of a batch (as [`Self::loss`]), leaving the gradient of that mean
    /// with respect to every parameter for [`Self::step`].
    pub fn loss_and_gradients<R: Rng + ?Sized>(
        &mut self,
        x: &Tensor,
        lengths: &[usize],
        cfg_p: f64,
        rng: &mut R,
    ) -> Result<SummedLoss> {
        self.run(x, lengths, &[], cfg_p, rng, true)
    }

    /// [`Self::loss_and_gradients`] with the prompt mask of [`Self::masked_loss`].
    pub fn masked_loss_and_gradients<R: Rng + ?Sized>(
        &mut self,
        x: &Tensor,
        lengths: &[usize],
        first_target: &[usize],
        cfg_p: f64,
        rng: &mut R,
    ) -> Result<SummedLoss> {
        self.run(x, lengths, first_target, cfg_p, rng, true)
    }

    /// Clips the gradients of the last [`Self::loss_and_gradients`] to global norm `clip`
    /// and takes an AdamW step on the model's `Var`s; returns the norm before clipping.
    pub fn step(&mut self, opt: &mut AdamW, clip: f64) -> Result<f64> {
        let first = &mut self.replicas[0];
        let norm = clip_grad_norm_flat(first.gradients_mut(), clip);
        let first = &*first;
        let (layout, grads) = (first.params().layout(), first.gradients());
        // Parameters the model never reads get no step, as under autograd.
        opt.step_flat(|name| {
            first
                .has_gradient(name)
                .then(|| layout.get(grads, name))
                .flatten()
        })?;
        Ok(norm)
    }

    fn draw<R: Rng + ?Sized>(&self, x: &Tensor, cfg_p: f64, rng: &mut R) -> Result<Option<Draws>> {
        let Some(schedule) = &self.schedule else {
            return Ok(None);
        };
        let (b, t, d) = x.dims3()?;
        let timesteps = schedule.sample_timesteps(b * t, rng);
        let noise = standard_normal(&[b, t, d], rng, x.dtype(), x.device())?;
        let dropped = match self.replicas[0] {
            Replica::OneTower(_) => Dropped::Rows(one_tower::cfg_dropped_rows(b, t, cfg_p, rng)),
            _ => Dropped::Positions(two_tower::cfg_dropped_rows(t, cfg_p, rng)),
        };
        let (noisy, target) = schedule
            .noisy_and_target(x, &noise, &timesteps)
            .map_err(|e| WorkflowError::Config(e.to_string()))?;
        Ok(Some(Draws {
            timesteps,
            noisy: noisy.contiguous()?,
            target: target.contiguous()?,
            dropped,
        }))
    }

    fn run<R: Rng + ?Sized>(
        &mut self,
        x: &Tensor,
        lengths: &[usize],
        first_target: &[usize],
        cfg_p: f64,
        rng: &mut R,
        with_gradients: bool,
    ) -> Result<SummedLoss> {
        let draws = self.draw(x, cfg_p, rng)?;
        let (b, t, d) = x.dims3()?;
        if lengths.len() != b || !(first_target.is_empty() || first_target.len() == b) {
            return Err(WorkflowError::Config(format!(
                "{} lengths and {} first targets for a batch of {b} sequences",
                lengths.len(),
                first_target.len()
            )));
        }
        let parts: Vec<SummedLoss> = with_rows(x, |x0| {
            with_draw_rows(&draws, |noisy, target| {
                let results = parallel::on_replicas(&mut self.replicas, b, |_, seqs, replica| {
                    replica.refresh()?;
                    let floats = seqs.start * t * d..seqs.end * t * d;
                    let (shard_b, shard_lengths) = (seqs.len(), &lengths[seqs.clone()]);
                    let shard_first = if first_target.is_empty() {
                        first_target
                    } else {
                        &first_target[seqs.clone()]
                    };
                    match (replica, &draws) {
                        (Replica::Base(e), _) => {
                            let batch = ConceptBatch {
                                x: &x0[floats],
                                batch: shard_b,
                                time: t,
                                lengths: shard_lengths,
                                first_target: shard_first,
                            };
                            if with_gradients {
                                e.loss_and_gradients(&batch)
                            } else {
                                e.loss(&batch)
                            }
                        }
                        (Replica::TwoTower(e), Some(dr)) => {
                            let Dropped::Positions(dropped) = &dr.dropped else {
                                unreachable!("Two-Tower draws dropped positions");
                            };
                            let batch = TwoTowerBatch {
                                x0: &x0[floats.clone()],
                                noisy: &noisy[floats.clone()],
                                target: &target[floats],
                                timesteps: &dr.timesteps[seqs.start * t..seqs.end * t],
                                dropped_rows: dropped,
                                batch: shard_b,
                                time: t,
                                lengths: shard_lengths,
                                first_target: shard_first,
                            };
                            if with_gradients {
                                e.loss_and_gradients(&batch)
                            } else {
                                e.loss(&batch)
                            }
                        }
                        (Replica::OneTower(e), Some(dr)) => {
                            let Dropped::Rows(dropped) = &dr.dropped else {
                                unreachable!("One-Tower draws dropped rows");
                            };
                            // This share's rows, renumbered from its first sequence.
                            let dropped: Vec<(usize, usize)> = dropped
                                .iter()
                                .filter(|(s, _)| seqs.contains(s))
                                .map(|&(s, p)| (s - seqs.start, p))
                                .collect();
                            let batch = OneTowerBatch {
                                x0: &x0[floats.clone()],
                                noisy: &noisy[floats.clone()],
                                target: &target[floats],
                                timesteps: &dr.timesteps[seqs.start * t..seqs.end * t],
                                dropped_rows: &dropped,
                                batch: shard_b,
                                time: t,
                                lengths: shard_lengths,
                                first_target: shard_first,
                            };
                            if with_gradients {
                                e.loss_and_gradients(&batch)
                            } else {
                                e.loss(&batch)
                            }
                        }
                        (_, None) => unreachable!("diffusion models always draw"),
                    }
                });
                results
                    .into_iter()
                    .map(|r| r.map_err(WorkflowError::from))
                    .collect()
            })
        })?;
        if with_gradients {
            let mut grads: Vec<&mut [f32]> = self.replicas[..parts.len()]
                .iter_mut()
                .map(Replica::gradients_mut)
                .collect();
            parallel::combine_gradients(&mut grads, &parts);
        }
        Ok(parallel::total_loss(&parts))
    }
}

/// Runs `f` on the noisy inputs and targets of `draws` (empty slices without draws).
fn with_draw_rows<R>(
    draws: &Option<Draws>,
    f: impl FnOnce(&[f32], &[f32]) -> Result<R>,
) -> Result<R> {
    match draws {
        Some(dr) => with_rows(&dr.noisy, |noisy| {
            with_rows(&dr.target, |target| f(noisy, target))
        }),
        None => f(&[], &[]),
    }
}

/// Runs `f` on the f32 values of a contiguous CPU tensor in place (no copy).
fn with_rows<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = x.storage_and_layout();
    let values = match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(cpu), Some((start, end))) => &cpu.as_slice::<f32>()?[start..end],
        _ => {
            return Err(WorkflowError::Config(
                "the fused engine needs a contiguous f32 batch on the CPU".into(),
            ));
        }
    };
    f(values)
}
