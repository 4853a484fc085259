//! Encoder throughput: encodes the sentences of a file (one per line) and prints one JSON line.
//!
//! ```text
//! cargo build --release --example encode_bench -p lcm-concept
//! target/release/examples/encode_bench SENTENCES.txt [--model minilm] [--batch-size 32]
//!     [--threads 2] [--threading data|intra] [--repeat 3]
//! ```
//! The run is: one warm-up pass over the first few batches, then `--repeat` timed passes over
//! all sentences; the fastest is reported (`bench/encode.py` drives this next to PyTorch).

use std::time::Instant;

use lcm_concept::ConceptEncoder;
use lcm_concept::bert::{BertEncoder, EncoderOptions, Threading};

struct Args {
    sentences: String,
    model: String,
    opts: EncoderOptions,
    repeat: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: encode_bench SENTENCES.txt [--model NAME_OR_PATH] [--batch-size N] [--threads N] \
         [--threading data|intra] [--repeat N]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = std::env::args().skip(1);
    let mut out = Args {
        sentences: String::new(),
        model: "minilm".to_string(),
        opts: EncoderOptions::default(),
        repeat: 3,
    };
    let num = |v: Option<String>, flag: &str| -> usize {
        match v.as_deref().map(str::parse::<usize>) {
            Some(Ok(n)) if n > 0 => n,
            _ => {
                eprintln!("{flag} needs a positive integer");
                usage()
            }
        }
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => out.model = args.next().unwrap_or_else(|| usage()),
            "--batch-size" => out.opts.batch_size = num(args.next(), "--batch-size"),
            "--threads" => out.opts.threads = num(args.next(), "--threads"),
            "--repeat" => out.repeat = num(args.next(), "--repeat"),
            "--threading" => {
                out.opts.threading = match args.next().as_deref() {
                    Some("data") => Threading::DataParallel,
                    Some("intra") => Threading::IntraOp,
                    _ => usage(),
                }
            }
            "-h" | "--help" => usage(),
            s if !s.starts_with('-') && out.sentences.is_empty() => out.sentences = s.to_string(),
            _ => usage(),
        }
    }
    if out.sentences.is_empty() {
        usage()
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let text = std::fs::read_to_string(&args.sentences)
        .map_err(|e| format!("cannot read {}: {e}", args.sentences))?;
    let sentences: Vec<&str> = text.lines().collect();
    if sentences.is_empty() {
        return Err(format!("{} has no lines", args.sentences).into());
    }

    let t0 = Instant::now();
    let enc = BertEncoder::load(&args.model, &args.opts)?;
    let load_s = t0.elapsed().as_secs_f64();

    let warm = sentences.len().min(2 * args.opts.batch_size);
    enc.encode(&sentences[..warm], None)?;

    let mut best = f64::INFINITY;
    for _ in 0..args.repeat {
        let t = Instant::now();
        let out = enc.encode(&sentences, None)?;
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(out.dims(), &[sentences.len(), enc.dim()]);
    }
    let tokens: usize = enc.token_lengths(&sentences)?.iter().sum();
    let threading = match args.opts.threading {
        Threading::DataParallel => "data",
        Threading::IntraOp => "intra",
    };
    println!(
        "{{\"sentences\": {}, \"seconds\": {:.4}, \"sentences_per_s\": {:.2}, \"batch_size\": {}, \
         \"threads\": {}, \"threading\": \"{}\", \"tokens\": {}, \"load_seconds\": {:.3}, \"model\": \"{}\"}}",
        sentences.len(),
        best,
        sentences.len() as f64 / best,
        args.opts.batch_size,
        args.opts.threads,
        threading,
        tokens,
        load_s,
        enc.id()
    );
    Ok(())
}
