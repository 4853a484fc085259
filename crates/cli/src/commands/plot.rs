use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lcm_train::plot::plot_metrics;

#[derive(clap::Args)]
pub struct Args {
    /// `metrics.jsonl` written by `lcm train`.
    metrics: PathBuf,
    /// Output PNG (default: `loss.png` next to the metrics file).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Plot title (default: the name of the run's folder).
    #[arg(long)]
    title: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let run_dir = args
        .metrics
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let out = args.out.unwrap_or_else(|| run_dir.join("loss.png"));
    // The run folder's name tells runs apart when several plots are open side by side.
    let title = args.title.unwrap_or_else(|| {
        let name = run_dir
            .canonicalize()
            .ok()
            .and_then(|dir| dir.file_name().map(|n| n.to_string_lossy().into_owned()));
        match name {
            Some(name) => format!("{name}: loss"),
            None => "loss".to_string(),
        }
    });
    let summary = plot_metrics(&args.metrics, &out, &title)
        .with_context(|| format!("plotting {}", args.metrics.display()))?;

    let mut line = format!(
        "steps {}..={} ({} plotted), final loss {:.5}",
        summary.first_step, summary.last_step, summary.train_points, summary.final_loss
    );
    if let Some((step, loss)) = summary.best_valid {
        line.push_str(&format!(", best valid {loss:.5} at step {step}"));
    }
    if summary.log_scale {
        line.push_str(", log-scale loss axis");
    }
    println!("{line}; wrote {}", summary.out.display());
    if summary.skipped_non_finite > 0 {
        eprintln!(
            "warning: skipped {} NaN/infinite values",
            summary.skipped_non_finite
        );
    }
    if summary.replaced_steps > 0 {
        eprintln!(
            "note: {} steps appear more than once (resumed run); plotted the latest",
            summary.replaced_steps
        );
    }
    if summary.skipped_partial_last_line {
        eprintln!("note: ignored an unfinished last line (run still writing?)");
    }
    Ok(())
}
