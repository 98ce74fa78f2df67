//! `/api/v1/runs…`: submit, list, show, journal, logs, report, cancel,
//! resume, and the server-sent event streams.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Args, Body, Optional};
use crate::events::{Event, EventKind};
use crate::model::{Role, RunStatus};
use crate::runner::RunOptions;
use crate::store::{Lineage, RunFilter};
use crate::views::{journal_json, run_json};

/// A run to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    /// The task's name in the manifest.
    task: String,
    /// Its input, a JSON document.
    #[schema(value_type = Object)]
    input: Value,
    /// Answer only once the run has finished.
    #[serde(default)]
    wait: bool,
    /// Replay this run's journal (a cassette): live LLM calls are an error.
    #[serde(default)]
    replay: Option<String>,
}

/// Submits a run: answers at once with the run (running), or with `wait` once it has finished.
#[utoipa::path(post, path = "/api/v1/runs", tag = "runs", request_body = Submit,
    responses((status = 202, description = "the run, under way"), (status = 200, description = "the finished run (`wait`)"), (status = 400, description = "unknown task or bad body")))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<Submit>,
) -> Result<Response, ApiError> {
    caller.require(Role::Submitter, "submitting a run")?;
    let input = body.input.to_string();
    let options = RunOptions { replay: body.replay, tenant: Some(caller.tenant.clone()) };
    if body.wait {
        // On the host's runtime, not the API's.
        let (host, task) = (state.host.clone(), body.task.clone());
        let run =
            state.host.spawn(async move { host.run_with(&task, &input, &options).await }).await.map_err(|e| {
                ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "internal", message: e.to_string() }
            })??;
        return Ok((StatusCode::OK, axum::Json(run_json(&run, state.host.store().as_ref()))).into_response());
    }
    let run = state.host.submit(&body.task, &input, options).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(run_json(&run, state.host.store().as_ref()))).into_response())
}

/// Filters and a page of the run listing.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only runs in this status.
    status: Option<String>,
    /// Only runs of this task.
    task: Option<String>,
    /// Only the children of this run.
    parent: Option<String>,
    /// Child runs too (default: top-level runs only).
    #[serde(default)]
    children: bool,
    /// Only runs made before this one (the `next` of the previous page).
    before: Option<String>,
    /// At most this many (default 50, at most 1000).
    limit: Option<usize>,
}

/// Lists runs, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(ListArgs),
    responses((status = 200, description = "`{runs, next}`"), (status = 400, description = "a bad filter")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Args(args): Args<ListArgs>,
) -> Result<axum::Json<Value>, ApiError> {
    let status = match &args.status {
        Some(name) => Some(RunStatus::parse(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown status {name:?}; use pending, running, succeeded, failed or cancelled"
            ))
        })?),
        None => None,
    };
    let limit = args.limit.unwrap_or(50).clamp(1, 1000);
    let lineage = match (args.parent, args.children) {
        (Some(parent), _) => Lineage::ChildrenOf(parent),
        (None, true) => Lineage::Any,
        (None, false) => Lineage::TopLevel,
    };
    let filter = RunFilter { task: args.task, status, lineage, before: args.before, limit: Some(limit) };
    let store = state.host.store();
    let runs = store.list_runs(&caller.tenant, &filter)?;
    let next = (runs.len() == limit).then(|| runs.last().map(|r| r.id.clone())).flatten();
    let runs: Vec<Value> = runs.iter().map(|run| run_json(run, store.as_ref())).collect();
    Ok(axum::Json(json!({"runs": runs, "next": next})))
}

/// One run.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", params(("id" = String, Path, description = "the run id")),
    responses((status = 200, description = "the run"), (status = 404, description = "no such run")))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let store = state.host.store();
    let run = store.get_run(&caller.tenant, &id)?;
    Ok(axum::Json(run_json(&run, store.as_ref())))
}

/// A page of a run's journal.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JournalArgs {
    /// Entries after this sequence number.
    after: Option<u64>,
    /// At most this many (default 200, at most 5000).
    limit: Option<usize>,
}

/// A run's journal, in recording order, a page at a time.
#[utoipa::path(get, path = "/api/v1/runs/{id}/journal", tag = "runs", params(("id" = String, Path, description = "the run id"), JournalArgs),
    responses((status = 200, description = "`{entries, next}`"), (status = 404, description = "no such run")))]
