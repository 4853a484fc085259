//! Next-concept prediction with any LCM variant, in the two forms the rest of the system
//! needs:
//!
//! - **teacher-forced** ([`Lcm::predict_teacher_forced`]): every position of a batch of
//!   documents predicted from its gold prefix in one pass (diffusion models run their whole
//!   DDIM loop on all positions at once, since each position only attends to its prefix) —
//!   the paper's pre-training evaluation;
//! - **incremental** ([`Lcm::extend`] / [`Lcm::next_concept`]): a KV-cached prefix that
//!   grows one concept at a time — generation.
//!
//! Everything here lives in the normalised concept space; callers normalise inputs and
//! denormalise outputs.

use candle_core::{D, DType, Result, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::base_lcm::BaseLcm;
use crate::blocks::{AttentionMask, DecoderCache};
use crate::diffusion::{DdimSampler, NoiseSchedule, SamplingOptions, TimestepSpacing};
use crate::one_tower::{OneTowerLcm, OneTowerState};
use crate::two_tower::{ContextState, TwoTowerLcm, cross_attention_mask, standard_normal};

/// How a diffusion LCM turns noise into a concept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiffusionSampling {
    /// DDIM inference steps `S`.
    pub steps: usize,
    pub spacing: TimestepSpacing,
    pub options: SamplingOptions,
}

impl Default for DiffusionSampling {
    /// The paper's decoding settings for the Two-Tower model: 40 DDIM steps with the
    /// reference's trailing spacing, guidance 3.0 with rescale 0.7, initial noise scale
    /// 0.6, epsilon scaling 1.00045.
    fn default() -> Self {
        Self {
            steps: 40,
            spacing: TimestepSpacing::TrailingLcm,
            options: SamplingOptions::paper_two_tower_1_6b(),
        }
    }
}

impl DiffusionSampling {
    fn sampler(&self, schedule: &NoiseSchedule) -> Result<DdimSampler> {
        DdimSampler::new(schedule.clone(), self.steps, self.spacing).map_err(diffusion_err)
    }

    /// Classifier-free guidance changes nothing at scale 1 without rescale, so the
    /// unconditional branch is skipped then.
    pub fn guided(&self) -> bool {
        self.options.guidance_scale != 1.0 || self.options.guidance_rescale != 0.0
    }
}

