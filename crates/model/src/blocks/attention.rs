use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear_b};

use super::{RotaryEmbedding, softmax_last_dim_differentiable};

/// Additive value for disallowed query/key pairs. Finite on purpose: a row that happens to
/// be fully masked (possible only with [`AttentionMask::Additive`]) then becomes a uniform
/// average instead of `exp(-inf - -inf) = NaN`. `exp(-1e9)` underflows to exactly 0 in f32
/// and f64, so allowed rows are unaffected. Not representable in f16 (saturates to -inf).
pub const MASK_NEG: f64 = -1e9;

/// Which keys each query may attend to. `Tq` is the number of queries, `Tk` the number of
/// keys (including any cached prefix).
#[derive(Debug, Clone)]
pub enum AttentionMask {
    /// Every query sees every key.
    None,
    /// Queries are the last `Tq` positions of the key sequence: query `i` sits at absolute
    /// position `Tk − Tq + i` and sees keys `j ≤ Tk − Tq + i`. Without a cache `Tk = Tq`
    /// and this is the usual lower-triangular mask; with a cached prefix of length `P`
    /// (`Tk = P + Tq`) query `i` sees the whole prefix plus new keys up to itself.
    /// Requires `Tk ≥ Tq`; then every row sees at least key 0.
    Causal,
    /// The Two-Tower denoiser's cross-attention (reference: `ShiftedCausalAttentionMask`,
    /// `tril(diagonal=0)` of a `Tq × Tk` matrix). Keys are `[0-vector, c_1, …, c_N]` and
    /// query `i` (0-based; it denoises sentence `i + 1` in 1-based numbering) sees keys
    /// `0..=i`, i.e. the zero vector and context `c_1..c_i` strictly before its own
    /// position. Key 0 is always visible, so no row is empty.
    ShiftedCausal,
    /// Query `i` sees only key `i` (the denoiser's self-attention, reference:
    /// `NoAttentionMask`, `log(eye)`). Requires `Tq = Tk`. The softmax over one key is
    /// exactly 1, so the block reduces to `O(V(x))` and is computed that way; the Q and K
    /// projections exist (and count as parameters) but receive no gradient.
    Identity,
    /// A custom additive mask broadcastable to `[B, H, Tq, Tk]` (e.g. `[Tq, Tk]` or
    /// `[B, 1, Tq, Tk]`): 0 where allowed, [`MASK_NEG`] where not. Used for One-Tower
    /// interleaving and per-row classifier-free-guidance dropout.
    Additive(Tensor),
}

impl AttentionMask {
    /// The additive mask for `Tq` queries and `Tk` keys, `[Tq, Tk]` for the structured
    /// kinds, the user tensor for `Additive`, `None` when nothing is masked.
    pub fn materialize(
        &self,
        tq: usize,
        tk: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        let allowed: Box<dyn Fn(usize, usize) -> bool> = match self {
            AttentionMask::None => return Ok(None),
            AttentionMask::Additive(m) => return Ok(Some(m.to_dtype(dtype)?)),
            AttentionMask::Causal => {
                if tk < tq {
                    candle_core::bail!("causal mask needs Tk >= Tq, got Tq={tq} Tk={tk}");
                }
                let shift = tk - tq;
                Box::new(move |i, j| j <= i + shift)
            }
            AttentionMask::ShiftedCausal => Box::new(|i, j| j <= i),
            AttentionMask::Identity => {
                if tk != tq {
                    candle_core::bail!("identity mask needs Tq == Tk, got Tq={tq} Tk={tk}");
                }
                Box::new(|i, j| i == j)
            }
        };
        let mut data = Vec::with_capacity(tq * tk);
        for i in 0..tq {
            for j in 0..tk {
                data.push(if allowed(i, j) { 0.0 } else { MASK_NEG });
            }
        }
        Ok(Some(
            Tensor::from_vec(data, (tq, tk), device)?.to_dtype(dtype)?,
        ))
    }
}

