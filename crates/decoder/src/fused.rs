//! The decoder trainer's fused step: the SONAR-architecture decoder on the fused engine
//! ([`lcm_engine::SonarDecoderEngine`]), data parallel over a batch's sentences
//! ([`lcm_engine::parallel`]) as the LCM trainer's `FusedLcm` is over its sequences.
//!
//! [`FusedDecoder`] keeps one engine replica per thread (its own activation arena and
//! gradient buffer, the same weights). A batch's `B` sentences are split into contiguous
//! shares; each replica runs the forward and backward pass of its share with
//! single-threaded products, and the shares' gradients are combined weighted by their
//! scored-token counts. Sentences never interact (causal self-attention within a sentence,
//! cross-attention on the sentence's own concept), and the objective is the mean over the
//! scored tokens, so with `k_s` scored tokens and a summed loss `L_s` in share `s`:
//!
//! ```text
//! ∇ (Σ_s L_s / Σ_s k_s) = Σ_s (k_s / Σ k) · ∇ (L_s / k_s)
//! ```
//!
//! which is the gradient of the whole batch's mean. The summed objective, the summed
//! unsmoothed NLL and the counts add up across shares. A share without scored tokens (only
//! possible for sentences whose targets are all padding) contributes nothing.
//!
//! The weights are read from the model's `Var`s by [`FusedDecoder::refresh`] (every
//! replica); AdamW writes the new weights back into the `Var`s, so the candle model, the
//! checkpoints and everything that loads them stay as they are.
//!
//! [`FusedDecoder::train_step`] is the trainer's whole fused step; the decoder training
//! benchmark (`examples/bench_decoder.rs`) calls the same function.

use std::time::Instant;

use candle_nn::VarMap;
use lcm_engine::base_lcm::SummedLoss;
use lcm_engine::sonar_decoder::{TokenBatch, TokenLoss};
use lcm_engine::{EngineError, FlatParams, SonarDecoderEngine, parallel};
use lcm_sonar::model::SonarDecoderConfig;
use lcm_train::AdamW;
use lcm_train::optim::clip_grad_norm_flat;
use rayon::prelude::*;

use crate::error::{DecoderError, Result};

/// The SONAR-architecture decoder bound to the fused engine, one replica per share of a
/// batch's sentences.
pub struct FusedDecoder {
    replicas: Vec<SonarDecoderEngine>,
}

/// What one [`FusedDecoder::train_step`] computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedStep {
    /// The batch's loss (summed objective and NLL over `count` scored tokens).
    pub loss: TokenLoss,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Seconds spent on the weights' refresh, the loss and the gradients (the rest of the
    /// step is clipping and AdamW).
    pub gradient_seconds: f64,
}

impl FusedDecoder {
    /// Binds [`parallel::replica_count`] replicas to the parameters a
    /// `SonarDecoder::new(config, VarBuilder over varmap)` created; refuses
    /// ([`EngineError::Unsupported`]) what the engine does not implement.
    pub fn new(config: &SonarDecoderConfig, varmap: &VarMap) -> lcm_engine::Result<Self> {
        Self::with_replicas(config, varmap, parallel::replica_count())
    }

    /// As [`Self::new`] with `replicas` engine replicas (at least one): a batch is split
    /// into that many shares of sentences (fewer when it has fewer sentences), run in
    /// parallel where threads allow.
    pub fn with_replicas(
        config: &SonarDecoderConfig,
        varmap: &VarMap,
        replicas: usize,
    ) -> lcm_engine::Result<Self> {
        let replicas = (0..replicas.max(1))
            .map(|_| SonarDecoderEngine::new(config, varmap))
            .collect::<lcm_engine::Result<Vec<_>>>()?;
        Ok(Self { replicas })
    }

    /// How many replicas share a batch.
    pub fn replicas(&self) -> usize {
        self.replicas.len()
    }

    /// The bound parameters (layout, Vars and the flat copy) of the first replica.
    pub fn params(&self) -> &FlatParams {
        self.replicas[0].params()
    }

    /// Re-reads the `Var`s into every replica's flat copy; call after every optimiser
    /// step (or any other write to the `Var`s) before the next loss.
    pub fn refresh(&mut self) -> Result<()> {
        self.replicas
            .par_iter_mut()
            .try_for_each(SonarDecoderEngine::refresh)
            .map_err(engine_error)
    }

    /// The loss of `batch` (validation); leaves the gradients untouched.
    pub fn loss(&mut self, batch: &TokenBatch<'_>) -> Result<TokenLoss> {
        self.run(batch, false)
    }

    /// The loss of `batch` and the gradient of its mean (per scored token) with respect to
    /// every parameter, left in [`Self::gradients`].
    pub fn loss_and_gradients(&mut self, batch: &TokenBatch<'_>) -> Result<TokenLoss> {
        self.run(batch, true)
    }

