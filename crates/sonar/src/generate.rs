//! Sequence generation over an [`IncrementalDecoder`]: fairseq2's beam search (what
//! sonar-space's `EmbeddingToTextModelPipeline` uses), greedy decoding, and sampling.
//!
//! Beam search reproduces fairseq2 0.5.2 `BeamSearchSeq2SeqGenerator` with
//! `StandardBeamSearchAlgorithm` (`fairseq2/generation/beam_search/{generator,algo}.py`):
//!
//! - the prompt is fed first; its tokens after the first are scored with the plain
//!   `log_softmax` of the logits (prefill, `generator.py:525-571`). For SONAR the prompt is
//!   `[</s>, lang]`, so log p(lang | `</s>`) is part of every hypothesis score;
//! - each step takes `log_softmax` in float32 and then, at the last possible step
//!   (`step == max_seq_len - 1`), leaves only EOS finite (forced EOS); otherwise it subtracts
//!   `unk_penalty` from UNK, sets PAD to -inf, and sets EOS to -inf before `min_seq_len`
//!   (`generator.py:585-625`);
//! - per prompt, the cumulative score of each beam is added, the beam × V matrix is
//!   flattened and its top `min(2·beam, V)` candidates are taken (`algo.py:94-107`);
//! - only EOS candidates among the **first** `beam_size` finish a hypothesis, in topk order;
//!   the prompt stops as soon as it has `beam_size` hypotheses, even mid-list; otherwise all
//!   EOS candidates are dropped and the first `beam_size` others continue
//!   (`generator.py:712-751`);
//! - a hypothesis keeps the generated tokens including EOS; its step scores are differences
//!   of cumulative scores except the first, which keeps the cumulative value; its score is
//!   the cumulative score divided by `(seq_len - 1)^len_penalty`, `seq_len` counting the
//!   prompt (`generator.py:756-799`); each prompt's list is sorted by score, descending,
//!   with a stable sort (`generator.py:519-520`).
//!
//! Prompts of different lengths follow fairseq2's padded-prompt rules: the common prefix
//! length is prefilled, longer prompts are then forced token by token with the processed
//! scores, and `min_seq_len`/`max_seq_len` use the longest prompt.
//!
//! **Ties.** `torch.topk` on CPU orders equal values by libstdc++'s `partial_sort`/
//! `nth_element` internals (checked with torch 2.8: 10 equal values out of 1035 come back as
//! indices `[8, 9, 4, 7, 5, 3, 1, 0, 2, 6]`), which is neither stable nor index ordered. Here
//! equal candidates are ordered by their flat index in the beam × V matrix (beam-major, then
//! token id), which is deterministic. Ties need two bit-identical float32 cumulative scores,
//! which random or trained weights practically never produce except for -inf candidates;
//! those only matter when fewer than `beam_size` finite candidates exist (a vocabulary
//! smaller than 2·beam, or a prompt of cumulative score -inf).
//!
//! Sampling follows fairseq2's `SamplingSeq2SeqGenerator` (`sampling/generator.py:596-709`,
//! samplers in `sampling/sampler.py`) with one generation per prompt, but uses a seeded
//! per-row RNG instead of `torch.multinomial`, so it cannot reproduce torch draws.

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::error::{Result, SonarError};
use crate::incremental::{IncrementalDecoder, SpecialIds};

/// Beam search settings, as fairseq2's `BeamSearchSeq2SeqGenerator` takes them, with the
/// lengths already resolved to absolute numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamSearchConfig {
    /// Hypotheses kept per prompt (fairseq2 default 5).
    pub beam_size: usize,
    /// Minimum number of generated tokens before EOS is allowed (default 1).
    pub min_gen_len: usize,
    /// Maximum number of generated tokens, EOS included.
    pub max_gen_len: usize,
    /// Maximum sequence length **including the prompt** (cap the decoder's position limit).
    pub max_seq_len: usize,
    /// Exponent of the length normalisation (default 1.0).
    pub len_penalty: f32,
    /// Subtracted from the UNK log-probability at every step (default 0).
    pub unk_penalty: f32,
    /// Divide scores by `(generated + prompt - 1)^len_penalty` (default true).
    pub normalize_scores: bool,
}