/// Keys and values of previous decoding steps, `[B, H, T_cached, Dh]` each. Keys are stored
/// after RoPE, so cached positions never need re-rotating.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached time steps.
    pub fn len(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dim(2).unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&mut self) {
        self.k = None;
        self.v = None;
    }

    /// Appends `k, v: [B, H, T_new, Dh]` and returns the full `[B, H, T_cached + T_new, Dh]`.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match (&self.k, &self.v) {
            (Some(pk), Some(pv)) => (Tensor::cat(&[pk, k], 2)?, Tensor::cat(&[pv, v], 2)?),
            _ => (k.clone(), v.clone()),
        };
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        Ok((k, v))
    }
}

/// Scaled dot-product multi-head attention (Vaswani et al. 2017) with separate query and
/// key/value inputs so that it serves as self- and cross-attention.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub n_heads: usize,
    pub head_dim: usize,
    pub bias: bool,
}

impl MultiHeadAttention {
    /// Parameter names follow fairseq2: `q_proj`, `k_proj`, `v_proj`, `output_proj`. The
    /// 1.6B reference configs put biases on all four (`mha_output_proj_bias=True`).
    pub fn new(d_model: usize, n_heads: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        if n_heads == 0 || !d_model.is_multiple_of(n_heads) {
            candle_core::bail!("d_model {d_model} is not divisible by n_heads {n_heads}");
        }
        Ok(Self {
            q: linear_b(d_model, d_model, bias, vb.pp("q_proj"))?,
            k: linear_b(d_model, d_model, bias, vb.pp("k_proj"))?,
            v: linear_b(d_model, d_model, bias, vb.pp("v_proj"))?,
            o: linear_b(d_model, d_model, bias, vb.pp("output_proj"))?,
            n_heads,
            head_dim: d_model / n_heads,
            bias,
        })
    }

    pub fn num_parameters(d_model: usize, bias: bool) -> usize {
        4 * d_model * d_model + if bias { 4 * d_model } else { 0 }
    }

    /// `[B, T, d] -> [B, H, T, Dh]`
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, self.n_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `x_q: [B, Tq, d]`, `x_kv: [B, Tk, d]` → `[B, Tq, d]`.
    ///
    /// `rope = (table, q_offset, k_offset)` rotates queries at absolute positions
    /// `q_offset..` and the *new* keys at `k_offset..`. With a `cache`, the new keys/values
    /// are appended and attention runs over the whole cached sequence; the mask is then
    /// evaluated for `Tk = cached + new`.
    pub fn forward(
        &self,
        x_q: &Tensor,
        x_kv: &Tensor,
        mask: &AttentionMask,
        rope: Option<(&RotaryEmbedding, usize, usize)>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, tq, d) = x_q.dims3()?;

        if let AttentionMask::Identity = mask {
            let tk = x_kv.dim(1)?;
            if tk != tq || cache.is_some() {
                candle_core::bail!(
                    "identity mask needs Tq == Tk and no cache, got Tq={tq} Tk={tk}"
                );
            }
            // softmax over the single visible key is exactly 1: out = O(V(x_kv)).
            return self.o.forward(&self.v.forward(x_kv)?);
        }

        // [B, H, Tq, Dh], [B, H, Tk_new, Dh]
        let mut q = self.split_heads(&self.q.forward(x_q)?)?;
        let mut k = self.split_heads(&self.k.forward(x_kv)?)?;
        let mut v = self.split_heads(&self.v.forward(x_kv)?)?;

        if let Some((table, q_offset, k_offset)) = rope {
            q = table.apply(&q, q_offset)?;
            k = table.apply(&k, k_offset)?;
        }
        if let Some(cache) = cache {
            (k, v) = cache.append(&k, &v)?;
        }
        let tk = k.dim(2)?;

        // [B, H, Tq, Tk]
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(m) = mask.materialize(tq, tk, scores.dtype(), scores.device())? {
            scores = scores.broadcast_add(&m)?;
        }
        let probs = softmax_last_dim_differentiable(&scores)?;

        // [B, H, Tq, Dh] -> [B, Tq, d]
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, tq, d))?;
        self.o.forward(&ctx)
    }
}
