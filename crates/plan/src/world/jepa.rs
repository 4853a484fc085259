//! JEPA world model: an encoder and an action-conditioned latent predictor trained to predict
//! future latents, with VICReg variance/covariance terms against collapse (no pixel
//! reconstruction), after PLDM (Sobal et al. 2025) and DINO-WM's latent-space planning.
//!
//! ```text
//! z_t      = Enc(o_t)                                   [N, L]
//! ẑ_{t+1}  = ẑ_t + Pred([ẑ_t, a_t / a_max])             (ẑ_0 = z_0; multi-step rollout)
//! L_pred   = 1/H Σ_t mean‖ẑ_t − z_t‖²                   (t = 1..H, gradients through both)
//! L_std    = mean_j max(0, 1 − sqrt(Var_b(z_bj) + ε))    per time step, averaged
//! L_cov    = 1/L Σ_{i≠j} C_ij²                           per time step, averaged
//! L_probe  = mean‖P(sg(z_t)) − s_t‖²                     (cost-module readout, see below)
//! L        = L_pred + α L_std + β L_cov + L_probe
//! ```
//!
//! The encoder is an MLP for state observations and a small strided CNN for 2×64×64 images.
//! The predictor is a residual MLP: with small steps most of the next latent is the current
//! one, and the residual form makes "no move" the easy default.
//!
//! The position probe `P` is part of the *cost module*, not of the world model: it reads a
//! position out of a latent so that guardrails defined in the environment's coordinates (a
//! hazard square) can be checked on predicted latents. It is trained on stop-gradient latents,
//! so its supervision never shapes the representation; the world model itself learns only
//! from observations and actions.

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};

use super::conv::FastConv2d;
use serde::{Deserialize, Serialize};

/// What the encoder consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObservationKind {
    /// A flat state vector (Two-Rooms: the agent position in pixels).
    State { dim: usize },
    /// A C×H×W image with values in [0, 1].
    Pixels {
        channels: usize,
        height: usize,
        width: usize,
    },
}

