//! Progress of long jobs: an animated bar on a terminal; where standard error is not a
//! terminal (CI logs, `| tee`, nohup), a plain line every few seconds with done/total, rate
//! and ETA, as build tools print; nothing with `--quiet`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanDuration, ProgressBar, ProgressStyle};
use lcm_data::prepare::PrepareProgress;

/// Seconds between progress lines when standard error is not a terminal; overridden by
/// `LCM_PROGRESS_SECONDS` (0: a line at every update).
const LINE_SECONDS: f64 = 5.0;

/// A bar over `total` units (steps, documents), or progress lines where there is no terminal.
pub struct Progress {
    bar: ProgressBar,
    unit: &'static str,
    /// `Some` in line mode: when the last line was printed, and that line.
    lines: Option<Mutex<Option<(Instant, String)>>>,
    every: Duration,
}

impl Progress {
    pub fn new(total: u64, unit: &'static str, quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = if quiet || !terminal {
            // Hidden bars still keep position, length, rate and ETA for the lines.
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total)
        };
        bar.set_length(total);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}  ETA {{eta}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        let every = std::env::var("LCM_PROGRESS_SECONDS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .unwrap_or(LINE_SECONDS);
        Self {
            bar,
            unit,
            lines: (!quiet && !terminal).then(|| Mutex::new(None)),
            every: Duration::from_secs_f64(every),
        }
    }

    pub fn set_length(&self, total: u64) {
        self.bar.set_length(total);
    }

    /// Starts counting rate and ETA from `position` (a resumed run's first step).
    pub fn start_at(&self, position: u64) {
        self.bar.set_position(position);
        self.bar.reset_eta();
    }

    pub fn inc(&self, delta: u64) {
        self.bar.inc(delta);
        self.maybe_line(false);
    }

    pub fn set_message(&self, message: String) {
        self.bar.set_message(message);
        self.maybe_line(false);
    }

    /// Position and message together (one progress line, not two).
    pub fn update(&self, position: u64, message: String) {
        self.bar.set_position(position);
        self.set_message(message);
    }

    /// A line printed above the bar (or among the progress lines).
    pub fn println(&self, line: String) {
        if self.lines.is_some() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Removes the bar; in line mode prints the final state.
    pub fn finish(&self) {
        self.maybe_line(true);
        self.bar.finish_and_clear();
    }

    fn maybe_line(&self, last: bool) {
        let Some(printed) = &self.lines else {
            return;
        };
        let Ok(mut printed) = printed.lock() else {
            return;
        };
        let now = Instant::now();
        if !last
            && printed
                .as_ref()
                .is_some_and(|(at, _)| now.duration_since(*at) < self.every)
        {
            return;
        }
        let line = self.line();
        if printed
            .as_ref()
            .is_none_or(|(_, previous)| *previous != line)
        {
            eprintln!("{line}");
        }
        *printed = Some((now, line));
    }

    /// `[0:01:23] 120/1000 steps (12%)  1.4 steps/s  ETA 10m  <message>`.
    fn line(&self) -> String {
        let (done, total) = (self.bar.position(), self.bar.length().unwrap_or(0));
        let elapsed = self.bar.elapsed().as_secs();
        let mut line = format!(
            "[{}:{:02}:{:02}] {done}/{total} {}",
            elapsed / 3600,
            elapsed / 60 % 60,
            elapsed % 60,
            self.unit
        );
        if let Some(percent) = (done.min(total) * 100).checked_div(total) {
            line.push_str(&format!(" ({percent}%)"));
        }
        let rate = self.bar.per_sec();
        if rate.is_finite() && rate > 0.0 {
            line.push_str(&format!("  {rate:.2} {}/s", self.unit));
            if total > done {
                let eta = Duration::from_secs_f64((total - done) as f64 / rate);
                line.push_str(&format!("  ETA {}", HumanDuration(eta)));
            }
        }
        let message = self.bar.message();
        if !message.is_empty() {
            line.push_str("  ");
            line.push_str(&message);
        }
        line
    }
}

/// Documents on the bar (they have a known total, hence an ETA), sentences/s in the message.
pub struct PrepareBar {
    bar: Progress,
    started: Instant,
    sentences: AtomicU64,
}

impl PrepareBar {
    pub fn new(quiet: bool) -> Self {
        Self {
            bar: Progress::new(0, "docs", quiet),
            started: Instant::now(),
            sentences: AtomicU64::new(0),
        }
    }

    pub fn finish(&self) {
        self.bar.finish();
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
