//! Everything besides runs: tasks, status, breakers, pools, the dead-letter
//! queue, the cache, gc and secrets (names only; values go in, never out).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Body, Optional};
use crate::model::Role;
use crate::views::{breakers_json, run_json, status_json, tasks_json};

fn pools_json(state: &AppState, caller: &Caller) -> Value {
    serde_json::to_value(state.host.pool_stats_of(&caller.tenant)).unwrap_or_default()
}

/// The manifest's tasks, with each one's counts.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "status", responses((status = 200, description = "`{tasks: [{name, environment, stats, interface: {input, output, hash} or null, interface_error}]}`")))]
pub async fn tasks(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Value>, ApiError> {
    let store = state.host.store();
    let counts = tasks_json(store.as_ref(), &caller.tenant)?;
    let manifest = state.host.manifest();
    let mut tasks = Vec::new();
    for task in manifest.tasks.values() {
        let stats = counts.iter().find(|c| c["task"] == task.name.as_str()).cloned().unwrap_or(json!({"runs": 0}));
        // The component's `describe`, asked once per component.
        let (interface, error) = match state.host.describe_task(&task.name).await {
            Ok(interface) => (interface.map(|i| i.to_json()), None),
            Err(failure) => (None, Some(failure.message)),
        };
        tasks.push(json!({
            "name": task.name,
            "environment": manifest.environment_of(task).name,
            "stats": stats,
            "interface": interface,
            "interface_error": error,
        }));
    }
    Ok(axum::Json(json!({"tasks": tasks})))
}

/// What `cairn status --json` prints: pools, breakers, dead letters, counts per task, provider retries.
#[utoipa::path(get, path = "/api/v1/status", tag = "status", responses((status = 200, description = "the status")))]
pub async fn status(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Value>, ApiError> {
    let pools = json!({
        "host": state.host.host_id(),
        "host_running": true,
        "updated_at_ms": crate::model::now_ms(),
        "environments": pools_json(&state, &caller),
    });
    Ok(axum::Json(status_json(state.host.store().as_ref(), &caller.tenant, pools)?))
}

/// Circuit breakers: state, failures, next probe.
#[utoipa::path(get, path = "/api/v1/breakers", tag = "status", responses((status = 200, description = "`{breakers}`")))]
pub async fn breakers(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(json!({"breakers": breakers_json(state.host.store().as_ref(), &caller.tenant)?})))
}

/// Warm-instance pools: replicas, live, idle, busy, queue, instantiations, reuses.
#[utoipa::path(get, path = "/api/v1/pools", tag = "status", responses((status = 200, description = "`{pools}`")))]
pub async fn pools(State(state): State<AppState>, caller: Caller) -> axum::Json<Value> {
    axum::Json(json!({"pools": pools_json(&state, &caller)}))
}

/// The dead-letter queue, newest first.
#[utoipa::path(get, path = "/api/v1/dlq", tag = "dlq", responses((status = 200, description = "`{letters}`")))]
pub async fn dlq_list(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Value>, ApiError> {
    let letters = state.host.store().dlq_list(&caller.tenant)?;
    Ok(axum::Json(json!({"letters": letters})))
}

/// One dead letter.
#[utoipa::path(get, path = "/api/v1/dlq/{id}", tag = "dlq", params(("id" = String, Path, description = "the run id")),
    responses((status = 200, description = "the dead letter"), (status = 404, description = "not in the queue")))]
pub async fn dlq_show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let letter = state.host.store().dlq_get(&caller.tenant, &id)?.ok_or_else(|| not_queued(&id))?;
    Ok(axum::Json(serde_json::to_value(letter).unwrap_or_default()))
}

fn not_queued(id: &str) -> ApiError {
    ApiError::not_found(format!("run {id} is not in the dead-letter queue; list it with GET /api/v1/dlq"))
}

/// How to retry a dead letter.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Answer the first LLM call that misses the journal with this text.
    #[serde(default)]
    stub_output: Option<String>,
}

/// Retries a dead letter on its own journal, in the background.
#[utoipa::path(post, path = "/api/v1/dlq/{id}/retry", tag = "dlq", request_body = Retry, params(("id" = String, Path, description = "the run id")),
    responses((status = 202, description = "the run, retrying"), (status = 404, description = "not in the queue")))]
pub async fn dlq_retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Optional(body): Optional<Retry>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator, "retrying a dead letter")?;
    let store = state.host.store();
    store.dlq_get(&caller.tenant, &id)?.ok_or_else(|| not_queued(&id))?;
    let run = store.get_run(&caller.tenant, &id)?;
    let stub = body.stub_output;
    state.host.retry_dead_in_background(&caller.tenant, &id, stub)?;
    Ok((StatusCode::ACCEPTED, axum::Json(run_json(&run, store.as_ref()))).into_response())
}