fn diffusion_err(e: crate::diffusion::DiffusionError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// A trained LCM of any variant, ready for inference.
#[derive(Debug, Clone)]
pub enum Lcm {
    Base(BaseLcm),
    TwoTower(TwoTowerLcm, NoiseSchedule),
    OneTower(OneTowerLcm, NoiseSchedule),
}

/// The growing prefix of one generation batch.
#[derive(Debug, Clone)]
pub enum LcmState {
    /// KV cache and the prediction made after the last fed concept (`[B, 1, D]`).
    Base {
        cache: DecoderCache,
        next: Option<Tensor>,
    },
    TwoTower(ContextState),
    OneTower(OneTowerState),
}

impl LcmState {
    /// Concepts fed so far.
    pub fn len(&self) -> usize {
        match self {
            LcmState::Base { cache, .. } => cache.seq_len(),
            LcmState::TwoTower(s) => s.cache.seq_len(),
            LcmState::OneTower(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Lcm {
    /// `base`, `two-tower` or `one-tower`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Lcm::Base(_) => "base",
            Lcm::TwoTower(..) => "two-tower",
            Lcm::OneTower(..) => "one-tower",
        }
    }

    pub fn is_diffusion(&self) -> bool {
        !matches!(self, Lcm::Base(_))
    }

    /// Concept dimension `D`.
    pub fn input_dim(&self) -> usize {
        match self {
            Lcm::Base(m) => m.config.input_dim,
            Lcm::TwoTower(m, _) => m.config.input_dim,
            Lcm::OneTower(m, _) => m.config.input_dim,
        }
    }

    /// Longest prefix (in concepts) the model can condition on.
    pub fn max_seq_len(&self) -> usize {
        match self {
            Lcm::Base(m) => m.config.decoder.max_seq_len,
            Lcm::TwoTower(m, _) => m.config.max_seq_len,
            // The next noisy token takes a position of its own.
            Lcm::OneTower(m, _) => m.config.max_seq_len.saturating_sub(1),
        }
    }

    /// Teacher-forced predictions. `x: [B, T, D]` normalised documents (right padding is
    /// harmless: no position attends to a later one) → `[B, T − 1, D]`, row `n` predicting
    /// `x[:, n + 1]` from `x[:, ..=n]`. Diffusion models draw their initial noise from
    /// `rng`.
    pub fn predict_teacher_forced<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        sampling: &DiffusionSampling,
        rng: &mut R,
    ) -> Result<Tensor> {
        let randn = standard_normal(x.dims(), rng, x.dtype(), x.device())?;
        self.predict_teacher_forced_from_noise(x, sampling, &randn)
    }

    /// [`Self::predict_teacher_forced`] with the standard-normal initial noise supplied,
    /// `randn: [B, T, D]` (row `n` is the noise of position `n`; row 0 is unused).
    pub fn predict_teacher_forced_from_noise(
        &self,
        x: &Tensor,
        sampling: &DiffusionSampling,
        randn: &Tensor,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        if randn.dims() != x.dims() {
            candle_core::bail!("noise {:?} for documents {:?}", randn.dims(), x.dims());
        }
        if t < 2 {
            candle_core::bail!("teacher forcing needs at least 2 positions, got {t}");
        }
        match self {
            Lcm::Base(m) => m.forward(&x.narrow(1, 0, t - 1)?, None),
            Lcm::TwoTower(m, schedule) => {
                // Queries 0..T denoise every position; query n sees [0, c_0..c_{n−1}].
                let context = m.encode(x, None)?;
                let keys = m.keys(Some(&context), b, x)?;
                let mask = AttentionMask::Additive(cross_attention_mask(
                    t,
                    t + 1,
                    &[],
                    x.dtype(),
                    x.device(),
                )?);
                let zero_keys = m.keys(None, b, x)?;
                let out = denoise(schedule, sampling, randn, |z, step| {
                    let cond = m.denoiser.forward(z, &[step], &keys, &mask)?;
                    let uncond = sampling
                        .guided()
                        .then(|| {
                            m.denoiser
                                .forward(z, &[step], &zero_keys, &AttentionMask::None)
                        })
                        .transpose()?;
                    Ok((cond, uncond))
                })?;
                out.narrow(1, 1, t - 1)
            }
            Lcm::OneTower(m, schedule) => {
                let out = denoise(schedule, sampling, randn, |z, step| {
                    let cond = m.forward(x, z, &[step], &[])?;
                    let uncond = sampling
                        .guided()
                        .then(|| m.predict_unconditional_all(z, step))
                        .transpose()?;
                    Ok((cond, uncond))
                })?;
                out.narrow(1, 1, t - 1)
            }
        }
    }

    /// An empty prefix.
    pub fn new_state(&self) -> LcmState {
        match self {
            Lcm::Base(m) => LcmState::Base {
                cache: m.new_cache(),
                next: None,
            },
            Lcm::TwoTower(m, _) => LcmState::TwoTower(m.new_context_state()),
            Lcm::OneTower(m, _) => LcmState::OneTower(m.new_state()),
        }
    }

    /// Appends normalised concepts `x: [B, T_new, D]` to the prefix (KV-cached).
    pub fn extend(&self, state: &mut LcmState, x: &Tensor) -> Result<()> {
        let new_len = state.len() + x.dim(1)?;
        if new_len > self.max_seq_len() {
            candle_core::bail!(
                "a prefix of {new_len} concepts exceeds the model's context of {}",
                self.max_seq_len()
            );
        }
        match (self, state) {
            (Lcm::Base(m), LcmState::Base { cache, next }) => {
                let out = m.forward(x, Some(cache))?;
                let last = out.dim(1)? - 1;
                *next = Some(out.narrow(1, last, 1)?);
            }
            (Lcm::TwoTower(m, _), LcmState::TwoTower(s)) => m.extend_context(x, s)?,
            (Lcm::OneTower(m, _), LcmState::OneTower(s)) => m.extend_context(x, s)?,
            _ => candle_core::bail!("generation state of another model variant"),
        }
        Ok(())
    }

    /// The next concept after the prefix in `state`, `[B, 1, D]` (normalised). Diffusion
    /// models sample it with `sampling`, drawing the initial noise from `rng`; Base-LCM is
    /// deterministic and needs a non-empty prefix.
    pub fn next_concept<R: Rng + ?Sized>(
        &self,
        state: &LcmState,
        sampling: &DiffusionSampling,
        batch: usize,
        rng: &mut R,
    ) -> Result<Tensor> {
        let shape = [batch, 1, self.input_dim()];
        let randn = standard_normal(&shape, rng, DType::F32, &candle_core::Device::Cpu)?;
        self.next_concept_from_noise(state, sampling, &randn)
    }

    /// [`Self::next_concept`] with the standard-normal initial noise supplied, `randn:
    /// [B, 1, D]` (ignored by Base-LCM).
    pub fn next_concept_from_noise(
        &self,
        state: &LcmState,
        sampling: &DiffusionSampling,
        randn: &Tensor,
    ) -> Result<Tensor> {
        let batch = randn.dim(0)?;
        match (self, state) {
            (Lcm::Base(_), LcmState::Base { next, .. }) => next.clone().ok_or_else(|| {
                candle_core::Error::Msg("Base-LCM needs at least one prompt concept".into())
            }),
            (Lcm::TwoTower(m, schedule), LcmState::TwoTower(s)) => {
                let keys = m.keys(s.context.as_ref(), batch, randn)?;
                let guided = sampling.guided() && s.context.is_some();
                // Keys that are all equal attend to exactly one value, so zero keys of the
                // conditional branch's length are the unconditional branch: both run as
                // one batch of 2B.
                let keys = if guided {
                    Tensor::cat(&[&keys, &keys.zeros_like()?], 0)?
                } else {
                    keys
                };
                denoise(schedule, sampling, randn, |z, step| {
                    if !guided {
                        let out = m
                            .denoiser
                            .forward(z, &[step], &keys, &AttentionMask::None)?;
                        return Ok((out, None));
                    }
                    let both = m.denoiser.forward(
                        &Tensor::cat(&[z, z], 0)?,
                        &[step],
                        &keys,
                        &AttentionMask::None,
                    )?;
                    Ok((
                        both.narrow(0, 0, batch)?,
                        Some(both.narrow(0, batch, batch)?),
                    ))
                })
            }
            (Lcm::OneTower(m, schedule), LcmState::OneTower(s)) => {
                let guided = sampling.guided() && !s.is_empty();
                denoise(schedule, sampling, randn, |z, step| {
                    if guided {
                        let (c, u) = m.predict_cfg_cached(z, step, s)?;
                        Ok((c, Some(u)))
                    } else {
                        Ok((m.predict_cached(z, step, s)?, None))
                    }
                })
            }
            _ => candle_core::bail!("generation state of another model variant"),
        }
    }
}

/// The DDIM loop shared by both diffusion variants, from standard-normal `randn`:
/// `model(latents, t)` returns the conditional output and, when guided, the unconditional
/// one. Returns the predicted x0 of the last step. Public so that another implementation
/// of the model call (the fused engine's denoiser) runs exactly this loop.
pub fn denoise<F>(
    schedule: &NoiseSchedule,
    sampling: &DiffusionSampling,
    randn: &Tensor,
    mut model: F,
) -> Result<Tensor>
where
    F: FnMut(&Tensor, usize) -> Result<(Tensor, Option<Tensor>)>,
{
    let sampler = sampling.sampler(schedule)?;
    let latents = sampler
        .initial_latents(randn, &sampling.options)
        .map_err(diffusion_err)?;
    if sampling.guided() {
        sampler
            .denoise_guided(latents, &sampling.options, |z, t| {
                let (cond, uncond) = model(z, t)?;
                // Without an unconditional branch (empty prefix) cond guides against
                // itself, which leaves it unchanged.
                let uncond = uncond.unwrap_or_else(|| cond.clone());
                Ok((cond, uncond))
            })
            .map_err(diffusion_err)
    } else {
        sampler
            .denoise(latents, &sampling.options, |z, t| Ok(model(z, t)?.0))
            .map_err(diffusion_err)
    }
}

/// Cosine similarity of each row of `a: [N, D]` with the row vector `b: [D]` → `N` values.
pub fn row_cosines(a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?.reshape((1, ()))?;
    let dot = a.broadcast_mul(&b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    let denom = na.broadcast_mul(&nb)?.clamp(1e-12, f64::MAX)?;
    (dot / denom)?.to_vec1::<f32>()
}
