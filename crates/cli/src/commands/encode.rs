//! `lcm encode`: sentences → concepts as JSON lines, `.npy` or `.safetensors`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use lcm_concept::ConceptEncoder;
use lcm_workflows::encode::{Embeddings, encode_sentences};

use super::EncoderArgs;
use crate::output::{npy_bytes, read_text, safetensors_bytes, write_atomic};

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
    /// Language hint passed to the encoder.
    #[arg(long)]
    lang: Option<String>,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn run(args: Args) -> Result<()> {
    let sentences: Vec<String> = if !args.sentences.is_empty() {
        args.sentences
    } else {
        read_text(args.file.as_deref())?
            .lines()
            .map(str::to_string)
            .collect()
    };
    if sentences.is_empty() {
        bail!("no sentences to encode: pass them as arguments, with --file, or on stdin");
    }
    let encoder = args.encoder.load()?;
    let embeddings = encode_sentences(&encoder, &sentences, args.lang.as_deref())?;
    match args.out {
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for (sentence, vector) in sentences.iter().zip(embeddings.rows()) {
                let line = serde_json::json!({ "text": sentence, "embedding": vector });
                writeln!(out, "{line}")?;
            }
            out.flush()?;
        }
        Some(path) => {
            let Embeddings { values, rows, cols } = &embeddings;
            let (rows, cols) = (*rows, *cols);
            let bytes = match path.extension().and_then(|e| e.to_str()) {
                Some("npy") => npy_bytes(values, rows, cols),
                Some("safetensors") => {
                    let mut metadata = HashMap::from([
                        ("encoder_id".to_string(), encoder.id().to_string()),
                        ("dim".to_string(), cols.to_string()),
                    ]);
                    let listing = serde_json::to_string(&sentences)?;
                    // Keep headers small; large inputs are better paired with their text file.
                    if listing.len() <= 1 << 20 {
                        metadata.insert("sentences".to_string(), listing);
                    }
                    safetensors_bytes(values, rows, cols, metadata)?
                }
                _ => bail!(
                    "{}: unknown output format; use a .safetensors or .npy file name",
                    path.display()
                ),
            };
            write_atomic(&path, &bytes)?;
            eprintln!(
                "wrote {rows} × {cols} embeddings of `{}` to {}",
                encoder.id(),
                path.display()
            );
        }
    }
    Ok(())
}
