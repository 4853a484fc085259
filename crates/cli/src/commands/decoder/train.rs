//! `lcm train-decoder` and `lcm eval-decoder`: decoders of SONAR's architecture trained for
//! an open encoder's concept space (`lcm_sonar::trained`), and their round-trip evaluation
//! next to the retrieval decoder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use lcm_concept::{ConceptDecoder, ConceptEncoder, DecodeConfig, Decoded};
use lcm_data::store::ConceptStore;
use lcm_sonar::trained::{
    DecoderTrainConfig, METRICS_FILE, SentenceSplit, TrainEvent, TrainedDecoder, train_decoder,
};
use lcm_train::plot::plot_metrics;

use super::EncoderArgs;
use super::generate::open_retrieval_decoder;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Concept store whose sentences (and vectors) the decoder learns from.
    #[arg(long)]
    data: PathBuf,
    /// Run folder: decoder.json, tokenizer.json, model.safetensors, metrics.jsonl, loss.png,
    /// checkpoints/.
    #[arg(long, short)]
    out: PathBuf,
    /// Encoder of the store (`minilm`, an HF repo id or a folder); checked against the
    /// store's encoder id.
    #[arg(long, default_value = "minilm")]
    encoder: String,
    /// Decoder layers.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Model dimension (default and only choice: the encoder's dimension).
    #[arg(long)]
    dim: Option<usize>,
    #[arg(long, default_value_t = 6)]
    heads: usize,
    /// Feed-forward inner dimension.
    #[arg(long, default_value_t = 1536)]
    ffn: usize,
    /// Byte-level BPE vocabulary size (4 specials included).
    #[arg(long, default_value_t = 8192)]
    vocab: usize,
    /// Longest token sequence; longer training sentences are truncated.
    #[arg(long, default_value_t = 128)]
    max_seq_len: usize,
    /// Sentences per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Linear warm-up steps (default: 5% of --steps, at most 1000).
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// Final learning rate as a fraction of --lr.
    #[arg(long, default_value_t = 0.05)]
    final_lr_scale: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Gradient-norm clipping threshold.
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f64,
    /// Total optimiser steps (the cosine schedule spans them).
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Wall-clock budget in minutes, counted from the start (data loading and tokenizer
    /// included): the step that spends it is validated and checkpointed, then training stops.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Stop (with a checkpoint) after this step although the schedule spans --steps.
    #[arg(long)]
    stop_at: Option<u64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the newest checkpoint in --out (same settings required).
    #[arg(long)]
    resume: bool,
    /// Fraction of documents held out (the same split as `lcm train` / `lcm eval`).
    #[arg(long, default_value_t = 0.01)]
    valid_fraction: f64,
    /// Held-out sentences scored by the validation loss.
    #[arg(long, default_value_t = 512)]
    valid_sentences: usize,
    /// Validation every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 200)]
    checkpoint_every: u64,
    /// Newest checkpoints kept (0: all).
    #[arg(long, default_value_t = 2)]
    keep_last: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn train(args: TrainArgs) -> Result<()> {
    let encoder_args = EncoderArgs {
        encoder: args.encoder.clone(),
        batch_size: 32,
        threads: args.threads,
    };
    // Loads the encoder only to check that the store lives in its space.
    let store = ConceptStore::open(&args.data)
        .with_context(|| format!("opening the concept store {}", args.data.display()))?;
    let encoder = encoder_args.load()?;
    if encoder.id() != store.meta.encoder_id {
        bail!(
            "{} holds `{}` concepts but --encoder `{}` is `{}`; pass the store's encoder",
            args.data.display(),
            store.meta.encoder_id,
            args.encoder,
            encoder.id()
        );
    }
    drop(encoder);
    drop(store);
    let config = DecoderTrainConfig {
        layers: args.layers,
        dim: args.dim,
        heads: args.heads,
        ffn: args.ffn,
        vocab_size: args.vocab,
        max_seq_len: args.max_seq_len,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup_steps: args
            .warmup_steps
            .unwrap_or((args.steps / 20).clamp(1, 1000)),
        final_lr_scale: args.final_lr_scale,
        weight_decay: args.weight_decay,
        clip: args.clip,
        label_smoothing: args.label_smoothing,
        steps: args.steps,
        seed: args.seed,
        valid_fraction: args.valid_fraction,
        valid_sentences: args.valid_sentences,
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every,
        keep_last: args.keep_last,
        max_seconds: args.max_minutes.map(|m| m * 60.0),
        stop_at: args.stop_at,
    };
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    };
    let mut last_valid: Option<f64> = None;
    let mut progress = |event: TrainEvent<'_>| match event {
        TrainEvent::Phase(what) => {
            tracing::info!("{what}");
            bar.set_message(format!("{what}…"));
        }
        TrainEvent::Start { start, total } => {
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{wide_bar}] {pos}/{len} steps (eta {eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_length(total);
            bar.set_position(start);
            bar.reset_eta();
        }
        TrainEvent::Step(m) => {
            if m.valid_loss.is_some() {
                last_valid = m.valid_loss;
                tracing::info!(
                    step = m.step,
                    loss = m.loss,
                    valid_loss = m.valid_loss,
                    "validation"
                );
            }
            let valid = last_valid.map_or(String::new(), |v| format!(" valid {v:.3}"));
            bar.set_position(m.step);
            bar.set_message(format!(
                "loss {:.3}{valid} lr {:.1e} {:.0} tok/s",
                m.loss, m.lr, m.tokens_per_s
            ));
        }
    };
    let summary = train_decoder(&config, &args.data, &args.out, args.resume, &mut progress)
        .with_context(|| format!("training the decoder into {}", args.out.display()))?;
    bar.finish_and_clear();
    let metrics = args.out.join(METRICS_FILE);
    let png = args.out.join("loss.png");
    if let Err(e) = plot_metrics(&metrics, &png, "lcm train-decoder") {
        eprintln!("warning: could not plot {}: {e}", png.display());
    }
    let steps_run = summary.final_step - summary.start_step;
    println!(
        "steps {} → {} of {} in {:.1} min ({:.1} min training, {:.2} steps/s, {:.0} tokens/s); \
         {} parameters, vocab {}",
        summary.start_step,
        summary.final_step,
        config.steps,
        summary.seconds / 60.0,
        summary.train_seconds / 60.0,
        steps_run as f64 / summary.train_seconds.max(1e-9),
        summary.tokens as f64 / summary.train_seconds.max(1e-9),
        summary.num_parameters,
        summary.vocab_size
    );
    println!(
        "{} training sentences ({} truncated to {} tokens), validation on {} held-out sentences",
        summary.train_sentences, summary.truncated, config.max_seq_len, summary.valid_sentences
    );
    if let Some(l) = summary.last_loss {
        print!("last training loss {l:.4}");
        if let Some(v) = summary.last_valid_loss {
            print!(
                ", held-out cross-entropy {v:.4} (perplexity {:.1})",
                v.exp()
            );
        }
        println!();
    }
    println!(
        "decoder: {} (metrics {}, plot {})",
        summary.model.display(),
        metrics.display(),
        png.display()
    );
    if summary.final_step < config.steps {
        println!(
            "stopped before step {}; continue with the same command and --resume",
            config.steps
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A `lcm train-decoder --out` folder.
    #[arg(long)]
    decoder: PathBuf,
    /// The concept store it was trained on; its held-out sentences are evaluated.
    #[arg(long)]
    data: PathBuf,
    /// Held-out sentences evaluated (evenly spread over the held-out split).
    #[arg(long, default_value_t = 500)]
    limit: usize,
    /// Beams of the trained decoder's search (1: greedy).
    #[arg(long, default_value_t = 5)]
    beam: usize,
    /// Most tokens per decoded sentence.
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// Sentence bank of the retrieval baseline (default: STORE/sentence-bank, built once).
    #[arg(long)]
    retrieval: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    encoder: EncoderArgs,
}

impl Scores {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "decoder": self.decoder,
            "corpus_bleu": self.corpus_bleu,
            "mean_sentence_bleu": self.mean_sentence_bleu,
            "exact_match": self.exact_match,
            "round_trip_cosine": self.round_trip_cosine,
            "seconds": self.seconds,
        })
    }
}

