use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use lcm_concept::segment::{Segmenter, SegmenterConfig};

use crate::output::read_text;

/// Prints one sentence per line. By default the plain sentence split, without the LCM
/// reference's 256-character cap that `lcm prepare` (the store path) always applies; pass
/// `--max-chars 256` to see the sentences exactly as a store gets them.
#[derive(clap::Args)]
pub struct Args {
    /// Text file to segment (default: standard input).
    file: Option<PathBuf>,
    /// Language hint (e.g. en, fr, de, zh, or eng_Latn) for abbreviation rules; an unknown
    /// code is refused with the close matches.
    #[arg(long)]
    lang: Option<String>,
    /// Re-split sentences of at least this many characters, as `lcm prepare` does with 256.
    /// Default here: no cap (plain sentences); `lcm prepare` always uses 256.
    #[arg(long, value_name = "N")]
    max_chars: Option<usize>,
}

impl Args {
    fn config(&self) -> SegmenterConfig {
        SegmenterConfig {
            max_chars: self.max_chars.unwrap_or(0),
            lang: self.lang.clone(),
            ..SegmenterConfig::default()
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    // An unknown code fails here, listing the close matches.
    lcm_workflows::encoders::resolve_language(args.lang.as_deref())?;
    let text = read_text(args.file.as_deref())?;
    let segmenter = Segmenter::new(args.config());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for sentence in segmenter.segment(&text) {
        writeln!(out, "{sentence}")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Args;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn config(argv: &[&str]) -> lcm_concept::segment::SegmenterConfig {
        let argv = std::iter::once("segment").chain(argv.iter().copied());
        Cli::try_parse_from(argv).expect("parse").args.config()
    }

    #[test]
    fn segment_shows_plain_sentences_unless_the_cap_is_asked_for() {
        assert_eq!(config(&[]).max_chars, 0);
        assert_eq!(config(&["--max-chars", "256"]).max_chars, 256);
        assert_eq!(config(&["--lang", "fr"]).lang.as_deref(), Some("fr"));
        // The store path keeps the reference's cap.
        assert_eq!(
            lcm_concept::segment::SegmenterConfig::default().max_chars,
            256
        );
    }
}
