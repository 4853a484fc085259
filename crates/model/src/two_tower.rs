//! Two-Tower diffusion LCM (paper §2.3.3; reference `lcm/models/two_tower_diffusion_lcm`,
//! `lcm/nn/denoisers`).
//!
//! - **Contextualizer**: `frontend.pre_linear` (Linear D→d, bias) + a causal pre-RMSNorm
//!   decoder with RoPE and its own final RMSNorm, run on the *clean* normalised concepts.
//! - **Denoiser**: `initial_proj` (Linear D→d, bias) on the noisy latent; a DiT timestep
//!   embedding; `n_denoiser_layers` layers of `[identity self-attn → cross-attn → SwiGLU]`,
//!   each sub-block pre-RMSNorm'd and AdaLN-modulated; final RMSNorm; `final_proj`
//!   (Linear d→D, bias).
//!
//! Reference details followed here (checked against the source):
//! - Timestep embedding (`DiTTimestepEncoder`): 256 frequencies `f_i = exp(−ln(10⁴)·i/128)`,
//!   `i = 0..128`, embedding `[cos(t·f), sin(t·f)]` (cos first — diffusers'
//!   `flip_sin_to_cos=True` — and `downscale_freq_shift = 0`), then `Linear(256, d)` → SiLU →
//!   `Linear(d, d)`, both with bias. Its width must equal `d`.
//! - AdaLN (`AdaLNModulator`): `Linear(d, 9d)` with bias applied to `SiLU(t_emb)` — the
//!   timestep embedding only, no pooled context — zero-initialised (weight and bias). Its
//!   output is `[self-attn | cross-attn | ffn]`, each `[shift | scale | gate]`. A sub-block is
//!   `x + gate ⊙ F(RMSNorm(x) ⊙ (1 + scale) + shift)`. There is **no** final AdaLN
//!   modulation: the last step is a plain RMSNorm then `final_proj`.
//! - Cross-attention keys are `[0-vector, c_1, …, c_N]` (zeros prepended in model space,
//!   after the contextualizer) under the shifted-causal mask; at inference the reference
//!   passes no mask (the single query sees every key).
//! - CFG training (`_get_shifted_causal_mask(zero_vector=True)`): exactly
//!   `floor((T − 1)·p)` query rows, drawn uniformly without replacement from `1..T`, lose all
//!   keys but the zero vector. Row 0 is never drawn (it sees only the zero vector anyway).
//!   The draw is shared by every sequence of the batch, as in the reference.
//! - Training noises every position with its own uniform timestep; the loss sums squared
//!   errors over channels per concept, over all non-padded positions (position 0 included,
//!   conditioned on the zero vector alone).

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder, linear_b};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::base_lcm::SummedLoss;
use crate::blocks::{
    AttentionMask, DecoderCache, DecoderConfig, MASK_NEG, MultiHeadAttention, RmsNorm,
    RotaryEmbedding, SwiGlu, TransformerDecoder, swiglu_inner_dim,
};
use crate::diffusion::NoiseSchedule;

/// Hyper-parameters of a Two-Tower LCM. Both towers share the width `d_model`, the head
/// count and the FFN width, as in every reference config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwoTowerConfig {
    /// Sentence-embedding width `D`.
    pub input_dim: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_context_layers: usize,
    pub n_denoiser_layers: usize,
    /// SwiGLU inner width (reference: `round_up(int(8d/3), 256)`).
    pub ffn_inner_dim: usize,
    /// Biases on attention, FFN and the D↔d projections (true in the reference). The
    /// timestep MLP and AdaLN modulators always have biases.
    pub bias: bool,
    pub rope_theta: f64,
    pub max_seq_len: usize,
    pub rms_eps: f64,
    /// Sinusoid width fed to the timestep MLP (256 in the reference).
    pub timestep_freq_dim: usize,
}

impl TwoTowerConfig {
    /// Reference defaults around the given sizes.
    pub fn new(
        input_dim: usize,
        d_model: usize,
        n_heads: usize,
        n_context_layers: usize,
        n_denoiser_layers: usize,
    ) -> Self {
        Self {
            input_dim,
            d_model,
            n_heads,
            n_context_layers,
            n_denoiser_layers,
            ffn_inner_dim: swiglu_inner_dim(d_model, 256),
            bias: true,
            rope_theta: RotaryEmbedding::DEFAULT_THETA,
            max_seq_len: 4096,
            rms_eps: 1e-5,
            timestep_freq_dim: 256,
        }
    }

