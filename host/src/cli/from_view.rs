//! Records rebuilt from the API's JSON views (a run, a journal entry), so
//! that a command prints a server's run with the same code as a local one.

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::Value;

use cairn::model::{AttemptRecord, CallKind, Failure, JournalEntry, ReplayKey, RunRecord, RunStatus, Tenant, Usage};

/// The run view's fields a record is rebuilt from.
#[derive(Deserialize)]
struct View {
    run_id: String,
    task: String,
    #[serde(default)]
    tenant: String,
    status: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    output: Value,
    error: Option<Failure>,
    attempts: Vec<ViewAttempt>,
    timings: ViewTimings,
    llm: ViewLlm,
    #[serde(default)]
    cached_from: Option<String>,
    #[serde(default)]
    produced_by: Option<String>,
    #[serde(default)]
    degraded: bool,
    #[serde(default)]
    replay_of: Option<String>,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    component_digest: Option<String>,
}

#[derive(Deserialize)]
struct ViewAttempt {
    number: u32,
    started_at_ms: u64,
    finished_at_ms: u64,
    error: Option<Failure>,
    llm_calls_live: u32,
    llm_calls_replayed: u32,
    traces_replayed: u32,
    #[serde(default)]
    http_requests_live: u32,
    #[serde(default)]
    http_requests_replayed: u32,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

#[derive(Deserialize)]
struct ViewTimings {
    created_at_ms: u64,
    finished_at_ms: Option<u64>,
}

#[derive(Deserialize)]
struct ViewLlm {
    prompt_tokens: u32,
    completion_tokens: u32,
    #[serde(default)]
    cost_usd: f64,
}

/// A run's record from its view. The view holds the input and output as
/// JSON, so their text comes back compact (the API only takes JSON inputs).
pub fn record_from_view(view: &Value) -> Result<RunRecord> {
    let v: View = serde_json::from_value(view.clone())?;
    let text = |value: &Value| (!value.is_null()).then(|| value.to_string());
    let tenant = match v.tenant.split_once('/') {
        Some((project, domain)) => Tenant { project: project.into(), domain: domain.into() },
        None => Tenant::default(),
    };
    let mut run = RunRecord::new(v.run_id, tenant, v.task, text(&v.input).unwrap_or_default());
    run.status = RunStatus::parse(&v.status).with_context(|| format!("unknown run status {:?}", v.status))?;
    run.component_digest = v.component_digest;
    run.created_at_ms = v.timings.created_at_ms;
    run.finished_at_ms = v.timings.finished_at_ms;
    run.attempts = v
        .attempts
        .into_iter()
        .map(|a| AttemptRecord {
            number: a.number,
            started_at_ms: a.started_at_ms,
            finished_at_ms: a.finished_at_ms,
            error: a.error,
            llm_live: a.llm_calls_live,
            llm_replayed: a.llm_calls_replayed,
            trace_replayed: a.traces_replayed,
            http_live: a.http_requests_live,
            http_replayed: a.http_requests_replayed,
            task: a.task,
            not_counted: false,
            host: a.host,
        })
        .collect();
    run.output = text(&v.output);
    run.error = v.error;
    run.usage = Usage {
        prompt_tokens: v.llm.prompt_tokens,
        completion_tokens: v.llm.completion_tokens,
        cost_micros: (v.llm.cost_usd * 1e6).round() as u64,
    };
    run.cached_from = v.cached_from;
    run.replay_of = v.replay_of;
    run.produced_by = v.produced_by;
    run.degraded = v.degraded;
    run.parent = v.parent;
    run.group = v.group;
    Ok(run)
}

/// One journal entry of run `run_id` from its view (`views::journal_json`).
pub fn entry_from_view(run_id: &str, entry: &Value) -> Result<JournalEntry> {
    #[derive(Deserialize)]
    struct Entry {
        seq: u64,
        attempt: u32,
        kind: CallKind,
        name: String,
        occurrence: u32,
        input_hash: String,
        output: String,
        summary: String,
        recorded_at_ms: u64,
        duration_ms: u64,
        usage: Option<Usage>,
    }
    let e: Entry = serde_json::from_value(entry.clone())
        .with_context(|| format!("the server sent a journal entry the CLI cannot read: {entry}"))?;
    Ok(JournalEntry {
        key: ReplayKey {
            run_id: run_id.to_owned(),
            kind: e.kind,
            name: e.name,
            input_hash: e.input_hash,
            occurrence: e.occurrence,
        },
        seq: e.seq,
        attempt: e.attempt,
        output: e.output,
        summary: e.summary,
        recorded_at_ms: e.recorded_at_ms,
        duration_ms: e.duration_ms,
        usage: e.usage,
    })
}
