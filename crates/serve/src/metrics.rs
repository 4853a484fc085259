//! Prometheus metrics of the server (`GET /metrics`, text exposition format 0.0.4):
//! requests by route and status, latency histograms, embedding batches and the queue.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Upper bounds of the batch-size histogram's buckets (sentences per forward batch).
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[derive(Default)]
struct Histogram {
    /// Cumulative counts, one per bucket bound.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len()];
        }
        for (count, bound) in self.buckets.iter_mut().zip(bounds) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (count, bound) in self.buckets.iter().zip(bounds) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

#[derive(Default)]
struct Recorded {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    batch_sentences: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    recorded: Mutex<Recorded>,
    pub sentences_embedded: AtomicU64,
    pub tokens_embedded: AtomicU64,
    /// Embedding requests waiting for the encoder.
    pub queue_depth: AtomicU64,
    /// Generation requests running or waiting.
    pub generations_in_flight: AtomicU64,
}

impl Metrics {
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        if let Ok(mut r) = self.recorded.lock() {
            *r.requests.entry((route.to_string(), status)).or_default() += 1;
            r.latency
                .entry(route.to_string())
                .or_default()
                .observe(&LATENCY_BUCKETS, seconds);
        }
    }

    pub fn observe_batch(&self, sentences: usize, tokens: usize) {
        self.sentences_embedded
            .fetch_add(sentences as u64, Ordering::Relaxed);
        self.tokens_embedded
            .fetch_add(tokens as u64, Ordering::Relaxed);
        if let Ok(mut r) = self.recorded.lock() {
            r.batch_sentences.observe(&BATCH_BUCKETS, sentences as f64);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(r) = self.recorded.lock() else {
            return out;
        };
        out.push_str("# HELP lcm_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE lcm_requests_total counter\n");
        for ((route, status), count) in &r.requests {
            let _ = writeln!(
                out,
                "lcm_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP lcm_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE lcm_request_duration_seconds histogram\n");
        for (route, histogram) in &r.latency {
            histogram.render(
                &mut out,
                "lcm_request_duration_seconds",
                &format!("route=\"{route}\""),
                &LATENCY_BUCKETS,
            );
        }
        out.push_str("# HELP lcm_batch_sentences Sentences per encoder batch.\n");
        out.push_str("# TYPE lcm_batch_sentences histogram\n");
        r.batch_sentences
            .render(&mut out, "lcm_batch_sentences", "", &BATCH_BUCKETS);
        let gauges = [
            (
                "lcm_sentences_embedded_total",
                "counter",
                "Sentences embedded.",
                self.sentences_embedded.load(Ordering::Relaxed),
            ),
            (
                "lcm_tokens_embedded_total",
                "counter",
                "Tokens embedded (after truncation).",
                self.tokens_embedded.load(Ordering::Relaxed),
            ),
            (
                "lcm_queue_depth",
                "gauge",
                "Embedding requests waiting for the encoder.",
                self.queue_depth.load(Ordering::Relaxed),
            ),
            (
                "lcm_generations_in_flight",
                "gauge",
                "Generation requests running or waiting.",
                self.generations_in_flight.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}
