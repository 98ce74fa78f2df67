//! `/api/v1/usage` and `/api/v1/quota`: what a tenant's LLM calls used and
//! cost, and its quotas (read by its tokens, set only with the server's own
//! token: a tenant never raises its own budget).

use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Args, Body};
use crate::model::{Role, now_ms};
use crate::views::{quota_json, set_quota, usage_json, usage_window};

/// Which usage to add up.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageArgs {
    /// How far back, e.g. `7d` (default), `24h`.
    since: Option<String>,
    /// `task`, `provider`, `model`, `day` or `total` (default).
    by: Option<String>,
}

/// The caller's tenant's LLM usage and cost, added up.
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", params(UsageArgs),
    responses((status = 200, description = "`{since_ms, by, rows: [{key, calls, prompt_tokens, completion_tokens, cost_usd}], total}`"), (status = 400, description = "a bad age or grouping")))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Args(args): Args<UsageArgs>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require(Role::Viewer, "reading usage")?;
    let (since, by) = usage_window(now_ms(), args.since.as_deref().unwrap_or("7d"), args.by.as_deref())
        .map_err(ApiError::bad_request)?;
    let records = state.host.store().usage_since(&caller.tenant, since)?;
    Ok(axum::Json(usage_json(&records, since, by)))
}

/// The caller's tenant's quotas, and what today and this month spent.
#[utoipa::path(get, path = "/api/v1/quota", tag = "usage",
    responses((status = 200, description = "`{tenant, quotas, ledger: [{quota, period, limit, spent, reserved}], instances: {instances, memory, peak_instances, peak_memory, queued, lent, live, peak_live}}` (instances: this server's, for the quotas it enforces per host)")))]
pub async fn quota(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Value>, ApiError> {
    caller.require(Role::Viewer, "reading quotas")?;
    let quotas = state.host.quotas_of(&caller.tenant);
    let mut answer = quota_json(state.host.store().as_ref(), &caller.tenant, &quotas)?;
    answer["instances"] = serde_json::to_value(state.host.instance_use(&caller.tenant)).unwrap_or_default();
    Ok(axum::Json(answer))
}

/// One quota to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuota {
    /// `concurrent_runs`, `live_instances`, `memory` (a size such as `4GiB`),
    /// `tokens_per_run`, `tokens_per_day`, `cost_per_day` or `cost_per_month`.
    key: String,
    /// A number (dollars for costs), or `none` to unset it.
    value: String,
}

/// Sets one of the named tenant's quotas (`X-Cairn-Tenant`), with the server's own token only.
#[utoipa::path(put, path = "/api/v1/quota", tag = "usage", request_body = SetQuota,
    responses((status = 200, description = "the quotas, as `GET` answers"), (status = 400, description = "no such quota, or a bad value"), (status = 403, description = "not the server's token")))]
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<SetQuota>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require_server("setting a tenant's quotas")?;
    let store = state.host.store();
    let mut quotas = store.get_quotas(&caller.tenant)?.unwrap_or_default();
    set_quota(&mut quotas, &body.key, &body.value).map_err(ApiError::bad_request)?;
    store.put_quotas(&caller.tenant, &quotas).await?;
    let effective = state.host.manifest().quotas_of(&caller.tenant, Some(&quotas));
    Ok(axum::Json(quota_json(store.as_ref(), &caller.tenant, &effective)?))
}
