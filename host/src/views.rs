//! JSON views of what the store holds, as `--json` prints them and the HTTP
//! API answers: one place, so the CLI and the server never disagree.

use serde_json::{Value, json};

use crate::model::{JournalEntry, RunRecord, Tenant, now_ms};
use crate::policy::breaker::BreakerState;
use crate::store::StoreError;
use crate::store::prelude::*;

/// Wall time of a run in milliseconds.
pub fn duration_ms(run: &RunRecord) -> Option<u64> {
    run.finished_at_ms.map(|end| end.saturating_sub(run.created_at_ms))
}

/// The `--json` form of a run: one object with everything a script needs.
pub fn run_json(run: &RunRecord, store: &dyn Store) -> Value {
    let live: u32 = run.attempts.iter().map(|a| a.llm_live).sum();
    let replayed: u32 = run.attempts.iter().map(|a| a.llm_replayed).sum();
    // JSON as JSON; text that is not JSON (a bad input) as a string.
    let parsed = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.into()));
    let output = run.output.as_deref().map(parsed);
    let journal_entries = store.journal_of(&run.id).map(|j| j.len()).unwrap_or(0);
    json!({
        "run_id": run.id,
        "task": run.task,
        "tenant": run.tenant.to_string(),
        "status": run.status.as_str(),
        "input": parsed(&run.input),
        "output": output,
        "error": run.error,
        "attempts": run.attempts.iter().map(|a| json!({
            "number": a.number,
            "started_at_ms": a.started_at_ms,
            "finished_at_ms": a.finished_at_ms,
            "duration_ms": a.finished_at_ms.saturating_sub(a.started_at_ms),
            "error": a.error,
            "llm_calls_live": a.llm_live,
            "llm_calls_replayed": a.llm_replayed,
            "traces_replayed": a.trace_replayed,
            "task": a.task,
            "host": a.host,
        })).collect::<Vec<_>>(),
        "timings": {
            "created_at_ms": run.created_at_ms,
            "finished_at_ms": run.finished_at_ms,
            "duration_ms": duration_ms(run),
        },
        "llm": {
            "calls_live": live,
            "calls_replayed": replayed,
            "prompt_tokens": run.usage.prompt_tokens,
            "completion_tokens": run.usage.completion_tokens,
        },
        "journal_entries": journal_entries,
        "cached_from": run.cached_from,
        "produced_by": run.produced_by,
        "degraded": run.degraded,
        "replay_of": run.replay_of,
        "parent": run.parent,
        "group": run.group,
        "component_digest": run.component_digest,
    })
}

/// One journal entry.
pub fn journal_json(e: &JournalEntry) -> Value {
    json!({
        "seq": e.seq,
        "attempt": e.attempt,
        "kind": e.key.kind.as_str(),
        "name": e.key.name,
        "occurrence": e.key.occurrence,
        "input_hash": e.key.input_hash,
        "output": e.output,
        "summary": e.summary,
        "recorded_at_ms": e.recorded_at_ms,
        "duration_ms": e.duration_ms,
        "usage": e.usage,
    })
}

/// The circuit breakers of a tenant; one whose stored state is unreadable is
/// left out with a warning.
pub fn breakers_json(store: &dyn Store, tenant: &Tenant) -> Result<Vec<Value>, StoreError> {
    let now = now_ms();
    Ok(store
        .breakers(tenant)?
        .into_iter()
        .filter_map(|(name, state)| match crate::breakers::decode(&state) {
            Ok(breaker) => Some((name, breaker)),
            Err(e) => {
                tracing::warn!("circuit breaker {name}: its stored state is unreadable ({e}); not shown");
                None
            }
        })
        .map(|(name, b)| {
            let (failures, successes, next_probe_ms) = match b.state {
                BreakerState::Closed { failures } => (failures, 0, None),
                BreakerState::HalfOpen { successes } => (0, successes, None),
                BreakerState::Open { until_ms } => (b.config.failure_threshold, 0, Some(until_ms.saturating_sub(now))),
            };
            let state = if matches!(b.state, BreakerState::Open { until_ms } if until_ms <= now) {
                "half-open"
            } else {
                b.state_name()
            };
            json!({
                "name": name, "state": state, "failures": failures, "successes": successes,
                "next_probe_in_ms": next_probe_ms, "times_opened": b.opened,
                "failure_threshold": b.config.failure_threshold, "success_threshold": b.config.success_threshold,
            })
        })
        .collect())
}

/// Per-task counts, as the store keeps them (one read per task).
pub fn tasks_json(store: &dyn Store, tenant: &Tenant) -> Result<Vec<Value>, StoreError> {
    Ok(store
        .task_stats(tenant)?
        .into_iter()
        .map(|(task, c)| {
            json!({"task": task, "runs": c.runs, "succeeded": c.succeeded, "failed": c.failed, "cancelled": c.cancelled,
                   "retries": c.retries, "degraded": c.degraded, "cached": c.cached})
        })
        .collect())
}

/// What `cairn status --json` prints: `pools` as given, breakers, the
/// dead-letter count, per-task counts and provider retries.
/// The executors working on the store's runs, each with the unfinished runs
/// it holds a lease on (read from the status index: unfinished runs only).
pub fn workers_json(store: &dyn Store, tenant: &Tenant) -> Result<Value, StoreError> {
    let now = crate::model::now_ms();
    let mut held: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for status in [crate::model::RunStatus::Running, crate::model::RunStatus::Pending] {
        let filter = crate::store::RunFilter { status: Some(status), ..Default::default() };
        for run in store.list_runs(tenant, &filter)? {
            if let Some(lease) = run.lease.filter(|l| l.expires_at_ms > now) {
                held.entry(lease.owner).or_default().push(run.id);
            }
        }
    }
    let workers: Vec<Value> = store
        .executors()?
        .into_iter()
        .map(|e| {
            let runs = held.remove(&e.id).unwrap_or_default();
            json!({
                "id": e.id,
                "host": e.host,
                "kind": e.kind,
                "concurrency": e.concurrency,
                "started_at_ms": e.started_at_ms,
                "seen_at_ms": e.seen_at_ms,
                "seen_ms_ago": now.saturating_sub(e.seen_at_ms),
                "stopped_at_ms": e.stopped_at_ms,
                "state": if e.stopped_at_ms.is_some() { "stopped" } else { "working" },
                "runs": runs,
            })
        })
        .collect();
    Ok(Value::Array(workers))
}

pub fn status_json(store: &dyn Store, tenant: &Tenant, pools: Value) -> Result<Value, StoreError> {
    let providers: Vec<Value> = store
        .counters(tenant)?
        .into_iter()
        .filter_map(|(name, n)| {
            let provider = name.strip_prefix("provider:")?.strip_suffix(":retries")?;
            Some(json!({"provider": provider, "retries": n}))
        })
        .collect();
    Ok(json!({
        "pools": pools,
        "workers": workers_json(store, tenant)?,
        "breakers": breakers_json(store, tenant)?,
        "dlq": store.dlq_count(tenant)?,
        "tasks": tasks_json(store, tenant)?,
        "providers": providers,
    }))
}
