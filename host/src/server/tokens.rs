//! `/api/v1/tokens`: a tenant's API tokens, made, listed and revoked by its
//! admins (or with the server's own token, in any tenant it names).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::Body;
use crate::model::{Role, now_ms};
use crate::views::{minted_json, token_json};

/// A token to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// `viewer`, `submitter`, `operator` or `admin`.
    role: String,
    /// How long it works, e.g. `90d` (default: until revoked).
    #[serde(default)]
    expires: Option<String>,
}

/// Makes a token of the caller's tenant; the answer holds the token itself, shown this once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, description = "`{token, id, tenant, role, created_at_ms, expires_at_ms}`"), (status = 400, description = "a bad role or age"), (status = 403, description = "not an admin")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<NewToken>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin, "making a token")?;
    let role: Role = body.role.parse().map_err(ApiError::bad_request)?;
    let now = now_ms();
    let expires_at_ms = crate::access::expires_at(now, body.expires.as_deref()).map_err(ApiError::bad_request)?;
    let minted = crate::access::mint(&caller.tenant, role, now, expires_at_ms);
    state.host.store().put_token(&minted.record).await?;
    Ok((StatusCode::CREATED, axum::Json(minted_json(&minted))).into_response())
}

/// The caller's tenant's tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, description = "`{tokens}`"), (status = 403, description = "not an admin")))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Value>, ApiError> {
    caller.require(Role::Admin, "listing tokens")?;
    let tokens = state.host.store().list_tokens(Some(&caller.tenant))?;
    Ok(axum::Json(json!({"tokens": tokens.iter().map(token_json).collect::<Vec<_>>()})))
}

/// Revokes one of the caller's tenant's tokens: it stops working at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "the token's id")),
    responses((status = 200, description = "`{revoked}`"), (status = 403, description = "not an admin"), (status = 404, description = "no such token in this tenant")))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require(Role::Admin, "revoking a token")?;
    let store = state.host.store();
    let missing =
        || ApiError::not_found(format!("no token {id} in {}; list them with GET /api/v1/tokens", caller.tenant));
    let token = store.get_token(&id)?.filter(|t| t.tenant == caller.tenant).ok_or_else(missing)?;
    store.delete_token(&token.id).await?;
    Ok(axum::Json(json!({"revoked": token.id})))
}