impl BeamSearchConfig {
    /// The settings sonar-space's `EmbeddingToTextModelPipeline.predict` uses: beam 5 and the
    /// defaults above, `max_gen_len = 1.0 · D + 128` (the source "length" is the embedding
    /// dimension `D`, `generator.py:343`), `max_seq_len = min(decoder max_seq_len,
    /// prompt_len + max_gen_len)` (`generator.py:297-300`, `:437`).
    pub fn sonar_pipeline(
        embedding_dim: usize,
        decoder_max_seq_len: usize,
        prompt_len: usize,
    ) -> Self {
        let max_gen_len = embedding_dim + 128;
        Self {
            beam_size: 5,
            min_gen_len: 1,
            max_gen_len,
            max_seq_len: decoder_max_seq_len.min(prompt_len + max_gen_len),
            len_penalty: 1.0,
            unk_penalty: 0.0,
            normalize_scores: true,
        }
    }
}

/// The best hypothesis of every row under a concept decoder's settings: beam search as
/// `search` says when `config.temperature == 0`, otherwise sampling with `config`'s
/// temperature, top-k, top-p and seed and `search`'s length bounds (a negative temperature is
/// refused by [`sample`]). Every row gets the same `prompt`.
pub fn best_hypotheses<D: IncrementalDecoder>(
    decoder: &D,
    conditioning: &Tensor,
    prompt: &[u32],
    special: SpecialIds,
    search: &BeamSearchConfig,
    config: &lcm_concept::DecodeConfig,
) -> Result<Vec<Hypothesis>> {
    let prompts = vec![prompt.to_vec(); conditioning.dim(0)?];
    if config.temperature != 0.0 {
        let sampling = SamplingConfig {
            temperature: config.temperature,
            top_k: config.top_k,
            top_p: config.top_p,
            seed: config.seed,
            min_gen_len: search.min_gen_len,
            max_gen_len: search.max_gen_len,
            max_seq_len: search.max_seq_len,
        };
        return sample(decoder, conditioning, &prompts, special, &sampling);
    }
    beam_search(decoder, conditioning, &prompts, special, search)?
        .into_iter()
        .map(|hyps| {
            hyps.into_iter()
                .next()
                .ok_or_else(|| gen_err("beam search returned no hypothesis"))
        })
        .collect()
}

/// A finished sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens including the final EOS; the prompt is excluded.
    pub ids: Vec<u32>,
    /// Normalised (or raw cumulative) score, see the module docs.
    pub score: f32,
    /// One log-probability per entry of `ids`; the first also includes the prompt's score.
    pub step_scores: Vec<f32>,
}

/// Sampling settings (fairseq2 `SamplingSeq2SeqGenerator` with one generation per prompt).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Logits are divided by it before the softmax (fairseq2 default 0.6). Must be > 0.
    pub temperature: f32,
    /// Sample among the `top_k` most likely tokens; 0 turns it off.
    pub top_k: usize,
    /// Nucleus threshold; values ≥ 1 turn it off. Applied after `top_k` when both are set.
    pub top_p: f32,
    /// Row `i` of a call draws from `StdRng::seed_from_u64(seed + i)`, so a row's sample
    /// does not depend on the other rows of the batch.
    pub seed: u64,
    pub min_gen_len: usize,
    pub max_gen_len: usize,
    /// Maximum sequence length including the prompt.
    pub max_seq_len: usize,
}

impl SamplingConfig {
    /// fairseq2's sampling defaults (temperature 0.6, `sampling/generator.py:215-232`) with
    /// the same length rule as [`BeamSearchConfig::sonar_pipeline`], no top-k/top-p.
    pub fn sonar_pipeline(
        embedding_dim: usize,
        decoder_max_seq_len: usize,
        prompt_len: usize,
        seed: u64,
    ) -> Self {
        let max_gen_len = embedding_dim + 128;
        Self {
            temperature: 0.6,
            top_k: 0,
            top_p: 1.0,
            seed,
            min_gen_len: 1,
            max_gen_len,
            max_seq_len: decoder_max_seq_len.min(prompt_len + max_gen_len),
        }
    }
}

