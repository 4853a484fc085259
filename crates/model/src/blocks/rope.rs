use candle_core::{DType, Device, Result, Tensor};

/// Rotary position embedding (Su et al. 2021) in fairseq2's `RotaryEncoder` convention,
/// which the LCM reference uses: the head dimension is read as `Dh/2` *interleaved*
/// pairs `(x0, x1), (x2, x3), …` (fairseq2 does `unflatten(-1, (-1, 2))` then
/// `view_as_complex`), and pair `i` at position `p` is rotated by the angle
/// `p · θ^(-2i/Dh)`. This differs from the GPT-NeoX/HF "rotate_half" layout, which pairs
/// `x_i` with `x_{i+Dh/2}`; weights are not interchangeable between the two.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    /// `[max_positions, Dh/2]`
    cos: Tensor,
    /// `[max_positions, Dh/2]`
    sin: Tensor,
    head_dim: usize,
    max_positions: usize,
}

impl RotaryEmbedding {
    pub const DEFAULT_THETA: f64 = 10_000.0;

    pub fn new(
        head_dim: usize,
        max_positions: usize,
        theta: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if !head_dim.is_multiple_of(2) {
            candle_core::bail!("RoPE needs an even head dimension, got {head_dim}");
        }
        let half = head_dim / 2;
        // Angles are computed in f64 so that tables are accurate at large positions even
        // when the model runs in f32 or lower.
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for i in 0..half {
                let freq = theta.powf(-((2 * i) as f64) / head_dim as f64);
                let angle = p as f64 * freq;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (max_positions, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (max_positions, half), device)?.to_dtype(dtype)?;
        Ok(Self {
            cos,
            sin,
            head_dim,
            max_positions,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Rotates `x: [B, H, T, Dh]` whose time index `t` sits at absolute position
    /// `position_offset + t`. Returns `[B, H, T, Dh]`.
    pub fn apply(&self, x: &Tensor, position_offset: usize) -> Result<Tensor> {
        let (b, h, t, dh) = x.dims4()?;
        if dh != self.head_dim {
            candle_core::bail!("RoPE built for head_dim {}, got {dh}", self.head_dim);
        }
        if position_offset + t > self.max_positions {
            candle_core::bail!(
                "RoPE positions {}..{} exceed the table size {}",
                position_offset,
                position_offset + t,
                self.max_positions
            );
        }
        let half = dh / 2;
        // [1, 1, T, Dh/2, 1]
        let cos = self
            .cos
            .narrow(0, position_offset, t)?
            .reshape((1, 1, t, half, 1))?;
        let sin = self
            .sin
            .narrow(0, position_offset, t)?
            .reshape((1, 1, t, half, 1))?;
        // [B, H, T, Dh/2, 2]: pair i is (x[2i], x[2i+1]).
        let pairs = x.contiguous()?.reshape((b, h, t, half, 2))?;
        let re = pairs.narrow(4, 0, 1)?;
        let im = pairs.narrow(4, 1, 1)?;
        // (re + i·im)(cos + i·sin)
        let out_re = (re.broadcast_mul(&cos)? - im.broadcast_mul(&sin)?)?;
        let out_im = (re.broadcast_mul(&sin)? + im.broadcast_mul(&cos)?)?;
        Tensor::cat(&[out_re, out_im], 4)?.reshape((b, h, t, dh))
    }
}