/// Round-trip scores of one decoder.
#[derive(Debug, Clone)]
struct Scores {
    decoder: String,
    corpus_bleu: f64,
    mean_sentence_bleu: f64,
    exact_match: f64,
    round_trip_cosine: f64,
    seconds: f64,
}

pub fn eval(args: EvalArgs) -> Result<()> {
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let decoder = TrainedDecoder::open(&args.decoder)
        .with_context(|| format!("opening the decoder {}", args.decoder.display()))?;
    let store = ConceptStore::open(&args.data)
        .with_context(|| format!("opening the concept store {}", args.data.display()))?;
    decoder.check_space(&store.meta.encoder_id, store.meta.dim)?;
    let valid_fraction = decoder.meta().valid_fraction;
    let split = SentenceSplit::load(&args.data, valid_fraction)?;
    if split.valid_texts.is_empty() {
        bail!(
            "{} has no held-out sentence at validation fraction {valid_fraction}",
            args.data.display()
        );
    }
    let total = split.valid_texts.len();
    let n = args.limit.min(total);
    let picked: Vec<usize> = (0..n).map(|i| i * total / n).collect();
    let refs: Vec<String> = picked
        .iter()
        .map(|&i| split.valid_texts[i].clone())
        .collect();
    let mut x = Vec::with_capacity(n * split.dim);
    for &i in &picked {
        x.extend_from_slice(split.valid_vector(i));
    }
    let concepts = Tensor::from_vec(x.clone(), (n, split.dim), &Device::Cpu)?;

    let encoder = args.encoder.load()?;
    if encoder.id() != store.meta.encoder_id {
        bail!(
            "{} holds `{}` concepts but --encoder `{}` is `{}`; pass the store's encoder",
            args.data.display(),
            store.meta.encoder_id,
            args.encoder.encoder,
            encoder.id()
        );
    }

    // The store's bank holds every sentence, held-out ones included: they are excluded
    // from the candidates, or retrieval would return the reference itself.
    let retrieval = open_retrieval_decoder(
        args.retrieval.as_deref(),
        Some(&args.data),
        &store.meta.encoder_id,
        store.meta.dim,
    )?
    .with_exclude(split.valid_texts.iter().cloned());

    let config = DecodeConfig {
        beam_size: args.beam.max(1),
        max_len: args.max_len,
        ..DecodeConfig::default()
    };
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(n as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{wide_bar}] {pos}/{len} (eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    };
    let trained_label = format!(
        "trained ({} step {})",
        args.decoder.display(),
        decoder.meta().step
    );
    let run = |name: &str, dec: &dyn ConceptDecoder| -> Result<(Vec<Decoded>, f64)> {
        let t0 = std::time::Instant::now();
        bar.set_message(format!("decoding ({name})"));
        bar.set_position(0);
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(16) {
            let len = 16.min(n - start);
            out.extend(dec.decode(&concepts.narrow(0, start, len)?, None, &config)?);
            bar.set_position((start + len) as u64);
        }
        Ok((out, t0.elapsed().as_secs_f64()))
    };
    let (trained_out, trained_s) = run("trained decoder", &decoder)?;
    let (retrieval_out, retrieval_s) = run("retrieval decoder", &retrieval)?;
    bar.finish_and_clear();

    let score = |name: &str, decoded: &[Decoded], seconds: f64| -> Result<Scores> {
        let hyps: Vec<&str> = decoded.iter().map(|d| d.text.as_str()).collect();
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        let corpus = lcm_eval::bleu::try_corpus_bleu(&hyps, &refs)?.score;
        let mut sentence_sum = 0.0;
        for (h, r) in hyps.iter().zip(&refs) {
            sentence_sum += lcm_eval::bleu::sentence_bleu(h, r).score;
        }
        let exact = hyps.iter().zip(&refs).filter(|(h, r)| h == r).count();
        let cos = round_trip_cosines(&encoder, &hyps, &x, split.dim)?;
        Ok(Scores {
            decoder: name.to_string(),
            corpus_bleu: corpus,
            mean_sentence_bleu: sentence_sum / n as f64,
            exact_match: exact as f64 / n as f64,
            round_trip_cosine: cos.iter().sum::<f64>() / n as f64,
            seconds,
        })
    };
    let trained_scores = score(&trained_label, &trained_out, trained_s)?;
    let retrieval_scores = score(
        "retrieval (held-out sentences excluded)",
        &retrieval_out,
        retrieval_s,
    )?;

    println!(
        "Round trip on {n} held-out sentences of {} (of {total}; documents held out at fraction \
         {valid_fraction}, never trained on), encoder {}:\n",
        args.data.display(),
        store.meta.encoder_id
    );
    println!(
        "| decoder | corpus BLEU | mean sentence BLEU | exact match | cos(encode(decode(x)), x) | seconds |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for s in [&trained_scores, &retrieval_scores] {
        println!(
            "| {} | {:.2} | {:.2} | {:.1}% | {:.4} | {:.1} |",
            s.decoder,
            s.corpus_bleu,
            s.mean_sentence_bleu,
            100.0 * s.exact_match,
            s.round_trip_cosine,
            s.seconds
        );
    }
    println!(
        "\nTrained decoder: {}. Retrieval: nearest sentence of the bank {} (every held-out \
         sentence removed from the candidates, so it cannot return the reference).",
        if config.beam_size > 1 {
            format!("beam search, {} beams", config.beam_size)
        } else {
            "greedy".to_string()
        },
        retrieval.bank().root().display()
    );
    let diff = trained_scores.round_trip_cosine - retrieval_scores.round_trip_cosine;
    println!(
        "Round-trip cosine: trained {} retrieval by {:.4}.",
        if diff >= 0.0 {
            "beats"
        } else {
            "falls short of"
        },
        diff.abs()
    );
    println!("\nExamples:");
    let examples: Vec<usize> = (0..5.min(n)).map(|i| i * n / 5.min(n)).collect();
    for &i in &examples {
        println!("  reference: {}", refs[i]);
        println!("  trained:   {}", trained_out[i].text);
        println!("  retrieval: {}\n", retrieval_out[i].text);
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "store": args.data.display().to_string(),
            "decoder": args.decoder.display().to_string(),
            "encoder_id": store.meta.encoder_id,
            "held_out_sentences": total,
            "evaluated": n,
            "valid_fraction": valid_fraction,
            "beam": config.beam_size,
            "results": [trained_scores.to_json(), retrieval_scores.to_json()],
            "examples": examples.iter().map(|&i| serde_json::json!({
                "reference": refs[i],
                "trained": trained_out[i].text,
                "retrieval": retrieval_out[i].text,
            })).collect::<Vec<_>>(),
        });
        write_json(path, &doc)?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

/// cos(encode(hyp), x) per sentence; an empty hypothesis scores 0.
fn round_trip_cosines(
    encoder: &dyn ConceptEncoder,
    hyps: &[&str],
    x: &[f32],
    dim: usize,
) -> Result<Vec<f64>> {
    let mut out = vec![0.0; hyps.len()];
    let nonempty: Vec<usize> = (0..hyps.len())
        .filter(|&i| !hyps[i].trim().is_empty())
        .collect();
    for chunk in nonempty.chunks(64) {
        let texts: Vec<&str> = chunk.iter().map(|&i| hyps[i]).collect();
        let enc = encoder
            .encode(&texts, None)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        for (&i, e) in chunk.iter().zip(enc) {
            out[i] = cosine(&e, &x[i * dim..(i + 1) * dim]);
        }
    }
    Ok(out)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&p, &q) in a.iter().zip(b) {
        ab += p as f64 * q as f64;
        aa += p as f64 * p as f64;
        bb += q as f64 * q as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

fn write_json(path: &Path, doc: &serde_json::Value) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(doc)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
