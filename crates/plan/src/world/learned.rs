//! A trained [`Jepa`] as a [`WorldModel`] for the planners, and the cost-module pieces that
//! work on its latents: the latent goal distance and a hazard guardrail read through the
//! position probe.
//!
//! Planning evaluates hundreds of candidate rollouts per call, so [`LearnedWorld`] overrides
//! `rollout_batch` with one batched predictor call per step over the whole population, and
//! the probe used by the guardrail (checked on every predicted latent) runs as plain `f32`
//! loops on host copies of its weights instead of through the tensor library.

use candle_core::{Device, Tensor};

use super::jepa::{Jepa, ObservationKind, host};
use crate::cost::{Guardrail, HazardGuardrail};
use crate::world::{PlanError, WorldModel};

/// A latent of a learned model.
pub type Latent = Vec<f32>;

/// Euclidean distance between latents (the objective: reach the goal observation's latent).
pub fn latent_distance(a: &Latent, b: &Latent) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

fn model_err(e: candle_core::Error) -> PlanError {
    PlanError::Model(e.to_string())
}

/// A trained JEPA (inference weights) as the planners' world model.
#[derive(Debug, Clone)]
pub struct LearnedWorld {
    model: Jepa,
    device: Device,
}

impl LearnedWorld {
    pub fn new(model: Jepa) -> Self {
        LearnedWorld {
            model,
            device: Device::Cpu,
        }
    }

    pub fn model(&self) -> &Jepa {
        &self.model
    }

    pub fn observation(&self) -> ObservationKind {
        self.model.config().observation
    }

    /// Encodes a batch of observations (`n` rows of the observation length).
    pub fn encode_batch(&self, obs: &[f32], n: usize) -> Result<Vec<Latent>, PlanError> {
        let len = self.observation().len();
        if obs.len() != n * len {
            return Err(PlanError::Observation {
                expected: n * len,
                got: obs.len(),
            });
        }
        if obs.iter().any(|v| !v.is_finite()) {
            return Err(PlanError::NonFiniteObservation);
        }
        let x = Tensor::from_slice(obs, (n, len), &self.device).map_err(model_err)?;
        let z = self.model.encode(&x).map_err(model_err)?;
        let l = self.model.config().latent_dim;
        Ok(host(&z)
            .map_err(model_err)?
            .chunks_exact(l)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// The position probe's reading of `z`, in environment units.
    pub fn probe_position(&self) -> Result<HostProbe, PlanError> {
        HostProbe::from_model(&self.model)
    }

    fn try_rollout_tensor(&self, z0: &Latent, actions: &Tensor) -> candle_core::Result<Tensor> {
        let (r, h, _) = actions.dims3()?;
        let mut z = Tensor::from_slice(z0, (1, z0.len()), &self.device)?.repeat((r, 1))?;
        let mut steps = Vec::with_capacity(h);
        for t in 0..h {
            z = self
                .model
                .predict(&z, &actions.narrow(1, t, 1)?.squeeze(1)?)?;
            steps.push(z.clone());
        }
        Tensor::stack(&steps, 1)
    }

    fn try_rollout_batch(
        &self,
        z0: &Latent,
        candidates: &[Vec<f32>],
    ) -> candle_core::Result<Vec<Vec<Latent>>> {
        let n = candidates.len();
        let a_dim = self.action_dim();
        let l = z0.len();
        let horizon = candidates
            .iter()
            .map(|c| c.len() / a_dim)
            .min()
            .unwrap_or(0);
        if n == 0 || horizon == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        let mut actions = Vec::with_capacity(n * horizon * a_dim);
        for c in candidates {
            actions.extend(
                c[..horizon * a_dim]
                    .iter()
                    .map(|v| if v.is_finite() { *v } else { 0.0 }),
            );
        }
        // [N, H, A]; step t is a narrow, not a copy per candidate.
        let actions = Tensor::from_vec(actions, (n, horizon, a_dim), &self.device)?;
        let mut z = Tensor::from_slice(z0, (1, l), &self.device)?.repeat((n, 1))?;
        let mut steps = Vec::with_capacity(horizon);
        for t in 0..horizon {
            let a = actions.narrow(1, t, 1)?.squeeze(1)?;
            z = self.model.predict(&z, &a)?;
            steps.push(host(&z)?);
        }
        let mut out = vec![Vec::with_capacity(horizon); n];
        for step in &steps {
            for (i, row) in step.chunks_exact(l).enumerate() {
                out[i].push(row.to_vec());
            }
        }
        Ok(out)
    }
}

impl WorldModel for LearnedWorld {
    type Latent = Latent;

    fn action_dim(&self) -> usize {
        self.model.config().action_dim
    }

    fn encode(&self, obs: &[f32]) -> Result<Latent, PlanError> {
        let mut z = self.encode_batch(obs, 1)?;
        z.pop().ok_or(PlanError::Observation {
            expected: self.observation().len(),
            got: obs.len(),
        })
    }

    fn predict(&self, z: &Latent, action: &[f32]) -> Latent {
        self.rollout_batch(z, &[action.to_vec()])
            .pop()
            .and_then(|mut r| r.pop())
            .unwrap_or_else(|| z.clone())
    }

    fn rollout(&self, z0: &Latent, actions: &[f32]) -> Vec<Latent> {
        self.rollout_batch(z0, &[actions.to_vec()])
            .pop()
            .unwrap_or_default()
    }

    fn rollout_tensor(&self, z0: &Latent, actions: &Tensor) -> Option<candle_core::Result<Tensor>> {
        Some(self.try_rollout_tensor(z0, actions))
    }

    fn latent_values(&self, z: &Latent) -> Option<Vec<f32>> {
        Some(z.clone())
    }

    /// One batched predictor call per step. A tensor error (which only a corrupt model can
    /// cause; shapes are checked at load) yields empty rollouts, which every cost ranks last.
    fn rollout_batch(&self, z0: &Latent, candidates: &[Vec<f32>]) -> Vec<Vec<Latent>> {
        match self.try_rollout_batch(z0, candidates) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "world-model rollout failed");
                vec![Vec::new(); candidates.len()]
            }
        }
    }
}

