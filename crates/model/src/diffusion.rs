//! Variance-preserving noise schedules, DDIM sampling and classifier-free guidance.
//!
//! A port of the DDIM scheduler used by the LCM reference (itself a fork of HF diffusers'
//! `DDIMScheduler`), checked against diffusers in `tests/diffusion.rs`. The schedule is kept
//! in `f64`: the step formulas divide by `sqrt(1 - alpha_bar)`, which is ~1e-2 near `t = 0`,
//! so `f32` schedule values would cost several digits in the predicted noise.
//!
//! Where the reference and diffusers disagree, both behaviours are available and the
//! difference is documented on the item (see [`TimestepSpacing`] and [`BetaSchedule::Sigmoid`]).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// Errors from building a schedule or stepping a sampler.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    #[error("invalid diffusion configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, DiffusionError>;

/// How betas are laid out over the `T` training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BetaSchedule {
    #[default]
    /// Nichol & Dhariwal's cosine schedule, `alpha_bar(t) = cos²((t + 0.008)/1.008 · π/2)`,
    /// betas capped at 0.999 (diffusers' `squaredcos_cap_v2`).
    SquaredCosCapV2,
    /// Betas linearly spaced from `beta_start` to `beta_end`.
    Linear { beta_start: f64, beta_end: f64 },
    /// `linspace(beta_start^(1/e), beta_end^(1/e))^e`; diffusers fixes `e = 2`, the reference
    /// exposes it as `scaled_linear_exponent`.
    ScaledLinear {
        beta_start: f64,
        beta_end: f64,
        exponent: f64,
    },
    /// The LCM paper's sigmoid schedule, `alpha_bar(t) = σ(gamma − delta · logit(t))`, betas
    /// capped at 0.999. `delta` is the reference's `sigmoid_schedule_alpha` (default 1.5) and
    /// `gamma` its `sigmoid_schedule_beta` (default 0). The reference evaluates `t` and the
    /// logit's ratio `t / (1 − t)` in float32; that rounding is reproduced so the betas
    /// match it (in f64 the late betas would move by up to ~2e-5, above our 1e-6 parity
    /// tolerance).
    Sigmoid { delta: f64, gamma: f64 },
}

/// What the denoiser predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The clean sample x0 (diffusers' `"sample"`); the LCM default.
    #[default]
    #[serde(alias = "sample")]
    X0,
    /// The added noise ε.
    Epsilon,
    /// `v = sqrt(ᾱ) ε − sqrt(1 − ᾱ) x0`.
    VPrediction,
}

/// Training-time schedule configuration; defaults are the LCM reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NoiseScheduleConfig {
    pub num_train_timesteps: usize,
    pub beta_schedule: BetaSchedule,
    /// Zero-terminal-SNR rescaling (Lin et al. 2023, Algorithm 1). On in the reference,
    /// off in diffusers.
    pub rescale_betas_zero_snr: bool,
    pub prediction_type: PredictionType,
    /// Clamp the predicted x0 to `[-r, r]` in [`DdimSampler::step`].
    pub clip_sample: Option<f64>,
    /// The last DDIM step targets `alpha_bar = 1` (true) or `alpha_bar[0]` (false).
    pub set_alpha_to_one: bool,
}

impl Default for NoiseScheduleConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::SquaredCosCapV2,
            rescale_betas_zero_snr: true,
            prediction_type: PredictionType::X0,
            clip_sample: None,
            set_alpha_to_one: true,
        }
    }
}

const MAX_BETA: f64 = 0.999;

/// Precomputed VP schedule: `x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε`.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    config: NoiseScheduleConfig,
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
}

/// torch.linspace's evaluation order (forward from `start` for the first half, backward from
/// `end` for the second), so the endpoints are exact.
fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                start + step * i as f64
            } else {
                end - step * (n - 1 - i) as f64
            }
        })
        .collect()
}

