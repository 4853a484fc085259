//! `lcm models fetch sonar`: where the SONAR weights come from, and a check of what is there.
//!
//! SONAR's weights are CC-BY-NC-4.0: this project never bundles or mirrors them. Users with
//! internet download them from Meta's server (`--download`, through `curl`, resumable); the
//! command then checks each file by loading it (tensor names, shapes, parameter counts,
//! tokenizer vocabulary) rather than by a pinned checksum, which could not be verified here
//! without the files.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{Context, Result, bail};
use lcm_sonar::pipeline::{
    DECODER_PARAMETERS, ENCODER_PARAMETERS, SonarFile, SonarFiles, default_sonar_dir,
};
use lcm_workflows::models::{check_sonar_checkpoint, check_sonar_tokenizer};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Say where a model's files come from, download them with `--download`, and check them.
    Fetch(FetchArgs),
}

#[derive(clap::Args)]
pub struct FetchArgs {
    /// Model to fetch: `sonar` (text encoder, decoder and tokenizer). For `minilm` use
    /// `bash scripts/fetch-models.sh minilm`.
    name: String,
    /// Folder for the files (default: $LCM_HOME/models/sonar).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Download missing files with curl (needs internet; resumes partial downloads).
    #[arg(long)]
    download: bool,
    /// Skip loading the checkpoints to check them (loading the two take ~7 GB of memory).
    #[arg(long)]
    no_check: bool,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Fetch(args) => fetch(args),
    }
}

fn fetch(args: FetchArgs) -> Result<()> {
    if args.name != "sonar" {
        bail!(
            "unknown model `{}`: `lcm models fetch` knows `sonar`; the MiniLM encoder comes \
             with `bash scripts/fetch-models.sh minilm`",
            args.name
        );
    }
    let dir = args.dir.unwrap_or_else(default_sonar_dir);
    println!(
        "SONAR text encoder/decoder (Meta, CC-BY-NC-4.0: non-commercial use; not bundled with lcm)"
    );
    println!("folder: {}", dir.display());
    let mut missing = Vec::new();
    for file in SonarFiles::ALL {
        let path = dir.join(file.name);
        if path.is_file() {
            let size = std::fs::metadata(&path)?.len();
            println!(
                "  present  {:<36} {:>14} bytes  {}",
                file.name, size, file.what
            );
        } else {
            println!("  missing  {:<36} {}", file.name, file.url);
            missing.push(file);
        }
    }
    if !missing.is_empty() {
        if !args.download {
            println!(
                "\nTo download (needs internet), run `lcm models fetch sonar --download`, or:"
            );
            println!("  mkdir -p {}", dir.display());
            for file in &missing {
                println!(
                    "  curl -fL -C - -o {} {}",
                    dir.join(file.name).display(),
                    file.url
                );
            }
            bail!(
                "{} SONAR file(s) missing in {}",
                missing.len(),
                dir.display()
            );
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for file in &missing {
            download(file, &dir)?;
        }
    }
    if args.no_check {
        return Ok(());
    }
    check(&dir)
}

fn download(file: &SonarFile, dir: &Path) -> Result<()> {
    let target = dir.join(file.name);
    // Downloads go to a .part file (resumed with -C -) and are renamed only when complete,
    // so an interrupted download never looks like a finished file.
    let part = dir.join(format!("{}.part", file.name));
    eprintln!("downloading {} -> {}", file.url, target.display());
    let status = Process::new("curl")
        .args(["-fL", "--retry", "3", "-C", "-", "-o"])
        .arg(&part)
        .arg(file.url)
        .status()
        .context("running curl (install curl, or download the file by hand)")?;
    if !status.success() {
        bail!(
            "downloading {} failed ({status}); the partial file {} is kept and resumed next time",
            file.url,
            part.display()
        );
    }
    std::fs::rename(&part, &target)
        .with_context(|| format!("moving {} to {}", part.display(), target.display()))?;
    Ok(())
}

fn check(dir: &Path) -> Result<()> {
    let (vocab, eng_latn) = check_sonar_tokenizer(dir)?;
    println!("  ok       tokenizer: {vocab} ids (eng_Latn = {eng_latn})");
    for (file, expected) in [
        (SonarFiles::ENCODER, ENCODER_PARAMETERS),
        (SonarFiles::DECODER, DECODER_PARAMETERS),
    ] {
        let (count, layout) = check_sonar_checkpoint(dir, &file, expected)?;
        println!(
            "  ok       {}: {count} parameters ({layout:?} layout)",
            file.name
        );
    }
    Ok(())
}
