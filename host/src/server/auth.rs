//! The server's bearer token: made at start, written to a file only its
//! owner can read (0600), and required by every API call. Compared in
//! constant time.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::error::ApiError;

/// A new random token (256 bits, hex).
pub fn new_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Writes `token` to `path`, readable and writable by the owner only.
pub fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request carries: `Authorization: Bearer …`, or, on the event
/// streams only (a browser's `EventSource` cannot send headers), `?token=…`.
fn presented(request: &Request) -> Option<String> {
    if let Some(value) = request.headers().get(axum::http::header::AUTHORIZATION) {
        return value.to_str().ok()?.strip_prefix("Bearer ").map(str::to_owned);
    }
    if request.uri().path().ends_with("/events") {
        let query = request.uri().query()?;
        return query.split('&').find_map(|pair| pair.strip_prefix("token=")).map(str::to_owned);
    }
    None
}

/// Refuses a request without the server's token.
pub async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    match presented(&request) {
        Some(token) if same(token.as_bytes(), state.token.as_bytes()) => Ok(next.run(request).await),
        _ => Err(ApiError::unauthorized()),
    }
}
