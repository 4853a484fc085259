//! The request handlers. Each validates its request against the server's limits, calls the
//! library (the batcher for embeddings, the segmenter, the generation session) and shapes the
//! answer; none holds model logic.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine as _;
use lcm_concept::segment::{Segmenter, SegmenterConfig};
use lcm_workflows::encode::Embeddings;
use lcm_workflows::generate::StopRules;
use lcm_workflows::planning::{PlanOptions, PlanningError, plan_in_session, prompt_case};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{AppState, openapi};

/// One text or a list of texts, as both embedding APIs accept.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Inputs {
    One(String),
    Many(Vec<String>),
}

impl Inputs {
    fn into_vec(self) -> Vec<String> {
        match self {
            Inputs::One(s) => vec![s],
            Inputs::Many(v) => v,
        }
    }
}

fn default_true() -> bool {
    true
}

/// `POST /embed`, as text-embeddings-inference takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    inputs: Inputs,
    #[serde(default = "default_true")]
    normalize: bool,
    /// Truncate inputs beyond the encoder's token limit (else refuse them with 413).
    #[serde(default = "default_true")]
    truncate: bool,
}

/// `POST /v1/embeddings`, as OpenAI's API takes it.
#[derive(Deserialize)]
pub struct OpenAiRequest {
    input: Inputs,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRequest {
    text: String,
    #[serde(default)]
    lang: Option<String>,
    /// Re-split sentences of at least this many characters (the stores' 256); none by default.
    #[serde(default)]
    max_chars: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    prompt: String,
    #[serde(default)]
    max_sentences: Option<usize>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    eos_threshold: Option<f32>,
    #[serde(default)]
    repetition_threshold: Option<f32>,
    #[serde(default)]
    guidance_scale: Option<f64>,
    #[serde(default)]
    ddim_steps: Option<usize>,
    #[serde(default)]
    allow_prompt_sentences: bool,
}

/// `POST /plan`: `lcm plan`'s single prompt; absent settings take `lcm plan`'s defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    prompt: String,
    goal: String,
    #[serde(default)]
    avoid: Vec<String>,
    #[serde(default)]
    steps: Option<usize>,
    #[serde(default)]
    candidates: Option<usize>,
    #[serde(default)]
    neighbours: Option<usize>,
    #[serde(default)]
    beam: Option<usize>,
    #[serde(default)]
    tau: Option<f32>,
    #[serde(default)]
    radius: Option<f32>,
    #[serde(default)]
    steer: Option<f32>,
    #[serde(default)]
    coherence_weight: Option<f32>,
    #[serde(default)]
    greedy_neighbours: Option<usize>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    guidance_scale: Option<f64>,
    #[serde(default)]
    ddim_steps: Option<usize>,
}

/// Most candidates, beams, neighbours or avoided topics one `/plan` request may ask for: the
/// search costs their product in model calls.
const MAX_PLAN_WIDTH: usize = 64;

/// The inputs' concepts after the limits are checked, and the tokens they cost.
async fn embed_inputs(
    state: &AppState,
    inputs: Vec<String>,
    truncate: bool,
) -> Result<(Embeddings, usize), ApiError> {
    let limits = &state.config;
    if inputs.is_empty() {
        return Err(ApiError::validation(
            "`inputs` is empty: send at least one text",
        ));
    }
    if inputs.len() > limits.max_client_batch_size {
        return Err(ApiError::too_large(format!(
            "{} inputs in one request; at most {} (--max-client-batch-size)",
            inputs.len(),
            limits.max_client_batch_size
        )));
    }
    if let Some((i, text)) = inputs
        .iter()
        .enumerate()
        .find(|(_, t)| t.len() > limits.max_input_bytes)
    {
        return Err(ApiError::too_large(format!(
            "input {i} has {} bytes; at most {} (--max-input-bytes)",
            text.len(),
            limits.max_input_bytes
        )));
    }
    let encoder = state.encoder.clone();
    let (inputs, counts) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let counts = encoder.token_counts(&refs);
        (inputs, counts)
    })
    .await
    .map_err(|e| ApiError::backend(e.to_string()))?;
    let max_tokens = state.encoder.max_tokens();
    // Without a tokenizer to ask, about four bytes per token.
    let counts = counts?.unwrap_or_else(|| inputs.iter().map(|t| t.len() / 4 + 2).collect());
    if !truncate
        && let Some(max) = max_tokens
        && let Some(i) = counts.iter().position(|&c| c > max)
    {
        return Err(ApiError::too_large(format!(
            "input {i} is longer than the encoder's {max} tokens; send `truncate: true` or shorten it"
        )));
    }
    let tokens: usize = counts
        .iter()
        .map(|&c| max_tokens.map_or(c, |m| c.min(m)))
        .sum();
    let embeddings = state.batcher.embed(inputs, tokens).await?;
    Ok((embeddings, tokens))
}

