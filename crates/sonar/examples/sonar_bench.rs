//! The lcm side of `bench/sonar_vs_fairseq2.py`: full-size SONAR encoder and decoder with the
//! random weights that script saves, the same inputs and batches; writes `DIR/lcm.json`.
//!
//! ```text
//! cargo build --release --example sonar_bench -p lcm-sonar
//! target/release/examples/sonar_bench target/bench/sonar-random [--threads 2] [--vectors 32]
//!     [--beam 5] [--max-gen-len 32] [--batch-size 32]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use lcm_sonar::SpecialIds;
use lcm_sonar::generate::{BeamSearchConfig, beam_search};
use lcm_sonar::model::SonarDecoderConfig;
use lcm_sonar::weights::{load_decoder, load_encoder};

const FRA_LATN: u32 = 256_057;

struct Args {
    dir: PathBuf,
    threads: usize,
    vectors: usize,
    beam: usize,
    max_gen_len: usize,
    batch_size: usize,
    /// Skip encoding; decode the first `vectors` rows of a seeded N(0, 0.01) matrix (profiling).
    decode_only: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let dir = it.next().ok_or("usage: sonar_bench DIR [--threads N] [--vectors N] [--beam N] [--max-gen-len N] [--batch-size N]")?;
    let mut args = Args {
        dir: PathBuf::from(dir),
        threads: 2,
        vectors: 32,
        beam: 5,
        max_gen_len: 32,
        batch_size: 32,
        decode_only: false,
    };
    while let Some(flag) = it.next() {
        if flag == "--decode-only" {
            args.decode_only = true;
            continue;
        }
        let value: usize = it
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{flag} needs a positive integer"))?;
        match flag.as_str() {
            "--threads" => args.threads = value,
            "--vectors" => args.vectors = value,
            "--beam" => args.beam = value,
            "--max-gen-len" => args.max_gen_len = value,
            "--batch-size" => args.batch_size = value,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// Peak resident set of this process (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    // Keep freed heap memory for reuse, as the `lcm` binary does (see lcm_util::memory).
    lcm_util::memory::retain_freed_memory();
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global();
    let inputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(args.dir.join("inputs.json"))?)?;
    let sequences: Vec<Vec<u32>> = serde_json::from_value(inputs["sequences"].clone())?;
    let tokens: usize = sequences.iter().map(Vec::len).sum();

    let (embeddings, encode_s, load_encoder_s) = if args.decode_only {
        let noise = Tensor::randn(0f32, 0.01, (args.vectors, 1024), &Device::Cpu)?;
        (noise, 0.0, 0.0)
    } else {
        let t0 = Instant::now();
        let encoder = load_encoder(&args.dir.join("encoder.safetensors"), None, &Device::Cpu)?;
        let load_encoder_s = t0.elapsed().as_secs_f64();
        encoder.encode(&sequences[..4.min(sequences.len())])?; // warm-up
        let t0 = Instant::now();
        let mut batches = Vec::new();
        for chunk in sequences.chunks(args.batch_size) {
            batches.push(encoder.encode(chunk)?);
        }
        let encode_s = t0.elapsed().as_secs_f64();
        (Tensor::cat(&batches, 0)?, encode_s, load_encoder_s)
    };

    let t0 = Instant::now();
    let decoder = load_decoder(&args.dir.join("decoder.safetensors"), None, &Device::Cpu)?;
    let load_decoder_s = t0.elapsed().as_secs_f64();
    let vectors = embeddings.narrow(0, 0, args.vectors.min(embeddings.dim(0)?))?;
    let prompt = vec![SpecialIds::SONAR.eos, FRA_LATN];
    let config = BeamSearchConfig {
        beam_size: args.beam,
        max_gen_len: args.max_gen_len,
        max_seq_len: (prompt.len() + args.max_gen_len)
            .min(SonarDecoderConfig::sonar_basic().max_seq_len),
        ..BeamSearchConfig::sonar_pipeline(1024, 512, prompt.len())
    };
    let warm = vectors.narrow(0, 0, 2.min(vectors.dim(0)?))?;
    beam_search(
        &decoder,
        &warm,
        &vec![prompt.clone(); warm.dim(0)?],
        SpecialIds::SONAR,
        &config,
    )?;
    let t0 = Instant::now();
    let prompts = vec![prompt; vectors.dim(0)?];
    let results = beam_search(&decoder, &vectors, &prompts, SpecialIds::SONAR, &config)?;
    let decode_s = t0.elapsed().as_secs_f64();
    let hypotheses: Vec<Vec<Vec<u32>>> = results
        .iter()
        .map(|hs| hs.iter().map(|h| h.ids.clone()).collect())
        .collect();
    let generated_tokens: usize = hypotheses
        .iter()
        .map(|h| h.first().map_or(0, Vec::len))
        .sum();

    let out = serde_json::json!({
        "encode_s": encode_s,
        "decode_s": decode_s,
        "load_encoder_s": load_encoder_s,
        "load_decoder_s": load_decoder_s,
        "tokens": tokens,
        "embeddings": embeddings.to_vec2::<f32>()?,
        "hypotheses": hypotheses,
        "generated_tokens": generated_tokens,
        "peak_rss_mb": peak_rss_mb(),
        "version": format!("lcm-sonar {}", env!("CARGO_PKG_VERSION")),
    });
    let name = if args.decode_only {
        "lcm-decode-only.json"
    } else {
        "lcm.json"
    };
    std::fs::write(args.dir.join(name), serde_json::to_string(&out)?)?;
    eprintln!(
        "lcm: encode {:.1} s, decode {:.1} s, peak {:.0} MB",
        encode_s,
        decode_s,
        peak_rss_mb()
    );
    Ok(())
}
