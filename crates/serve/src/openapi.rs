//! The OpenAPI 3.1 document of the server (`GET /openapi.json`), written by hand from the
//! request types in `routes.rs`; a test holds it to the router's routes.

use serde_json::{Value, json};

/// Every route: method, path, summary. The router and the document are both built from it.
pub const ROUTES: &[(&str, &str, &str)] = &[
    (
        "post",
        "/embed",
        "Concepts of texts (text-embeddings-inference's API)",
    ),
    (
        "post",
        "/v1/embeddings",
        "Concepts of texts (OpenAI's embeddings API)",
    ),
    ("post", "/segment", "Split a text into sentences"),
    (
        "post",
        "/generate",
        "Continue a prompt concept by concept, decoded",
    ),
    (
        "post",
        "/plan",
        "Plan the next sentences toward a goal outside guardrail regions",
    ),
    (
        "get",
        "/info",
        "The encoder, the model and the server's limits",
    ),
    ("get", "/health", "Liveness (no API key needed)"),
    ("get", "/metrics", "Prometheus metrics"),
    ("get", "/openapi.json", "This document"),
];

fn inputs_schema() -> Value {
    json!({ "oneOf": [
        { "type": "string" },
        { "type": "array", "items": { "type": "string" } }
    ]})
}

fn request_schema(path: &str) -> Option<Value> {
    let object = |properties: Value, required: &[&str]| json!({ "type": "object", "properties": properties, "required": required });
    Some(match path {
        "/embed" => object(
            json!({
                "inputs": inputs_schema(),
                "normalize": { "type": "boolean", "default": true },
                "truncate": { "type": "boolean", "default": true }
            }),
            &["inputs"],
        ),
        "/v1/embeddings" => object(
            json!({
                "input": inputs_schema(),
                "model": { "type": "string" },
                "encoding_format": { "enum": ["float", "base64"], "default": "float" },
                "dimensions": { "type": "integer" }
            }),
            &["input"],
        ),
        "/segment" => object(
            json!({
                "text": { "type": "string" },
                "lang": { "type": "string" },
                "max_chars": { "type": "integer", "minimum": 0 }
            }),
            &["text"],
        ),
        "/generate" => object(
            json!({
                "prompt": { "type": "string" },
                "max_sentences": { "type": "integer", "default": 8 },
                "seed": { "type": "integer", "default": 0 },
                "eos_threshold": { "type": "number" },
                "repetition_threshold": { "type": "number" },
                "guidance_scale": { "type": "number" },
                "ddim_steps": { "type": "integer" },
                "allow_prompt_sentences": { "type": "boolean", "default": false }
            }),
            &["prompt"],
        ),
        "/plan" => object(
            json!({
                "prompt": { "type": "string" },
                "goal": { "type": "string" },
                "avoid": { "type": "array", "items": { "type": "string" } },
                "steps": { "type": "integer", "default": 4 },
                "candidates": { "type": "integer", "default": 8 },
                "neighbours": { "type": "integer", "default": 4 },
                "beam": { "type": "integer", "default": 4 },
                "tau": { "type": "number", "default": 0.5 },
                "radius": { "type": "number", "default": 0.45 },
                "steer": { "type": "number", "default": 0.0 },
                "coherence_weight": { "type": "number", "default": 0.0 },
                "greedy_neighbours": { "type": "integer", "default": 16 },
                "seed": { "type": "integer", "default": 0 },
                "guidance_scale": { "type": "number" },
                "ddim_steps": { "type": "integer" }
            }),
            &["prompt", "goal"],
        ),
        _ => return None,
    })
}

pub fn document() -> Value {
    let error = json!({
        "description": "Error",
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    });
    let mut paths = serde_json::Map::new();
    for (method, path, summary) in ROUTES {
        let mut operation = json!({
            "summary": summary,
            "responses": {
                "200": { "description": "OK" },
                "401": error, "413": error, "422": error, "429": error, "500": error
            }
        });
        if let Some(schema) = request_schema(path) {
            operation["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": schema } }
            });
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "lcm serve", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "schemas": { "Error": {
                "type": "object",
                "properties": { "error": { "type": "string" }, "error_type": { "type": "string" } },
                "required": ["error", "error_type"]
            }},
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        },
        "security": [ { "bearer": [] } ]
    })
}