fn gen_err(message: impl Into<String>) -> SonarError {
    SonarError::Generation(message.into())
}

/// Lengths derived the way fairseq2's generator op does (`generator.py:415-425`).
struct Lengths {
    /// Prefilled positions (the shortest prompt).
    min_prompt: usize,
    /// EOS is blocked while `step < min_seq - 1`.
    min_seq: usize,
    /// Steps run while `step < max_seq`; `max_seq - 1` forces EOS.
    max_seq: usize,
}

fn check_inputs(
    conditioning: &Tensor,
    prompts: &[Vec<u32>],
    special: SpecialIds,
    vocab: usize,
    min_gen_len: usize,
    max_gen_len: usize,
    max_seq_len: usize,
) -> Result<Lengths> {
    let (rows, _) = conditioning.dims2().map_err(|_| {
        gen_err(format!(
            "conditioning must be [N, D], got {:?}",
            conditioning.dims()
        ))
    })?;
    if rows != prompts.len() {
        return Err(gen_err(format!(
            "{} conditioning rows but {} prompts",
            rows,
            prompts.len()
        )));
    }
    for (name, id) in [
        ("pad", special.pad),
        ("unk", special.unk),
        ("eos", special.eos),
    ] {
        if id as usize >= vocab {
            return Err(gen_err(format!(
                "{name} id {id} is outside the vocabulary of {vocab}"
            )));
        }
    }
    if min_gen_len < 1 {
        return Err(gen_err("min_gen_len must be at least 1"));
    }
    if max_gen_len < min_gen_len {
        return Err(gen_err(format!(
            "min_gen_len ({min_gen_len}) must not exceed max_gen_len ({max_gen_len})"
        )));
    }
    let mut min_prompt = usize::MAX;
    let mut max_prompt = 0;
    for (i, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            return Err(gen_err(format!(
                "prompt {i} is empty (SONAR's is [</s>, lang])"
            )));
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(gen_err(format!(
                "prompt {i} holds token {bad}, outside the vocabulary of {vocab}"
            )));
        }
        min_prompt = min_prompt.min(prompt.len());
        max_prompt = max_prompt.max(prompt.len());
    }
    if max_prompt >= max_seq_len {
        return Err(gen_err(format!(
            "prompt length {max_prompt} leaves no room under max_seq_len {max_seq_len}"
        )));
    }
    Ok(Lengths {
        min_prompt,
        min_seq: max_seq_len.min(max_prompt + min_gen_len),
        max_seq: max_seq_len.min(max_prompt + max_gen_len),
    })
}

/// Feeds one token per row and writes the logits `[B·V]` into `logits` (one buffer for the
/// whole search: at SONAR's V = 256k a fresh one per step costs page faults).
fn decode_step<D: IncrementalDecoder>(
    decoder: &D,
    state: &mut D::State,
    tokens: Vec<u32>,
    conditioning: &Tensor,
    vocab: usize,
    logits: &mut Vec<f32>,
) -> Result<()> {
    let rows = tokens.len();
    let input = Tensor::from_vec(tokens, (rows, 1), conditioning.device())?;
    decoder.step_into(state, &input, logits)?;
    if logits.len() != rows * vocab {
        return Err(gen_err(format!(
            "decoder returned {} logits, expected [{rows}, {vocab}]",
            logits.len()
        )));
    }
    Ok(())
}

/// Applies `rows` to the decoder state unless it is the identity.
fn reorder_if_needed<D: IncrementalDecoder>(
    decoder: &D,
    state: &mut D::State,
    rows: &[u32],
    old_len: usize,
    conditioning: &Tensor,
) -> Result<()> {
    let identity = rows.len() == old_len && rows.iter().enumerate().all(|(i, &r)| r as usize == i);
    if !identity {
        let index = Tensor::from_vec(rows.to_vec(), rows.len(), conditioning.device())?;
        decoder.reorder(state, &index)?;
    }
    Ok(())
}