    /// The gradient of the last [`Self::loss_and_gradients`] (or, after
    /// [`Self::train_step`], the clipped one), in the layout of [`Self::params`].
    pub fn gradients(&self) -> &[f32] {
        self.replicas[0].gradients()
    }

    /// The gradient of parameter `name`, `None` for parameters the loss never reads (what
    /// `AdamW::step_flat` expects).
    pub fn gradient(&self, name: &str) -> Option<&[f32]> {
        self.replicas[0].gradient(name)
    }

    /// One optimiser step of the decoder trainer: refresh the weights, the loss and
    /// gradients of `batch`, refuse a non-finite loss (`step` numbers it in the error),
    /// clip to global norm `clip`, AdamW on the model's `Var`s (parameters without
    /// gradient get no step, as under autograd).
    pub fn train_step(
        &mut self,
        opt: &mut AdamW,
        batch: &TokenBatch<'_>,
        clip: f64,
        step: u64,
    ) -> Result<FusedStep> {
        let t0 = Instant::now();
        self.refresh()?;
        let loss = self.loss_and_gradients(batch)?;
        if !loss.mean().is_finite() {
            return Err(DecoderError::Training(format!(
                "non-finite loss {} at step {step}; lower --lr",
                loss.mean()
            )));
        }
        let gradient_seconds = t0.elapsed().as_secs_f64();
        let first = &mut self.replicas[0];
        let grad_norm = clip_grad_norm_flat(first.gradients_mut(), clip);
        let first = &*first;
        opt.step_flat(|name| first.gradient(name))?;
        Ok(FusedStep {
            loss,
            grad_norm,
            gradient_seconds,
        })
    }

    fn run(&mut self, batch: &TokenBatch<'_>, with_gradients: bool) -> Result<TokenLoss> {
        let d = self.replicas[0].config().model_dim;
        let (b, t) = (batch.batch, batch.time);
        if b == 0 || t == 0 {
            return Err(engine_error(EngineError::Shape(format!(
                "an empty batch [B={b}, T={t}]"
            ))));
        }
        if batch.conditioning.len() != b * d
            || batch.prev_ids.len() != b * t
            || batch.target_ids.len() != b * t
        {
            return Err(engine_error(EngineError::Shape(format!(
                "{} conditioning floats, {} input and {} target ids for [B={b}, T={t}, d={d}]",
                batch.conditioning.len(),
                batch.prev_ids.len(),
                batch.target_ids.len()
            ))));
        }
        let results = parallel::on_replicas(&mut self.replicas, b, |_, sentences, engine| {
            let share = TokenBatch {
                conditioning: &batch.conditioning[sentences.start * d..sentences.end * d],
                prev_ids: &batch.prev_ids[sentences.start * t..sentences.end * t],
                target_ids: &batch.target_ids[sentences.start * t..sentences.end * t],
                batch: sentences.len(),
                ..*batch
            };
            if share.target_ids.iter().all(|&g| g == batch.pad) {
                // Nothing scored: no loss and a zero gradient (its weight is 0 too).
                if with_gradients {
                    engine.gradients_mut().fill(0.0);
                }
                return Ok(TokenLoss {
                    sum: 0.0,
                    nll_sum: 0.0,
                    count: 0,
                });
            }
            if with_gradients {
                engine.loss_and_gradients(&share)
            } else {
                engine.loss(&share)
            }
        });
        let parts = results
            .into_iter()
            .collect::<lcm_engine::Result<Vec<TokenLoss>>>()
            .map_err(engine_error)?;
        let total = parts.iter().fold(
            TokenLoss {
                sum: 0.0,
                nll_sum: 0.0,
                count: 0,
            },
            |acc, p| TokenLoss {
                sum: acc.sum + p.sum,
                nll_sum: acc.nll_sum + p.nll_sum,
                count: acc.count + p.count,
            },
        );
        if total.count == 0 {
            return Err(engine_error(EngineError::Shape(
                "a batch without target tokens".into(),
            )));
        }
        if with_gradients {
            // Each share's gradient is that of its own mean: weigh it by its token count.
            let weights: Vec<SummedLoss> = parts
                .iter()
                .map(|p| SummedLoss {
                    sum: p.sum,
                    count: p.count as f64,
                })
                .collect();
            let mut grads: Vec<&mut [f32]> = self.replicas[..parts.len()]
                .iter_mut()
                .map(SonarDecoderEngine::gradients_mut)
                .collect();
            parallel::combine_gradients(&mut grads, &weights);
        }
        Ok(total)
    }
}

pub(crate) fn engine_error(e: EngineError) -> DecoderError {
    DecoderError::Training(format!("fused engine: {e}"))
}
