//! The fused training engine ([`lcm_engine`]) as the LCM trainer drives it: which engine a
//! run uses, and one Base-LCM optimiser step (loss, gradients, clipping, AdamW) computed
//! over flat buffers instead of candle's autograd graph.
//!
//! The engine reads the weights from the model's `Var`s before each step (so a checkpoint
//! loaded on resume, or any other write to the `Var`s, is seen) and AdamW writes the new
//! weights back into them: the candle model, the checkpoints and everything that loads
//! them stay as they are.

use candle_core::{Storage, Tensor};
use candle_nn::VarMap;
use lcm_engine::BaseLcmEngine;
use lcm_engine::base_lcm::{ConceptBatch, SummedLoss};
use lcm_model::base_lcm::BaseLcmConfig;
use lcm_train::optim::{AdamW, clip_grad_norm_flat};
use serde::{Deserialize, Serialize};

use crate::{Result, WorkflowError};

/// Which code computes the training step's loss and gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The fused engine where it covers the architecture (Base-LCM today), candle
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

/// A Base-LCM bound to the fused engine.
pub struct FusedBaseLcm {
    engine: BaseLcmEngine,
}

impl FusedBaseLcm {
    /// Binds the engine to the `Var`s of the Base-LCM built from `config` over `varmap`.
    pub fn new(config: &BaseLcmConfig, varmap: &VarMap) -> Result<Self> {
        Ok(Self {
            engine: BaseLcmEngine::new(config, varmap)?,
        })
    }

    /// The summed loss of a `[B, T, D]` batch with real `lengths` (validation).
    pub fn loss(&mut self, x: &Tensor, lengths: &[usize]) -> Result<SummedLoss> {
        self.engine.refresh()?;
        let engine = &mut self.engine;
        with_rows(x, |rows, (batch, time)| {
            Ok(engine.loss(&ConceptBatch {
                x: rows,
                batch,
                time,
                lengths,
            })?)
        })
    }

    /// The mean loss of a `[B, T, D]` batch with real `lengths`, leaving the gradient of
    /// that mean with respect to every parameter in the engine for [`Self::step`].
    pub fn loss_and_gradients(&mut self, x: &Tensor, lengths: &[usize]) -> Result<f64> {
        self.engine.refresh()?;
        let engine = &mut self.engine;
        let loss = with_rows(x, |rows, (batch, time)| {
            Ok(engine.loss_and_gradients(&ConceptBatch {
                x: rows,
                batch,
                time,
                lengths,
            })?)
        })?;
        Ok(loss.mean())
    }

    /// Clips the gradients of the last [`Self::loss_and_gradients`] to global norm `clip`
    /// and takes an AdamW step on the model's `Var`s; returns the norm before clipping.
    pub fn step(&mut self, opt: &mut AdamW, clip: f64) -> Result<f64> {
        let grad_norm = clip_grad_norm_flat(self.engine.gradients_mut(), clip);
        let layout = self.engine.params().layout();
        let grads = self.engine.gradients();
        opt.step_flat(|name| layout.get(grads, name))?;
        Ok(grad_norm)
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
