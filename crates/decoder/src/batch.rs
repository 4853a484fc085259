//! Teacher-forcing batches and the token loss of decoder training, and the order in which
//! an epoch visits the training sentences.

use candle_core::{D, DType, Device, Tensor};
use lcm_engine::sonar_decoder::TokenBatch as EngineBatch;
use lcm_sonar::SpecialIds;
use lcm_train::new_rng;
use rand::seq::SliceRandom;

use crate::error::{DecoderError, Result};
use crate::tokenizer::PROMPT;

/// Mixed into the seed for the per-epoch batch plan (never shared with other draws).
const PLAN_SALT: u64 = 0x0dec_0de5_0000_0001;

/// A batch: conditioning `[N, D]`, decoder input `[N, T]` and target `[N, T]` (u32, pad 0),
/// as tensors (candle) and as host rows (the fused engine, [`TokenBatch::for_engine`]).
pub(crate) struct TokenBatch {
    pub(crate) conditioning: Tensor,
    pub(crate) input: Tensor,
    pub(crate) target: Vec<u32>,
    pub(crate) tokens: usize,
    /// `conditioning` row-major, `[N·D]`.
    host_conditioning: Vec<f32>,
    /// `input` row-major, `[N·T]`.
    host_input: Vec<u32>,
    rows: usize,
    time: usize,
}

impl TokenBatch {
    /// The batch as the fused engine reads it, scored with label smoothing `smoothing`.
    pub(crate) fn for_engine(&self, smoothing: f64) -> EngineBatch<'_> {
        EngineBatch {
            conditioning: &self.host_conditioning,
            prev_ids: &self.host_input,
            target_ids: &self.target,
            batch: self.rows,
            time: self.time,
            pad: SpecialIds::SONAR.pad,
            label_smoothing: smoothing,
        }
    }
}

pub(crate) fn make_batch(
    rows: &[usize],
    pieces: &[Vec<u32>],
    vectors: &[f32],
    dim: usize,
    device: &Device,
) -> Result<TokenBatch> {
    let special = SpecialIds::SONAR;
    let t = rows
        .iter()
        .map(|&r| pieces[r].len() + PROMPT.len())
        .max()
        .unwrap_or(1);
    let n = rows.len();
    let mut input = vec![special.pad; n * t];
    let mut target = vec![special.pad; n * t];
    let mut cond = Vec::with_capacity(n * dim);
    let mut tokens = 0;
    for (i, &r) in rows.iter().enumerate() {
        // sequence = [prompt.., pieces.., </s>]; input = seq[..-1], target = seq[1..]
        let mut seq: Vec<u32> = PROMPT.to_vec();
        seq.extend_from_slice(&pieces[r]);
        seq.push(special.eos);
        let len = seq.len() - 1;
        input[i * t..i * t + len].copy_from_slice(&seq[..len]);
        // Targets of prompt positions beyond the first are not scored (PROMPT has one).
        target[i * t..i * t + len].copy_from_slice(&seq[1..]);
        for p in target[i * t..i * t + PROMPT.len() - 1].iter_mut() {
            *p = special.pad;
        }
        tokens += len + 1 - PROMPT.len();
        cond.extend_from_slice(&vectors[r * dim..(r + 1) * dim]);
    }
    Ok(TokenBatch {
        conditioning: Tensor::from_vec(cond.clone(), (n, dim), device)?,
        input: Tensor::from_vec(input.clone(), (n, t), device)?,
        target,
        tokens,
        host_conditioning: cond,
        host_input: input,
        rows: n,
        time: t,
    })
}

/// Label-smoothed cross-entropy over the non-pad targets: returns the mean objective
/// (differentiable) and the summed unsmoothed NLL with its token count.
pub(crate) fn token_loss(
    logits: &Tensor,
    target: &[u32],
    pad: u32,
    smoothing: f64,
) -> Result<(Tensor, f64, usize)> {
    let (n, t, v) = logits.dims3()?;
    if target.len() != n * t {
        return Err(DecoderError::Training(format!(
            "logits {n}×{t} do not match {} targets",
            target.len()
        )));
    }
    let (keep, gold): (Vec<u32>, Vec<u32>) = target
        .iter()
        .enumerate()
        .filter(|&(_, &g)| g != pad)
        .map(|(i, &g)| (i as u32, g))
        .unzip();
    if keep.is_empty() {
        return Err(DecoderError::Training(
            "a batch without target tokens".into(),
        ));
    }
    let count = keep.len();
    let device = logits.device();
    let rows = logits
        .reshape((n * t, v))?
        .index_select(&Tensor::new(keep, device)?, 0)?
        .to_dtype(DType::F32)?;
    let lsm = candle_nn::ops::log_softmax(&rows, D::Minus1)?;
    let nll = lsm
        .gather(&Tensor::new(gold, device)?.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?;
    let objective = if smoothing > 0.0 {
        let smooth = lsm.mean(1)?.neg()?;
        ((&nll * (1.0 - smoothing))? + (smooth * smoothing)?)?
    } else {
        nll.clone()
    };
    let nll_sum = nll.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok((objective.mean_all()?, nll_sum, count))
}

/// Batches of epoch `epoch`: a seeded shuffle, length-sorted within windows of 50 batches
/// (little padding), then a shuffle of the batches. A function of `(seed, epoch)` alone.
pub(crate) fn epoch_plan(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let mut rng = new_rng(seed ^ PLAN_SALT);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for window in order.chunks(batch_size * 50) {
        let mut window = window.to_vec();
        window.sort_by_key(|&i| (lengths[i], i));
        batches.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}
