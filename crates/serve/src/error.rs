//! Errors as clients receive them: a status and `{"error": message, "error_type": kind}`,
//! the shape text-embeddings-inference answers with.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// A request that is well-formed JSON but cannot mean anything (422).
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", message)
    }

    /// A request over one of the server's size limits (413).
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// The queue is full: try again later (429).
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key: send `Authorization: Bearer <key>`",
        )
    }

    /// A route whose model this server was not started with (404).
    pub fn no_model(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "no_model", message)
    }

    /// A failure inside the library (500).
    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "backend", message)
    }

    /// A body that is not the JSON a route expects, keeping the extractor's status (400
    /// bad syntax, 413 over the body limit, 415 wrong content type, 422 wrong fields).
    pub fn from_rejection(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "bad_request"
        };
        Self::new(status, kind, rejection.body_text())
    }
}

impl From<lcm_workflows::WorkflowError> for ApiError {
    fn from(error: lcm_workflows::WorkflowError) -> Self {
        use lcm_workflows::WorkflowError as E;
        match &error {
            // The request's content cannot be served (a prompt filling the context, …).
            E::Refused(_) | E::Config(_) => Self::validation(error.to_string()),
            _ => Self::backend(error.to_string()),
        }
    }
}

impl From<lcm_concept::ConceptError> for ApiError {
    fn from(error: lcm_concept::ConceptError) -> Self {
        Self::backend(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.message, "error_type": self.kind }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        response
    }
}