/// `(max, ln Σ exp(x - max))` of one row, the two numbers of a float32 `log_softmax`
/// (`lp = (x - max) - lse`, the way torch's CPU kernel computes it). The sum is accumulated
/// in f64; it differs from torch's vectorised f32 sum by rounding only.
fn log_softmax_stats(row: &[f32]) -> Result<(f32, f32)> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if row.iter().any(|x| x.is_nan()) || max == f32::INFINITY || max == f32::NEG_INFINITY {
        // fairseq2 raises SequenceGenerationError on NaN log-probabilities; +inf or an
        // all--inf row would make them NaN.
        return Err(gen_err("the decoder produced NaN or infinite logits"));
    }
    let sum: f64 = row.iter().map(|&x| f64::from((x - max).exp())).sum();
    Ok((max, sum.ln() as f32))
}

/// The `k` best `(score, index)` of a stream visited in increasing index order, best first;
/// equal scores keep the lower index first.
struct TopK {
    k: usize,
    items: Vec<(f32, u32)>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    /// Offers an entry; returns whether it was kept.
    #[inline]
    fn push(&mut self, score: f32, index: u32) -> bool {
        if self.items.len() == self.k {
            // A later index with an equal score never displaces an earlier one.
            match self.items.last() {
                Some(&(worst, _)) if score > worst => {
                    self.items.pop();
                }
                _ => return false,
            }
        }
        let at = self.items.partition_point(|&(s, _)| s >= score);
        self.items.insert(at, (score, index));
        true
    }
}

/// How a step turns raw log-probabilities into the scores the search ranks.
#[derive(Clone, Copy)]
struct StepRule {
    special: SpecialIds,
    unk_penalty: f32,
    /// Last possible step: everything but EOS is -inf.
    force_eos: bool,
    /// Before `min_seq_len`: EOS is -inf.
    block_eos: bool,
}

impl StepRule {
    /// fairseq2's order (`generator.py:607-625`): UNK penalty, then PAD, then EOS.
    #[inline]
    fn apply(&self, token: u32, lp: f32) -> f32 {
        let s = self.special;
        if self.force_eos {
            return if token == s.eos {
                lp
            } else {
                f32::NEG_INFINITY
            };
        }
        let mut v = lp;
        if token == s.unk {
            v -= self.unk_penalty;
        }
        if token == s.pad {
            v = f32::NEG_INFINITY;
        }
        if token == s.eos && self.block_eos {
            v = f32::NEG_INFINITY;
        }
        v
    }
}

/// One live sequence of the beam search.
#[derive(Clone)]
struct BeamRow {
    prompt: usize,
    /// Prompt tokens, then generated ones.
    tokens: Vec<u32>,
    /// Cumulative score after each position (position 0 scores 0).
    cum: Vec<f32>,
}

