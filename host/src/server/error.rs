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
    /// `unauthorized`, `forbidden`, `bad-request`, `not-found`, `conflict`, `unavailable` or `internal`.
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
        Self::unauthorized_because(
            "a bearer token is required: send `Authorization: Bearer TOKEN`, with the token in the project's .cairn/serve.token or one made by `cairn tokens create`",
        )
    }

    /// A 401 saying why the token presented was refused.
    pub fn unauthorized_because(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::UNAUTHORIZED, kind: "unauthorized", message: message.into() }
    }

    /// A 403 with `message`: the token is good, but may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::FORBIDDEN, kind: "forbidden", message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": {"kind": self.kind, "message": self.message}}))).into_response()
    }
}

/// The status and kind of a store error.
fn store_status(e: &StoreError) -> (StatusCode, &'static str) {
    match e {
        StoreError::NoSuchRun(_) => (StatusCode::NOT_FOUND, "not-found"),
        StoreError::LeaseLost { .. } => (StatusCode::CONFLICT, "conflict"),
        StoreError::Halted { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, kind) = store_status(&e);
        ApiError { status, kind, message: e.to_string() }
    }
}

impl From<crate::access::vault::VaultError> for ApiError {
    fn from(e: crate::access::vault::VaultError) -> Self {
        match e {
            crate::access::vault::VaultError::Store(store) => store.into(),
            other => {
                ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "internal", message: other.to_string() }
            }
        }
    }
}

impl From<crate::gc::GcError> for ApiError {
    fn from(e: crate::gc::GcError) -> Self {
        match e {
            crate::gc::GcError::Store(store) => store.into(),
            other => {
                ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "internal", message: other.to_string() }
            }
        }
    }
}

impl From<RunnerError> for ApiError {
    fn from(e: RunnerError) -> Self {
        let (status, kind) = match &e {
            RunnerError::Store(store) => store_status(store),
            RunnerError::UnknownTask(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            RunnerError::NotResumable { .. } => (StatusCode::CONFLICT, "conflict"),
            RunnerError::NotAccepting | RunnerError::Stopped { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError { status, kind, message: e.to_string() }
    }
}
