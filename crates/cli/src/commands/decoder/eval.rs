//! `lcm eval-decoder`: flags → [`lcm_decoder::roundtrip`] (held-out sample, both decoders,
//! scores) → a Markdown table, examples and, with `--json`, the report file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lcm_data::store::ConceptStore;
use lcm_decoder::roundtrip::{self, Generative, HeldOutSample, RoundTripConfig, RoundTripReport};
use lcm_workflows::encoders::{AnyDecoder, InLanguage, load_decoder};
use lcm_workflows::store::retrieval_decoder;

use crate::commands::{EncoderArgs, LangArgs};
use crate::output::bank_notice;
use crate::progress::Progress;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A `lcm train-decoder --out` folder, or `sonar` / a folder holding SONAR's files (for a
    /// store of SONAR concepts).
    #[arg(long)]
    decoder: PathBuf,
    /// The concept store it was trained on; its held-out sentences are evaluated.
    #[arg(long)]
    data: PathBuf,
    /// Held-out fraction for SONAR's decoder (a trained decoder uses the one it was trained
    /// with).
    #[arg(long, default_value_t = 0.01)]
    valid_fraction: f64,
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
    lang: LangArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn eval(args: EvalArgs) -> Result<()> {
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let meta = ConceptStore::open(&args.data)
        .with_context(|| format!("opening the concept store {}", args.data.display()))?
        .meta;
    let (decoder, root) = load_decoder(&args.decoder, &meta.encoder_id, meta.dim)?;
    let sample = match &decoder {
        AnyDecoder::Trained(d) => HeldOutSample::load(d, &args.data, args.limit),
        AnyDecoder::Sonar(_) => {
            HeldOutSample::load_split(&args.data, args.valid_fraction, args.limit)
        }
    }
    .with_context(|| format!("reading the held-out sentences of {}", args.data.display()))?;
    let what = format!("the store {}", args.data.display());
    let loaded = args.encoder.load_for(&sample.encoder_id, &what)?;
    let lang = args.lang.resolve(Some(&loaded))?;
    // Decoded texts are re-encoded in the language they were decoded into.
    let encoder = InLanguage {
        inner: &loaded,
        lang,
    };
    let generative = match &decoder {
        AnyDecoder::Trained(d) => Generative::trained(d),
        AnyDecoder::Sonar(d) => Generative {
            decoder: d.as_ref(),
            label: format!("sonar ({})", root.display()),
            kind: "sonar decoder",
            path: root.display().to_string(),
            lang,
        },
    };
    // The store's bank holds every sentence, held-out ones included: they are excluded
    // from the candidates, or retrieval would return the reference itself.
    let retrieval = retrieval_decoder(
        args.retrieval.as_deref(),
        Some(&args.data),
        &sample.encoder_id,
        sample.dim,
        &mut bank_notice,
    )?
    .with_exclude(sample.held_out.iter().cloned());

    let config = RoundTripConfig {
        limit: args.limit,
        beam: args.beam,
        max_len: args.max_len,
    };
    let bar = Progress::new(sample.len() as u64, "sentences", args.quiet);
    let report = roundtrip::evaluate_with(
        &sample,
        &generative,
        &retrieval,
        &encoder,
        &config,
        &mut |p| bar.update(p.done as u64, format!("decoding ({})", p.decoder)),
    )?;
    bar.finish();

    print_report(&report, retrieval.bank().root(), decoder.kind());
    if let Some(path) = &args.json {
        report.write_json(path)?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

/// The results table, how each decoder decoded, the comparison and the examples.
fn print_report(report: &RoundTripReport, bank: &Path, kind: &str) {
    println!(
        "Round trip on {} held-out sentences of {} (of {}; documents held out at fraction \
         {}, never trained on), encoder {}:\n",
        report.evaluated,
        report.store,
        report.held_out_sentences,
        report.valid_fraction,
        report.encoder_id
    );
    println!(
        "| decoder | corpus BLEU | mean sentence BLEU | exact match | cos(encode(decode(x)), x) | seconds |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for s in &report.results {
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
        "\n{} decoder: {}. Retrieval: nearest sentence of the bank {} (every held-out \
         sentence removed from the candidates, so it cannot return the reference).",
        if kind == "sonar" { "SONAR" } else { "Trained" },
        if report.beam > 1 {
            format!("beam search, {} beams", report.beam)
        } else {
            "greedy".to_string()
        },
        bank.display()
    );
    let diff = report.trained().round_trip_cosine - report.retrieval().round_trip_cosine;
    println!(
        "Round-trip cosine: {kind} {} retrieval by {:.4}.",
        if diff >= 0.0 {
            "beats"
        } else {
            "falls short of"
        },
        diff.abs()
    );
    println!("\nExamples:");
    for example in &report.examples {
        println!("  reference: {}", example.reference);
        println!("  {:<10} {}", format!("{kind}:"), example.trained);
        println!("  retrieval: {}\n", example.retrieval);
    }
}