/// The probe MLP (`Linear → ReLU → Linear`) on host memory, mapping a latent to environment
/// coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct HostProbe {
    /// `[hidden, L]` row-major, `[hidden]`.
    w0: Vec<f32>,
    b0: Vec<f32>,
    /// `[out, hidden]`, `[out]`.
    w1: Vec<f32>,
    b1: Vec<f32>,
    latent_dim: usize,
    hidden: usize,
    out: usize,
    shift: f32,
    scale: f32,
}

impl HostProbe {
    pub fn from_model(model: &Jepa) -> Result<Self, PlanError> {
        let cfg = model.config();
        let (l, out) = (cfg.latent_dim, cfg.probe_dim);
        let hidden = cfg.hidden_dim / 2;
        let (w0, b0, w1, b1) = model.probe_weights().map_err(model_err)?;
        Self::new(
            [
                host(&w0).map_err(model_err)?,
                host(&b0).map_err(model_err)?,
                host(&w1).map_err(model_err)?,
                host(&b1).map_err(model_err)?,
            ],
            (l, hidden, out),
            (cfg.state_shift, cfg.state_scale),
        )
    }

    /// A probe from its weights `[w0 [hidden, L], b0 [hidden], w1 [out, hidden], b1 [out]]`
    /// (row-major) and the state normalisation it undoes (`y · scale + shift`).
    pub fn new(
        [w0, b0, w1, b1]: [Vec<f32>; 4],
        (latent_dim, hidden, out): (usize, usize, usize),
        (shift, scale): (f32, f32),
    ) -> Result<Self, PlanError> {
        if w0.len() != hidden * latent_dim
            || b0.len() != hidden
            || w1.len() != out * hidden
            || b1.len() != out
        {
            return Err(PlanError::Model(
                "probe weights have unexpected shapes".into(),
            ));
        }
        Ok(HostProbe {
            w0,
            b0,
            w1,
            b1,
            latent_dim,
            hidden,
            out,
            shift,
            scale,
        })
    }

    /// Reads the position out of a latent (environment units).
    pub fn position(&self, z: &[f32]) -> Vec<f32> {
        let mut h = self.b0.clone();
        for (j, hj) in h.iter_mut().enumerate() {
            let row = &self.w0[j * self.latent_dim..(j + 1) * self.latent_dim];
            *hj += row.iter().zip(z).map(|(w, x)| w * x).sum::<f32>();
            *hj = hj.max(0.0);
        }
        (0..self.out)
            .map(|k| {
                let row = &self.w1[k * self.hidden..(k + 1) * self.hidden];
                let y = self.b1[k] + row.iter().zip(&h).map(|(w, x)| w * x).sum::<f32>();
                y * self.scale + self.shift
            })
            .collect()
    }
}

/// The hazard guardrail on learned latents: the margin of the probed position.
#[derive(Debug, Clone)]
pub struct ProbedHazardGuardrail {
    pub probe: HostProbe,
    pub hazards: HazardGuardrail,
}

impl Guardrail<Latent> for ProbedHazardGuardrail {
    fn name(&self) -> &str {
        "hazard"
    }

    fn margin(&self, z: &Latent) -> f32 {
        let p = self.probe.position(z);
        match p.as_slice() {
            [x, y, ..] => self.hazards.margin(&[*x, *y]),
            // A probe without two outputs cannot vouch for safety.
            _ => f32::NEG_INFINITY,
        }
    }
}

/// The probe through the tensor library, `[N·L]` latents in, `[N·probe_dim]` out (normalised
/// units); the reference [`HostProbe`] is tested against.
pub fn probe_tensor(model: &Jepa, z: &[f32]) -> Result<Vec<f32>, PlanError> {
    let l = model.config().latent_dim;
    let t = Tensor::from_slice(z, (z.len() / l.max(1), l), &Device::Cpu).map_err(model_err)?;
    let p = model.probe(&t).map_err(model_err)?;
    host(&p).map_err(model_err)
}
