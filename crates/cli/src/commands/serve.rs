//! `lcm serve`: flags → the encoder (and optionally a trained LCM as a
//! [`GenerationSession`]) → [`lcm_serve::run`] until Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use lcm_concept::ConceptEncoder;
use lcm_serve::{ServeConfig, Services};
use lcm_workflows::load::checkpoint_space_id;
use lcm_workflows::session::{DecoderChoice, GenerationSession};

use super::EncoderArgs;
use super::trained::SamplingArgs;
use crate::output::bank_notice;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (0.0.0.0 to accept other machines).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every route but /health (or set LCM_API_KEY).
    #[arg(long, env = "LCM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A trained LCM (`lcm train --out`) for POST /generate.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Concept store whose sentence bank decodes /generate's concepts.
    #[arg(long, requires = "model")]
    store: Option<PathBuf>,
    /// A sentence bank folder instead of STORE/sentence-bank.
    #[arg(long, requires = "model")]
    bank: Option<PathBuf>,
    /// A trained decoder (`lcm train-decoder --out`) instead of retrieval.
    #[arg(long, requires = "model", conflicts_with = "bank")]
    decoder: Option<PathBuf>,
    /// Beams of the trained decoder's search.
    #[arg(long, default_value_t = 5)]
    beam: usize,
    /// Normaliser of the model (default: the one recorded in its checkpoint).
    #[arg(long, requires = "model")]
    normalizer: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Most texts in one embedding request.
    #[arg(long, default_value_t = 64)]
    max_client_batch_size: usize,
    /// Longest text in bytes.
    #[arg(long, default_value_t = 100_000)]
    max_input_bytes: usize,
    /// Tokens encoded in one batch across concurrent requests.
    #[arg(long, default_value_t = 16_384)]
    max_batch_tokens: usize,
    /// Embedding requests waiting for the encoder before new ones get 429.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Generations running at once before new ones get 429.
    #[arg(long, default_value_t = 4)]
    max_generations: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
}

pub fn run(args: Args) -> Result<()> {
    if args.model.is_some() && args.store.is_none() && args.bank.is_none() && args.decoder.is_none()
    {
        bail!("--model needs a decoder for /generate: pass --store, --bank or --decoder");
    }
    if args.max_client_batch_size == 0 || args.max_queue == 0 || args.max_batch_tokens == 0 {
        bail!("--max-client-batch-size, --max-queue and --max-batch-tokens must be at least 1");
    }
    // With a model, its recorded encoder unless --encoder names one (of the same space).
    let encoder: Arc<dyn ConceptEncoder> = Arc::new(match &args.model {
        Some(model) => {
            let what = format!("the model {}", model.display());
            args.encoder.load_for(&checkpoint_space_id(model)?, &what)?
        }
        None => args.encoder.load()?,
    });
    let generator = match &args.model {
        Some(model) => {
            let choice = DecoderChoice {
                bank: args.bank.clone(),
                store: args.store.clone(),
                trained: args.decoder.clone().map(|dir| (dir, args.beam)),
            };
            Some(Arc::new(GenerationSession::open(
                model,
                args.normalizer.as_deref(),
                encoder.clone(),
                args.encoder.name(),
                &choice,
                &mut bank_notice,
            )?))
        }
        None => None,
    };
    let services = Services {
        encoder,
        generator,
        sampling: args.sampling.settings(),
    };
    let config = ServeConfig {
        addr: SocketAddr::new(args.host, args.port),
        api_key: args.api_key,
        max_body_bytes: args.max_body_bytes,
        max_client_batch_size: args.max_client_batch_size,
        max_input_bytes: args.max_input_bytes,
        max_batch_tokens: args.max_batch_tokens,
        max_queue: args.max_queue,
        max_generations: args.max_generations,
        ..ServeConfig::default()
    };
    lcm_serve::run(services, config, |addr| {
        // Printed (and flushed) so that scripts and tests can read the port chosen.
        println!("listening on http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })?;
    Ok(())
}
