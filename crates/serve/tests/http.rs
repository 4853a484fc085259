//! `lcm serve` on loopback with the tiny encoder fixture: every route, bad requests, limits,
//! authentication, graceful shutdown and a bounded load test. Embeddings are held to the
//! encoder called directly, segmentation to the segmenter.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use lcm_concept::ConceptEncoder;
use lcm_concept::bert::{BertEncoder, EncoderOptions};
use lcm_concept::segment::{Segmenter, SegmenterConfig};
use lcm_serve::{ServeConfig, Services, openapi, serve};
use serde_json::{Value, json};
use tokio::sync::oneshot;

fn encoder() -> Arc<BertEncoder> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/encoder/tiny-bert");
    let options = EncoderOptions {
        threads: 2,
        ..EncoderOptions::default()
    };
    Arc::new(BertEncoder::from_folder(folder, &options).expect("tiny-bert"))
}

struct Server {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(config: ServeConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let services = Services {
            encoder: encoder(),
            generator: None,
            sampling: Default::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, services, config, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        Self {
            base: format!("http://{addr}"),
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .expect("server task");
    }
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = client.post(url).json(body).send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn direct(sentences: &[&str]) -> Vec<Vec<f32>> {
    encoder()
        .encode(sentences, None)
        .expect("encode")
        .to_vec2::<f32>()
        .expect("rows")
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_f64().expect("number") as f32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_the_library_does() {
    let server = Server::start(ServeConfig::default()).await;
    let client = reqwest::Client::new();
    let sentences = [
        "The first sentence.",
        "A second, longer sentence than the first.",
    ];
    let expected = direct(&sentences);

    let (status, body) = post(
        &client,
        &server.url("/embed"),
        &json!({ "inputs": sentences }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let rows: Vec<Vec<f32>> = body.as_array().expect("rows").iter().map(floats).collect();
    // tiny-bert's pipeline normalises, so `normalize: true` changes nothing.
    assert!(close(&rows[0], &expected[0]) && close(&rows[1], &expected[1]));
    let (_, single) = post(
        &client,
        &server.url("/embed"),
        &json!({ "inputs": sentences[1] }),
    )
    .await;
    assert!(close(&floats(&single[0]), &expected[1]));

    let (status, body) = post(
        &client,
        &server.url("/v1/embeddings"),
        &json!({ "input": sentences, "encoding_format": "base64" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert!(
        body["model"]
            .as_str()
            .expect("model")
            .starts_with("tiny-bert@")
    );
    assert!(body["usage"]["prompt_tokens"].as_u64().expect("tokens") > 4);
    for (i, item) in body["data"].as_array().expect("data").iter().enumerate() {
        assert_eq!(item["index"], i);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(item["embedding"].as_str().expect("base64"))
            .expect("decode");
        let row: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert!(close(&row, &expected[i]));
    }

    let text = "Dr. Smith arrived at 5 p.m. He left. Was it late? Yes!";
    let (status, body) = post(&client, &server.url("/segment"), &json!({ "text": text })).await;
    assert_eq!(status, 200);
    let segmented: Vec<String> = serde_json::from_value(body["sentences"].clone()).expect("list");
    let config = SegmenterConfig {
        max_chars: 0,
        ..SegmenterConfig::default()
    };
    assert_eq!(segmented, Segmenter::new(config).segment(text));
    assert_eq!(segmented.len(), 4, "{segmented:?}");

    let info: Value = client
        .get(server.url("/info"))
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("json");
    assert_eq!(info["model_dim"], 32);
    assert_eq!(info["lcm_model"], Value::Null);
    let health = client
        .get(server.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);

    // /generate without a model says how to start the server with one.
    let (status, body) = post(
        &client,
        &server.url("/generate"),
        &json!({ "prompt": "Hi." }),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        body["error"].as_str().expect("error").contains("--model"),
        "{body}"
    );

    let document: Value = client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    for (method, path, _) in openapi::ROUTES {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }

    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("lcm_requests_total{route=\"/embed\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lcm_request_duration_seconds_bucket{route=\"/embed\",le=\"+Inf\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lcm_sentences_embedded_total 5"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx_errors() {
    let config = ServeConfig {
        max_client_batch_size: 4,
        max_input_bytes: 1_000,
        max_body_bytes: 20_000,
        ..ServeConfig::default()
    };
    let server = Server::start(config).await;
    let client = reqwest::Client::new();
    let embed = server.url("/embed");

    let response = client
        .post(&embed)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("json error");
    assert_eq!(body["error_type"], "bad_request");

    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({ "text": "wrong field" }), 422, "inputs"),
        (json!({ "inputs": [] }), 422, "empty"),
        (
            json!({ "inputs": ["a", "b", "c", "d", "e"] }),
            413,
            "--max-client-batch-size",
        ),
        (
            json!({ "inputs": "x".repeat(1_001) }),
            413,
            "--max-input-bytes",
        ),
        (
            json!({ "inputs": "word ".repeat(190), "truncate": false }),
            413,
            "truncate",
        ),
    ];
    for (request, status, needle) in cases {
        let (got, body) = post(&client, &embed, &request).await;
        assert_eq!(got, status, "{request}: {body}");
        let message = body["error"].as_str().unwrap_or_default().to_string();
        assert!(message.contains(needle), "{request}: {message}");
    }
    // The same long input is truncated by default.
    let (status, _) = post(&client, &embed, &json!({ "inputs": "word ".repeat(190) })).await;
    assert_eq!(status, 200);

    let (status, body) = post(&client, &embed, &json!({ "inputs": "y".repeat(30_000) })).await;
    assert_eq!(status, 413, "{body}");
    let (status, body) = post(
        &client,
        &server.url("/v1/embeddings"),
        &json!({ "input": "a", "encoding_format": "int8" }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post(
        &client,
        &server.url("/v1/embeddings"),
        &json!({ "input": "a", "dimensions": 8 }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_is_required_except_for_health() {
    let config = ServeConfig {
        api_key: Some("s3cret".into()),
        ..ServeConfig::default()
    };
    let server = Server::start(config).await;
    let client = reqwest::Client::new();
    let request = json!({ "inputs": "Hello." });
    let refused = client
        .post(server.url("/embed"))
        .json(&request)
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    let wrong = client
        .post(server.url("/embed"))
        .bearer_auth("s3cre")
        .json(&request)
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status().as_u16(), 401);
    let accepted = client
        .post(server.url("/embed"))
        .bearer_auth("s3cret")
        .json(&request)
        .send()
        .await
        .expect("request");
    assert_eq!(accepted.status().as_u16(), 200);
    let info = client
        .get(server.url("/info"))
        .send()
        .await
        .expect("request");
    assert_eq!(info.status().as_u16(), 401);
    let health = client
        .get(server.url("/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(health.status().as_u16(), 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_requests_in_flight() {
    let server = Server::start(ServeConfig::default()).await;
    let client = reqwest::Client::new();
    // Large enough to still be encoding when the shutdown arrives.
    let inputs: Vec<String> = (0..64)
        .map(|i| format!("Sentence {i} {}", "word ".repeat(100)))
        .collect();
    let url = server.url("/embed");
    let in_flight = tokio::spawn({
        let client = client.clone();
        let inputs = inputs.clone();
        async move { post(&client, &url, &json!({ "inputs": inputs })).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let base = server.base.clone();
    server.shutdown().await;
    let (status, body) = in_flight.await.expect("task");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().expect("rows").len(), 64);
    // No new connections after shutdown.
    assert!(client.get(format!("{base}/health")).send().await.is_err());
}

/// 32 concurrent clients for a few seconds: no failed or lost request, every answer the
/// right size; prints throughput and latency percentiles (the 20 s MiniLM run is
/// `bash bench/serve.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_lose_no_request() {
    let server = Server::start(ServeConfig::default()).await;
    let client = reqwest::Client::new();
    let url = server.url("/embed");
    let deadline = Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..32)
        .map(|c| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0usize;
                while Instant::now() < deadline {
                    let inputs: Vec<String> = (0..4)
                        .map(|k| format!("Client {c} request {i} sentence {k}."))
                        .collect();
                    let started = Instant::now();
                    let (status, body) = post(&client, &url, &json!({ "inputs": inputs })).await;
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(body.as_array().map(Vec::len), Some(4));
                    latencies.push(started.elapsed().as_secs_f64());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in clients {
        latencies.extend(task.await.expect("client"));
    }
    latencies.sort_by(f64::total_cmp);
    let n = latencies.len();
    assert!(n >= 32, "{n} requests");
    let pct = |p: f64| latencies[((n as f64 * p) as usize).min(n - 1)] * 1e3;
    eprintln!(
        "{n} requests in 3 s ({:.0}/s), p50 {:.1} ms, p99 {:.1} ms",
        n as f64 / 3.0,
        pct(0.5),
        pct(0.99)
    );
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!(
            "lcm_requests_total{{route=\"/embed\",status=\"200\"}} {n}"
        )),
        "{metrics}"
    );
    server.shutdown().await;
}
