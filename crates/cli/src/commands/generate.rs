use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Tensor};
use lcm_concept::ConceptEncoder;
use lcm_concept::decoder::{ConceptDecoder, DecodeConfig};
use lcm_concept::segment::segment;
use lcm_data::sentence_bank::{RetrievalDecoder, SentenceBank};
use lcm_data::store::ConceptStore;
use lcm_model::generate::row_cosines;
use lcm_sonar::trained::TrainedDecoder;
use lcm_train::new_rng;

use super::EncoderArgs;
use super::trained::{SamplingArgs, Trained, eos_embedding};
use crate::output::read_text;

/// Sentence bank folder inside a store, built on first use.
const BANK_DIR: &str = "sentence-bank";

#[derive(clap::Args)]
pub struct Args {
    /// Trained model: a `lcm train --out` directory, its checkpoints/ or a step directory.
    #[arg(long)]
    model: PathBuf,
    /// Prompt text (split into sentences); read from --prompt-file or standard input when
    /// absent.
    prompt: Option<String>,
    /// File holding the prompt.
    #[arg(long, conflicts_with = "prompt")]
    prompt_file: Option<PathBuf>,
    /// Concept store whose sentences make the retrieval decoder's bank (built once into
    /// STORE/sentence-bank).
    #[arg(long, required_unless_present_any = ["bank", "decoder"])]
    store: Option<PathBuf>,
    /// A sentence bank folder (instead of STORE/sentence-bank).
    #[arg(long)]
    bank: Option<PathBuf>,
    /// A trained decoder (a `lcm train-decoder --out` folder) instead of the retrieval
    /// decoder; it must be trained for the model's encoder.
    #[arg(long, conflicts_with = "bank")]
    decoder: Option<PathBuf>,
    /// Beams of the trained decoder's search (1: greedy).
    #[arg(long, default_value_t = 5, requires = "decoder")]
    beam: usize,
    /// Normaliser (default: the one recorded in the checkpoint).
    #[arg(long)]
    normalizer: Option<PathBuf>,
    /// Most sentences generated.
    #[arg(long, default_value_t = 8)]
    max_sentences: usize,
    /// Stop when the generated concept's cosine with "End of text." reaches this.
    #[arg(long, default_value_t = 0.9)]
    eos_threshold: f32,
    /// Stop when the generated concept's cosine with the previous one reaches this.
    #[arg(long, default_value_t = 0.9)]
    repetition_threshold: f32,
    /// Let the decoder return sentences of the prompt (excluded by default).
    #[arg(long)]
    allow_prompt_sentences: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    EndOfText,
    Repetition,
    MaxSentences,
    ContextFull,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::EndOfText => "end-of-text",
            Stop::Repetition => "repetition",
            Stop::MaxSentences => "max-sentences",
            Stop::ContextFull => "context-full",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Stop::EndOfText => "the model predicted the end-of-text concept",
            Stop::Repetition => "the model repeated its previous concept",
            Stop::MaxSentences => "--max-sentences reached",
            Stop::ContextFull => "the model's context is full",
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let text = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, file) => read_text(file.as_deref())?,
    };
    let prompt = segment(&text);
    if prompt.is_empty() {
        bail!("the prompt holds no sentence; pass some text (argument, --prompt-file or stdin)");
    }
    let trained = Trained::load(&args.model, args.normalizer.as_deref())?;
    let model = &trained.loaded.model;
    let encoder = trained.encoder(&args.encoder)?;
    let eos = Tensor::new(eos_embedding(&encoder)?, &candle_core::Device::Cpu)?;
    let sampling = args.sampling.sampling()?;
    let decoder = match &args.decoder {
        Some(dir) => Decoder::Trained(Box::new(
            TrainedDecoder::open_expecting(dir, trained.encoder_id(), encoder.dim())
                .with_context(|| format!("opening the decoder {}", dir.display()))?,
        )),
        None => {
            let decoder = open_decoder(&args, trained.encoder_id(), encoder.dim())?;
            Decoder::Retrieval(Box::new(if args.allow_prompt_sentences {
                decoder
            } else {
                decoder.with_exclude(prompt.iter().cloned())
            }))
        }
    };

    // [N, D] raw → [1, N, D] normalised prefix.
    let refs: Vec<&str> = prompt.iter().map(String::as_str).collect();
    let prompt_raw = encoder.encode(&refs, None)?.to_dtype(DType::F32)?;
    // Kept only to score a trained decoder's text by its round-trip cosine.
    let encoder = match &decoder {
        Decoder::Trained(_) => Some(encoder),
        Decoder::Retrieval(_) => {
            drop(encoder);
            None
        }
    };
    if prompt.len() > model.max_seq_len() {
        bail!(
            "the prompt has {} sentences but the model's context holds {}; shorten it",
            prompt.len(),
            model.max_seq_len()
        );
    }
    let mut state = model.new_state();
    model.extend(
        &mut state,
        &trained.normalizer.normalize(&prompt_raw)?.unsqueeze(0)?,
    )?;

    let mut rng = new_rng(args.sampling.seed);
    let mut previous = prompt_raw.get(prompt.len() - 1)?;
    let mut generated: Vec<Tensor> = Vec::new();
    let mut eos_cos = Vec::new();
    let mut stop = Stop::MaxSentences;
    while generated.len() < args.max_sentences {
        if state.len() >= model.max_seq_len() {
            stop = Stop::ContextFull;
            break;
        }
        let next = model.next_concept(&state, &sampling, 1, &mut rng)?;
        // [D], raw space: where the stop rules and the decoder work.
        let raw = trained.normalizer.denormalize(&next)?.flatten_all()?;
        let pair = Tensor::stack(&[&eos, &previous], 0)?;
        let cos = row_cosines(&pair, &raw)?;
        if cos[0] >= args.eos_threshold {
            stop = Stop::EndOfText;
            break;
        }
        if cos[1] >= args.repetition_threshold {
            stop = Stop::Repetition;
            break;
        }
        model.extend(&mut state, &next)?;
        eos_cos.push(cos[0]);
        previous = raw.clone();
        generated.push(raw);
    }

    let decoded = if generated.is_empty() {
        Vec::new()
    } else {
        let concepts = Tensor::stack(&generated, 0)?;
        match (&decoder, &encoder) {
            (Decoder::Trained(d), Some(encoder)) => {
                let config = DecodeConfig {
                    beam_size: args.beam.max(1),
                    ..DecodeConfig::default()
                };
                let mut decoded = d.decode(&concepts, None, &config)?;
                // The score shown is the round-trip cosine cos(encode(text), concept).
                for (d, concept) in decoded.iter_mut().zip(&generated) {
                    d.score = if d.text.trim().is_empty() {
                        None
                    } else {
                        let e = encoder.encode(&[d.text.as_str()], None)?;
                        Some(row_cosines(&e.to_dtype(DType::F32)?, concept)?[0])
                    };
                }
                decoded
            }
            (Decoder::Trained(d), None) => d.decode(&concepts, None, &DecodeConfig::default())?,
            (Decoder::Retrieval(d), _) => d.decode(&concepts, None, &DecodeConfig::default())?,
        }
    };
    if args.json {
        let sentences: Vec<_> = decoded
            .iter()
            .map(|d| serde_json::json!({ "text": d.text, "similarity": d.score }))
            .collect();
        let mut doc = serde_json::json!({
            "model": trained.label(),
            "prompt": prompt,
            "generated": sentences,
            "stop": stop.name(),
            "decoder": decoder.kind(),
            "sampling": sampling,
            "seed": args.sampling.seed,
        });
        // "bank" for the retrieval decoder, the run folder for a trained one.
        let key = match decoder {
            Decoder::Retrieval(_) => "bank",
            Decoder::Trained(_) => "decoder_path",
        };
        doc[key] = decoder.path().display().to_string().into();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("Prompt ({} sentences):", prompt.len());
    for s in &prompt {
        println!("  {s}");
    }
    match &decoder {
        Decoder::Retrieval(d) => println!(
            "\nContinuation by {} (retrieval decoder over {} sentences; [cos] = similarity of \
             the retrieved sentence to the generated concept):",
            trained.label(),
            d.bank().len()
        ),
        Decoder::Trained(d) => println!(
            "\nContinuation by {} (trained decoder {}; [cos] = similarity of the generated \
             text, re-encoded, to the generated concept):",
            trained.label(),
            d.root().display()
        ),
    }
    for (i, d) in decoded.iter().enumerate() {
        let score = d.score.map_or("  —  ".to_string(), |s| format!("{s:.3}"));
        println!("  {:>2}. [{score}] {}", i + 1, d.text);
    }
    println!("\nStopped: {}.", stop.describe());
    Ok(())
}

