//! `lcm encode`: sentences → concepts as JSON lines, `.npy` or `.safetensors`.
//!
//! Input is read a line at a time and encoded in bounded batches, so memory stays bounded
//! by the longest line for JSON lines and by the output itself for files.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use lcm_concept::ConceptEncoder;
use lcm_workflows::encode::{BatchEncoder, Embeddings};
use lcm_workflows::encoders::UnknownTally;

use super::{EncoderArgs, LangArgs};
use crate::output::{TextLines, npy_bytes, safetensors_bytes, write_atomic};

/// Sentences encoded at once: enough to sort by length and keep both cores busy.
const BATCH_SENTENCES: usize = 4096;
/// Largest sentence listing kept in a `.safetensors` header.
const MAX_LISTING_BYTES: usize = 1 << 20;

#[derive(clap::Args)]
pub struct Args {
    /// Sentences to encode; without any, sentences are read one per line from --file or stdin.
    sentences: Vec<String>,
    /// File with one sentence per line.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Write embeddings to a .safetensors or .npy file instead of JSON lines on stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
    #[command(flatten)]
    lang: LangArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
}

#[derive(Clone, Copy, PartialEq)]
enum FileFormat {
    Npy,
    Safetensors,
}

/// Where encoded batches go: JSON lines as they come, or rows gathered for one file.
enum Sink {
    JsonLines(std::io::BufWriter<std::io::StdoutLock<'static>>),
    File {
        path: PathBuf,
        format: FileFormat,
        values: Vec<f32>,
        rows: usize,
        cols: usize,
        /// The sentences, for the header, while they stay small.
        listing: Option<Vec<String>>,
        listing_bytes: usize,
    },
}

impl Sink {
    fn new(out: Option<PathBuf>) -> Result<Self> {
        let Some(path) = out else {
            return Ok(Self::JsonLines(std::io::BufWriter::new(
                std::io::stdout().lock(),
            )));
        };
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => FileFormat::Npy,
            Some("safetensors") => FileFormat::Safetensors,
            _ => bail!(
                "{}: unknown output format; use a .safetensors or .npy file name",
                path.display()
            ),
        };
        Ok(Self::File {
            path,
            format,
            values: Vec::new(),
            rows: 0,
            cols: 0,
            listing: Some(Vec::new()),
            listing_bytes: 0,
        })
    }

    fn write(&mut self, sentences: Vec<String>, embeddings: &Embeddings) -> Result<()> {
        match self {
            Self::JsonLines(out) => {
                for (sentence, vector) in sentences.iter().zip(embeddings.rows()) {
                    let line = serde_json::json!({ "text": sentence, "embedding": vector });
                    writeln!(out, "{line}")?;
                }
            }
            Self::File {
                values,
                rows,
                cols,
                listing,
                listing_bytes,
                ..
            } => {
                values.extend_from_slice(&embeddings.values);
                *rows += embeddings.rows;
                *cols = embeddings.cols;
                *listing_bytes += sentences.iter().map(|s| s.len() + 3).sum::<usize>();
                match listing {
                    Some(kept) if *listing_bytes <= MAX_LISTING_BYTES => kept.extend(sentences),
                    _ => *listing = None,
                }
            }
        }
        Ok(())
    }

    fn finish(self, encoder_id: &str) -> Result<()> {
        match self {
            Self::JsonLines(mut out) => out.flush()?,
            Self::File {
                path,
                format,
                values,
                rows,
                cols,
                listing,
                ..
            } => {
                let bytes = match format {
                    FileFormat::Npy => npy_bytes(&values, rows, cols),
                    FileFormat::Safetensors => {
                        let mut metadata = HashMap::from([
                            ("encoder_id".to_string(), encoder_id.to_string()),
                            ("dim".to_string(), cols.to_string()),
                        ]);
                        // Keep headers small; large inputs are better paired with their text.
                        if let Some(listing) = listing {
                            metadata
                                .insert("sentences".to_string(), serde_json::to_string(&listing)?);
                        }
                        safetensors_bytes(&values, rows, cols, metadata)?
                    }
                };
                write_atomic(&path, &bytes)?;
                eprintln!(
                    "wrote {rows} × {cols} embeddings of `{encoder_id}` to {}",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

pub fn run(args: Args) -> Result<()> {
    let mut sink = Sink::new(args.out)?;
    let encoder = args.encoder.load()?;
    let lang = args.lang.resolve(Some(&encoder))?;
    let tally = UnknownTally::new(&encoder);
    let mut batches = BatchEncoder::new(&tally, lang, BATCH_SENTENCES);
    let mut encoded = 0usize;
    let lines: Box<dyn Iterator<Item = Result<String>>> = if args.sentences.is_empty() {
        Box::new(TextLines::open(args.file.as_deref())?)
    } else {
        Box::new(args.sentences.into_iter().map(Ok))
    };
    for line in lines {
        if let Some((sentences, embeddings)) = batches.push(line?)? {
            encoded += sentences.len();
            sink.write(sentences, &embeddings)?;
        }
    }
    if let Some((sentences, embeddings)) = batches.flush()? {
        encoded += sentences.len();
        sink.write(sentences, &embeddings)?;
    }
    if encoded == 0 {
        bail!("no sentences to encode: pass them as arguments, with --file, or on stdin");
    }
    if let Some(report) = tally.report() {
        eprintln!("warning: {report}");
    }
    sink.finish(encoder.id())
}
