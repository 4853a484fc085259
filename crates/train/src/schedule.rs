//! Learning-rate schedules.
//!
//! `lr_at(step)` takes the number of optimiser steps already taken (fairseq2's
//! `last_epoch`): the first update uses `lr_at(0)`.

use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// Constant `lr`, optionally after a linear warmup from `start_lr`.
    Constant {
        lr: f64,
        #[serde(default)]
        start_lr: f64,
        #[serde(default)]
        warmup_steps: u64,
    },
    /// fairseq2 `CosineAnnealingLR` with one cycle (`cycle_mul` = `lr_mul` = 1):
    /// linear warmup `start_lr → lr` over `warmup_steps`, then
    /// `final_lr + ½(lr − final_lr)(1 + cos(π·pos/cycle_len))` with
    /// `cycle_len = max_steps − warmup_steps`, so the schedule reaches
    /// `final_lr = lr · final_lr_scale` at `max_steps`. Past that, fairseq2
    /// would start a new cycle; we hold `final_lr` instead because training
    /// beyond `max_steps` is a configuration mistake, not a restart request.
    Cosine {
        lr: f64,
        #[serde(default)]
        start_lr: f64,
        warmup_steps: u64,
        max_steps: u64,
        final_lr_scale: f64,
    },
}

impl LrSchedule {
    /// Cosine schedule given an absolute `final_lr` (the LCM recipe's config style).
    pub fn cosine_with_final_lr(
        lr: f64,
        start_lr: f64,
        final_lr: f64,
        warmup_steps: u64,
        max_steps: u64,
    ) -> Result<Self> {
        if lr <= 0.0 {
            return Err(TrainError::Config(format!("lr must be > 0, got {lr}")));
        }
        let s = LrSchedule::Cosine {
            lr,
            start_lr,
            warmup_steps,
            max_steps,
            final_lr_scale: final_lr / lr,
        };
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<()> {
        match *self {
            LrSchedule::Constant { lr, start_lr, .. } => {
                if !(lr.is_finite() && start_lr.is_finite() && lr >= 0.0 && start_lr >= 0.0) {
                    return Err(TrainError::Config(format!(
                        "invalid constant schedule: lr {lr}, start_lr {start_lr}"
                    )));
                }
            }
            LrSchedule::Cosine {
                lr,
                start_lr,
                warmup_steps,
                max_steps,
                final_lr_scale,
            } => {
                if max_steps <= warmup_steps {
                    return Err(TrainError::Config(format!(
                        "cosine schedule needs max_steps ({max_steps}) > warmup_steps ({warmup_steps})"
                    )));
                }
                if !(lr.is_finite() && lr >= 0.0 && start_lr >= 0.0 && final_lr_scale >= 0.0) {
                    return Err(TrainError::Config(format!(
                        "invalid cosine schedule: lr {lr}, start_lr {start_lr}, final_lr_scale {final_lr_scale}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Peak learning rate.
    pub fn peak_lr(&self) -> f64 {
        match *self {
            LrSchedule::Constant { lr, .. } | LrSchedule::Cosine { lr, .. } => lr,
        }
    }

    pub fn lr_at(&self, step: u64) -> f64 {
        match *self {
            LrSchedule::Constant {
                lr,
                start_lr,
                warmup_steps,
            } => warmup(step, warmup_steps, start_lr, lr).unwrap_or(lr),
            LrSchedule::Cosine {
                lr,
                start_lr,
                warmup_steps,
                max_steps,
                final_lr_scale,
            } => {
                if let Some(w) = warmup(step, warmup_steps, start_lr, lr) {
                    return w;
                }
                let final_lr = lr * final_lr_scale;
                let cycle_len = max_steps.saturating_sub(warmup_steps).max(1);
                let pos = (step - warmup_steps).min(cycle_len);
                let c = (std::f64::consts::PI * pos as f64 / cycle_len as f64).cos();
                final_lr + 0.5 * (lr - final_lr) * (1.0 + c)
            }
        }
    }
}

fn warmup(step: u64, warmup_steps: u64, start_lr: f64, lr: f64) -> Option<f64> {
    (step < warmup_steps).then(|| start_lr + (lr - start_lr) * (step as f64 / warmup_steps as f64))
}
