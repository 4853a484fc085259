//! `lcm serve`: the library API over HTTP, in the manner of Hugging Face's
//! text-embeddings-inference. Embeddings (`/embed`, OpenAI-compatible `/v1/embeddings`)
//! from concurrent clients are batched by token budget ([`batcher`]); segmentation and
//! generation call the same library functions as the CLI. Limits on body size, inputs per
//! request, input length and queue length answer with clear 4xx errors instead of
//! unbounded memory; an optional bearer key guards every route but `/health`; shutdown
//! finishes the requests in flight.

mod batcher;
mod error;
mod metrics;
pub mod openapi;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lcm_concept::ConceptEncoder;
use lcm_workflows::SamplingSettings;
use lcm_workflows::session::GenerationSession;

use crate::batcher::Batcher;
pub use crate::error::ApiError;
use crate::metrics::Metrics;

/// The server's address and limits.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// Required as `Authorization: Bearer <key>` on every route but `/health`.
    pub api_key: Option<String>,
    /// Largest request body (413 beyond).
    pub max_body_bytes: usize,
    /// Most texts in one embedding request (413 beyond).
    pub max_client_batch_size: usize,
    /// Longest text in bytes (413 beyond).
    pub max_input_bytes: usize,
    /// Tokens encoded in one batch across requests.
    pub max_batch_tokens: usize,
    /// Embedding requests waiting for the encoder (429 beyond).
    pub max_queue: usize,
    /// Generations running at once (429 beyond).
    pub max_generations: usize,
    /// Most sentences one generation request may ask for.
    pub max_generate_sentences: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_key: None,
            max_body_bytes: 2 * 1024 * 1024,
            max_client_batch_size: 64,
            max_input_bytes: 100_000,
            max_batch_tokens: 16_384,
            max_queue: 256,
            max_generations: 4,
            max_generate_sentences: 32,
        }
    }
}

/// What the server serves: an encoder, and optionally a trained LCM for `/generate`.
pub struct Services {
    pub encoder: Arc<dyn ConceptEncoder>,
    pub generator: Option<Arc<GenerationSession>>,
    /// Diffusion sampling defaults of `/generate` (requests may change guidance and steps).
    pub sampling: SamplingSettings,
}

#[derive(Clone)]
struct AppState {
    encoder: Arc<dyn ConceptEncoder>,
    generator: Option<Arc<GenerationSession>>,
    sampling: SamplingSettings,
    batcher: Arc<Batcher>,
    metrics: Arc<Metrics>,
    config: Arc<ServeConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot listen on {addr}: {source} (is another server using the port? pick one with --port)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The application: routes, limits, authentication and metrics, with its batcher started.
pub fn app(services: Services, config: ServeConfig) -> std::io::Result<Router> {
    let metrics = Arc::new(Metrics::default());
    let batcher = Batcher::start(
        services.encoder.clone(),
        config.max_batch_tokens,
        config.max_queue,
        metrics.clone(),
    )?;
    let state = AppState {
        encoder: services.encoder,
        generator: services.generator,
        sampling: services.sampling,
        batcher: Arc::new(batcher),
        metrics,
        config: Arc::new(config),
    };
    let mut router = Router::new();
    for (method, path, _) in openapi::ROUTES {
        let route = match (*method, *path) {
            ("post", "/embed") => post(routes::embed),
            ("post", "/v1/embeddings") => post(routes::openai_embeddings),
            ("post", "/segment") => post(routes::segment),
            ("post", "/generate") => post(routes::generate),
            ("post", "/plan") => post(routes::plan),
            ("get", "/info") => get(routes::info),
            ("get", "/health") => get(routes::health),
            ("get", "/metrics") => get(routes::metrics),
            ("get", "/openapi.json") => get(routes::openapi_document),
            _ => continue,
        };
        router = router.route(path, route);
    }
    Ok(router
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state))
}

/// Refuses requests without the API key (when one is set), except `/health`.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = &state.config.api_key else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), key.as_bytes()) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Compares without stopping at the first difference, so timing does not leak the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts every request by route and status, with its latency.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe_request(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Serves on `listener` until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    services: Services,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = app(services, config)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Runs the server until Ctrl-C or SIGTERM (blocking), calling `on_listening` with the bound
/// address once it accepts connections.
pub fn run(
    services: Services,
    config: ServeConfig,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.addr,
                source,
            })?;
        on_listening(listener.local_addr()?);
        serve(listener, services, config, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}