fn betas_for_alpha_bar(n: usize, alpha_bar: impl Fn(f64) -> f64) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(MAX_BETA)
        })
        .collect()
}

fn sigmoid_alpha_bar(t: f64, delta: f64, gamma: f64) -> f64 {
    // The reference clamps to [1e-32, 1 - 1e-32]; the upper bound is 1.0 in any float, so
    // t = 1 gives logit = +inf and alpha_bar = 0 (the last beta then hits the 0.999 cap).
    let x = (t as f32).clamp(1e-32, 1.0);
    let logit = f64::from(x / (1.0 - x)).ln();
    let z = gamma - delta * logit;
    1.0 / (1.0 + (-z).exp())
}

fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    let mut sqrt_ab: Vec<f64> = betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc.sqrt()
        })
        .collect();
    let first = sqrt_ab[0];
    let last = sqrt_ab[sqrt_ab.len() - 1];
    let scale = first / (first - last);
    for v in &mut sqrt_ab {
        *v = (*v - last) * scale;
    }
    let ab: Vec<f64> = sqrt_ab.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(1.0 - ab[0]);
    out.extend(ab.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// Timesteps for `t` given either one per batch row or a single one for all rows.
fn check_rows(t: &[usize], x: &Tensor) -> Result<()> {
    let rows = x.dims().first().copied().unwrap_or(1);
    if t.len() != 1 && t.len() != rows {
        return Err(DiffusionError::Config(format!(
            "{} timesteps for a batch of {rows} rows",
            t.len()
        )));
    }
    Ok(())
}

/// `x * c`, with `c` a scalar or one coefficient per leading row.
fn scale_rows(x: &Tensor, c: &[f64]) -> Result<Tensor> {
    if let [c] = c {
        return Ok(x.affine(*c, 0.0)?);
    }
    let mut shape = vec![1usize; x.rank()];
    shape[0] = c.len();
    let c = Tensor::from_vec(c.to_vec(), shape, x.device())?.to_dtype(x.dtype())?;
    Ok(x.broadcast_mul(&c)?)
}

impl NoiseSchedule {
    pub fn new(config: NoiseScheduleConfig) -> Result<Self> {
        let n = config.num_train_timesteps;
        if n < 2 {
            return Err(DiffusionError::Config(format!(
                "num_train_timesteps must be at least 2, got {n}"
            )));
        }
        let mut betas = match config.beta_schedule {
            BetaSchedule::SquaredCosCapV2 => betas_for_alpha_bar(n, |t| {
                ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                    .cos()
                    .powi(2)
            }),
            BetaSchedule::Linear {
                beta_start,
                beta_end,
            } => linspace(beta_start, beta_end, n),
            BetaSchedule::ScaledLinear {
                beta_start,
                beta_end,
                exponent,
            } => linspace(
                beta_start.powf(exponent.recip()),
                beta_end.powf(exponent.recip()),
                n,
            )
            .into_iter()
            .map(|b| b.powf(exponent))
            .collect(),
            BetaSchedule::Sigmoid { delta, gamma } => {
                betas_for_alpha_bar(n, |t| sigmoid_alpha_bar(t, delta, gamma))
            }
        };
        if let Some(bad) = betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
            return Err(DiffusionError::Config(format!(
                "beta {bad} outside [0, 1) for {:?}",
                config.beta_schedule
            )));
        }
        if config.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let mut acc = 1.0;
        let alphas_cumprod: Vec<f64> = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            config,
            betas,
            alphas_cumprod,
            final_alpha_cumprod,
        })
    }

    pub fn config(&self) -> &NoiseScheduleConfig {
        &self.config
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.config.num_train_timesteps
    }

    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `ᾱ` used for the step after the last training timestep (`prev_t < 0`).
    pub fn final_alpha_cumprod(&self) -> f64 {
        self.final_alpha_cumprod
    }

    /// Signal-to-noise ratio `ᾱ_t / (1 − ᾱ_t)`; infinite nowhere, zero at `T − 1` with
    /// zero-terminal-SNR rescaling.
    pub fn snr(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t];
        a / (1.0 - a)
    }

    /// Min-SNR loss scales `clamp(snr(t), min_gamma, max_gamma)`, normalised to sum to the
    /// number of timesteps so the loss keeps the scale it has without weighting (as the
    /// reference's `clamp_snr` weighting does).
    pub fn clamped_snr_loss_scales(&self, t: &[usize], min_gamma: f64, max_gamma: f64) -> Vec<f64> {
        let g: Vec<f64> = t
            .iter()
            .map(|&t| self.snr(t).clamp(min_gamma, max_gamma))
            .collect();
        let sum: f64 = g.iter().sum();
        g.iter().map(|v| v / sum * t.len() as f64).collect()
    }

    /// Uniform training timesteps in `[0, T)`.
    pub fn sample_timesteps<R: rand::Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<usize> {
        (0..n)
            .map(|_| rng.random_range(0..self.config.num_train_timesteps))
            .collect()
    }

    fn coefs(&self, t: &[usize]) -> Result<(Vec<f64>, Vec<f64>)> {
        t.iter()
            .map(|&t| {
                let a = *self.alphas_cumprod.get(t).ok_or_else(|| {
                    DiffusionError::Config(format!(
                        "timestep {t} out of range for {} training steps",
                        self.alphas_cumprod.len()
                    ))
                })?;
                Ok((a.sqrt(), (1.0 - a).sqrt()))
            })
            .collect::<Result<Vec<_>>>()
            .map(|v| v.into_iter().unzip())
    }

    /// Forward process `sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε`. `t` holds one timestep per row of
    /// the leading dimension, or a single one for all rows.
    pub fn add_noise(&self, x0: &Tensor, eps: &Tensor, t: &[usize]) -> Result<Tensor> {
        check_rows(t, x0)?;
        let (sa, sb) = self.coefs(t)?;
        Ok((scale_rows(x0, &sa)? + scale_rows(eps, &sb)?)?)
    }

    /// Velocity target `sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0`.
    pub fn get_velocity(&self, x0: &Tensor, eps: &Tensor, t: &[usize]) -> Result<Tensor> {
        check_rows(t, x0)?;
        let (sa, sb) = self.coefs(t)?;
        Ok((scale_rows(eps, &sa)? - scale_rows(x0, &sb)?)?)
    }

    /// Training pair for per-position diffusion over `[B, T, D]` sequences: the noisy input
    /// `x_t` and the regression target the schedule's prediction type asks for (x0, ε or v).
    /// `t` holds one timestep per position, row-major (`B·T` values).
    pub fn noisy_and_target(
        &self,
        x0: &Tensor,
        eps: &Tensor,
        t: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let (b, n, d) = x0.dims3()?;
        let flat_x0 = x0.reshape((b * n, d))?;
        let flat_eps = eps.reshape((b * n, d))?;
        let noisy = self.add_noise(&flat_x0, &flat_eps, t)?.reshape((b, n, d))?;
        let target = match self.config.prediction_type {
            PredictionType::X0 => x0.clone(),
            PredictionType::Epsilon => eps.clone(),
            PredictionType::VPrediction => self
                .get_velocity(&flat_x0, &flat_eps, t)?
                .reshape((b, n, d))?,
        };
        Ok((noisy, target))
    }

    /// `(x0, ε)` implied by a model output of type `kind` at noisy `sample`.
    ///
    /// For `X0` at a zero-SNR timestep, or `Epsilon` at one (`ᾱ_t = 0`), one of the two is a
    /// division by zero; the reference avoids that case rather than guarding it.
    pub fn split_prediction(
        &self,
        output: &Tensor,
        kind: PredictionType,
        sample: &Tensor,
        t: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        check_rows(t, sample)?;
        let (sa, sb) = self.coefs(t)?;
        let inv = |v: &[f64]| v.iter().map(|c| c.recip()).collect::<Vec<_>>();
        Ok(match kind {
            PredictionType::Epsilon => {
                let x0 = scale_rows(&(sample - scale_rows(output, &sb)?)?, &inv(&sa))?;
                (x0, output.clone())
            }
            PredictionType::X0 => {
                let eps = scale_rows(&(sample - scale_rows(output, &sa)?)?, &inv(&sb))?;
                (output.clone(), eps)
            }
            PredictionType::VPrediction => {
                let x0 = (scale_rows(sample, &sa)? - scale_rows(output, &sb)?)?;
                let eps = (scale_rows(output, &sa)? + scale_rows(sample, &sb)?)?;
                (x0, eps)
            }
        })
    }

    /// Re-expresses a model output of type `from` as type `to`.
    pub fn convert(
        &self,
        output: &Tensor,
        from: PredictionType,
        to: PredictionType,
        sample: &Tensor,
        t: &[usize],
    ) -> Result<Tensor> {
        if from == to {
            return Ok(output.clone());
        }
        let (x0, eps) = self.split_prediction(output, from, sample, t)?;
        Ok(match to {
            PredictionType::X0 => x0,
            PredictionType::Epsilon => eps,
            PredictionType::VPrediction => self.get_velocity(&x0, &eps, t)?,
        })
    }
}