impl ObservationKind {
    /// Number of `f32` values of one observation.
    pub fn len(&self) -> usize {
        match *self {
            ObservationKind::State { dim } => dim,
            ObservationKind::Pixels {
                channels,
                height,
                width,
            } => channels * height * width,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Architecture hyper-parameters (stored in checkpoints as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JepaConfig {
    pub observation: ObservationKind,
    pub latent_dim: usize,
    /// Width of the MLP layers (encoder head and predictor).
    pub hidden_dim: usize,
    pub action_dim: usize,
    /// Actions are divided by this before the predictor sees them (the action-norm cap).
    pub action_scale: f32,
    /// State observations are mapped to `(s − state_shift) / state_scale` (centre and half
    /// extent of the arena), so the MLP sees values of order one.
    pub state_shift: f32,
    pub state_scale: f32,
    /// Output channels of the three stride-2 convolutions (pixel encoder only).
    pub conv_channels: [usize; 3],
    /// Dimension of the probed quantity (Two-Rooms position: 2).
    pub probe_dim: usize,
}

impl JepaConfig {
    /// Two-Rooms state variant: position in, 16-d latent.
    pub fn two_rooms_state() -> Self {
        JepaConfig {
            observation: ObservationKind::State { dim: 2 },
            latent_dim: 16,
            hidden_dim: 128,
            action_dim: 2,
            action_scale: 2.45,
            state_shift: 32.0,
            state_scale: 32.0,
            conv_channels: [16, 32, 32],
            probe_dim: 2,
        }
    }

    /// Two-Rooms pixel variant: 2×64×64 image in, 16-d latent.
    pub fn two_rooms_pixels() -> Self {
        JepaConfig {
            observation: ObservationKind::Pixels {
                channels: 2,
                height: 64,
                width: 64,
            },
            ..Self::two_rooms_state()
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.latent_dim == 0 || self.hidden_dim == 0 || self.action_dim == 0 {
            return Err("latent_dim, hidden_dim and action_dim must be > 0".into());
        }
        if !(self.action_scale.is_finite() && self.action_scale > 0.0) {
            return Err(format!(
                "action_scale must be > 0, got {}",
                self.action_scale
            ));
        }
        if !(self.state_scale.is_finite() && self.state_scale > 0.0 && self.state_shift.is_finite())
        {
            return Err("state_shift must be finite and state_scale > 0".into());
        }
        match self.observation {
            ObservationKind::State { dim: 0 } => Err("state dim must be > 0".into()),
            ObservationKind::Pixels { height, width, .. }
                if conv_out(height) == 0 || conv_out(width) == 0 =>
            {
                Err(format!(
                    "image {height}×{width} is too small for three stride-2 convolutions"
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Spatial size after the encoder's convolutions (k5 s2, k3 s2, k3 s2, no padding).
fn conv_out(n: usize) -> usize {
    let step = |n: usize, k: usize| if n < k { 0 } else { (n - k) / 2 + 1 };
    step(step(step(n, 5), 3), 3)
}

/// `Linear → ReLU → … → Linear`.
#[derive(Debug, Clone)]
struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    fn new(dims: &[usize], vb: VarBuilder) -> Result<Self> {
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("{i}"))))
            .collect::<Result<_>>()?;
        Ok(Mlp { layers })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i < last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

#[derive(Debug, Clone)]
enum Encoder {
    Mlp {
        mlp: Mlp,
        shift: f32,
        scale: f32,
    },
    Cnn {
        convs: Vec<FastConv2d>,
        head: Mlp,
        shape: (usize, usize, usize),
    },
}

impl Encoder {
    fn new(cfg: &JepaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, l) = (cfg.hidden_dim, cfg.latent_dim);
        match cfg.observation {
            ObservationKind::State { dim } => Ok(Encoder::Mlp {
                mlp: Mlp::new(&[dim, h, h, l], vb.pp("mlp"))?,
                shift: cfg.state_shift,
                scale: cfg.state_scale,
            }),
            ObservationKind::Pixels {
                channels,
                height,
                width,
            } => {
                let [c1, c2, c3] = cfg.conv_channels;
                let conv = |cin, cout, k, name: &str| FastConv2d::new(cin, cout, k, 2, vb.pp(name));
                let convs = vec![
                    conv(channels, c1, 5, "conv0")?,
                    conv(c1, c2, 3, "conv1")?,
                    conv(c2, c3, 3, "conv2")?,
                ];
                let flat = c3 * conv_out(height) * conv_out(width);
                Ok(Encoder::Cnn {
                    convs,
                    head: Mlp::new(&[flat, h, l], vb.pp("head"))?,
                    shape: (channels, height, width),
                })
            }
        }
    }

    /// `[N, obs_len]` → `[N, L]`.
    fn forward(&self, obs: &Tensor) -> Result<Tensor> {
        match self {
            Encoder::Mlp { mlp, shift, scale } => {
                let x = ((obs - f64::from(*shift))? / f64::from(*scale))?;
                mlp.forward(&x)
            }
            Encoder::Cnn { convs, head, shape } => {
                let n = obs.dim(0)?;
                let mut x = obs.reshape((n, shape.0, shape.1, shape.2))?;
                for conv in convs {
                    x = conv.forward(&x)?.relu()?;
                }
                head.forward(&x.flatten_from(1)?)
            }
        }
    }
}

/// The world model (encoder + predictor) and the cost module's position probe.
#[derive(Debug, Clone)]
pub struct Jepa {
    cfg: JepaConfig,
    encoder: Encoder,
    predictor: Mlp,
    probe: Mlp,
}

impl Jepa {
    /// Builds the modules on `vb` (a [`VarMap`]-backed builder to train, or a
    /// tensor-backed one for inference). Variable names: `encoder.*`, `predictor.*`, `probe.*`.
    pub fn new(cfg: &JepaConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let (l, h, a) = (cfg.latent_dim, cfg.hidden_dim, cfg.action_dim);
        Ok(Jepa {
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            predictor: Mlp::new(&[l + a, h, h, l], vb.pp("predictor"))?,
            probe: Mlp::new(&[l, h / 2, cfg.probe_dim], vb.pp("probe"))?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &JepaConfig {
        &self.cfg
    }

    /// `[N, obs_len]` → `[N, L]`.
    pub fn encode(&self, obs: &Tensor) -> Result<Tensor> {
        self.encoder.forward(obs)
    }

    /// One step: `[N, L]`, `[N, A]` → `[N, L]`.
    pub fn predict(&self, z: &Tensor, action: &Tensor) -> Result<Tensor> {
        let a = (action / f64::from(self.cfg.action_scale))?;
        let delta = self.predictor.forward(&Tensor::cat(&[z, &a], D::Minus1)?)?;
        z + delta
    }

    /// The probe's two layers as `(w0 [hidden, L], b0, w1 [out, hidden], b1)`.
    pub fn probe_weights(&self) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        match self.probe.layers.as_slice() {
            [l0, l1] => {
                let bias = |l: &Linear| {
                    l.bias()
                        .cloned()
                        .ok_or_else(|| candle_core::Error::Msg("probe layer without bias".into()))
                };
                Ok((
                    l0.weight().clone(),
                    bias(l0)?,
                    l1.weight().clone(),
                    bias(l1)?,
                ))
            }
            _ => candle_core::bail!("probe must have two layers"),
        }
    }

    /// The cost module's readout: `[N, L]` → `[N, probe_dim]` (normalised units).
    pub fn probe(&self, z: &Tensor) -> Result<Tensor> {
        self.probe.forward(z)
    }
}

/// Linear layers of the predictor MLP.
const PREDICTOR_LAYERS: usize = 3;

/// Seeded initialisation (candle's own init draws from an unseeded RNG): weights
/// `N(0, 2/fan_in)` (He, for the ReLU layers; fan-in = product of the trailing dimensions),
/// biases zero, the predictor's output layer zero. Deterministic in `seed` and independent
/// of the map's iteration order. Drawn through [`lcm_train::run::reinit_vars_with`] on
/// stream 0 of the seed's generator with one Box–Muller draw per weight: this is not the
/// LCMs' [`lcm_train::run::seeded_init`] (other scale, other stream), and trained world
/// models must keep their weights bit for bit.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> std::result::Result<(), lcm_train::TrainError> {
    let mut rng = lcm_train::checkpoint::new_rng(seed);
    lcm_train::run::reinit_vars_with(varmap, &mut rng, |name, var, rng| {
        let dims = var.dims().to_vec();
        // The predictor's output layer starts at zero (as AdaLN-zero / DiT do), so the
        // initial prediction is "nothing moves": with a random residual, an 8-step rollout
        // starts with errors orders of magnitude above the latents' spread, its gradient
        // dominates the clipped update and the encoder collapses before VICReg can act.
        let zero_init = name.starts_with("predictor.")
            && name.ends_with(&format!(".{}.weight", PREDICTOR_LAYERS - 1));
        if zero_init || name.ends_with("bias") || dims.len() < 2 {
            return Ok(Some(Tensor::zeros(
                dims.as_slice(),
                var.dtype(),
                var.device(),
            )?));
        }
        let fan_in: usize = dims[1..].iter().product();
        let std = (2.0 / fan_in as f64).sqrt();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| (std * lcm_util::random::standard_normal(rng)) as f32)
            .collect();
        Ok(Some(Tensor::from_vec(
            values,
            dims.as_slice(),
            var.device(),
        )?))
    })
}

/// Loss weights and the rollout length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JepaLossConfig {
    /// Predictor steps unrolled from the first latent of each window (H).
    pub rollout_steps: usize,
    /// α: VICReg variance (hinge on the per-dimension std).
    pub std_weight: f64,
    /// β: VICReg covariance (off-diagonal squares).
    pub cov_weight: f64,
    /// Weight of the stop-gradient position probe.
    pub probe_weight: f64,
}

impl Default for JepaLossConfig {
    fn default() -> Self {
        JepaLossConfig {
            rollout_steps: 8,
            std_weight: 1.0,
            cov_weight: 1.0,
            probe_weight: 1.0,
        }
    }
}

/// The loss terms of one batch (scalars; `total` carries the graph).
#[derive(Debug, Clone)]
pub struct JepaLoss {
    pub total: Tensor,
    pub prediction: Tensor,
    pub std: Tensor,
    pub cov: Tensor,
    pub probe: Tensor,
}

/// VICReg variance term of `[N, L]`: mean over dimensions of `max(0, 1 − sqrt(var + ε))`,
/// with the unbiased batch variance (as VICReg).
pub fn variance_loss(z: &Tensor) -> Result<Tensor> {
    let n = z.dim(0)?;
    let centred = z.broadcast_sub(&z.mean_keepdim(0)?)?;
    let var = (centred.sqr()?.sum(0)? / (n.max(2) - 1) as f64)?;
    let std = (var + 1e-4)?.sqrt()?;
    (1.0 - std)?.relu()?.mean_all()
}

/// VICReg covariance term of `[N, L]`: `1/L Σ_{i≠j} C_ij²` of the unbiased covariance.
pub fn covariance_loss(z: &Tensor) -> Result<Tensor> {
    let (n, l) = z.dims2()?;
    let centred = z.broadcast_sub(&z.mean_keepdim(0)?)?;
    let cov = (centred.t()?.matmul(&centred)? / (n.max(2) - 1) as f64)?;
    let off_diagonal = Tensor::ones((l, l), z.dtype(), z.device())?.sub(&Tensor::eye(
        l,
        z.dtype(),
        z.device(),
    )?)?;
    (cov.sqr()? * off_diagonal)?.sum_all()? / l as f64
}

/// The training loss on a batch of windows: `obs` `[B, H+1, obs_len]`, `actions`
/// `[B, H, A]`, `states` `[B, H+1, probe_dim]` (the probe's targets).
pub fn jepa_loss(
    model: &Jepa,
    obs: &Tensor,
    actions: &Tensor,
    states: &Tensor,
    cfg: &JepaLossConfig,
) -> Result<JepaLoss> {
    let (b, t1, obs_len) = obs.dims3()?;
    let h = t1 - 1;
    if h == 0 || actions.dims3()?.1 != h {
        candle_core::bail!(
            "jepa_loss: obs has {t1} steps, actions {:?}",
            actions.dims()
        );
    }
    // Encode every frame of every window at once: [B·(H+1), L] → [B, H+1, L].
    let z = model.encode(&obs.reshape((b * t1, obs_len))?)?;
    let l = z.dim(1)?;
    let z = z.reshape((b, t1, l))?;

    let mut pred = z.narrow(1, 0, 1)?.squeeze(1)?;
    let zero = Tensor::zeros((), obs.dtype(), obs.device())?;
    let (mut prediction, mut std, mut cov) = (zero.clone(), zero.clone(), zero);
    for t in 0..t1 {
        let target = z.narrow(1, t, 1)?.squeeze(1)?;
        std = (std + variance_loss(&target)?)?;
        cov = (cov + covariance_loss(&target)?)?;
        if t < h {
            let a = actions.narrow(1, t, 1)?.squeeze(1)?;
            pred = model.predict(&pred, &a)?;
            let next = z.narrow(1, t + 1, 1)?.squeeze(1)?;
            prediction = (prediction + (&pred - &next)?.sqr()?.mean_all()?)?;
        }
    }
    let prediction = (prediction / h as f64)?;
    let std = (std / t1 as f64)?;
    let cov = (cov / t1 as f64)?;
    let probed = model.probe(&z.reshape((b * t1, l))?.detach())?;
    let probe_target = states.reshape((b * t1, states.dim(2)?))?;
    // In the model's normalised units, so the term has the same scale as the others.
    let probe_err = ((probed
        - ((probe_target - f64::from(model.cfg.state_shift))?
            / f64::from(model.cfg.state_scale))?)?
    .sqr()?
    .mean_all())?;
    let total = (&prediction
        + (&std * cfg.std_weight)?
        + (&cov * cfg.cov_weight)?
        + (&probe_err * cfg.probe_weight)?)?;
    Ok(JepaLoss {
        total,
        prediction,
        std,
        cov,
        probe: probe_err,
    })
}

/// Collapse diagnostics of a set of latents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollapseStats {
    pub per_dim_std: Vec<f32>,
    pub mean_std: f32,
    pub min_std: f32,
    /// Effective rank (Roy & Vetterli 2007): `exp(H(p))` with `p` the normalised singular
    /// values of the centred latent matrix; 1 for a line, L for isotropic latents.
    pub effective_rank: f32,
}

/// Computes [`CollapseStats`] for `[N, L]` latents given row-major.
pub fn collapse_stats(z: &[f32], latent_dim: usize) -> CollapseStats {
    let l = latent_dim.max(1);
    let n = z.len() / l;
    let mut mean = vec![0f64; l];
    for row in z.chunks_exact(l) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let mut cov = vec![0f64; l * l];
    for row in z.chunks_exact(l) {
        for i in 0..l {
            let di = f64::from(row[i]) - mean[i];
            for j in i..l {
                cov[i * l + j] += di * (f64::from(row[j]) - mean[j]);
            }
        }
    }
    let denom = n.saturating_sub(1).max(1) as f64;
    for i in 0..l {
        for j in i..l {
            cov[i * l + j] /= denom;
            cov[j * l + i] = cov[i * l + j];
        }
    }
    let per_dim_std: Vec<f32> = (0..l)
        .map(|i| cov[i * l + i].max(0.0).sqrt() as f32)
        .collect();
    // Singular values of the centred matrix are sqrt of the covariance eigenvalues.
    let singular: Vec<f64> = symmetric_eigenvalues(&cov, l)
        .into_iter()
        .map(|e| e.max(0.0).sqrt())
        .collect();
    let total: f64 = singular.iter().sum();
    let effective_rank = if total > 0.0 {
        let entropy: f64 = singular
            .iter()
            .filter(|s| **s > 0.0)
            .map(|s| {
                let p = s / total;
                -p * p.ln()
            })
            .sum();
        entropy.exp() as f32
    } else {
        0.0
    };
    CollapseStats {
        mean_std: per_dim_std.iter().sum::<f32>() / l as f32,
        min_std: per_dim_std.iter().copied().fold(f32::INFINITY, f32::min),
        per_dim_std,
        effective_rank,
    }
}

/// Eigenvalues of a symmetric `n×n` matrix by cyclic Jacobi rotations (n is a latent
/// width, tens at most, so O(n³) sweeps are instant).
pub fn symmetric_eigenvalues(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum();
        let scale: f64 = (0..n).map(|i| m[i * n + i] * m[i * n + i]).sum::<f64>() + off;
        if off <= 1e-22 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let mkp = m[k * n + p];
                    let mkq = m[k * n + q];
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let mpk = m[p * n + k];
                    let mqk = m[q * n + k];
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
            }
        }
    }
    (0..n).map(|i| m[i * n + i]).collect()
}

/// Host copy of a tensor as `f32`.
pub(crate) fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// A device handle for CPU inference and training (the only backend this crate uses).
pub fn cpu() -> Device {
    Device::Cpu
}