pub async fn journal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Args(args): Args<JournalArgs>,
) -> Result<axum::Json<Value>, ApiError> {
    let store = state.host.store();
    store.get_run(&caller.tenant, &id)?;
    let limit = args.limit.unwrap_or(200).clamp(1, 5000);
    let entries: Vec<_> = store
        .journal_of(&id)?
        .into_iter()
        .filter(|e| args.after.is_none_or(|after| e.seq > after))
        .take(limit)
        .collect();
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.seq)).flatten();
    Ok(axum::Json(json!({"entries": entries.iter().map(journal_json).collect::<Vec<_>>(), "next": next})))
}

/// What each attempt of a run wrote to stdout and stderr.
#[utoipa::path(get, path = "/api/v1/runs/{id}/logs", tag = "runs", params(("id" = String, Path, description = "the run id")),
    responses((status = 200, description = "`{attempts: [{attempt, stdout, stderr}]}`"), (status = 404, description = "no such run")))]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let store = state.host.store();
    store.get_run(&caller.tenant, &id)?;
    let attempts: Vec<Value> = store
        .logs_of(&id)?
        .into_iter()
        .map(|(attempt, log)| json!({"attempt": attempt, "stdout": log.stdout, "stderr": log.stderr}))
        .collect();
    Ok(axum::Json(json!({"attempts": attempts})))
}

/// A run's report.
#[utoipa::path(get, path = "/api/v1/runs/{id}/report", tag = "runs", params(("id" = String, Path, description = "the run id")),
    responses((status = 200, description = "`{tabs: [{name, html}]}`"), (status = 404, description = "no such run, or no report")))]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let store = state.host.store();
    store.get_run(&caller.tenant, &id)?;
    let report = store.get_report(&id)?.ok_or_else(|| {
        ApiError::not_found(format!("run {id} made no report (its task never called the report interface)"))
    })?;
    let tabs: Vec<Value> = report.tabs.iter().map(|(name, html)| json!({"name": name, "html": html})).collect();
    Ok(axum::Json(json!({"tabs": tabs})))
}

/// Cancels a run and its children: each ends `cancelled` at its guest's next epoch tick; no retry, no dead letter.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path, description = "the run id")),
    responses((status = 200, description = "`{run_id, stopping}`: how many runs were told to stop"), (status = 404, description = "no such run"), (status = 409, description = "the run is finished")))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require(Role::Submitter, "cancelling a run")?;
    let run = state.host.store().get_run(&caller.tenant, &id)?;
    if run.status.is_finished() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            kind: "conflict",
            message: format!("run {id} already {}; only an unfinished run can be cancelled", run.status.as_str()),
        });
    }
    let stopping = state.host.cancel(&caller.tenant, &id).await?;
    Ok(axum::Json(json!({"run_id": id, "stopping": stopping})))
}

/// Loads a cassette (`cairn runs export`'s file) into the store.
#[utoipa::path(post, path = "/api/v1/runs/import", tag = "runs", request_body(content = Object, description = "a cassette: {format, version, run, journal}"),
    responses((status = 201, description = "the imported run"), (status = 400, description = "not a cassette"), (status = 409, description = "the run is already in the store")))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator, "importing a run")?;
    let cassette: crate::cassette::Cassette =
        serde_json::from_value(body).map_err(|e| ApiError::bad_request(format!("not a cassette: {e}")))?;
    let store = state.host.store();
    let run = crate::cassette::store_cassette(store.as_ref(), &caller.tenant, cassette, "the request body")
        .await
        .map_err(|e| match e {
            crate::cassette::CassetteError::Exists(_) => {
                ApiError { status: StatusCode::CONFLICT, kind: "conflict", message: e.to_string() }
            }
            crate::cassette::CassetteError::Store(store) => ApiError::from(store),
            other => ApiError::bad_request(other.to_string()),
        })?;
    Ok((StatusCode::CREATED, axum::Json(run_json(&run, store.as_ref()))).into_response())
}

/// How to resume.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    /// Take the run over even if its lease looks alive.
    #[serde(default)]
    force: bool,
}

