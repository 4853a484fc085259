//! Named model sizes: `tiny` for tests, `small` for CPU training on MiniLM (D = 384), and
//! the paper's reference architectures (D = 1024, SONAR).
//!
//! Paper presets mirror the reference `archs.py`: `ffn_inner_dim = 4d` with fairseq2's
//! SwiGLU scaling (`int(4d · 2/3)` rounded up to 256, i.e. [`swiglu_inner_dim`]), biases on
//! every projection (`mha_output_proj_bias=True`), RMSNorm without bias, RoPE θ = 10⁴,
//! `max_seq_len = 4096`, a 256-d timestep sinusoid and `timestep_embed_dim = d`.
//! Analytic sizes: `two_tower_7b` = 6,930,781,696 (the reference docstring's number,
//! reproduced exactly); `two_tower_1_6b` = 1,645,538,304 and `base_lcm_1_6b` =
//! 1,649,185,792 (the reference docstrings say 1,635,101,696 and 1,647,635,456; their
//! configs as written give the numbers here).

use crate::base_lcm::BaseLcmConfig;
use crate::blocks::{DecoderConfig, swiglu_inner_dim};
use crate::two_tower::TwoTowerConfig;

/// SONAR sentence-embedding width.
pub const SONAR_DIM: usize = 1024;
/// all-MiniLM-L6-v2 sentence-embedding width.
pub const MINILM_DIM: usize = 384;

fn base(input_dim: usize, d: usize, heads: usize, layers: usize) -> BaseLcmConfig {
    BaseLcmConfig {
        input_dim,
        decoder: DecoderConfig::new(d, heads, layers),
        proj_bias: true,
    }
}

/// Test size: D = 16, d = 32, 4 heads, 2 layers, FFN 64.
pub fn base_lcm_tiny() -> BaseLcmConfig {
    let mut c = base(16, 32, 4, 2);
    c.decoder.ffn_inner_dim = 64;
    c.decoder.max_seq_len = 64;
    c
}

/// CPU-trainable on MiniLM: d = 256, 4 heads, 4 layers (3,618,688 parameters).
pub fn base_lcm_small() -> BaseLcmConfig {
    let mut c = base(MINILM_DIM, 256, 4, 4);
    c.decoder.max_seq_len = 512;
    c
}

/// Reference `base_lcm_1_6B`: d = 2048, 16 heads, 32 layers.
pub fn base_lcm_1_6b() -> BaseLcmConfig {
    base(SONAR_DIM, 2048, 16, 32)
}

/// Test size: D = 16, d = 32, 4 heads, 2 + 2 layers, FFN 64, 16-d timestep sinusoid.
pub fn two_tower_tiny() -> TwoTowerConfig {
    let mut c = TwoTowerConfig::new(16, 32, 4, 2, 2);
    c.ffn_inner_dim = 64;
    c.max_seq_len = 64;
    c.timestep_freq_dim = 16;
    c
}

/// CPU-trainable on MiniLM: d = 256, 4 heads, 2 contextualizer + 3 denoiser layers
/// (7,271,040 parameters).
pub fn two_tower_small() -> TwoTowerConfig {
    let mut c = TwoTowerConfig::new(MINILM_DIM, 256, 4, 2, 3);
    c.max_seq_len = 512;
    c
}

/// Reference `two_tower_diffusion_lcm_1_6B`: d = 2048, 16 heads, 5 + 13 layers.
pub fn two_tower_1_6b() -> TwoTowerConfig {
    TwoTowerConfig::new(SONAR_DIM, 2048, 16, 5, 13)
}

/// Reference `two_tower_diffusion_lcm_7B`: d = 4096, 32 heads, 5 + 14 layers.
pub fn two_tower_7b() -> TwoTowerConfig {
    TwoTowerConfig::new(SONAR_DIM, 4096, 32, 5, 14)
}

/// The reference FFN width for model width `d` (`ffn_inner_dim = 4d`, scaled by 2/3,
/// rounded up to 256).
pub fn reference_ffn_dim(d: usize) -> usize {
    swiglu_inner_dim(d, 256)
}

/// Test size: D = 16, d = 32, 4 heads, 2 layers, FFN 64, 16-d timestep sinusoid, 64
/// positions.
pub fn one_tower_tiny() -> crate::one_tower::OneTowerConfig {
    let mut c = crate::one_tower::OneTowerConfig::new(16, 32, 4, 2);
    c.ffn_inner_dim = 64;
    c.max_seq_len = 64;
    c.timestep_freq_dim = 16;
    c
}

/// CPU-trainable on MiniLM: d = 256, 4 heads, 4 layers, 256 positions (3,881,344
/// parameters). The trunk sees `2T` tokens per document, so it is kept shallower than the
/// two Two-Tower towers together; the cost per document is about that of
/// `two_tower_small`.
pub fn one_tower_small() -> crate::one_tower::OneTowerConfig {
    let mut c = crate::one_tower::OneTowerConfig::new(MINILM_DIM, 256, 4, 4);
    c.max_seq_len = 256;
    c
}

/// Paper One-Tower 1.6B (§2.3.3; sizes as summarised in `docs/reference-lcm.md`): 32
/// layers, d = 2048, 16 heads (1,666,491,392 parameters). Not given there, and taken from
/// the other 1.6B presets: the reference FFN width (5632), biases, the 256-d timestep
/// sinusoid, and 4096 rows for the learned position table (the `max_seq_len` of the other
/// presets; 8.4M of the parameters).
pub fn one_tower_1_6b() -> crate::one_tower::OneTowerConfig {
    crate::one_tower::OneTowerConfig::new(SONAR_DIM, 2048, 16, 32)
}