/// Beam search, fairseq2 semantics (see the module docs). Returns per prompt its finished
/// hypotheses sorted by score, descending (at most `beam_size`; a prompt whose beams never
/// finish by `max_seq_len` can return fewer).
pub fn beam_search<D: IncrementalDecoder>(
    decoder: &D,
    conditioning: &Tensor,
    prompts: &[Vec<u32>],
    special: SpecialIds,
    cfg: &BeamSearchConfig,
) -> Result<Vec<Vec<Hypothesis>>> {
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    if cfg.beam_size < 1 {
        return Err(gen_err("beam_size must be at least 1"));
    }
    let vocab = decoder.vocab_size();
    let len = check_inputs(
        conditioning,
        prompts,
        special,
        vocab,
        cfg.min_gen_len,
        cfg.max_gen_len,
        cfg.max_seq_len,
    )?;
    let beam = cfg.beam_size;
    let n_cand = (2 * beam).min(vocab);

    let mut state = decoder.start(conditioning)?;
    let mut rows: Vec<BeamRow> = prompts
        .iter()
        .enumerate()
        .map(|(prompt, p)| BeamRow {
            prompt,
            tokens: p.clone(),
            cum: vec![0.0],
        })
        .collect();

    // Prefill: score the shared prompt prefix with plain log_softmax. fairseq2 sums these
    // scores with a cumsum, which accumulates in double on CPU.
    let mut prefill_sum = vec![0f64; rows.len()];
    let mut logits = Vec::new();
    for pos in 1..len.min_prompt {
        let tokens = rows.iter().map(|r| r.tokens[pos - 1]).collect();
        decode_step(
            decoder,
            &mut state,
            tokens,
            conditioning,
            vocab,
            &mut logits,
        )?;
        for (i, row) in rows.iter_mut().enumerate() {
            let x = &logits[i * vocab..(i + 1) * vocab];
            let (max, lse) = log_softmax_stats(x)?;
            let lp = (x[row.tokens[pos] as usize] - max) - lse;
            prefill_sum[i] += f64::from(lp);
            row.cum.push(prefill_sum[i] as f32);
        }
    }

    let mut output: Vec<Vec<Hypothesis>> = vec![Vec::new(); prompts.len()];
    let normalize = |cum: f32, seq_len: usize| -> f32 {
        if cfg.normalize_scores {
            cum / ((seq_len - 1) as f64).powf(f64::from(cfg.len_penalty)) as f32
        } else {
            cum
        }
    };

    for step in len.min_prompt..len.max_seq {
        let tokens = rows.iter().map(|r| r.tokens[step - 1]).collect();
        decode_step(
            decoder,
            &mut state,
            tokens,
            conditioning,
            vocab,
            &mut logits,
        )?;
        let rule = StepRule {
            special,
            unk_penalty: cfg.unk_penalty,
            force_eos: step == len.max_seq - 1,
            block_eos: step + 1 < len.min_seq,
        };

        // Per row: either the forced prompt token's score, or its best `n_cand` candidates
        // (cumulative score, token). The merged top of a prompt lies within the union of
        // its rows' tops, so no beam × V buffer is needed.
        let per_row: Vec<Vec<(f32, u32)>> = rows
            .par_iter()
            .enumerate()
            .map(|(i, row)| -> Result<Vec<(f32, u32)>> {
                let x = &logits[i * vocab..(i + 1) * vocab];
                let (max, lse) = log_softmax_stats(x)?;
                let prev = row.cum[step - 1];
                if step < row.tokens.len() {
                    let t = row.tokens[step];
                    let lp = rule.apply(t, (x[t as usize] - max) - lse);
                    return Ok(vec![(prev + lp, t)]);
                }
                let mut top = TopK::new(n_cand);
                // Once the list is full and its worst entry is an ordinary token w, an
                // ordinary token t with x[t] ≤ x[w] cannot enter: its score is computed by
                // the same monotone f32 operations from a smaller or equal logit, so it is
                // ≤ the worst score, and an equal score never displaces. Skipping those
                // leaves the result bit for bit the same.
                let ordinary = |t: u32| t != special.pad && t != special.unk && t != special.eos;
                let mut cut: Option<f32> = None;
                for (t, &xv) in x.iter().enumerate() {
                    let t = t as u32;
                    if let Some(c) = cut
                        && xv <= c
                        && ordinary(t)
                    {
                        continue;
                    }
                    let lp = rule.apply(t, (xv - max) - lse);
                    if top.push(lp + prev, t) {
                        cut = match top.items.last() {
                            Some(&(_, w)) if top.items.len() == n_cand && ordinary(w) => {
                                Some(x[w as usize])
                            }
                            _ => None,
                        };
                    }
                }
                Ok(top.items)
            })
            .collect::<Result<_>>()?;

        let old_len = rows.len();
        let mut next_rows: Vec<BeamRow> = Vec::with_capacity(old_len);
        let mut order: Vec<u32> = Vec::with_capacity(old_len);
        let mut start = 0;
        while start < old_len {
            let prompt = rows[start].prompt;
            let mut end = start + 1;
            while end < old_len && rows[end].prompt == prompt {
                end += 1;
            }
            if step < rows[start].tokens.len() {
                // Still inside this (longer) prompt: a beam of one row, forced token.
                let (score, t) = per_row[start][0];
                let mut row = rows[start].clone();
                row.cum.push(score);
                debug_assert_eq!(row.tokens[step], t);
                next_rows.push(row);
                order.push(start as u32);
                start = end;
                continue;
            }
            // Merge the rows' candidates in flat (beam × V) order semantics.
            let mut cands: Vec<(f32, usize, u32)> = Vec::with_capacity((end - start) * n_cand);
            for (b, list) in per_row[start..end].iter().enumerate() {
                cands.extend(list.iter().map(|&(s, t)| (s, b, t)));
            }
            cands.sort_by(|a, b| {
                b.0.total_cmp(&a.0)
                    .then_with(|| (a.1 * vocab + a.2 as usize).cmp(&(b.1 * vocab + b.2 as usize)))
            });
            cands.truncate(n_cand);

            let mut done = false;
            for &(score, b, t) in cands.iter().take(beam) {
                if t != special.eos {
                    continue;
                }
                let row = &rows[start + b];
                let first = prompts[prompt].len();
                let mut ids = row.tokens[first..].to_vec();
                ids.push(t);
                let mut cums = row.cum[first..].to_vec();
                cums.push(score);
                let mut step_scores = Vec::with_capacity(cums.len());
                step_scores.push(cums[0]);
                step_scores.extend(cums.windows(2).map(|w| w[1] - w[0]));
                output[prompt].push(Hypothesis {
                    ids,
                    score: normalize(score, step + 1),
                    step_scores,
                });
                if output[prompt].len() == beam {
                    done = true;
                    break;
                }
            }
            if !done {
                let mut kept = 0;
                for &(score, b, t) in cands.iter().filter(|c| c.2 != special.eos) {
                    if kept == beam {
                        break;
                    }
                    let mut row = rows[start + b].clone();
                    row.tokens.push(t);
                    row.cum.push(score);
                    next_rows.push(row);
                    order.push((start + b) as u32);
                    kept += 1;
                }
                if kept == 0 {
                    return Err(gen_err(format!(
                        "prompt {prompt}: no candidate other than EOS at step {step}"
                    )));
                }
            }
            start = end;
        }

        if next_rows.is_empty() {
            break;
        }
        reorder_if_needed(decoder, &mut state, &order, old_len, conditioning)?;
        rows = next_rows;
    }

    for hyps in &mut output {
        // Stable, like Python's list.sort(reverse=True).
        hyps.sort_by(|a, b| b.score.total_cmp(&a.score));
    }
    Ok(output)
}

