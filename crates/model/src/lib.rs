//! Large Concept Models: neural building blocks and the diffusion machinery.
//!
//! - [`blocks`]: RMSNorm, RoPE, SwiGLU, multi-head attention (causal / shifted-causal /
//!   identity masks, KV cache) — every op differentiable and gradient-checked.
//! - [`diffusion`]: noise schedules, DDIM sampling, classifier-free guidance (a port of the
//!   scheduler the LCM reference uses, checked against HF diffusers).

pub mod blocks;
pub mod diffusion;