/// How inference timesteps are picked from `0..T` (Table 2 of Lin et al. 2023).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// diffusers: `round(arange(T, 0, −T/S)) − 1`. diffusers' arange can yield `S + 1`
    /// values (e.g. `T = 1000, S = 61`), the extra one being timestep −1, which numpy then
    /// reads as the *last* `ᾱ`; we drop negative timesteps instead.
    Trailing,
    /// diffusers: `arange(S) · (T // S)`, reversed.
    Leading,
    /// diffusers: `round(linspace(0, T − 1, S))` (ties to even), reversed.
    Linspace,
    /// The LCM reference's trailing (its default): torch's integer `arange` truncates the
    /// step to `T // S`, so the timesteps are `T − 1 − k·(T // S)` for
    /// `k < ceil(T / (T / S))`. This can differ from diffusers by several steps (S = 7:
    /// 999, 857, … vs 999, 856, …) and sometimes has `S + 1` entries (S = 61); it does line
    /// up with the `prev_t = t − T // S` used by the step.
    #[default]
    TrailingLcm,
    /// The LCM reference's linspace: torch's integer `linspace` truncates instead of
    /// rounding (S = 7: 499 where diffusers has 500).
    LinspaceLcm,
}

/// Computes the inference timesteps, descending.
pub fn inference_timesteps(
    num_train_timesteps: usize,
    num_inference_steps: usize,
    spacing: TimestepSpacing,
) -> Result<Vec<usize>> {
    let (t_max, s) = (num_train_timesteps, num_inference_steps);
    if s == 0 || s > t_max {
        return Err(DiffusionError::Config(format!(
            "num_inference_steps must be in 1..={t_max}, got {s}"
        )));
    }
    let tf = t_max as f64;
    // numpy/torch arange length for a float step.
    let arange_len = || (tf / (tf / s as f64)).ceil() as usize;
    let ts: Vec<usize> = match spacing {
        TimestepSpacing::Trailing => {
            let ratio = tf / s as f64;
            (0..arange_len())
                .map(|i| (tf - i as f64 * ratio).round_ties_even() as i64 - 1)
                .filter(|&t| t >= 0)
                .map(|t| t as usize)
                .collect()
        }
        TimestepSpacing::Leading => {
            let ratio = t_max / s;
            (0..s).rev().map(|i| i * ratio).collect()
        }
        TimestepSpacing::Linspace => {
            let step = if s == 1 {
                0.0
            } else {
                (tf - 1.0) / (s - 1) as f64
            };
            let mut v: Vec<usize> = (0..s)
                .map(|i| {
                    if i == s - 1 && s > 1 {
                        t_max - 1
                    } else {
                        (i as f64 * step).round_ties_even() as usize
                    }
                })
                .collect();
            v.reverse();
            v
        }
        TimestepSpacing::TrailingLcm => {
            let step = t_max / s;
            (0..arange_len()).map(|k| t_max - 1 - k * step).collect()
        }
        TimestepSpacing::LinspaceLcm => {
            let mut v: Vec<usize> = linspace(0.0, tf - 1.0, s)
                .into_iter()
                .map(|x| x.trunc() as usize)
                .collect();
            v.reverse();
            v
        }
    };
    Ok(ts)
}