/// Removes one run from the queue.
#[utoipa::path(delete, path = "/api/v1/dlq/{id}", tag = "dlq", params(("id" = String, Path, description = "the run id")),
    responses((status = 200, description = "`{removed}`"), (status = 404, description = "not in the queue")))]
pub async fn dlq_remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require(Role::Operator, "removing a dead letter")?;
    if !state.host.store().dlq_remove(&caller.tenant, &id).await? {
        return Err(not_queued(&id));
    }
    Ok(axum::Json(json!({"removed": 1})))
}

/// Empties the queue.
#[utoipa::path(delete, path = "/api/v1/dlq", tag = "dlq", responses((status = 200, description = "`{removed}`")))]
pub async fn dlq_purge(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Value>, ApiError> {
    caller.require(Role::Operator, "purging the dead-letter queue")?;
    let store = state.host.store();
    let mut removed = 0;
    for letter in store.dlq_list(&caller.tenant)? {
        removed += usize::from(store.dlq_remove(&caller.tenant, &letter.run_id).await?);
    }
    Ok(axum::Json(json!({"removed": removed})))
}

/// Which cached results to drop.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheClear {
    /// Only this task's (default: all).
    #[serde(default)]
    task: Option<String>,
}

/// Drops cached results.
#[utoipa::path(post, path = "/api/v1/cache/clear", tag = "admin", request_body = CacheClear,
    responses((status = 200, description = "`{removed}`"), (status = 400, description = "unknown task")))]
pub async fn cache_clear(
    State(state): State<AppState>,
    caller: Caller,
    Optional(body): Optional<CacheClear>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require(Role::Operator, "clearing the cache")?;
    let task = body.task;
    if let Some(name) = &task {
        state.host.manifest().task(name).map_err(ApiError::bad_request)?;
    }
    let removed = state.host.store().cache_clear(&caller.tenant, task.as_deref()).await?;
    Ok(axum::Json(json!({"removed": removed})))
}

/// Which finished runs to delete.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Gc {
    /// Age cutoff, e.g. `30d`, `12h`.
    older_than: String,
    /// Only list what would go.
    #[serde(default)]
    dry_run: bool,
}

/// Deletes finished runs older than a cutoff, with their journals, logs, reports and directories.
#[utoipa::path(post, path = "/api/v1/gc", tag = "admin", request_body = Gc,
    responses((status = 200, description = "`{removed, kept, failed}`: a run whose directory cannot be removed is kept (`failed`: id and why)"), (status = 400, description = "a bad age")))]
pub async fn gc(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<Gc>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require(Role::Operator, "deleting runs")?;
    let age = crate::manifest::units::parse_duration(&body.older_than).map_err(ApiError::bad_request)?;
    let host = &state.host;
    let (store, blobs) = (host.store().as_ref(), host.blobs().as_ref());
    let report = crate::gc::collect(store, host.run_dirs(), blobs, &caller.tenant, age, body.dry_run).await?;
    let freed = json!({"removed": report.blobs.removed, "bytes": report.blobs.bytes, "kept": report.blobs.kept});
    Ok(axum::Json(json!({"removed": report.removed, "kept": report.kept, "failed": report.failed, "blobs": freed})))
}

/// Secret names (never values).
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", responses((status = 200, description = "`{keys}`")))]
pub async fn secrets_list(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Value>, ApiError> {
    caller.require(Role::Operator, "listing secrets")?;
    Ok(axum::Json(json!({"keys": state.host.store().list_secrets(&caller.tenant)?})))
}

/// A secret's value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// The value; stored, never shown again.
    value: String,
}

/// Creates or replaces a secret.
#[utoipa::path(put, path = "/api/v1/secrets/{key}", tag = "secrets", request_body = SecretValue, params(("key" = String, Path, description = "the secret's name")),
    responses((status = 204, description = "stored"), (status = 400, description = "a bad body")))]
pub async fn secrets_put(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    Body(body): Body<SecretValue>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin, "writing a secret")?;
    if key.is_empty() || key.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request("a secret's name must be non-empty printable text"));
    }
    state.host.vault().put(&caller.tenant, &key, &body.value).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a secret.
#[utoipa::path(delete, path = "/api/v1/secrets/{key}", tag = "secrets", params(("key" = String, Path, description = "the secret's name")),
    responses((status = 200, description = "`{removed}`"), (status = 404, description = "no such secret")))]
pub async fn secrets_delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require(Role::Admin, "deleting a secret")?;
    if !state.host.store().delete_secret(&caller.tenant, &key).await? {
        return Err(ApiError::not_found(format!("no secret named {key:?}; list them with GET /api/v1/secrets")));
    }
    Ok(axum::Json(json!({"removed": true})))
}
