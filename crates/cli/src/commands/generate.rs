//! `lcm generate`: flags → a [`GenerationSession`] (model, encoder, decoder; continuation
//! loop, stop rules, decoding) → text or JSON.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use lcm_concept::ConceptEncoder;
use lcm_workflows::encoders::{UnknownTally, resolve_language};
use lcm_workflows::generate::{
    ContinuationDecoder, StopRules, continuation_json, prompt_sentences,
};
use lcm_workflows::load::checkpoint_space_id;
use lcm_workflows::session::{DecoderChoice, GenerationSession};

use super::trained::SamplingArgs;
use super::{EncoderArgs, LangArgs};
use crate::output::{bank_notice, read_text};

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
    /// A generative decoder instead of retrieval: `sonar` (SONAR's decoder from
    /// `$LCM_HOME/models/sonar`, for models trained on SONAR concepts), a folder holding
    /// SONAR's files, or a trained decoder (a `lcm train-decoder --out` folder) of the
    /// model's encoder.
    #[arg(long, conflicts_with = "bank")]
    decoder: Option<PathBuf>,
    /// Language SONAR decodes into (default: --lang); SONAR code or ISO 639-1.
    #[arg(long, requires = "decoder")]
    target_lang: Option<String>,
    /// Beams of the generative decoder's search (1: greedy).
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
    lang: LangArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn run(args: Args) -> Result<()> {
    let text = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, file) => read_text(file.as_deref())?,
    };
    // An empty prompt is refused before anything loads.
    let sentences = prompt_sentences(&text)?;
    let sampling = args.sampling.sampling()?;
    let what = format!("the model {}", args.model.display());
    let encoder = args
        .encoder
        .load_for(&checkpoint_space_id(&args.model)?, &what)?;
    let lang = args.lang.resolve(Some(&encoder))?;
    let tally = UnknownTally::new(&encoder);
    tally.check(&sentences.iter().map(String::as_str).collect::<Vec<_>>())?;
    if let Some(report) = tally.report() {
        eprintln!("warning: {report}");
    }
    drop(tally);
    let target = resolve_language(args.target_lang.as_deref())?;
    let encoder: Arc<dyn ConceptEncoder> = Arc::new(encoder);
    let choice = DecoderChoice {
        bank: args.bank.clone(),
        store: args.store.clone(),
        trained: args.decoder.clone().map(|dir| (dir, args.beam)),
    };
    let session = GenerationSession::open(
        &args.model,
        args.normalizer.as_deref(),
        encoder,
        args.encoder.name(),
        &choice,
        &mut bank_notice,
    )?
    .with_languages(lang, target);
    if target.is_some() && !matches!(session.decoder(), ContinuationDecoder::Sonar { .. }) {
        eprintln!("warning: --target-lang only chooses the language of SONAR's decoding");
    }
    let rules = StopRules {
        max_sentences: args.max_sentences,
        eos_threshold: args.eos_threshold,
        repetition_threshold: args.repetition_threshold,
    };
    let seed = args.sampling.seed;
    let generation =
        session.generate(&text, &rules, &sampling, seed, args.allow_prompt_sentences)?;
    let (trained, decoder) = (session.trained(), session.decoder());
    let (prompt, decoded) = (&generation.prompt, &generation.sentences);
    let continuation = &generation;

    if args.json {
        let doc = continuation_json(
            &trained.label(),
            prompt,
            decoded,
            continuation.stop,
            decoder,
            &sampling,
            seed,
        );
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("Prompt ({} sentences):", prompt.len());
    for s in prompt {
        println!("  {s}");
    }
    match decoder {
        ContinuationDecoder::Retrieval(d) => println!(
            "\nContinuation by {} (retrieval decoder over {} sentences; [cos] = similarity of \
             the retrieved sentence to the generated concept):",
            trained.label(),
            d.bank().len()
        ),
        ContinuationDecoder::Trained { root, .. } | ContinuationDecoder::Sonar { root, .. } => {
            println!(
                "\nContinuation by {} ({} decoder {}; [cos] = similarity of the generated \
                 text, re-encoded, to the generated concept):",
                trained.label(),
                decoder.kind(),
                root.display()
            )
        }
    }
    for (i, d) in decoded.iter().enumerate() {
        let score = d.score.map_or("  —  ".to_string(), |s| format!("{s:.3}"));
        println!("  {:>2}. [{score}] {}", i + 1, d.text);
    }
    println!("\nStopped: {}.", continuation.stop.describe());
    Ok(())
}
