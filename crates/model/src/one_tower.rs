//! One-Tower diffusion LCM (paper §2.3.3, Fig. 8; not in the reference code release).
//!
//! Paper: "The One-Tower Diffusion LCM is composed of a single transformer backbone whose
//! task is to predict the clean next sentence embedding x⁰ₙ given a noisy input xᵗₙ,
//! conditioned on previous clean sentence embeddings x<ₙ. During training, self-attention
//! can be dropped with a certain probability for unconditional training. […] Each input
//! embedding is concatenated with the corresponding diffusion timestep embedding. The learned
//! position embeddings are added to the input vectors prior to being fed to LCM. The backbone
//! utilizes a causal multi-head self-attention. […] The input is specially prepared by
//! interleaving the noisy and clean sentence embeddings, and the attention mask is prepared
//! accordingly to only attend to the clean sentences."
//!
//! Design choices here:
//! - **Sequence**: for a document `x_0..x_{T−1}` (0-based, normalised) the trunk sees `2T`
//!   tokens interleaved as `[x̃_0, x_0, x̃_1, x_1, …]`: index `2n` is the noisy `x̃_n` (its own
//!   timestep `t_n`), index `2n + 1` the clean `x_n`. The visibility rule is a subset of the
//!   causal mask in this order, so a clean prefix can be KV-cached at inference.
//! - **Mask** ([`one_tower_mask`]): clean `x_n` sees clean `x_{≤n}`; noisy `x̃_n` sees clean
//!   `x_{<n}` and itself — never another noisy token, never clean `x_{≥n}`. So `x̃_0` is
//!   unconditional by construction.
//! - **Timestep "concatenation"**: each token is `[x ; τ]` (width `D + d`) projected by one
//!   `Linear(D + d → d)` (`input_proj`), with `τ` the DiT timestep embedding (sinusoid →
//!   Linear → SiLU → Linear, reused from [`crate::two_tower::TimestepEmbedder`]) for noisy
//!   tokens and the **zero vector for clean tokens** (they carry no diffusion time). This is
//!   the paper's concatenation taken literally; note `W[x ; τ] = W_x x + W_τ τ`, so it equals
//!   adding a learned projection of `τ` — the two readings coincide.
//! - **Positions**: a learned table (`pos_embed`, `max_seq_len × d`, init N(0, 0.02²)) added
//!   after `input_proj`; clean `x_n` and noisy `x̃_n` share position `n`. The trunk runs
//!   *without* RoPE (the paper uses learned positions; the decoder's RoPE table is unused).
//! - **Trunk**: `n_layers` pre-RMSNorm causal blocks (self-attention + SwiGLU, biases) and a
//!   final RMSNorm — [`TransformerDecoder`]'s layers and `layer_norm`, driven with the
//!   additive mask; `final_proj` (Linear d → D) is read at the noisy positions.
//! - **Loss**: the schedule's prediction type (x0 in the paper) at every non-padded noisy
//!   position, summed squared error over channels per concept, as in Two-Tower. Right
//!   padding needs no attention mask: a real noisy row `n < len` only sees clean `x_{<n}`.
//! - **CFG training** ("self-attention can be dropped"): a dropped noisy row `x̃_n` loses its
//!   attention to the clean context and sees only itself (keeping its own position `n`).
//!   Rows are drawn independently per (sequence, position) with probability `p` (0.15 in the
//!   paper) from a seeded RNG ([`cfg_dropped_rows`]); position 0 is never drawn since it is
//!   unconditional anyway. The unconditional branch at inference is therefore the noisy
//!   token alone at position `N` ([`OneTowerLcm::predict_unconditional`]).
//! - **Inference**: the clean context `x_0..x_{N−1}` plus one noisy token at position `N`
//!   under a causal mask (token order does not matter without RoPE: attention is
//!   permutation-equivariant given the mask and the position table), either in one pass
//!   ([`OneTowerLcm::predict`]) or against a KV-cached clean prefix
//!   ([`OneTowerLcm::predict_cached`]; the cache is cloned per call so that the noisy token
//!   never enters it).

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder, linear_b};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::base_lcm::SummedLoss;
use crate::blocks::{
    AttentionMask, DecoderCache, DecoderConfig, MASK_NEG, RotaryEmbedding, TransformerDecoder,
    swiglu_inner_dim,
};
use crate::diffusion::NoiseSchedule;
use crate::two_tower::{TimestepEmbedder, standard_normal};