pub async fn embed(
    State(state): State<AppState>,
    request: Result<Json<EmbedRequest>, JsonRejection>,
) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    let Json(request) = request.map_err(ApiError::from_rejection)?;
    let (mut embeddings, _) =
        embed_inputs(&state, request.inputs.into_vec(), request.truncate).await?;
    if request.normalize {
        embeddings.l2_normalize();
    }
    Ok(Json(embeddings.rows().map(<[f32]>::to_vec).collect()))
}

pub async fn openai_embeddings(
    State(state): State<AppState>,
    request: Result<Json<OpenAiRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = request.map_err(ApiError::from_rejection)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "encoding_format `{other}`: use `float` or `base64`"
            )));
        }
    };
    let dim = state.encoder.dim();
    if let Some(asked) = request.dimensions
        && asked != dim
    {
        return Err(ApiError::validation(format!(
            "dimensions {asked}: this encoder's concepts have {dim}"
        )));
    }
    let (embeddings, tokens) = embed_inputs(&state, request.input.into_vec(), true).await?;
    let data: Vec<Value> = embeddings
        .rows()
        .enumerate()
        .map(|(index, row)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(row)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": request.model.unwrap_or_else(|| state.encoder.id().to_string()),
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    })))
}

pub async fn segment(
    request: Result<Json<SegmentRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = request.map_err(ApiError::from_rejection)?;
    let config = SegmenterConfig {
        max_chars: request.max_chars.unwrap_or(0),
        lang: request.lang,
        ..SegmenterConfig::default()
    };
    let sentences =
        tokio::task::spawn_blocking(move || Segmenter::new(config).segment(&request.text))
            .await
            .map_err(|e| ApiError::backend(e.to_string()))?;
    Ok(Json(json!({ "sentences": sentences })))
}

pub async fn generate(
    State(state): State<AppState>,
    request: Result<Json<GenerateRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = request.map_err(ApiError::from_rejection)?;
    let Some(session) = state.generator.clone() else {
        return Err(ApiError::no_model(
            "this server has no LCM: start it with `lcm serve --model RUN --store STORE`",
        ));
    };
    let max_sentences = request.max_sentences.unwrap_or(8);
    if max_sentences > state.config.max_generate_sentences {
        return Err(ApiError::too_large(format!(
            "max_sentences {max_sentences}; at most {} (--max-generate-sentences)",
            state.config.max_generate_sentences
        )));
    }
    let sampling = state
        .sampling
        .clone()
        .with_overrides(request.guidance_scale, request.ddim_steps)
        .diffusion()?;
    let defaults = StopRules::default();
    let rules = StopRules {
        max_sentences,
        eos_threshold: request.eos_threshold.unwrap_or(defaults.eos_threshold),
        repetition_threshold: request
            .repetition_threshold
            .unwrap_or(defaults.repetition_threshold),
    };
    let slot = model_slot(&state)?;
    let seed = request.seed;
    let worker = Arc::clone(&session);
    let result = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        worker.generate(
            &request.prompt,
            &rules,
            &sampling,
            seed,
            request.allow_prompt_sentences,
        )
    })
    .await;
    let generation = result.map_err(|e| ApiError::backend(e.to_string()))??;
    let generated: Vec<Value> = generation
        .sentences
        .iter()
        .map(|d| json!({ "text": d.text, "similarity": d.score }))
        .collect();
    Ok(Json(json!({
        "model": session.trained().label(),
        "prompt": generation.prompt,
        "generated": generated,
        "stop": generation.stop.name(),
        "decoder": session.decoder().kind(),
        "seed": seed,
    })))
}

