//! Progress bars for long jobs.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use lcm_data::prepare::PrepareProgress;

/// Documents on the bar (they have a known total, hence an ETA), sentences/s in the message.
pub struct PrepareBar {
    bar: ProgressBar,
    started: Instant,
    sentences: AtomicU64,
}

impl PrepareBar {
    pub fn new(hidden: bool) -> Self {
        let bar = if hidden {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} docs  {msg}  ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Self {
            bar,
            started: Instant::now(),
            sentences: AtomicU64::new(0),
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn refresh(&self) {
        let sentences = self.sentences.load(Ordering::Relaxed);
        let rate = sentences as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        self.bar
            .set_message(format!("{sentences} sentences  {rate:.0} sent/s"));
    }
}

impl PrepareProgress for PrepareBar {
    fn start(&self, estimated_documents: Option<u64>) {
        if let Some(total) = estimated_documents {
            self.bar.set_length(total);
        }
    }
    fn sentences_encoded(&self, sentences: u64) {
        self.sentences.fetch_add(sentences, Ordering::Relaxed);
        self.refresh();
    }
    fn documents_done(&self, documents: u64, _sentences: u64) {
        self.bar.inc(documents);
    }
    fn shard_done(&self, index: usize, path: &Path, resumed: bool) {
        if resumed {
            self.bar.println(format!(
                "shard {index}: kept {} (already done)",
                path.display()
            ));
        } else {
            tracing::info!("shard {index}: wrote {}", path.display());
        }
    }
}