/// Per-step knobs of [`DdimSampler::step`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StepOptions<'a> {
    /// 0 is deterministic DDIM, 1 is DDPM-like.
    pub eta: f64,
    /// The reference's epsilon scaling (Ning et al. 2023): the ε implied by the model output
    /// is divided by this factor after x0 has been derived, so it only shrinks the
    /// "direction pointing to x_t"; x0 is unaffected.
    pub epsilon_scaling: Option<f64>,
    /// Interpret the model output as this type instead of the schedule's (the guided loop
    /// steps with guided ε).
    pub prediction_type: Option<PredictionType>,
    /// Standard-normal noise for `eta > 0`; drawn with candle's RNG when absent.
    pub variance_noise: Option<&'a Tensor>,
}

/// Result of one DDIM step.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub prev_sample: Tensor,
    pub pred_original_sample: Tensor,
}

/// Options of a full denoising loop; defaults are the reference generator's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingOptions {
    pub eta: f64,
    pub epsilon_scaling: Option<f64>,
    /// Multiplies the initial standard-normal latents (`init_noise_sigma` in the reference).
    pub initial_noise_scale: f64,
    /// Latents are clamped to `[-clip_noise, clip_noise]` initially and after every step.
    pub clip_noise: f64,
    pub guidance_scale: f64,
    pub guidance_rescale: f64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            eta: 0.0,
            epsilon_scaling: None,
            initial_noise_scale: 1.0,
            clip_noise: 100.0,
            guidance_scale: 1.0,
            guidance_rescale: 0.0,
        }
    }
}

