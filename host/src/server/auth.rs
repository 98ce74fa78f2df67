//! Who is asking. The server's own token (made at start, written to a file
//! only its owner can read, 0600) may do everything in every tenant; a token
//! made by `cairn tokens create` acts as its tenant with its role. Tokens
//! are compared in constant time; stored ones only as hashes.
//!
//! A request names the tenant it acts in with `X-Cairn-Tenant:
//! project/domain` (the CLI sends its `--project`/`--domain`). The server's
//! token may name any tenant (default: the server's); another token only its
//! own, or none.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::error::ApiError;
use crate::access;
use crate::model::{Role, Tenant, now_ms};

/// The header naming the tenant a request acts in.
pub const TENANT_HEADER: &str = "x-cairn-tenant";

/// A new random token for the server itself (256 bits, hex).
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

/// Who a request comes from: the tenant it acts in and what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Everything it reads or writes is this tenant's.
    pub tenant: Tenant,
    /// What it may do there.
    pub role: Role,
    /// The server's own token: every tenant, every role.
    pub server: bool,
}

impl Caller {
    /// Refuses (403) unless the caller's role is at least `role`; `doing`
    /// says what was asked, for the message.
    pub fn require(&self, role: Role, doing: &str) -> Result<(), ApiError> {
        if self.role >= role {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "{doing} needs the {role} role or above; this token is a {} of {}",
            self.role, self.tenant
        )))
    }

    /// Refuses (403) unless this is the server's own token.
    pub fn require_server(&self, doing: &str) -> Result<(), ApiError> {
        if self.server {
            return Ok(());
        }
        Err(ApiError::forbidden(format!("{doing} needs the server's own token (.cairn/serve.token)")))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(ApiError::unauthorized)
    }
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

/// The tenant the request names, if any: the header, or on the event
/// streams `?tenant=`.
fn named_tenant(request: &Request) -> Result<Option<Tenant>, ApiError> {
    let named = match request.headers().get(TENANT_HEADER) {
        Some(value) => {
            Some(value.to_str().map_err(|_| ApiError::bad_request("the X-Cairn-Tenant header is not text"))?.to_owned())
        }
        None if request.uri().path().ends_with("/events") => request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("tenant=")))
            .map(|t| t.replace("%2F", "/").replace("%2f", "/")),
        None => None,
    };
    named
        .map(|text| text.parse::<Tenant>().map_err(|e| ApiError::bad_request(format!("X-Cairn-Tenant: {e}"))))
        .transpose()
}

/// Refuses a request without a good token; gives the handlers its [`Caller`].
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = presented(&request).ok_or_else(ApiError::unauthorized)?;
    let named = named_tenant(&request)?;
    let caller = if access::same(token.as_bytes(), state.token.as_bytes()) {
        Caller { tenant: named.unwrap_or_else(|| state.host.tenant().clone()), role: Role::Admin, server: true }
    } else {
        let (id, secret) = access::split(&token).map_err(|e| ApiError::unauthorized_because(e.to_string()))?;
        let (store, id) = (state.host.store().clone(), id.to_owned());
        let record = tokio::task::spawn_blocking(move || store.get_token(&id))
            .await
            .map_err(|e| ApiError::unauthorized_because(e.to_string()))??;
        access::check(record.as_ref(), secret, now_ms()).map_err(|e| ApiError::unauthorized_because(e.to_string()))?;
        let record = record.ok_or_else(ApiError::unauthorized)?;
        if let Some(named) = named.filter(|named| *named != record.tenant) {
            return Err(ApiError::forbidden(format!(
                "this token belongs to tenant {}; it cannot act in {named}",
                record.tenant
            )));
        }
        Caller { tenant: record.tenant, role: record.role, server: false }
    };
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