/// Hyper-parameters of a One-Tower LCM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneTowerConfig {
    /// Sentence-embedding width `D`.
    pub input_dim: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    /// SwiGLU inner width (reference convention: `round_up(int(8d/3), 256)`).
    pub ffn_inner_dim: usize,
    /// Biases on attention, FFN and the D↔d projections. The timestep MLP always has biases.
    pub bias: bool,
    /// Rows of the learned position table: the longest document, in concepts.
    pub max_seq_len: usize,
    pub rms_eps: f64,
    /// Sinusoid width fed to the timestep MLP (256 as in Two-Tower).
    pub timestep_freq_dim: usize,
}

impl OneTowerConfig {
    /// Reference-style defaults around the given sizes.
    pub fn new(input_dim: usize, d_model: usize, n_heads: usize, n_layers: usize) -> Self {
        Self {
            input_dim,
            d_model,
            n_heads,
            n_layers,
            ffn_inner_dim: swiglu_inner_dim(d_model, 256),
            bias: true,
            max_seq_len: 4096,
            rms_eps: 1e-5,
            timestep_freq_dim: 256,
        }
    }

    /// The trunk (its RoPE settings are unused: positions are learned).
    pub fn decoder_config(&self) -> DecoderConfig {
        DecoderConfig {
            d_model: self.d_model,
            n_heads: self.n_heads,
            n_layers: self.n_layers,
            ffn_inner_dim: self.ffn_inner_dim,
            rope_theta: RotaryEmbedding::DEFAULT_THETA,
            bias: self.bias,
            // Only sizes the unused RoPE table; keep it small.
            max_seq_len: 1,
            rms_eps: self.rms_eps,
        }
    }

    /// Analytic parameter count; equals the number of scalars [`OneTowerLcm::new`] creates.
    pub fn num_parameters(&self) -> usize {
        let (dd, d) = (self.input_dim, self.d_model);
        let b = usize::from(self.bias);
        let time = (self.timestep_freq_dim * d + d) + (d * d + d);
        let input = (dd + d) * d + b * d;
        let pos = self.max_seq_len * d;
        let out = d * dd + b * dd;
        time + input + pos + self.decoder_config().num_parameters() + out
    }
}

/// Noisy rows `(sequence, position)` whose clean context is dropped for classifier-free-
/// guidance training: each `(b, n)` with `n ∈ 1..t` independently with probability `p`
/// (position 0 has no context to drop). Sorted.
pub fn cfg_dropped_rows<R: Rng + ?Sized>(
    b: usize,
    t: usize,
    p: f64,
    rng: &mut R,
) -> Vec<(usize, usize)> {
    let mut rows = Vec::new();
    if p <= 0.0 {
        return rows;
    }
    for bi in 0..b {
        for n in 1..t {
            if rng.random::<f64>() < p {
                rows.push((bi, n));
            }
        }
    }
    rows
}

/// Additive mask over the interleaved sequence `[x̃_0, x_0, x̃_1, x_1, …]` (`2t` tokens):
/// `[2t, 2t]` without dropped rows, `[B, 1, 2t, 2t]` with them. Clean `x_n` (index `2n+1`)
/// sees clean `x_{≤n}`; noisy `x̃_n` (index `2n`) sees itself and clean `x_{<n}`, or only
/// itself when `(b, n)` is in `dropped`.
pub fn one_tower_mask(
    b: usize,
    t: usize,
    dropped: &[(usize, usize)],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let l = 2 * t;
    let one = |drop: &dyn Fn(usize) -> bool| {
        let mut data = Vec::with_capacity(l * l);
        for i in 0..l {
            let (n, noisy) = (i / 2, i % 2 == 0);
            for j in 0..l {
                let (m, key_noisy) = (j / 2, j % 2 == 0);
                let ok = if noisy {
                    j == i || (!key_noisy && m < n && !drop(n))
                } else {
                    !key_noisy && m <= n
                };
                data.push(if ok { 0.0 } else { MASK_NEG });
            }
        }
        data
    };
    if dropped.is_empty() {
        return Tensor::from_vec(one(&|_| false), (l, l), device)?.to_dtype(dtype);
    }
    if let Some(&(bi, n)) = dropped.iter().find(|&&(bi, n)| bi >= b || n >= t) {
        candle_core::bail!("dropped row ({bi}, {n}) outside a [{b}, {t}] batch");
    }
    let mut data = Vec::with_capacity(b * l * l);
    for bi in 0..b {
        data.extend(one(&|n| dropped.contains(&(bi, n))));
    }
    Tensor::from_vec(data, (b, 1, l, l), device)?.to_dtype(dtype)
}

