use std::path::PathBuf;

use anyhow::Result;
use lcm_concept::ConceptEncoder;
use lcm_concept::segment::SegmenterConfig;
use lcm_data::prepare::{PrepareOptions, prepare};
use lcm_data::reader::ReaderOptions;
use lcm_data::store::StoreDType;

use super::{EncoderArgs, LangArgs};
use crate::progress::PrepareBar;
use lcm_workflows::encoders::UnknownTally;

#[derive(clap::Args)]
pub struct Args {
    /// Input: .jsonl files ({"id", "text"} per line), folders of .txt files, or .parquet files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output directory for the Parquet shards.
    #[arg(long, short)]
    out: PathBuf,
    /// Storage precision of the vectors.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
    dtype: String,
    /// Input documents per shard.
    #[arg(long, default_value_t = 500)]
    shard_size: usize,
    /// Stop after this many documents.
    #[arg(long)]
    limit: Option<usize>,
    /// JSON field / Parquet column with the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// JSON field / Parquet column with the document id.
    #[arg(long, default_value = "id")]
    id_field: String,
    /// Fail on malformed input lines and on repeated document ids instead of skipping and
    /// counting the lines and warning about the ids.
    #[arg(long)]
    strict: bool,
    /// JSON field with a document's language tag (`fr`, `fra_Latn`, `pt_BR`): tagged
    /// documents are segmented and encoded in their language, the others in --lang.
    #[arg(long, default_value = "lang")]
    lang_field: String,
    /// Guess the language of documents without a tag from their text (scripts, and function
    /// words of 14 Latin/Cyrillic languages) instead of giving them --lang.
    #[arg(long)]
    detect_lang: bool,
    #[command(flatten)]
    lang: LangArgs,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn run(args: Args) -> Result<()> {
    let encoder = args.encoder.load()?;
    let lang = args.lang.resolve(Some(&encoder))?;
    let mut options = PrepareOptions::new(args.inputs, args.out.clone());
    options.dtype = args.dtype.parse::<StoreDType>()?;
    options.shard_size = args.shard_size;
    options.limit = args.limit;
    options.reader = ReaderOptions {
        text_field: args.text_field,
        id_field: args.id_field,
        strict: args.strict,
        lang_field: args.lang_field,
    };
    options.detect_lang = args.detect_lang;
    options.segmenter = SegmenterConfig {
        lang: lang.map(str::to_string),
        ..SegmenterConfig::default()
    };
    let bar = PrepareBar::new(args.quiet);
    let tally = UnknownTally::new(&encoder);
    let result = prepare(&tally, &options, &bar);
    bar.finish();
    let report = result?;
    let read = &report.read;
    println!(
        "prepared {} documents → {} rows, {} sentences of `{}` (dim {}) in {:.1} s ({:.0} sentences/s) into {}",
        report.documents,
        report.rows,
        report.sentences,
        encoder.id(),
        encoder.dim(),
        report.seconds,
        report.sentences as f64 / report.seconds.max(1e-9),
        args.out.display()
    );
    println!(
        "shards: {} written, {} kept from an earlier run; skipped: {} invalid UTF-8 lines, {} invalid JSON lines, {} without text, {} empty documents, {} documents without sentences",
        report.shards_written,
        report.shards_resumed,
        read.invalid_utf8_lines,
        read.invalid_json_lines,
        read.missing_text,
        read.empty_documents,
        report.documents_without_sentences
    );
    let languages: Vec<String> = report
        .languages
        .iter()
        .map(|(lang, n)| format!("{lang} {n}"))
        .collect();
    if !languages.is_empty() {
        println!(
            "languages (documents): {} ({} guessed from their text; `-`: none given)",
            languages.join(", "),
            report.detected_languages
        );
    }
    if report.unknown_language_tags > 0 {
        println!(
            "warning: {} documents carry a language tag no table knows; they were given --lang",
            report.unknown_language_tags
        );
    }
    if let Some(report) = tally.report() {
        println!("warning: {report}");
    }
    if read.duplicate_ids > 0 {
        println!(
            "warning: {} documents repeat an earlier document's id (kept; the warnings above name both places; --strict refuses them)",
            read.duplicate_ids
        );
    }
    Ok(())
}