/// The decoder `generate` turns concepts into text with.
enum Decoder {
    Retrieval(Box<RetrievalDecoder>),
    Trained(Box<TrainedDecoder>),
}

impl Decoder {
    fn kind(&self) -> &'static str {
        match self {
            Decoder::Retrieval(_) => "retrieval",
            Decoder::Trained(_) => "trained",
        }
    }

    /// The bank folder or the trained decoder's run folder.
    fn path(&self) -> &Path {
        match self {
            Decoder::Retrieval(d) => d.bank().root(),
            Decoder::Trained(d) => d.root(),
        }
    }
}

/// The retrieval decoder over `--bank`, or over STORE/sentence-bank (built when missing).
fn open_decoder(args: &Args, encoder_id: &str, dim: usize) -> Result<RetrievalDecoder> {
    open_retrieval_decoder(args.bank.as_deref(), args.store.as_deref(), encoder_id, dim)
}

/// The retrieval decoder over `bank`, or over STORE/sentence-bank (built when missing);
/// shared with `lcm plan`.
pub(crate) fn open_retrieval_decoder(
    bank: Option<&Path>,
    store: Option<&Path>,
    encoder_id: &str,
    dim: usize,
) -> Result<RetrievalDecoder> {
    let path = match (bank, store) {
        (Some(bank), _) => bank.to_path_buf(),
        (None, Some(store)) => {
            let path = bank_path(store);
            if !path.exists() {
                let opened = ConceptStore::open(store)?;
                eprintln!(
                    "building the sentence bank {} from {} (once)…",
                    path.display(),
                    store.display()
                );
                let report = SentenceBank::build(&opened, &path)
                    .with_context(|| format!("building {}", path.display()))?;
                eprintln!(
                    "{} distinct sentences ({} duplicates skipped)",
                    report.unique, report.duplicates
                );
            }
            path
        }
        (None, None) => bail!("pass --store STORE or --bank BANK for the retrieval decoder"),
    };
    RetrievalDecoder::open(&path, encoder_id, dim)
        .with_context(|| format!("opening the sentence bank {}", path.display()))
}

fn bank_path(store: &Path) -> PathBuf {
    if store.is_dir() {
        store.join(BANK_DIR)
    } else {
        store.with_file_name(BANK_DIR)
    }
}
