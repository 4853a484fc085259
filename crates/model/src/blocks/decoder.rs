use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{
    AttentionMask, KvCache, MultiHeadAttention, RmsNorm, RotaryEmbedding, SwiGlu, swiglu_inner_dim,
};

/// Hyper-parameters of the causal pre-norm trunk shared by Base-LCM and the Two-Tower
/// contextualizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub ffn_inner_dim: usize,
    pub rope_theta: f64,
    /// Biases on the attention and FFN projections (true in the reference configs).
    pub bias: bool,
    /// Longest sequence (including cached prefix) that RoPE tables are built for.
    pub max_seq_len: usize,
    pub rms_eps: f64,
}

impl DecoderConfig {
    /// Reference defaults: SwiGLU width `round_up(int(8d/3), 256)`, θ = 1e4, biases on,
    /// fairseq2's layer-norm epsilon 1e-5.
    pub fn new(d_model: usize, n_heads: usize, n_layers: usize) -> Self {
        Self {
            d_model,
            n_heads,
            n_layers,
            ffn_inner_dim: swiglu_inner_dim(d_model, 256),
            rope_theta: RotaryEmbedding::DEFAULT_THETA,
            bias: true,
            max_seq_len: 4096,
            rms_eps: 1e-5,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Analytic parameter count; must equal the number of scalars in the VarMap that
    /// [`TransformerDecoder::new`] fills.
    pub fn num_parameters(&self) -> usize {
        let d = self.d_model;
        let layer = MultiHeadAttention::num_parameters(d, self.bias)
            + SwiGlu::num_parameters(d, self.ffn_inner_dim, self.bias)
            + 2 * RmsNorm::num_parameters(d);
        self.n_layers * layer + RmsNorm::num_parameters(d)
    }
}

/// Pre-norm layer: `h = x + SelfAttn(RMSNorm(x))`, `out = h + SwiGLU(RMSNorm(h))`.
#[derive(Debug, Clone)]
pub struct TransformerDecoderLayer {
    pub self_attn_norm: RmsNorm,
    pub self_attn: MultiHeadAttention,
    pub ffn_norm: RmsNorm,
    pub ffn: SwiGlu,
}

impl TransformerDecoderLayer {
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            self_attn_norm: RmsNorm::new(d, cfg.rms_eps, vb.pp("self_attn_layer_norm"))?,
            self_attn: MultiHeadAttention::new(d, cfg.n_heads, cfg.bias, vb.pp("self_attn"))?,
            ffn_norm: RmsNorm::new(d, cfg.rms_eps, vb.pp("ffn_layer_norm"))?,
            ffn: SwiGlu::new(d, cfg.ffn_inner_dim, cfg.bias, vb.pp("ffn"))?,
        })
    }

    /// `x: [B, T, d] -> [B, T, d]`. The new steps sit at absolute positions
    /// `cache.len()..`, which is where RoPE rotates them.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &AttentionMask,
        rope: Option<&RotaryEmbedding>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let normed = self.self_attn_norm.forward(x)?;
        let attn = self.self_attn.forward(
            &normed,
            &normed,
            mask,
            rope.map(|r| (r, offset, offset)),
            cache,
        )?;
        let h = (x + attn)?;
        let ffn = self.ffn.forward(&self.ffn_norm.forward(&h)?)?;
        h + ffn
    }
}

/// Per-layer key/value caches for incremental decoding with [`TransformerDecoder`].
#[derive(Debug, Clone)]
pub struct DecoderCache {
    pub layers: Vec<KvCache>,
}

impl DecoderCache {
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![KvCache::new(); n_layers],
        }
    }

    /// Number of time steps already processed.
    pub fn seq_len(&self) -> usize {
        self.layers.first().map_or(0, KvCache::len)
    }

    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(KvCache::reset);
    }
}

/// `n_layers` causal pre-norm layers with RoPE, followed by a final RMSNorm: the Base-LCM
/// trunk and the Two-Tower contextualizer.
#[derive(Debug, Clone)]
pub struct TransformerDecoder {
    pub layers: Vec<TransformerDecoderLayer>,
    pub final_norm: RmsNorm,
    pub rope: RotaryEmbedding,
    pub config: DecoderConfig,
}

impl TransformerDecoder {
    /// Parameters live under `layers.{i}.…` and `layer_norm`, fairseq2-style.
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let layers = (0..cfg.n_layers)
            .map(|i| TransformerDecoderLayer::new(cfg, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = RmsNorm::new(cfg.d_model, cfg.rms_eps, vb.pp("layer_norm"))?;
        let rope = RotaryEmbedding::new(
            cfg.head_dim(),
            cfg.max_seq_len,
            cfg.rope_theta,
            vb.dtype(),
            vb.device(),
        )?;
        Ok(Self {
            layers,
            final_norm,
            rope,
            config: cfg.clone(),
        })
    }

    /// Causal forward, `x: [B, T, d] -> [B, T, d]`. With a cache, `x` holds only the new
    /// steps and attends to everything cached before them.
    pub fn forward(&self, x: &Tensor, cache: Option<&mut DecoderCache>) -> Result<Tensor> {
        self.forward_with_mask(x, &AttentionMask::Causal, cache)
    }

    /// Like [`Self::forward`] with a caller-chosen self-attention mask.
    pub fn forward_with_mask(
        &self,
        x: &Tensor,
        mask: &AttentionMask,
        cache: Option<&mut DecoderCache>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        match cache {
            Some(cache) => {
                if cache.layers.len() != self.layers.len() {
                    candle_core::bail!(
                        "cache has {} layers, decoder {}",
                        cache.layers.len(),
                        self.layers.len()
                    );
                }
                for (layer, c) in self.layers.iter().zip(cache.layers.iter_mut()) {
                    h = layer.forward(&h, mask, Some(&self.rope), Some(c))?;
                }
            }
            None => {
                for layer in &self.layers {
                    h = layer.forward(&h, mask, Some(&self.rope), None)?;
                }
            }
        }
        self.final_norm.forward(&h)
    }
}
