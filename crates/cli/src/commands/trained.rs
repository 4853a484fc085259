//! What `lcm generate` and `lcm eval` share: loading a trained model with its normaliser
//! and encoder, and the diffusion sampling flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::DType;
use lcm_concept::ConceptEncoder;
use lcm_concept::bert::BertEncoder;
use lcm_concept::normalizer::RobustNormalizer;
use lcm_data::batch::EOS_TEXT;
use lcm_model::diffusion::{SamplingOptions, TimestepSpacing};
use lcm_model::generate::DiffusionSampling;
use lcm_train::LoadedModel;
use lcm_train::trainer::normalizer_hash;

use super::EncoderArgs;

/// Diffusion sampling flags; the defaults are the paper's Two-Tower decoding settings.
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
    pub fn sampling(&self) -> Result<DiffusionSampling> {
        if self.ddim_steps == 0 {
            bail!("--ddim-steps must be at least 1");
        }
        if self.eta != 0.0 {
            // The sampler's stochastic term is not yet drawn from the seeded generator.
            bail!("--eta other than 0 is not supported yet (it would not be reproducible)");
        }
        for (name, v) in [
            ("--guidance-scale", self.guidance_scale),
            ("--guidance-rescale", self.guidance_rescale),
            ("--initial-noise-scale", self.initial_noise_scale),
            ("--epsilon-scaling", self.epsilon_scaling),
        ] {
            if !v.is_finite() {
                bail!("{name} must be a finite number, got {v}");
            }
        }
        Ok(DiffusionSampling {
            steps: self.ddim_steps,
            spacing: TimestepSpacing::TrailingLcm,
            options: SamplingOptions {
                eta: self.eta,
                epsilon_scaling: (self.epsilon_scaling != 1.0).then_some(self.epsilon_scaling),
                initial_noise_scale: self.initial_noise_scale,
                guidance_scale: self.guidance_scale,
                guidance_rescale: self.guidance_rescale,
                ..SamplingOptions::default()
            },
        })
    }
}

/// A trained model with everything needed to feed it text and read its concepts.
pub struct Trained {
    pub loaded: LoadedModel,
    pub normalizer: RobustNormalizer,
}

impl Trained {
    /// Loads the checkpoint at `model` (a training output directory, its checkpoints/ or
    /// one step directory) and its normaliser (`normalizer`, else the path recorded at
    /// training time), refusing a normaliser other than the one it was trained with.
    pub fn load(model: &Path, normalizer: Option<&Path>) -> Result<Self> {
        let loaded = lcm_train::load_model(model, None)
            .with_context(|| format!("loading the model at {}", model.display()))?;
        let recorded = loaded.state.normalizer.clone();
        let normalizer_path = match (normalizer, &recorded) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(r)) if !r.path.is_empty() => PathBuf::from(&r.path),
            _ => bail!(
                "{} does not record its normaliser; pass --normalizer",
                loaded.checkpoint.display()
            ),
        };
        if !normalizer_path.exists() {
            bail!(
                "the model's normaliser {} does not exist (moved?); pass --normalizer PATH",
                normalizer_path.display()
            );
        }
        let normalizer = RobustNormalizer::load(&normalizer_path)?;
        if let Some(r) = &recorded
            && r.hash != normalizer_hash(&normalizer)
        {
            bail!(
                "{} is not the normaliser {} was trained with ({}); pass that one with \
                 --normalizer",
                normalizer_path.display(),
                loaded.checkpoint.display(),
                r.path
            );
        }
        Ok(Self { loaded, normalizer })
    }

    /// The encoder space the model was trained in.
    pub fn encoder_id(&self) -> &str {
        &self.loaded.state.encoder_id
    }

    /// Loads the encoder of `args`, refusing one from another embedding space.
    pub fn encoder(&self, args: &EncoderArgs) -> Result<BertEncoder> {
        let encoder = args.load()?;
        if encoder.id() != self.encoder_id() {
            bail!(
                "the model was trained on `{}` concepts but --encoder `{}` produces `{}`; \
                 pass the encoder it was trained with",
                self.encoder_id(),
                args.encoder,
                encoder.id()
            );
        }
        Ok(encoder)
    }

    /// A short description: kind, preset and step.
    pub fn label(&self) -> String {
        format!(
            "{} {} (step {})",
            self.loaded.kind.name(),
            self.loaded.preset,
            self.loaded.state.step
        )
    }
}

/// The raw embedding of the end-of-text sentence.
pub fn eos_embedding(encoder: &BertEncoder) -> Result<Vec<f32>> {
    Ok(encoder
        .encode(&[EOS_TEXT], None)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}