    /// The contextualizer's trunk.
    pub fn contextualizer_config(&self) -> DecoderConfig {
        DecoderConfig {
            d_model: self.d_model,
            n_heads: self.n_heads,
            n_layers: self.n_context_layers,
            ffn_inner_dim: self.ffn_inner_dim,
            rope_theta: self.rope_theta,
            bias: self.bias,
            max_seq_len: self.max_seq_len,
            rms_eps: self.rms_eps,
        }
    }

    fn proj_params(&self, inp: usize, out: usize) -> usize {
        inp * out + if self.bias { out } else { 0 }
    }

    /// Parameters of one denoiser layer.
    pub fn denoiser_layer_parameters(&self) -> usize {
        let d = self.d_model;
        2 * MultiHeadAttention::num_parameters(d, self.bias)
            + SwiGlu::num_parameters(d, self.ffn_inner_dim, self.bias)
            + 3 * RmsNorm::num_parameters(d)
            + (d * 9 * d + 9 * d)
    }

    /// Parameters of the contextualizer tower (frontend + trunk).
    pub fn contextualizer_parameters(&self) -> usize {
        self.proj_params(self.input_dim, self.d_model)
            + self.contextualizer_config().num_parameters()
    }

    /// Parameters of the denoiser tower.
    pub fn denoiser_parameters(&self) -> usize {
        let d = self.d_model;
        let time = (self.timestep_freq_dim * d + d) + (d * d + d);
        time + self.proj_params(self.input_dim, d)
            + self.n_denoiser_layers * self.denoiser_layer_parameters()
            + RmsNorm::num_parameters(d)
            + self.proj_params(d, self.input_dim)
    }

    /// Analytic parameter count; equals the number of scalars [`TwoTowerLcm::new`] creates.
    pub fn num_parameters(&self) -> usize {
        self.contextualizer_parameters() + self.denoiser_parameters()
    }
}

/// DiT sinusoidal timestep features `[N, dim]`: `[cos(t·f_i), sin(t·f_i)]` with
/// `f_i = exp(−ln(10⁴)·i/half)`, `half = dim/2`, and a zero column appended for odd `dim`.
pub fn timestep_sinusoid(t: &[usize], dim: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let max_period: f64 = 10_000.0;
    let mut data = Vec::with_capacity(t.len() * dim);
    for &step in t {
        // The reference computes in f32; timesteps are small integers, so f64 here only
        // removes rounding noise.
        let freqs = (0..half).map(|i| (-(max_period.ln()) * i as f64 / half as f64).exp());
        let args: Vec<f64> = freqs.map(|f| step as f64 * f).collect();
        data.extend(args.iter().map(|a| a.cos()));
        data.extend(args.iter().map(|a| a.sin()));
        if dim % 2 == 1 {
            data.push(0.0);
        }
    }
    Tensor::from_vec(data, (t.len(), dim), device)?.to_dtype(dtype)
}

/// DiT `TimestepEmbedder`: sinusoid → Linear → SiLU → Linear.
#[derive(Debug, Clone)]
pub struct TimestepEmbedder {
    pub fc1: Linear,
    pub fc2: Linear,
    pub freq_dim: usize,
}

impl TimestepEmbedder {
    pub fn new(freq_dim: usize, d_model: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear_b(freq_dim, d_model, true, vb.pp("fc1"))?,
            fc2: linear_b(d_model, d_model, true, vb.pp("fc2"))?,
            freq_dim,
        })
    }

    /// `t: [N]` integer timesteps → `[N, d]`.
    pub fn forward(&self, t: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let s = timestep_sinusoid(t, self.freq_dim, dtype, device)?;
        self.fc2.forward(&self.fc1.forward(&s)?.silu()?)
    }
}

/// `[B, T, 9d]` modulation → the `(shift, scale, gate)` triple of sub-block `k` (0 = self-
/// attention, 1 = cross-attention, 2 = FFN).
fn modulation(m: &Tensor, k: usize, d: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let base = 3 * k * d;
    Ok((
        m.narrow(D::Minus1, base, d)?,
        m.narrow(D::Minus1, base + d, d)?,
        m.narrow(D::Minus1, base + 2 * d, d)?,
    ))
}

