//! The fused training engine ([`lcm_engine`]) as the LCM trainer drives it: which engine a
//! run uses, and one optimiser step of a Base-LCM or a Two-Tower LCM (loss, gradients, clipping, AdamW) computed
//! over flat buffers instead of candle's autograd graph.
//!
//! The engine reads the weights from the model's `Var`s before each step (so a checkpoint
//! loaded on resume, or any other write to the `Var`s, is seen) and AdamW writes the new
//! weights back into them: the candle model, the checkpoints and everything that loads
//! them stay as they are.

use candle_core::{Storage, Tensor};
use candle_nn::VarMap;
use lcm_engine::base_lcm::{ConceptBatch, SummedLoss};
use lcm_engine::two_tower::TwoTowerBatch;
use lcm_engine::{BaseLcmEngine, TwoTowerEngine};
use lcm_model::builder::ModelConfig;
use lcm_model::diffusion::NoiseSchedule;
use lcm_model::generate::Lcm;
use lcm_model::two_tower::{cfg_dropped_rows, standard_normal};
use lcm_train::optim::{AdamW, clip_grad_norm_flat};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{Result, WorkflowError};

/// Which code computes the training step's loss and gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The fused engine where it covers the architecture (Base-LCM and Two-Tower), candle
    /// autograd elsewhere.
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

/// A model bound to the fused engine: Base-LCM or Two-Tower.
pub enum FusedLcm {
    Base(Box<BaseLcmEngine>),
    /// The engine and the noise schedule the candle model trains with.
    TwoTower(Box<TwoTowerEngine>, NoiseSchedule),
}

impl FusedLcm {
    /// Binds the engine to the `Var`s of `net` (built from `config` over `varmap`); `None`
    /// when the engine does not cover the architecture, with the reason.
    pub fn new(
        net: &Lcm,
        config: &ModelConfig,
        varmap: &VarMap,
    ) -> Result<std::result::Result<Self, String>> {
        let bound = match (net, config) {
            (Lcm::Base(_), ModelConfig::Base(base)) => {
                BaseLcmEngine::new(base, varmap).map(|engine| FusedLcm::Base(Box::new(engine)))
            }
            (Lcm::TwoTower(_, schedule), ModelConfig::TwoTower(two_tower)) => {
                TwoTowerEngine::new(two_tower, varmap)
                    .map(|engine| FusedLcm::TwoTower(Box::new(engine), schedule.clone()))
            }
            (Lcm::OneTower(..), _) => {
                return Ok(Err("the fused engine does not cover One-Tower yet".into()));
            }
            _ => {
                return Err(WorkflowError::Config(
                    "the model and its configuration describe different architectures".into(),
                ));
            }
        };
        match bound {
            Ok(fused) => Ok(Ok(fused)),
            Err(lcm_engine::EngineError::Unsupported(why)) => Ok(Err(why)),
            Err(e) => Err(e.into()),
        }
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
        self.run(x, lengths, cfg_p, rng, false)
    }

    /// The mean loss of a batch (as [`Self::loss`]), leaving the gradient of that mean
    /// with respect to every parameter in the engine for [`Self::step`].
    pub fn loss_and_gradients<R: Rng + ?Sized>(
        &mut self,
        x: &Tensor,
        lengths: &[usize],
        cfg_p: f64,
        rng: &mut R,
    ) -> Result<f64> {
        Ok(self.run(x, lengths, cfg_p, rng, true)?.mean())
    }

    /// Clips the gradients of the last [`Self::loss_and_gradients`] to global norm `clip`
    /// and takes an AdamW step on the model's `Var`s; returns the norm before clipping.
    pub fn step(&mut self, opt: &mut AdamW, clip: f64) -> Result<f64> {
        match self {
            FusedLcm::Base(engine) => {
                let norm = clip_grad_norm_flat(engine.gradients_mut(), clip);
                let (layout, grads) = (engine.params().layout(), engine.gradients());
                opt.step_flat(|name| layout.get(grads, name))?;
                Ok(norm)
            }
            FusedLcm::TwoTower(engine, _) => {
                let norm = clip_grad_norm_flat(engine.gradients_mut(), clip);
                let engine = &**engine;
                let (layout, grads) = (engine.params().layout(), engine.gradients());
                // Parameters the model never reads get no step, as under autograd.
                opt.step_flat(|name| {
                    engine
                        .has_gradient(name)
                        .then(|| layout.get(grads, name))
                        .flatten()
                })?;
                Ok(norm)
            }
        }
    }

    fn run<R: Rng + ?Sized>(
        &mut self,
        x: &Tensor,
        lengths: &[usize],
        cfg_p: f64,
        rng: &mut R,
        with_gradients: bool,
    ) -> Result<SummedLoss> {
        match self {
            FusedLcm::Base(engine) => {
                engine.refresh()?;
                with_rows(x, |rows, (batch, time)| {
                    let batch = ConceptBatch {
                        x: rows,
                        batch,
                        time,
                        lengths,
                    };
                    Ok(if with_gradients {
                        engine.loss_and_gradients(&batch)?
                    } else {
                        engine.loss(&batch)?
                    })
                })
            }
            FusedLcm::TwoTower(engine, schedule) => {
                engine.refresh()?;
                // The same draws, in the same order, as `TwoTowerLcm::loss_sampled`, so
                // that both engines see the same noise and a resumed run continues alike.
                let (b, t, d) = x.dims3()?;
                let timesteps = schedule.sample_timesteps(b * t, rng);
                let noise = standard_normal(&[b, t, d], rng, x.dtype(), x.device())?;
                let dropped_rows = cfg_dropped_rows(t, cfg_p, rng);
                let (noisy, target) = schedule
                    .noisy_and_target(x, &noise, &timesteps)
                    .map_err(|e| WorkflowError::Config(e.to_string()))?;
                let (noisy, target) = (noisy.contiguous()?, target.contiguous()?);
                with_rows(x, |x0, (batch, time)| {
                    with_rows(&noisy, |noisy, _| {
                        with_rows(&target, |target, _| {
                            let batch = TwoTowerBatch {
                                x0,
                                noisy,
                                target,
                                timesteps: &timesteps,
                                dropped_rows: &dropped_rows,
                                batch,
                                time,
                                lengths,
                            };
                            Ok(if with_gradients {
                                engine.loss_and_gradients(&batch)?
                            } else {
                                engine.loss(&batch)?
                            })
                        })
                    })
                })
            }
        }
    }
}

/// Runs `f` on the f32 values of a contiguous `[B, T, D]` CPU tensor in place (no copy),
/// with `(B, T)`.
fn with_rows<R>(x: &Tensor, f: impl FnOnce(&[f32], (usize, usize)) -> Result<R>) -> Result<R> {
    let (batch, time, _) = x.dims3()?;
    let (storage, layout) = x.storage_and_layout();
    let values = match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(cpu), Some((start, end))) => &cpu.as_slice::<f32>()?[start..end],
        _ => {
            return Err(WorkflowError::Config(
                "the fused engine needs a contiguous f32 batch on the CPU".into(),
            ));
        }
    };
    f(values, (batch, time))
}
