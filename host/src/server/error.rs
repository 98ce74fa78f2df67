//! Errors as the API answers them: a status and `{"error": {"kind", "message"}}`,
//! with the same messages the CLI prints. Bad input is a 4xx, never a 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::runner::RunnerError;
use crate::store::StoreError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `unauthorized`, `bad-request`, `not-found`, `conflict`, `unavailable` or `internal`.
    pub kind: &'static str,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl ApiError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, kind: "bad-request", message: message.into() }
    }

    /// A 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, kind: "not-found", message: message.into() }
    }

    /// A 401.
    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "unauthorized",
            message: "a bearer token is required: send `Authorization: Bearer TOKEN`, the token in the project's .cairn/serve.token".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": {"kind": self.kind, "message": self.message}}))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, kind) = match &e {
            StoreError::NoSuchRun(_) => (StatusCode::NOT_FOUND, "not-found"),
            StoreError::LeaseLost { .. } => (StatusCode::CONFLICT, "conflict"),
            StoreError::Halted { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError { status, kind, message: e.to_string() }
    }
}

impl From<RunnerError> for ApiError {
    fn from(e: RunnerError) -> Self {
        let (status, kind) = match &e {
            RunnerError::Store(store) => {
                return ApiError { message: e.to_string(), ..ApiError::from(clone_kind(store)) };
            }
            RunnerError::UnknownTask(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            RunnerError::NotResumable { .. } => (StatusCode::CONFLICT, "conflict"),
            RunnerError::NotAccepting | RunnerError::Stopped { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError { status, kind, message: e.to_string() }
    }
}

/// A store error of the same kind (for its status), message aside.
fn clone_kind(e: &StoreError) -> StoreError {
    match e {
        StoreError::NoSuchRun(id) => StoreError::NoSuchRun(id.clone()),
        StoreError::LeaseLost { run_id, holder } => {
            StoreError::LeaseLost { run_id: run_id.clone(), holder: holder.clone() }
        }
        StoreError::Halted { file, doing, cause, full } => StoreError::halted(file, doing, cause, *full),
        other => StoreError::Io { operation: "request", message: other.to_string() },
    }
}