/// `x + gate ⊙ f(norm(x) ⊙ (1 + scale) + shift)`.
fn modulated<F>(
    x: &Tensor,
    norm: &RmsNorm,
    (shift, scale, gate): (Tensor, Tensor, Tensor),
    f: F,
) -> Result<Tensor>
where
    F: FnOnce(&Tensor) -> Result<Tensor>,
{
    let h = norm.forward(x)?;
    let h = ((&h * (scale + 1.0)?)? + shift)?;
    x + (gate * f(&h)?)?
}

/// One denoiser layer; parameter names follow the reference's `LCMDenoiserLayer`.
#[derive(Debug, Clone)]
pub struct DenoiserLayer {
    pub self_attn_norm: RmsNorm,
    pub self_attn: MultiHeadAttention,
    pub cross_attn_norm: RmsNorm,
    pub cross_attn: MultiHeadAttention,
    pub ffn_norm: RmsNorm,
    pub ffn: SwiGlu,
    /// `Linear(d, 9d)`, zero-initialised.
    pub modulator: Linear,
    pub d_model: usize,
}

impl DenoiserLayer {
    pub fn new(cfg: &TwoTowerConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let mvb = vb.pp("modulator").pp("fc");
        let w = mvb.get_with_hints((9 * d, d), "weight", Init::Const(0.0))?;
        let b = mvb.get_with_hints(9 * d, "bias", Init::Const(0.0))?;
        Ok(Self {
            self_attn_norm: RmsNorm::new(d, cfg.rms_eps, vb.pp("self_attn_layer_norm"))?,
            self_attn: MultiHeadAttention::new(d, cfg.n_heads, cfg.bias, vb.pp("self_attn"))?,
            cross_attn_norm: RmsNorm::new(d, cfg.rms_eps, vb.pp("cross_attention_layer_norm"))?,
            cross_attn: MultiHeadAttention::new(
                d,
                cfg.n_heads,
                cfg.bias,
                vb.pp("cross_attention"),
            )?,
            ffn_norm: RmsNorm::new(d, cfg.rms_eps, vb.pp("ffn_layer_norm"))?,
            ffn: SwiGlu::new(d, cfg.ffn_inner_dim, cfg.bias, vb.pp("ffn"))?,
            modulator: Linear::new(w, Some(b)),
            d_model: d,
        })
    }

    /// `x: [B, T, d]`, `t_emb: [B, T, d]`, `keys: [B, Tk, d]` → `[B, T, d]`.
    pub fn forward(
        &self,
        x: &Tensor,
        t_emb: &Tensor,
        keys: &Tensor,
        cross_mask: &AttentionMask,
    ) -> Result<Tensor> {
        let d = self.d_model;
        // [B, T, 9d]
        let m = self.modulator.forward(&t_emb.silu()?)?;
        let x = modulated(x, &self.self_attn_norm, modulation(&m, 0, d)?, |h| {
            self.self_attn
                .forward(h, h, &AttentionMask::Identity, None, None)
        })?;
        let x = modulated(&x, &self.cross_attn_norm, modulation(&m, 1, d)?, |h| {
            self.cross_attn.forward(h, keys, cross_mask, None, None)
        })?;
        modulated(&x, &self.ffn_norm, modulation(&m, 2, d)?, |h| {
            self.ffn.forward(h)
        })
    }
}

/// The denoiser tower.
#[derive(Debug, Clone)]
pub struct Denoiser {
    pub initial_proj: Linear,
    pub embed_time: TimestepEmbedder,
    pub layers: Vec<DenoiserLayer>,
    pub final_norm: RmsNorm,
    pub final_proj: Linear,
}

impl Denoiser {
    pub fn new(cfg: &TwoTowerConfig, vb: VarBuilder) -> Result<Self> {
        let (dd, d) = (cfg.input_dim, cfg.d_model);
        Ok(Self {
            initial_proj: linear_b(dd, d, cfg.bias, vb.pp("initial_proj").pp("fc"))?,
            embed_time: TimestepEmbedder::new(cfg.timestep_freq_dim, d, vb.pp("embed_time"))?,
            layers: (0..cfg.n_denoiser_layers)
                .map(|i| DenoiserLayer::new(cfg, vb.pp(format!("layers.{i}"))))
                .collect::<Result<Vec<_>>>()?,
            final_norm: RmsNorm::new(d, cfg.rms_eps, vb.pp("layer_norm"))?,
            final_proj: linear_b(d, dd, cfg.bias, vb.pp("final_proj").pp("fc"))?,
        })
    }