/// Greedy decoding = beam search with `beam_size = 1` (EOS only when it is the argmax).
/// `cfg.beam_size` is ignored.
pub fn greedy<D: IncrementalDecoder>(
    decoder: &D,
    conditioning: &Tensor,
    prompts: &[Vec<u32>],
    special: SpecialIds,
    cfg: &BeamSearchConfig,
) -> Result<Vec<Hypothesis>> {
    let cfg = BeamSearchConfig {
        beam_size: 1,
        ..cfg.clone()
    };
    beam_search(decoder, conditioning, prompts, special, &cfg)?
        .into_iter()
        .enumerate()
        .map(|(i, mut hyps)| {
            hyps.pop()
                .ok_or_else(|| gen_err(format!("prompt {i}: no hypothesis finished")))
        })
        .collect()
}

/// One live sequence of sampling, with its own RNG.
struct SampleRow {
    prompt: usize,
    tokens: Vec<u32>,
    /// ln of the probability of each position's token (position 0: 0).
    logp: Vec<f32>,
    rng: StdRng,
}

/// Float32 softmax of `x / temperature`, like fairseq2 (`logits /= temperature`, then
/// `softmax(dtype=float32)`).
fn softmax_t(x: &[f32], temperature: f32) -> Result<Vec<f32>> {
    let scaled: Vec<f32> = x.iter().map(|&v| v / temperature).collect();
    let (max, lse) = log_softmax_stats(&scaled)?;
    Ok(scaled.iter().map(|&v| ((v - max) - lse).exp()).collect())
}

/// The `m` largest `probs` as indices, ordered by (probability desc, index asc).
fn top_indices(probs: &[f32], m: usize) -> Vec<u32> {
    let cmp = |a: &u32, b: &u32| {
        probs[*b as usize]
            .total_cmp(&probs[*a as usize])
            .then(a.cmp(b))
    };
    let mut idx: Vec<u32> = (0..probs.len() as u32).collect();
    let m = m.min(idx.len());
    if m < idx.len() && m > 0 {
        idx.select_nth_unstable_by(m - 1, cmp);
        idx.truncate(m);
    }
    idx.sort_unstable_by(cmp);
    idx
}

