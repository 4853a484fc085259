//! `lcm`: the command-line front end. Argument parsing, progress and output formatting only;
//! every capability lives in a library crate.

mod commands;
mod output;
mod progress;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "lcm",
    version,
    about = "Large Concept Models: language modelling in sentence-embedding space"
)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Split text into sentences, one per line.
    Segment(commands::segment::Args),
    /// Encode sentences into concept vectors (JSON lines, .safetensors or .npy).
    Encode(commands::encode::Args),
    /// Turn a corpus (JSONL, text folder, Parquet) into a sharded Parquet concept store.
    Prepare(commands::prepare::Args),
    /// Fit the robust per-dimension normaliser (median / IQR) on a sample of a store.
    FitNormalizer(commands::normalizer::Args),
    /// Print the schema, metadata and statistics of a store or artifact.
    Inspect(commands::inspect::Args),
    /// Train a Base-LCM or diffusion LCM on a concept store, with resumable checkpoints.
    Train(commands::train::Args),
    /// Instruction fine-tuning of a trained LCM on prompt → answer pairs, the prompt's
    /// concepts masked out of the loss.
    Finetune(commands::finetune::Args),
    /// Continue a prompt concept by concept with a trained model; decode by retrieval.
    Generate(commands::generate::Args),
    /// Teacher-forced evaluation (ℓ2, CA, PAR vs trivial baselines) on the held-out split.
    Eval(commands::eval::Args),
    /// Multilingual evaluation on a parallel corpus: cross-lingual retrieval, zero-shot
    /// next-concept prediction in languages never trained on, generation across languages.
    EvalMultilingual(commands::eval_multilingual::Args),
    /// Summarisation on held-out prompt → answer pairs: fine-tuned LCMs and the
    /// first-sentence and nearest-summary baselines by ROUGE-L, OVL-3, REP-4, length ratio.
    EvalSummarization(commands::eval_summarization::Args),
    /// Generation quality on held-out prompts: stop reasons, REP-4, OVL-3, coherence and
    /// registers (store sources) per model and sampling setting (guidance × DDIM steps).
    EvalGeneration(commands::eval_generation::Args),
    /// Plan the next sentences toward a goal, outside guardrail regions, with a trained LCM
    /// as the world model; `--cases` compares it with unconstrained generation and greedy
    /// retrieval.
    Plan(commands::plan::Args),
    /// Train a decoder of SONAR's architecture that turns concepts of an open encoder
    /// (e.g. MiniLM) back into text, on the sentences of a concept store.
    TrainDecoder(commands::decoder::TrainArgs),
    /// Round-trip evaluation (BLEU, exact match, cos(encode(decode(x)), x)) of a trained
    /// decoder next to the retrieval decoder, on held-out sentences.
    EvalDecoder(commands::decoder::EvalArgs),
    /// Plot the loss curve (and learning rate) of a training run's metrics.jsonl as a PNG.
    Plot(commands::plot::Args),
    /// Model files: `lcm models fetch sonar` (where SONAR comes from, download, check).
    #[command(subcommand)]
    Models(commands::models::Command),
    /// Federated training: write the first global model (see `federated/`).
    FedInit(commands::federated::InitArgs),
    /// Federated training: one site's round (H inner steps from a global model).
    FedStep(commands::federated::StepArgs),
    /// HTTP server: embeddings (TEI and OpenAI APIs), segmentation, generation.
    Serve(commands::serve::Args),
    /// Write a trained model as a Hugging Face–style folder (safetensors, config.json,
    /// normaliser, model card) that every command loads like a run directory.
    Export(commands::export::Args),
    /// World models learned from observation: `lcm wm train`, `lcm wm eval`.
    #[command(subcommand)]
    Wm(commands::wm::Command),
}

fn main() {
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = run(cli.command) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    if matches!(
        command,
        Command::Train(_)
            | Command::Finetune(_)
            | Command::Eval(_)
            | Command::EvalMultilingual(_)
            | Command::EvalSummarization(_)
            | Command::EvalGeneration(_)
            | Command::Generate(_)
            | Command::Plan(_)
            | Command::Wm(_)
            | Command::TrainDecoder(_)
            | Command::EvalDecoder(_)
            | Command::FedStep(_)
            | Command::Serve(_)
            | Command::Export(_)
    ) && !lcm_train::memory::retain_freed_memory()
    {
        tracing::debug!("allocator tuning unavailable on this platform");
    }
    match command {
        Command::Segment(args) => commands::segment::run(args),
        Command::Encode(args) => commands::encode::run(args),
        Command::Prepare(args) => commands::prepare::run(args),
        Command::FitNormalizer(args) => commands::normalizer::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Finetune(args) => commands::finetune::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::EvalMultilingual(args) => commands::eval_multilingual::run(args),
        Command::EvalSummarization(args) => commands::eval_summarization::run(args),
        Command::EvalGeneration(args) => commands::eval_generation::run(args),
        Command::Plan(args) => commands::plan::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::Wm(command) => commands::wm::run(command),
        Command::Models(command) => commands::models::run(command),
        Command::TrainDecoder(args) => commands::decoder::train(args),
        Command::EvalDecoder(args) => commands::decoder::eval(args),
        Command::FedInit(args) => commands::federated::init(args),
        Command::FedStep(args) => commands::federated::step(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Export(args) => commands::export::run(args),
    }
}