    /// `noisy: [B, T, D]`, `t`: `B·T` timesteps (row-major) or one for all, `keys:
    /// [B, Tk, d]` (zero vector first) → `[B, T, D]` model output.
    pub fn forward(
        &self,
        noisy: &Tensor,
        t: &[usize],
        keys: &Tensor,
        cross_mask: &AttentionMask,
    ) -> Result<Tensor> {
        let (b, tl, _) = noisy.dims3()?;
        let d = self.final_norm.weight.dim(0)?;
        let t_emb = if t.len() == 1 {
            self.embed_time
                .forward(t, noisy.dtype(), noisy.device())?
                .reshape((1, 1, d))?
                .broadcast_as((b, tl, d))?
                .contiguous()?
        } else if t.len() == b * tl {
            self.embed_time
                .forward(t, noisy.dtype(), noisy.device())?
                .reshape((b, tl, d))?
        } else {
            candle_core::bail!("{} timesteps for a [{b}, {tl}] batch", t.len());
        };
        let mut h = self.initial_proj.forward(noisy)?;
        for layer in &self.layers {
            h = layer.forward(&h, &t_emb, keys, cross_mask)?;
        }
        self.final_proj.forward(&self.final_norm.forward(&h)?)
    }
}

/// Query rows whose context is dropped for classifier-free-guidance training: exactly
/// `floor((t − 1)·p)` distinct rows drawn uniformly from `1..t` (never row 0).
pub fn cfg_dropped_rows<R: Rng + ?Sized>(t: usize, p: f64, rng: &mut R) -> Vec<usize> {
    if t < 2 || p <= 0.0 {
        return Vec::new();
    }
    let n = (((t - 1) as f64) * p).floor() as usize;
    let n = n.min(t - 1);
    let mut rows: Vec<usize> = rand::seq::index::sample(rng, t - 1, n)
        .into_iter()
        .map(|i| i + 1)
        .collect();
    rows.sort_unstable();
    rows
}

/// Training cross-attention mask `[tq, tk]` (additive): query `i` sees keys `0..=i`
/// (zero vector and `c_1..c_i`), except rows in `dropped`, which see key 0 only.
pub fn cross_attention_mask(
    tq: usize,
    tk: usize,
    dropped: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let mut data = Vec::with_capacity(tq * tk);
    for i in 0..tq {
        let limit = if dropped.contains(&i) { 0 } else { i };
        data.extend((0..tk).map(|j| if j <= limit { 0.0 } else { MASK_NEG }));
    }
    Tensor::from_vec(data, (tq, tk), device)?.to_dtype(dtype)
}

/// Incremental contextualizer state for generation.
#[derive(Debug, Clone)]
pub struct ContextState {
    pub cache: DecoderCache,
    /// Contextualized concepts so far, `[B, N, d]`; `None` before the first one.
    pub context: Option<Tensor>,
}

/// The Two-Tower LCM; parameter names follow the reference (`encoder_frontend`,
/// `context_encoder`, `denoiser`).
#[derive(Debug, Clone)]
pub struct TwoTowerLcm {
    pub frontend: Linear,
    pub contextualizer: TransformerDecoder,
    pub denoiser: Denoiser,
    pub config: TwoTowerConfig,
}

