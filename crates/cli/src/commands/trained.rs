//! What `lcm generate`, `lcm eval` and `lcm plan` share: the diffusion sampling flags and
//! loading the encoder a trained model needs. Loading the model itself is
//! [`lcm_workflows::TrainedLcm::load`].

use anyhow::Result;
use lcm_model::generate::DiffusionSampling;
use lcm_workflows::encoders::AnyEncoder;
use lcm_workflows::{SamplingSettings, TrainedLcm};

use super::EncoderArgs;

/// Diffusion sampling flags; the defaults are the paper's Two-Tower decoding settings
/// ([`SamplingSettings::default`]).
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// DDIM denoising steps per concept (diffusion models).
    #[arg(long, default_value_t = 40)]
    pub ddim_steps: usize,
    /// Classifier-free guidance scale (1 disables guidance).
    #[arg(long, default_value_t = 3.0)]
    pub guidance_scale: f64,
    /// Guidance rescale factor (Lin et al. 2023).
    #[arg(long, default_value_t = 0.7)]
    pub guidance_rescale: f64,
    /// Scale of the initial Gaussian noise.
    #[arg(long, default_value_t = 0.6)]
    pub initial_noise_scale: f64,
    /// DDIM η (0: deterministic given the initial noise).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Epsilon scaling of the DDIM update (1 disables it).
    #[arg(long, default_value_t = 1.00045)]
    pub epsilon_scaling: f64,
    /// Seed of the sampling noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn settings(&self) -> SamplingSettings {
        SamplingSettings {
            ddim_steps: self.ddim_steps,
            guidance_scale: self.guidance_scale,
            guidance_rescale: self.guidance_rescale,
            initial_noise_scale: self.initial_noise_scale,
            eta: self.eta,
            epsilon_scaling: self.epsilon_scaling,
            seed: self.seed,
        }
    }

    /// The validated sampler settings.
    pub fn sampling(&self) -> Result<DiffusionSampling> {
        Ok(self.settings().diffusion()?)
    }
}

/// Loads the encoder of `args`, refusing one from another embedding space than the
/// model's; without `--encoder`, the one the model records.
pub fn load_encoder(trained: &TrainedLcm, args: &EncoderArgs) -> Result<AnyEncoder> {
    let what = format!("the model {}", trained.loaded.checkpoint.display());
    args.load_for(trained.encoder_id(), &what)
}
