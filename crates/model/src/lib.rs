//! Large Concept Models: neural building blocks and the diffusion machinery.
//!
//! - [`blocks`]: RMSNorm, RoPE, SwiGLU, multi-head attention (causal / shifted-causal /
//!   identity masks, KV cache) — every op differentiable and gradient-checked.
//! - [`diffusion`]: noise schedules, DDIM sampling, classifier-free guidance (a port of the
//!   scheduler the LCM reference uses, checked against HF diffusers).
//! - [`base_lcm`]: Base-LCM (MSE next-concept regression).
//! - [`two_tower`]: Two-Tower diffusion LCM (contextualizer + AdaLN denoiser).
//! - [`one_tower`]: One-Tower diffusion LCM (one causal trunk over interleaved noisy/clean
//!   concepts; paper-only).
//! - [`generate`]: next-concept prediction for every variant, teacher-forced (evaluation)
//!   and KV-cached incremental (generation).
//! - [`presets`]: tiny / small / paper-size configurations.
//! - [`builder`]: which model to build ([`builder::ModelKind`], [`builder::ModelConfig`])
//!   and [`builder::build_model`].

pub mod base_lcm;
pub mod blocks;
pub mod builder;
pub mod diffusion;
pub mod generate;
pub mod one_tower;
pub mod presets;
pub mod two_tower;