/// Draws one index of `weights` (unnormalised) in the order given.
fn multinomial(weights: impl Iterator<Item = (u32, f64)> + Clone, rng: &mut StdRng) -> Result<u32> {
    let total: f64 = weights.clone().map(|(_, w)| w).sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(gen_err("no token has a positive probability to sample"));
    }
    let target = rng.random::<f64>() * total;
    let mut acc = 0.0;
    let mut last = None;
    for (i, w) in weights {
        if w <= 0.0 {
            continue;
        }
        acc += w;
        last = Some(i);
        if acc > target {
            return Ok(i);
        }
    }
    // Rounding can leave `target` just above the accumulated sum: take the last candidate.
    last.ok_or_else(|| gen_err("no token has a positive probability to sample"))
}

/// fairseq2's samplers on the processed probabilities: `TopKSampler` (k = 1 is argmax),
/// then `TopPSampler` (keep the sorted prefix whose mass **before** each token is ≤ p,
/// `sampler.py:47-62`), else plain multinomial over the vocabulary.
fn sample_token(probs: &[f32], cfg: &SamplingConfig, rng: &mut StdRng) -> Result<u32> {
    let vocab = probs.len();
    let use_p = cfg.top_p < 1.0;
    let mut cands: Option<Vec<u32>> = None;
    if cfg.top_k > 0 && cfg.top_k < vocab {
        let top = top_indices(probs, cfg.top_k);
        if cfg.top_k == 1 {
            return top
                .first()
                .copied()
                .ok_or_else(|| gen_err("empty vocabulary"));
        }
        cands = Some(top);
    }
    if use_p {
        let total: f64 = match &cands {
            Some(c) => c.iter().map(|&i| f64::from(probs[i as usize])).sum(),
            None => probs.iter().map(|&p| f64::from(p)).sum(),
        };
        // NaN-safe: a NaN total fails too.
        if total.is_nan() || total <= 0.0 {
            return Err(gen_err("no token has a positive probability to sample"));
        }
        let p = f64::from(cfg.top_p);
        // Without top-k, sort only a growing prefix until the nucleus is closed.
        let mut m = 64usize;
        loop {
            let sorted = match &cands {
                Some(c) => c.clone(),
                None => top_indices(probs, m),
            };
            let mut before = 0.0;
            let mut keep = 0;
            for &i in &sorted {
                if before / total > p {
                    break;
                }
                before += f64::from(probs[i as usize]);
                keep += 1;
            }
            let closed = keep < sorted.len() || cands.is_some() || sorted.len() == vocab;
            if closed {
                let kept = &sorted[..keep];
                return multinomial(kept.iter().map(|&i| (i, f64::from(probs[i as usize]))), rng);
            }
            m = m.saturating_mul(4);
        }
    }
    match cands {
        Some(c) => multinomial(c.iter().map(|&i| (i, f64::from(probs[i as usize]))), rng),
        None => multinomial(
            probs
                .iter()
                .enumerate()
                .map(|(i, &p)| (i as u32, f64::from(p))),
            rng,
        ),
    }
}