impl SamplingOptions {
    /// The paper's decoding settings for the 1.6B Two-Tower model.
    pub fn paper_two_tower_1_6b() -> Self {
        Self {
            eta: 0.0,
            epsilon_scaling: Some(1.00045),
            initial_noise_scale: 0.6,
            clip_noise: 100.0,
            guidance_scale: 3.0,
            guidance_rescale: 0.7,
        }
    }
}

/// DDIM sampler over a [`NoiseSchedule`] with a fixed set of inference timesteps.
#[derive(Debug, Clone)]
pub struct DdimSampler {
    schedule: NoiseSchedule,
    num_inference_steps: usize,
    timesteps: Vec<usize>,
}

impl DdimSampler {
    pub fn new(
        schedule: NoiseSchedule,
        num_inference_steps: usize,
        spacing: TimestepSpacing,
    ) -> Result<Self> {
        let timesteps =
            inference_timesteps(schedule.num_train_timesteps(), num_inference_steps, spacing)?;
        Ok(Self {
            schedule,
            num_inference_steps,
            timesteps,
        })
    }

    pub fn set_timesteps(
        &mut self,
        num_inference_steps: usize,
        spacing: TimestepSpacing,
    ) -> Result<()> {
        self.timesteps = inference_timesteps(
            self.schedule.num_train_timesteps(),
            num_inference_steps,
            spacing,
        )?;
        self.num_inference_steps = num_inference_steps;
        Ok(())
    }

    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    pub fn num_inference_steps(&self) -> usize {
        self.num_inference_steps
    }