/// Incremental clean-prefix state for generation.
#[derive(Debug, Clone)]
pub struct OneTowerState {
    pub cache: DecoderCache,
}

impl OneTowerState {
    /// Number of clean concepts already fed (= the next noisy position).
    pub fn len(&self) -> usize {
        self.cache.seq_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The One-Tower LCM. Parameters: `embed_time.{fc1,fc2}`, `input_proj.fc`,
/// `pos_embed.weight`, `decoder.layers.{i}.…`, `decoder.layer_norm`, `final_proj.fc`.
#[derive(Debug, Clone)]
pub struct OneTowerLcm {
    pub embed_time: TimestepEmbedder,
    /// `Linear(D + d → d)` on `[x ; τ]`.
    pub input_proj: Linear,
    /// `[max_seq_len, d]`.
    pub pos_embed: Tensor,
    pub decoder: TransformerDecoder,
    pub final_proj: Linear,
    pub config: OneTowerConfig,
}

impl OneTowerLcm {
    pub fn new(cfg: &OneTowerConfig, vb: VarBuilder) -> Result<Self> {
        let (dd, d) = (cfg.input_dim, cfg.d_model);
        let pos_embed = vb.pp("pos_embed").get_with_hints(
            (cfg.max_seq_len, d),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        Ok(Self {
            embed_time: TimestepEmbedder::new(cfg.timestep_freq_dim, d, vb.pp("embed_time"))?,
            input_proj: linear_b(dd + d, d, cfg.bias, vb.pp("input_proj").pp("fc"))?,
            pos_embed,
            decoder: TransformerDecoder::new(&cfg.decoder_config(), vb.pp("decoder"))?,
            final_proj: linear_b(d, dd, cfg.bias, vb.pp("final_proj").pp("fc"))?,
            config: cfg.clone(),
        })
    }

    /// Position rows `start..start + len`, `[len, d]`.
    fn positions(&self, start: usize, len: usize) -> Result<Tensor> {
        if start + len > self.config.max_seq_len {
            candle_core::bail!(
                "position {} beyond max_seq_len {}",
                start + len,
                self.config.max_seq_len
            );
        }
        self.pos_embed.narrow(0, start, len)
    }

    /// `input_proj([x ; τ])` for clean tokens (`τ = 0`), `x: [B, T, D]` → `[B, T, d]`.
    fn embed_clean(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let zero = Tensor::zeros((b, t, self.config.d_model), x.dtype(), x.device())?;
        self.input_proj
            .forward(&Tensor::cat(&[x, &zero], D::Minus1)?)
    }

    /// `input_proj([x̃ ; τ(t)])` for noisy tokens; `t`: one timestep for all or `B·T`
    /// (row-major) → `[B, T, d]`.
    fn embed_noisy(&self, noisy: &Tensor, t: &[usize]) -> Result<Tensor> {
        let (b, tl, _) = noisy.dims3()?;
        let d = self.config.d_model;
        let tau = self.embed_time.forward(t, noisy.dtype(), noisy.device())?;
        let tau = if t.len() == 1 {
            tau.reshape((1, 1, d))?
                .broadcast_as((b, tl, d))?
                .contiguous()?
        } else if t.len() == b * tl {
            tau.reshape((b, tl, d))?
        } else {
            candle_core::bail!("{} timesteps for a [{b}, {tl}] batch", t.len());
        };
        self.input_proj
            .forward(&Tensor::cat(&[noisy, &tau], D::Minus1)?)
    }

    /// The trunk without RoPE: pre-norm layers under `mask`, then the final RMSNorm.
    fn trunk(
        &self,
        h: &Tensor,
        mask: &AttentionMask,
        cache: Option<&mut DecoderCache>,
    ) -> Result<Tensor> {
        let mut h = h.clone();
        match cache {
            Some(cache) => {
                for (layer, c) in self.decoder.layers.iter().zip(cache.layers.iter_mut()) {
                    h = layer.forward(&h, mask, None, Some(c))?;
                }
            }
            None => {
                for layer in &self.decoder.layers {
                    h = layer.forward(&h, mask, None, None)?;
                }
            }
        }
        self.decoder.final_norm.forward(&h)
    }

    /// Teacher-forced forward over the interleaved sequence. `x0: [B, T, D]` clean,
    /// `noisy: [B, T, D]` noised concepts, `timesteps`: `B·T` (row-major) or one for all,
    /// `dropped`: CFG-dropped noisy rows. Returns the model output at every noisy position,
    /// `[B, T, D]` (output `n` denoises `x_n` given clean `x_{<n}`).
    pub fn forward(
        &self,
        x0: &Tensor,
        noisy: &Tensor,
        timesteps: &[usize],
        dropped: &[(usize, usize)],
    ) -> Result<Tensor> {
        let (b, t, _) = x0.dims3()?;
        let d = self.config.d_model;
        if noisy.dims3()? != x0.dims3()? {
            candle_core::bail!("noisy {:?} vs clean {:?}", noisy.dims(), x0.dims());
        }
        // [B, T, 2, d] → [B, 2T, d]: index 2n noisy, 2n + 1 clean.
        let h = Tensor::stack(
            &[&self.embed_noisy(noisy, timesteps)?, &self.embed_clean(x0)?],
            2,
        )?
        .reshape((b, 2 * t, d))?;
        let pos = self.positions(0, t)?;
        let pos = Tensor::stack(&[&pos, &pos], 1)?.reshape((2 * t, d))?;
        let h = h.broadcast_add(&pos)?;
        let mask = one_tower_mask(b, t, dropped, x0.dtype(), x0.device())?;
        let out = self.trunk(&h, &AttentionMask::Additive(mask), None)?;
        let at_noisy = out
            .reshape((b, t, 2, d))?
            .narrow(2, 0, 1)?
            .squeeze(2)?
            .contiguous()?;
        self.final_proj.forward(&at_noisy)
    }

    /// Training objective with externally supplied randomness. `x0: [B, T, D]` clean
    /// normalised concepts; `mask: [B, T]` 1 = real, 0 = right padding (`None`: none);
    /// `timesteps`: `B·T` per-position timesteps (row-major); `noise: [B, T, D]`;
    /// `dropped`: CFG-dropped noisy rows (see [`cfg_dropped_rows`]). The target follows the
    /// schedule's prediction type (x0 in the paper). Returns the summed per-concept squared
    /// error over real positions and their count.
    pub fn loss(
        &self,
        x0: &Tensor,
        mask: Option<&Tensor>,
        schedule: &NoiseSchedule,
        timesteps: &[usize],
        noise: &Tensor,
        dropped: &[(usize, usize)],
    ) -> Result<SummedLoss> {
        let (b, t, _) = x0.dims3()?;
        if timesteps.len() != b * t {
            candle_core::bail!("{} timesteps for a [{b}, {t}] batch", timesteps.len());
        }
        let (noisy, target) = schedule
            .noisy_and_target(x0, noise, timesteps)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let out = self.forward(x0, &noisy, timesteps, dropped)?;
        SummedLoss::masked_squared_error(&out, &target, mask)
    }

    /// [`Self::loss`] with randomness drawn from `rng`: uniform timesteps, standard-normal
    /// noise, and per-row CFG dropout with probability `cfg_p` (0.15 in the paper).
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
        let dropped = cfg_dropped_rows(b, t, cfg_p, rng);
        self.loss(x0, mask, schedule, &timesteps, &noise, &dropped)
    }

    /// Output for the next concept: `noisy: [B, 1, D]` at timestep `t`, conditioned on the
    /// clean `context: [B, N, D]` (normalised) and sitting at position `N`. `None` is the
    /// unconditional branch at position 0 (use [`Self::predict_unconditional`] for the
    /// unconditional branch matching a context of length `N`). One pass, no cache. The
    /// output has the training prediction type; feed it to `DdimSampler`.
    pub fn predict(&self, noisy: &Tensor, t: usize, context: Option<&Tensor>) -> Result<Tensor> {
        let (b, tl, _) = noisy.dims3()?;
        if tl != 1 {
            candle_core::bail!("predict denoises one position at a time, got {tl}");
        }
        let Some(ctx) = context else {
            return self.predict_unconditional(noisy, t, 0);
        };
        let (cb, n, _) = ctx.dims3()?;
        if cb != b {
            candle_core::bail!("context batch {cb} vs noisy batch {b}");
        }
        let h = Tensor::cat(
            &[&self.embed_clean(ctx)?, &self.embed_noisy(noisy, &[t])?],
            1,
        )?
        .broadcast_add(&self.positions(0, n + 1)?)?;
        let out = self.trunk(&h, &AttentionMask::Causal, None)?;
        self.final_proj.forward(&out.narrow(1, n, 1)?)
    }

    /// The unconditional (CFG-dropped) output: the noisy token alone at `position`, seeing
    /// only itself — what a dropped training row at that position computes.
    pub fn predict_unconditional(
        &self,
        noisy: &Tensor,
        t: usize,
        position: usize,
    ) -> Result<Tensor> {
        let (_, tl, _) = noisy.dims3()?;
        if tl != 1 {
            candle_core::bail!("predict denoises one position at a time, got {tl}");
        }
        let h = self
            .embed_noisy(noisy, &[t])?
            .broadcast_add(&self.positions(position, 1)?)?;
        let out = self.trunk(&h, &AttentionMask::None, None)?;
        self.final_proj.forward(&out)
    }

    /// The unconditional output at every position at once: `noisy: [B, T, D]` at timestep
    /// `t`, token `n` at position `n` seeing only itself (a CFG-dropped row) → `[B, T, D]`.
    /// Row `n` equals [`Self::predict_unconditional`] at `position = n`.
    pub fn predict_unconditional_all(&self, noisy: &Tensor, t: usize) -> Result<Tensor> {
        let tl = noisy.dim(1)?;
        let h = self
            .embed_noisy(noisy, &[t])?
            .broadcast_add(&self.positions(0, tl)?)?;
        let out = self.trunk(&h, &AttentionMask::Identity, None)?;
        self.final_proj.forward(&out)
    }

    /// `(conditional, unconditional)` outputs at position `N` for classifier-free guidance
    /// (the closure shape `DdimSampler::denoise_guided` expects).
    pub fn predict_cfg(
        &self,
        noisy: &Tensor,
        t: usize,
        context: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let n = context.dim(1)?;
        Ok((
            self.predict(noisy, t, Some(context))?,
            self.predict_unconditional(noisy, t, n)?,
        ))
    }

    /// An empty clean-prefix state.
    pub fn new_state(&self) -> OneTowerState {
        OneTowerState {
            cache: DecoderCache::new(self.config.n_layers),
        }
    }

    /// Feeds new clean concepts `x: [B, T_new, D]` (positions `state.len()..`) into the
    /// KV cache.
    pub fn extend_context(&self, x: &Tensor, state: &mut OneTowerState) -> Result<()> {
        let start = state.len();
        let h = self
            .embed_clean(x)?
            .broadcast_add(&self.positions(start, x.dim(1)?)?)?;
        self.trunk(&h, &AttentionMask::Causal, Some(&mut state.cache))?;
        Ok(())
    }

    /// [`Self::predict`] against a cached clean prefix: the noisy token at position
    /// `state.len()` sees every cached clean concept and itself. `state` is not modified.
    pub fn predict_cached(
        &self,
        noisy: &Tensor,
        t: usize,
        state: &OneTowerState,
    ) -> Result<Tensor> {
        let (_, tl, _) = noisy.dims3()?;
        if tl != 1 {
            candle_core::bail!("predict denoises one position at a time, got {tl}");
        }
        if state.is_empty() {
            return self.predict_unconditional(noisy, t, 0);
        }
        let mut cache = state.cache.clone();
        let h = self
            .embed_noisy(noisy, &[t])?
            .broadcast_add(&self.positions(state.len(), 1)?)?;
        let out = self.trunk(&h, &AttentionMask::Causal, Some(&mut cache))?;
        self.final_proj.forward(&out)
    }

    /// `(conditional, unconditional)` against a cached prefix, both at position
    /// `state.len()`.
    pub fn predict_cfg_cached(
        &self,
        noisy: &Tensor,
        t: usize,
        state: &OneTowerState,
    ) -> Result<(Tensor, Tensor)> {
        Ok((
            self.predict_cached(noisy, t, state)?,
            self.predict_unconditional(noisy, t, state.len())?,
        ))
    }
}