/// Ancestral sampling, one sample per prompt (fairseq2 `SamplingSeq2SeqGenerator` step rules:
/// forced EOS at the last step, PAD never, EOS not before `min_gen_len`). Hypotheses carry
/// what fairseq2 computes with `compute_scores=True`, `normalize_scores=True`: `step_scores`
/// are the ln of the (temperature-scaled, unrenormalised) probabilities of the generated
/// tokens (fairseq2 stores the probabilities themselves), and `score` is the sum of these
/// ln-probabilities over every position after the first, prompt included, divided by
/// `seq_len - 1`.
pub fn sample<D: IncrementalDecoder>(
    decoder: &D,
    conditioning: &Tensor,
    prompts: &[Vec<u32>],
    special: SpecialIds,
    cfg: &SamplingConfig,
) -> Result<Vec<Hypothesis>> {
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    if !(cfg.temperature > 0.0 && cfg.temperature.is_finite()) {
        return Err(gen_err(format!(
            "temperature must be positive and finite, got {}",
            cfg.temperature
        )));
    }
    if cfg.top_p.is_nan() || cfg.top_p <= 0.0 {
        return Err(gen_err(format!(
            "top_p must be in (0, 1], got {}",
            cfg.top_p
        )));
    }
    let vocab = decoder.vocab_size();
    let len = check_inputs(
        conditioning,
        prompts,
        special,
        vocab,
        cfg.min_gen_len,
        cfg.max_gen_len,
        cfg.max_seq_len,
    )?;

    let mut state = decoder.start(conditioning)?;
    let mut rows: Vec<SampleRow> = prompts
        .iter()
        .enumerate()
        .map(|(prompt, p)| SampleRow {
            prompt,
            tokens: p.clone(),
            logp: vec![0.0],
            rng: StdRng::seed_from_u64(cfg.seed.wrapping_add(prompt as u64)),
        })
        .collect();

    let mut logits = Vec::new();
    for pos in 1..len.min_prompt {
        let tokens = rows.iter().map(|r| r.tokens[pos - 1]).collect();
        decode_step(
            decoder,
            &mut state,
            tokens,
            conditioning,
            vocab,
            &mut logits,
        )?;
        for (i, row) in rows.iter_mut().enumerate() {
            let probs = softmax_t(&logits[i * vocab..(i + 1) * vocab], cfg.temperature)?;
            row.logp.push(probs[row.tokens[pos] as usize].ln());
        }
    }

    let mut output: Vec<Option<Hypothesis>> = vec![None; prompts.len()];
    for step in len.min_prompt..len.max_seq {
        let tokens = rows.iter().map(|r| r.tokens[step - 1]).collect();
        decode_step(
            decoder,
            &mut state,
            tokens,
            conditioning,
            vocab,
            &mut logits,
        )?;
        let force_eos = step == len.max_seq - 1;
        let block_eos = step + 1 < len.min_seq;

        // (token, ln p, finished) per row; each row uses only its own RNG.
        let picks: Vec<(u32, f32, bool)> = rows
            .par_iter_mut()
            .enumerate()
            .map(|(i, row)| -> Result<(u32, f32, bool)> {
                let mut probs = softmax_t(&logits[i * vocab..(i + 1) * vocab], cfg.temperature)?;
                let in_prompt = step < row.tokens.len();
                // The prompt always ends before the last step, so a forced EOS never meets
                // a prompt row.
                let token = if force_eos {
                    special.eos
                } else {
                    probs[special.pad as usize] = 0.0;
                    if block_eos {
                        probs[special.eos as usize] = 0.0;
                    }
                    // fairseq2 samples for prompt rows too, then overrides the token; the
                    // draw is skipped here since the RNG is per row.
                    if in_prompt {
                        row.tokens[step]
                    } else {
                        sample_token(&probs, cfg, &mut row.rng)?
                    }
                };
                let finished = !in_prompt && token == special.eos;
                Ok((token, probs[token as usize].ln(), finished))
            })
            .collect::<Result<_>>()?;

        let old_len = rows.len();
        let mut order = Vec::with_capacity(old_len);
        let mut next = Vec::with_capacity(old_len);
        for (i, (mut row, (token, lp, finished))) in rows.into_iter().zip(picks).enumerate() {
            if step >= row.tokens.len() {
                row.tokens.push(token);
            }
            row.logp.push(lp);
            if finished {
                let first = prompts[row.prompt].len();
                let seq_len = step + 1;
                let total: f64 = row.logp[1..].iter().map(|&v| f64::from(v)).sum();
                output[row.prompt] = Some(Hypothesis {
                    ids: row.tokens[first..].to_vec(),
                    score: (total / (seq_len - 1) as f64) as f32,
                    step_scores: row.logp[first..].to_vec(),
                });
            } else {
                order.push(i as u32);
                next.push(row);
            }
        }
        rows = next;
        if rows.is_empty() {
            break;
        }
        reorder_if_needed(decoder, &mut state, &order, old_len, conditioning)?;
    }

    output
        .into_iter()
        .enumerate()
        .map(|(i, h)| h.ok_or_else(|| gen_err(format!("prompt {i}: sampling did not finish"))))
        .collect()
}
