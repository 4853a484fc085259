//! Requests from concurrent clients batched by token budget: each embedding request joins a
//! bounded queue; one worker thread takes as many waiting requests as fit in
//! `max_batch_tokens`, encodes their sentences in one call (the encoder sorts them by length
//! and spreads them over its threads) and hands each request its rows. A full queue is
//! refused at once (429) rather than held in memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use lcm_concept::ConceptEncoder;
use lcm_workflows::encode::{Embeddings, encode_sentences};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::metrics::Metrics;

struct Job {
    sentences: Vec<String>,
    /// Tokens the sentences cost the encoder (after truncation).
    tokens: usize,
    reply: oneshot::Sender<Result<Embeddings, String>>,
}

pub struct Batcher {
    jobs: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// Starts the worker thread; at most `max_queue` requests wait for it.
    pub fn start(
        encoder: Arc<dyn ConceptEncoder>,
        max_batch_tokens: usize,
        max_queue: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(max_queue.max(1));
        let worker_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("lcm-embed".into())
            .spawn(move || work(encoder.as_ref(), queue, max_batch_tokens, &worker_metrics))?;
        Ok(Self { jobs, metrics })
    }

    /// The concepts of `sentences` (costing `tokens`), once a batch has encoded them.
    pub async fn embed(
        &self,
        sentences: Vec<String>,
        tokens: usize,
    ) -> Result<Embeddings, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            sentences,
            tokens,
            reply,
        };
        // Counted before sending, so that the worker never takes a job not yet counted.
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        self.jobs.try_send(job).map_err(|e| {
            self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => ApiError::overloaded(
                    "the embedding queue is full; retry later (or start the server with a larger --max-queue)",
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    ApiError::backend("the server is shutting down")
                }
            }
        })?;
        answer
            .await
            .map_err(|_| ApiError::backend("the encoder worker stopped"))?
            .map_err(ApiError::backend)
    }
}

/// The worker: batches until every sender is gone (the server has shut down).
fn work(
    encoder: &dyn ConceptEncoder,
    mut queue: mpsc::Receiver<Job>,
    max_batch_tokens: usize,
    metrics: &Metrics,
) {
    // A request taken from the queue that did not fit the previous batch.
    let mut carried: Option<Job> = None;
    loop {
        let Some(first) = carried.take().or_else(|| queue.blocking_recv()) else {
            return;
        };
        let mut tokens = first.tokens;
        let mut batch = vec![first];
        while let Ok(job) = queue.try_recv() {
            if tokens + job.tokens > max_batch_tokens {
                carried = Some(job);
                break;
            }
            tokens += job.tokens;
            batch.push(job);
        }
        let taken = batch.len() + usize::from(carried.is_some());
        metrics
            .queue_depth
            .fetch_sub(taken as u64, Ordering::Relaxed);
        if carried.is_some() {
            metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        }
        let counts: Vec<usize> = batch.iter().map(|j| j.sentences.len()).collect();
        let sentences: Vec<String> = batch
            .iter_mut()
            .flat_map(|j| std::mem::take(&mut j.sentences))
            .collect();
        let result = encode_sentences(encoder, &sentences, None);
        metrics.observe_batch(sentences.len(), tokens);
        match result {
            Ok(all) => {
                let mut start = 0;
                for (job, n) in batch.into_iter().zip(counts) {
                    let values = all.values[start * all.cols..(start + n) * all.cols].to_vec();
                    start += n;
                    // A client that went away no longer waits for its rows.
                    let _ = job.reply.send(Ok(Embeddings {
                        values,
                        rows: n,
                        cols: all.cols,
                    }));
                }
            }
            Err(error) => {
                let message = error.to_string();
                for job in batch {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc as std_mpsc;

    use candle_core::{Device, Tensor};

    use super::*;

    /// Encodes each sentence as `[len, 1.0]`, after the test lets each call through; it
    /// records the sentences of every call.
    struct GatedEncoder {
        gate: Mutex<std_mpsc::Receiver<()>>,
        /// Calls that reached the gate.
        entered: std::sync::atomic::AtomicUsize,
        calls: Mutex<Vec<Vec<String>>>,
    }

    impl ConceptEncoder for GatedEncoder {
        fn encode(&self, sentences: &[&str], _lang: Option<&str>) -> lcm_concept::Result<Tensor> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            if let Ok(gate) = self.gate.lock() {
                let _ = gate.recv();
            }
            if let Ok(mut calls) = self.calls.lock() {
                calls.push(sentences.iter().map(|s| s.to_string()).collect());
            }
            let values: Vec<f32> = sentences
                .iter()
                .flat_map(|s| [s.len() as f32, 1.0])
                .collect();
            Ok(Tensor::from_vec(
                values,
                (sentences.len(), 2),
                &Device::Cpu,
            )?)
        }
        fn dim(&self) -> usize {
            2
        }
        fn id(&self) -> &str {
            "gated"
        }
    }

    fn gated() -> (Arc<GatedEncoder>, std_mpsc::Sender<()>) {
        let (open, gate) = std_mpsc::channel();
        let encoder = Arc::new(GatedEncoder {
            gate: Mutex::new(gate),
            entered: Default::default(),
            calls: Mutex::new(Vec::new()),
        });
        (encoder, open)
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_requests_share_a_batch_within_the_token_budget_and_a_full_queue_refuses() {
        let (encoder, open) = gated();
        let metrics = Arc::new(Metrics::default());
        let batcher = Arc::new(Batcher::start(encoder.clone(), 10, 3, metrics.clone()).unwrap());
        // The first request occupies the worker (blocked in the gated encoder).
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.embed(strings(&["a"]), 1).await }
        });
        while encoder.entered.load(Ordering::SeqCst) != 1 {
            tokio::task::yield_now().await;
        }
        // Three wait: 4 + 4 tokens fit one batch of 10, the third (4) does not.
        let waiting: Vec<_> = [["bb", "bbb"], ["cc", "ccc"], ["dd", "ddd"]]
            .into_iter()
            .map(|pair| {
                let b = batcher.clone();
                let batch = strings(&pair);
                tokio::spawn(async move { b.embed(batch, 4).await })
            })
            .collect();
        while metrics.queue_depth.load(Ordering::Relaxed) != 3 {
            tokio::task::yield_now().await;
        }
        let refused = batcher.embed(strings(&["e"]), 1).await.unwrap_err();
        assert_eq!(refused.status.as_u16(), 429);

        for _ in 0..3 {
            open.send(()).unwrap();
        }
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.values, vec![1.0, 1.0]);
        for (task, lens) in waiting.into_iter().zip([[2.0, 3.0]; 3]) {
            let rows = task.await.unwrap().unwrap();
            assert_eq!(rows.rows, 2);
            assert_eq!(rows.values, vec![lens[0], 1.0, lens[1], 1.0]);
        }
        // Whichever two waited first shared a batch; the third had its own.
        let calls = encoder.calls.lock().unwrap().clone();
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(calls[0], strings(&["a"]));
        assert_eq!(sizes, vec![1, 4, 2]);
        assert_eq!(metrics.queue_depth.load(Ordering::Relaxed), 0);
    }
}