    /// The step's target timestep. Like diffusers and the reference this is always
    /// `t − T // S`, whatever the spacing, so with diffusers' rounded trailing/linspace
    /// timesteps it need not be the next timestep of the loop.
    pub fn prev_timestep(&self, t: usize) -> i64 {
        t as i64 - (self.schedule.num_train_timesteps() / self.num_inference_steps) as i64
    }

    /// `σ_t² = (1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev)` (DDIM eq. 16 before `η`).
    pub fn variance(&self, t: usize) -> f64 {
        let (a, a_prev) = self.alphas(t);
        (1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev)
    }

    fn alphas(&self, t: usize) -> (f64, f64) {
        let prev = self.prev_timestep(t);
        let a_prev = if prev >= 0 {
            self.schedule.alphas_cumprod[prev as usize]
        } else {
            self.schedule.final_alpha_cumprod
        };
        (self.schedule.alphas_cumprod[t], a_prev)
    }

    /// One DDIM update `x_t → x_{prev_t}` (DDIM eq. 12), returning the new sample and the
    /// predicted x0 (after clipping, if configured).
    pub fn step(
        &self,
        model_output: &Tensor,
        t: usize,
        sample: &Tensor,
        opts: StepOptions<'_>,
    ) -> Result<StepOutput> {
        if t >= self.schedule.num_train_timesteps() {
            return Err(DiffusionError::Config(format!(
                "timestep {t} out of range for {} training steps",
                self.schedule.num_train_timesteps()
            )));
        }
        let kind = opts
            .prediction_type
            .unwrap_or(self.schedule.config.prediction_type);
        let (mut x0, mut eps) = self
            .schedule
            .split_prediction(model_output, kind, sample, &[t])?;
        if let Some(s) = opts.epsilon_scaling {
            eps = eps.affine(s.recip(), 0.0)?;
        }
        if let Some(r) = self.schedule.config.clip_sample {
            x0 = x0.clamp(-r, r)?;
        }
        let (_, a_prev) = self.alphas(t);
        let std_dev = opts.eta * self.variance(t).sqrt();
        // Rounding can push the radicand a hair below zero when eta = 1.
        let dir = (1.0 - a_prev - std_dev * std_dev).max(0.0).sqrt();
        let mut prev = (x0.affine(a_prev.sqrt(), 0.0)? + eps.affine(dir, 0.0)?)?;
        if opts.eta > 0.0 {
            let noise = match opts.variance_noise {
                Some(n) => n.clone(),
                None => model_output.randn_like(0.0, 1.0)?,
            };
            prev = (prev + noise.affine(std_dev, 0.0)?)?;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    /// Scales standard-normal `randn` into initial latents: `clamp(randn · scale, ±clip)`.
    pub fn initial_latents(&self, randn: &Tensor, opts: &SamplingOptions) -> Result<Tensor> {
        Ok(randn
            .affine(opts.initial_noise_scale, 0.0)?
            .clamp(-opts.clip_noise, opts.clip_noise)?)
    }

    /// Unguided loop: `model(latents, t)` returns an output of the schedule's prediction
    /// type. Returns the last step's predicted x0 (the reference outputs x0, not the final
    /// sample).
    pub fn denoise<F>(
        &self,
        latents: Tensor,
        opts: &SamplingOptions,
        mut model: F,
    ) -> Result<Tensor>
    where
        F: FnMut(&Tensor, usize) -> Result<Tensor>,
    {
        let mut latents = latents;
        let mut x0 = None;
        for &t in &self.timesteps {
            let out = model(&latents, t)?;
            let step = self.step(&out, t, &latents, self.loop_step_options(opts, None))?;
            latents = step.prev_sample.clamp(-opts.clip_noise, opts.clip_noise)?;
            x0 = Some(step.pred_original_sample);
        }
        x0.ok_or_else(|| DiffusionError::Config("no inference timesteps".into()))
    }

    /// Classifier-free-guided loop as in the reference: `model(latents, t)` returns
    /// `(cond, uncond)` outputs of the schedule's prediction type. Both are turned into ε,
    /// combined with [`guide`], and stepped as ε — except at `t = T − 1`
    /// (see [`guidance_applies`]), where the conditional output is stepped as is.
    pub fn denoise_guided<F>(
        &self,
        latents: Tensor,
        opts: &SamplingOptions,
        mut model: F,
    ) -> Result<Tensor>
    where
        F: FnMut(&Tensor, usize) -> Result<(Tensor, Tensor)>,
    {
        let big_t = self.schedule.num_train_timesteps();
        let kind = self.schedule.config.prediction_type;
        let mut latents = latents;
        let mut x0 = None;
        for &t in &self.timesteps {
            let (cond, uncond) = model(&latents, t)?;
            let step = if guidance_applies(t, big_t) {
                let to_eps = |o: &Tensor| {
                    self.schedule
                        .convert(o, kind, PredictionType::Epsilon, &latents, &[t])
                };
                let eps = guide(
                    &to_eps(&cond)?,
                    &to_eps(&uncond)?,
                    opts.guidance_scale,
                    opts.guidance_rescale,
                )?;
                let so = self.loop_step_options(opts, Some(PredictionType::Epsilon));
                self.step(&eps, t, &latents, so)?
            } else {
                self.step(&cond, t, &latents, self.loop_step_options(opts, None))?
            };
            latents = step.prev_sample.clamp(-opts.clip_noise, opts.clip_noise)?;
            x0 = Some(step.pred_original_sample);
        }
        x0.ok_or_else(|| DiffusionError::Config("no inference timesteps".into()))
    }

    fn loop_step_options(
        &self,
        opts: &SamplingOptions,
        prediction_type: Option<PredictionType>,
    ) -> StepOptions<'static> {
        StepOptions {
            eta: opts.eta,
            epsilon_scaling: opts.epsilon_scaling,
            prediction_type,
            variance_noise: None,
        }
    }
}

/// Whether the guided loop combines cond/uncond at `t`. At `t = T − 1` a zero-terminal-SNR
/// schedule has `ᾱ = 0`, where ε carries no information about x0 and x0 cannot be recovered
/// from ε, so the reference steps with the conditional prediction alone there.
pub fn guidance_applies(t: usize, num_train_timesteps: usize) -> bool {
    t + 1 != num_train_timesteps
}

/// Classifier-free guidance with rescale (Lin et al. 2023, Algorithm 2):
/// `g = uncond + scale·(cond − uncond)`, then `g · (r·std(cond)/std(g) + 1 − r)`, the
/// standard deviations taken per row over the last (feature) dimension, as the reference
/// does. With `rescale = 0` the factor is skipped entirely rather than computed as 1, so a
/// constant row (std 0) does not turn into NaN.
pub fn guide(cond: &Tensor, uncond: &Tensor, scale: f64, rescale: f64) -> Result<Tensor> {
    let guided = (uncond + (cond - uncond)?.affine(scale, 0.0)?)?;
    if rescale == 0.0 {
        return Ok(guided);
    }
    let factor = (row_std(cond)? / row_std(&guided)?)?.affine(rescale, 1.0 - rescale)?;
    Ok(guided.broadcast_mul(&factor)?)
}

/// Unbiased standard deviation over the last dimension (torch's `std(dim=-1)`), kept as a
/// size-1 dimension.
fn row_std(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    let work = if x.dtype() == DType::F64 {
        x.clone()
    } else {
        x.to_dtype(DType::F32)?
    };
    let mean = work.mean_keepdim(candle_core::D::Minus1)?;
    let centered = work.broadcast_sub(&mean)?;
    let var = centered
        .sqr()?
        .sum_keepdim(candle_core::D::Minus1)?
        .affine(1.0 / (d as f64 - 1.0).max(1.0), 0.0)?;
    Ok(var.sqrt()?.to_dtype(x.dtype())?)
}
