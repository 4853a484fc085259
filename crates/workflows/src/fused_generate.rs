//! Next-concept generation with the Two-Tower denoiser on the fused engine.
//!
//! [`Generator`] runs exactly `lcm_model::generate`'s DDIM / guidance loop
//! (`lcm_model::generate::denoise`) with `lcm_engine::TwoTowerDenoiser` as the model call:
//! the conditional rows and the unconditional ones (the zero key alone) go through the
//! denoiser together in one call per DDIM step, and the cross-attention keys and values of
//! the prefix are projected once per generated concept. The contextualizer (one KV-cached
//! step per concept) stays on candle. Other variants, and Two-Tower models the engine
//! refuses, use `Lcm::next_concept` unchanged.

use candle_core::{DType, Device, Tensor};
use lcm_engine::TwoTowerDenoiser;
use lcm_model::generate::{DiffusionSampling, Lcm, LcmState, denoise};
use lcm_model::two_tower::standard_normal;
use rand::Rng;

use crate::Result;

/// Samples next concepts for one loaded model, on the fused engine where it covers it.
pub struct Generator<'m> {
    model: &'m Lcm,
    fused: Option<TwoTowerDenoiser>,
}

impl<'m> Generator<'m> {
    /// The fused denoiser for a Two-Tower model (candle, with a warning, if the engine
    /// refuses it), candle for the other variants.
    pub fn new(model: &'m Lcm) -> Self {
        let fused = match model {
            Lcm::TwoTower(m, _) => match TwoTowerDenoiser::from_model(m) {
                Ok(den) => Some(den),
                Err(e) => {
                    tracing::warn!("generating on candle: {e}");
                    None
                }
            },
            _ => None,
        };
        Self { model, fused }
    }

    /// Always candle (`Lcm::next_concept`): the reference the fused path is tested against.
    pub fn candle(model: &'m Lcm) -> Self {
        Self { model, fused: None }
    }

    /// Whether the denoiser runs on the fused engine.
    pub fn is_fused(&self) -> bool {
        self.fused.is_some()
    }

    /// `Lcm::next_concept` on this generator's path: the next concept after the prefix in
    /// `state`, `[batch, 1, D]` (normalised), the initial noise drawn from `rng` exactly as
    /// `Lcm::next_concept` draws it (the same seed gives the same noise on both paths).
    pub fn next_concept<R: Rng + ?Sized>(
        &mut self,
        state: &LcmState,
        sampling: &DiffusionSampling,
        batch: usize,
        rng: &mut R,
    ) -> Result<Tensor> {
        let shape = [batch, 1, self.model.input_dim()];
        let randn = standard_normal(&shape, rng, DType::F32, &Device::Cpu)?;
        self.next_concept_from_noise(state, sampling, &randn)
    }

    /// `Lcm::next_concept_from_noise` on this generator's path, `randn: [B, 1, D]`.
    pub fn next_concept_from_noise(
        &mut self,
        state: &LcmState,
        sampling: &DiffusionSampling,
        randn: &Tensor,
    ) -> Result<Tensor> {
        let (Lcm::TwoTower(_, schedule), LcmState::TwoTower(s), Some(den)) =
            (self.model, state, self.fused.as_mut())
        else {
            return Ok(self.model.next_concept_from_noise(state, sampling, randn)?);
        };
        let (batch, one, dd) = randn.dims3()?;
        if one != 1 {
            return Err(candle_core::Error::Msg(format!(
                "the initial noise of one next concept per row is [B, 1, D], got {:?}",
                randn.dims()
            ))
            .into());
        }
        // [B, N, d] → one [N·d] slice per row.
        let (context, per_row) = match &s.context {
            Some(c) => {
                let (b, n, d) = c.dims3()?;
                if b != batch {
                    return Err(candle_core::Error::Msg(format!(
                        "a prefix of {b} rows for noise of {batch}"
                    ))
                    .into());
                }
                (
                    c.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
                    n * d,
                )
            }
            None => (Vec::new(), 0),
        };
        let guided = sampling.guided() && s.context.is_some();
        let mut rows: Vec<Option<&[f32]>> = (0..batch)
            .map(|r| {
                s.context
                    .as_ref()
                    .map(|_| &context[r * per_row..][..per_row])
            })
            .collect();
        if guided {
            // The unconditional branch: the zero key alone.
            rows.extend(std::iter::repeat_n(None, batch));
        }
        den.set_context(&rows)?;
        let total = rows.len();
        let mut noisy = Vec::with_capacity(total * dd);
        let mut out = vec![0f32; total * dd];
        let device = randn.device().clone();
        let x0 = denoise(schedule, sampling, randn, |z, step| {
            let z = z.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            noisy.clear();
            noisy.extend_from_slice(&z);
            if guided {
                noisy.extend_from_slice(&z);
            }
            den.denoise(&noisy, step, &mut out)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let cond = Tensor::from_slice(&out[..batch * dd], (batch, 1, dd), &device)?;
            let uncond = guided
                .then(|| Tensor::from_slice(&out[batch * dd..], (batch, 1, dd), &device))
                .transpose()?;
            Ok((cond, uncond))
        })?;
        Ok(x0)
    }
}