impl TwoTowerLcm {
    pub fn new(cfg: &TwoTowerConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            frontend: linear_b(
                cfg.input_dim,
                cfg.d_model,
                cfg.bias,
                vb.pp("encoder_frontend").pp("pre_linear"),
            )?,
            contextualizer: TransformerDecoder::new(
                &cfg.contextualizer_config(),
                vb.pp("context_encoder"),
            )?,
            denoiser: Denoiser::new(cfg, vb.pp("denoiser"))?,
            config: cfg.clone(),
        })
    }

    /// Contextualizes clean normalised concepts `x: [B, T, D]` → `[B, T, d]`; with a cache,
    /// `x` holds only new positions.
    pub fn encode(&self, x: &Tensor, cache: Option<&mut DecoderCache>) -> Result<Tensor> {
        self.contextualizer
            .forward(&self.frontend.forward(x)?, cache)
    }

    /// Cross-attention keys `[B, N + 1, d]`: a zero vector followed by `context`
    /// (`[B, N, d]`), or the zero vector alone for `None` (unconditional).
    pub fn keys(&self, context: Option<&Tensor>, batch: usize, like: &Tensor) -> Result<Tensor> {
        let zero = Tensor::zeros((batch, 1, self.config.d_model), like.dtype(), like.device())?;
        match context {
            Some(c) => Tensor::cat(&[&zero, c], 1),
            None => Ok(zero),
        }
    }

    /// Training objective with externally supplied randomness. `x0: [B, T, D]` clean
    /// normalised concepts; `mask: [B, T]` 1 = real, 0 = right padding (`None`: none);
    /// `timesteps`: `B·T` per-position timesteps (row-major); `noise: [B, T, D]`;
    /// `dropped_rows`: CFG-dropped query rows (see [`cfg_dropped_rows`]). The target
    /// follows the schedule's prediction type (x0 in the reference). Returns the summed
    /// per-concept squared error over real positions and their count.
    pub fn loss(
        &self,
        x0: &Tensor,
        mask: Option<&Tensor>,
        schedule: &NoiseSchedule,
        timesteps: &[usize],
        noise: &Tensor,
        dropped_rows: &[usize],
    ) -> Result<SummedLoss> {
        let (b, t, _) = x0.dims3()?;
        if timesteps.len() != b * t {
            candle_core::bail!("{} timesteps for a [{b}, {t}] batch", timesteps.len());
        }
        let context = self.encode(x0, None)?;
        let keys = self.keys(Some(&context), b, x0)?;
        let (noisy, target) = schedule
            .noisy_and_target(x0, noise, timesteps)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let cmask = cross_attention_mask(t, t + 1, dropped_rows, x0.dtype(), x0.device())?;
        let out =
            self.denoiser
                .forward(&noisy, timesteps, &keys, &AttentionMask::Additive(cmask))?;
        SummedLoss::masked_squared_error(&out, &target, mask)
    }

    /// [`Self::loss`] with randomness drawn from `rng`: uniform timesteps, standard-normal
    /// noise, and CFG row dropout with probability `cfg_p` (0.15 in the paper).
    pub fn loss_sampled<R: Rng + ?Sized>(
        &self,
        x0: &Tensor,
        mask: Option<&Tensor>,
        schedule: &NoiseSchedule,
        cfg_p: f64,
        rng: &mut R,
    ) -> Result<SummedLoss> {
        let (b, t, dd) = x0.dims3()?;
        let timesteps = schedule.sample_timesteps(b * t, rng);
        let noise = standard_normal(&[b, t, dd], rng, x0.dtype(), x0.device())?;
        let dropped = cfg_dropped_rows(t, cfg_p, rng);
        self.loss(x0, mask, schedule, &timesteps, &noise, &dropped)
    }

    /// An empty contextualizer state for generation.
    pub fn new_context_state(&self) -> ContextState {
        ContextState {
            cache: DecoderCache::new(self.config.n_context_layers),
            context: None,
        }
    }

    /// Feeds new clean concepts `x: [B, T_new, D]` to the contextualizer (KV-cached) and
    /// appends their encodings to `state.context`.
    pub fn extend_context(&self, x: &Tensor, state: &mut ContextState) -> Result<()> {
        let new = self.encode(x, Some(&mut state.cache))?;
        state.context = Some(match state.context.take() {
            Some(c) => Tensor::cat(&[&c, &new], 1)?,
            None => new,
        });
        Ok(())
    }

    /// Denoiser output for the next position: `noisy: [B, 1, D]` at timestep `t`, attending
    /// to `[0, context…]` without a mask (as the reference does at inference). `context:
    /// [B, N, d]` from [`Self::encode`]/[`ContextState::context`]; `None` is the
    /// unconditional branch of classifier-free guidance (zero vector only — identical to a
    /// context of zeros, whose keys are all equal). The output has the training
    /// prediction type: x0 for the reference configs. Feed it to `DdimSampler`.
    pub fn predict(&self, noisy: &Tensor, t: usize, context: Option<&Tensor>) -> Result<Tensor> {
        let (b, tl, _) = noisy.dims3()?;
        if tl != 1 {
            candle_core::bail!("predict denoises one position at a time, got {tl}");
        }
        let keys = self.keys(context, b, noisy)?;
        self.denoiser
            .forward(noisy, &[t], &keys, &AttentionMask::None)
    }
}

/// Standard-normal tensor from `rng` (Box–Muller, both halves of each pair; see
/// [`lcm_util::random::standard_normals`]), for seeded training noise.
pub fn standard_normal<R: Rng + ?Sized>(
    shape: &[usize],
    rng: &mut R,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data = lcm_util::random::standard_normals(rng, n);
    Tensor::from_vec(data, shape, device)?.to_dtype(dtype)
}
