use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use lcm_concept::segment::{Segmenter, SegmenterConfig};

use crate::output::read_text;

#[derive(clap::Args)]
pub struct Args {
    /// Text file to segment (default: standard input).
    file: Option<PathBuf>,
    /// Language hint (e.g. en, fr, de, zh, or eng_Latn) for abbreviation rules.
    #[arg(long)]
    lang: Option<String>,
    /// Re-split sentences of at least this many characters.
    #[arg(long, default_value_t = 256)]
    max_chars: usize,
}

pub fn run(args: Args) -> Result<()> {
    let text = read_text(args.file.as_deref())?;
    let segmenter = Segmenter::new(SegmenterConfig {
        max_chars: args.max_chars,
        lang: args.lang,
        ..SegmenterConfig::default()
    });
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for sentence in segmenter.segment(&text) {
        writeln!(out, "{sentence}")?;
    }
    out.flush()?;
    Ok(())
}