/// Reserves one of the `max_generations` model slots that `/generate` and `/plan` share;
/// the guard gives it back.
fn model_slot(state: &AppState) -> Result<SlotGuard, ApiError> {
    let in_flight = &state.metrics.generations_in_flight;
    if in_flight.fetch_add(1, Ordering::SeqCst) >= state.config.max_generations as u64 {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::overloaded(format!(
            "{} generations are already running; retry later",
            state.config.max_generations
        )));
    }
    Ok(SlotGuard(state.metrics.clone()))
}

struct SlotGuard(Arc<crate::metrics::Metrics>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.generations_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub async fn plan(
    State(state): State<AppState>,
    request: Result<Json<PlanRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = request.map_err(ApiError::from_rejection)?;
    let Some(session) = state.generator.clone() else {
        return Err(ApiError::no_model(
            "this server has no LCM: start it with `lcm serve --model RUN --store STORE`",
        ));
    };
    let defaults = PlanOptions::default();
    let options = PlanOptions {
        steps: request.steps.unwrap_or(defaults.steps),
        beam: request.beam.unwrap_or(defaults.beam),
        candidates: request.candidates.unwrap_or(defaults.candidates),
        neighbours: request.neighbours.unwrap_or(defaults.neighbours),
        steer: request.steer.unwrap_or(defaults.steer),
        proposer: defaults.proposer,
        tau: request.tau.unwrap_or(defaults.tau),
        radius: request.radius.unwrap_or(defaults.radius),
        coherence_weight: request
            .coherence_weight
            .unwrap_or(defaults.coherence_weight),
        greedy_neighbours: request
            .greedy_neighbours
            .unwrap_or(defaults.greedy_neighbours),
        seed: request.seed,
    };
    if options.steps > state.config.max_generate_sentences {
        return Err(ApiError::too_large(format!(
            "steps {}; at most {} (--max-generate-sentences)",
            options.steps, state.config.max_generate_sentences
        )));
    }
    for (name, value) in [
        ("candidates", options.candidates),
        ("beam", options.beam),
        ("neighbours", options.neighbours),
        ("greedy_neighbours", options.greedy_neighbours),
        ("avoid topics", request.avoid.len()),
    ] {
        if value > MAX_PLAN_WIDTH {
            return Err(ApiError::too_large(format!(
                "{name} {value}; at most {MAX_PLAN_WIDTH}"
            )));
        }
    }
    let case = prompt_case(&request.prompt, &request.goal, request.avoid, options.tau)
        .map_err(|e| ApiError::validation(e.to_string()))?;
    let sampling = state
        .sampling
        .clone()
        .with_overrides(request.guidance_scale, request.ddim_steps)
        .diffusion()?;
    let slot = model_slot(&state)?;
    let planned = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        plan_in_session(&session, &case, options, &sampling)
    })
    .await
    .map_err(|e| ApiError::backend(e.to_string()))?;
    // Planning refuses only what the request asked for (settings, a generative decoder).
    let document = planned.map_err(|e| match e {
        PlanningError::Invalid(_) => ApiError::validation(e.to_string()),
        other => ApiError::backend(lcm_workflows::error_message(&other)),
    })?;
    Ok(Json(document))
}

pub async fn info(State(state): State<AppState>) -> Json<Value> {
    let c = &state.config;
    Json(json!({
        "model_id": state.encoder.id(),
        "model_dim": state.encoder.dim(),
        "max_input_length": state.encoder.max_tokens(),
        "max_client_batch_size": c.max_client_batch_size,
        "max_batch_tokens": c.max_batch_tokens,
        "max_queue": c.max_queue,
        "max_input_bytes": c.max_input_bytes,
        "payload_limit": c.max_body_bytes,
        "lcm_model": state.generator.as_ref().map(|s| s.trained().label()),
        "decoder": state.generator.as_ref().map(|s| s.decoder().kind()),
        "auth": c.api_key.is_some(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub async fn openapi_document() -> Json<Value> {
    Json(openapi::document())
}