/// Resumes an unfinished run from its journal, in the background.
#[utoipa::path(post, path = "/api/v1/runs/{id}/resume", tag = "runs", request_body = Resume, params(("id" = String, Path, description = "the run id")),
    responses((status = 202, description = "the run, resuming"), (status = 404, description = "no such run"), (status = 409, description = "finished, or held by a live host")))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Optional(body): Optional<Resume>,
) -> Result<Response, ApiError> {
    caller.require(Role::Submitter, "resuming a run")?;
    let store = state.host.store();
    let run = store.get_run(&caller.tenant, &id)?;
    if run.status.is_finished() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            kind: "conflict",
            message: format!("cannot resume run {id}: it already {}", run.status.as_str()),
        });
    }
    let force = body.force;
    if let Some(lease) =
        run.lease.as_ref().filter(|lease| !force && !crate::runner::lease::is_stale(lease, crate::model::now_ms()))
    {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            kind: "conflict",
            message: format!(
                "cannot resume run {id}: {} holds its lease and is alive; pass force to take it over",
                lease.owner
            ),
        });
    }
    state.host.resume_in_background(&caller.tenant, &id, force)?;
    Ok((StatusCode::ACCEPTED, axum::Json(run_json(&run, store.as_ref()))).into_response())
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>>;
type EventStream = Sse<axum::response::sse::KeepAliveStream<Events>>;

/// Most runs a stream remembers as its tenant's or another's.
const SEEN_RUNS: usize = 100_000;

/// The events of every run of `caller`'s tenant, or of one run and its
/// children, as server-sent events. Another tenant's runs are never shown:
/// each run's tenant is read once, when its first event comes.
fn stream(state: &AppState, caller: &Caller, only: Option<String>) -> EventStream {
    let hello = tokio_stream::once(Ok(SseEvent::default().event("hello").data("{}")));
    let children: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Default::default();
    let mut seen: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    let (store, tenant) = (state.host.store().clone(), caller.tenant.clone());
    let events = BroadcastStream::new(state.host.events().subscribe()).filter_map(
        move |item: Result<Arc<Event>, BroadcastStreamRecvError>| match item {
            Ok(event) => {
                if seen.len() > SEEN_RUNS {
                    seen.clear();
                }
                let ours = match seen.get(&event.run_id) {
                    Some(ours) => *ours,
                    None => match store.get_run(&tenant, &event.run_id) {
                        Ok(_) => *seen.entry(event.run_id.clone()).or_insert(true),
                        Err(crate::store::StoreError::NoSuchRun(_)) => {
                            *seen.entry(event.run_id.clone()).or_insert(false)
                        }
                        // The store did not answer: not shown now, asked again at the next event.
                        Err(_) => false,
                    },
                };
                if !ours {
                    return None;
                }
                if let Some(run) = &only {
                    let mut known = children.lock().unwrap_or_else(|e| e.into_inner());
                    let related = match &event.kind {
                        EventKind::RunStarted { parent: Some(parent), .. }
                            if parent == run || known.contains(parent) =>
                        {
                            known.insert(event.run_id.clone());
                            true
                        }
                        _ => &event.run_id == run || known.contains(&event.run_id),
                    };
                    if !related {
                        return None;
                    }
                }
                let name = match &event.kind {
                    EventKind::RunStarted { .. } => "run-started",
                    EventKind::AttemptStarted { .. } => "attempt-started",
                    EventKind::AttemptEnded { .. } => "attempt-ended",
                    EventKind::Call { .. } => "call",
                    EventKind::Report { .. } => "report",
                    EventKind::RunFinished { .. } => "run-finished",
                };
                let data = serde_json::to_string(event.as_ref()).unwrap_or_default();
                Some(Ok(SseEvent::default().event(name).data(data)))
            }
            // A listener that fell behind is told how many events it missed.
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                Some(Ok(SseEvent::default().event("lagged").data(json!({"missed": missed}).to_string())))
            }
        },
    );
    // Streams end when the server stops, so they never hold its shutdown up.
    let mut closing = state.closing.clone();
    let closed = async move {
        let _ = closing.wait_for(|closed| *closed).await;
    };
    let events = futures_util::StreamExt::take_until(events, closed);
    Sse::new(Box::pin(hello.chain(events)) as Events).keep_alive(KeepAlive::default())
}

/// Every run's events, as server-sent events (`?token=` works here too).
#[utoipa::path(get, path = "/api/v1/events", tag = "runs", responses((status = 200, description = "a text/event-stream")))]
pub async fn all_events(State(state): State<AppState>, caller: Caller) -> EventStream {
    stream(&state, &caller, None)
}

/// One run's events and its children's, as server-sent events (`?token=` works here too).
#[utoipa::path(get, path = "/api/v1/runs/{id}/events", tag = "runs", params(("id" = String, Path, description = "the run id")),
    responses((status = 200, description = "a text/event-stream"), (status = 404, description = "no such run")))]
pub async fn run_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<EventStream, ApiError> {
    state.host.store().get_run(&caller.tenant, &id)?;
    Ok(stream(&state, &caller, Some(id)))
}
