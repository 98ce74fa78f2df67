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
            "http_requests_live": a.http_live,
            "http_requests_replayed": a.http_replayed,
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
            "cost_usd": run.usage.cost_micros as f64 / 1e6,
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

/// How `cairn usage` groups the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageBy {
    /// One line for all.
    Total,
    /// By task.
    Task,
    /// By the provider that answered.
    Provider,
    /// By model.
    Model,
    /// By UTC day.
    Day,
}

impl std::str::FromStr for UsageBy {
    type Err = String;

    fn from_str(text: &str) -> Result<UsageBy, String> {
        match text {
            "total" => Ok(UsageBy::Total),
            "task" => Ok(UsageBy::Task),
            "provider" => Ok(UsageBy::Provider),
            "model" => Ok(UsageBy::Model),
            "day" => Ok(UsageBy::Day),
            other => Err(format!("cannot group usage by {other:?}; use task, provider, model, day or total")),
        }
    }
}

/// The start (ms since the epoch) and grouping of a usage view: `since`
/// back from `now_ms` (e.g. `7d`), grouped `by` (default: one total).
pub fn usage_window(now_ms: u64, since: &str, by: Option<&str>) -> Result<(u64, UsageBy), String> {
    let age = crate::config::units::parse_duration(since)?;
    let by: UsageBy = by.unwrap_or("total").parse()?;
    Ok((now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)), by))
}

/// Usage records added up by `by`: `{since_ms, by, rows: [{key, calls, prompt_tokens, completion_tokens, cost_usd}], total}`.
pub fn usage_json(records: &[crate::model::UsageRecord], since_ms: u64, by: UsageBy) -> Value {
    let mut rows: std::collections::BTreeMap<String, [u64; 4]> = std::collections::BTreeMap::new();
    let mut total = [0u64; 4];
    for record in records {
        let key = match by {
            UsageBy::Total => "all".to_owned(),
            UsageBy::Task => record.task.clone(),
            UsageBy::Provider => record.provider.clone(),
            UsageBy::Model => record.model.clone(),
            UsageBy::Day => crate::model::day_and_month(record.at_ms).0,
        };
        let figures = [1, record.prompt_tokens, record.completion_tokens, record.cost_micros];
        for (sum, n) in rows.entry(key).or_default().iter_mut().zip(figures) {
            *sum += n;
        }
        for (sum, n) in total.iter_mut().zip(figures) {
            *sum += n;
        }
    }
    let line = |key: &str, f: &[u64; 4]| json!({"key": key, "calls": f[0], "prompt_tokens": f[1], "completion_tokens": f[2], "cost_usd": f[3] as f64 / 1e6});
    let by_name = match by {
        UsageBy::Total => "total",
        UsageBy::Task => "task",
        UsageBy::Provider => "provider",
        UsageBy::Model => "model",
        UsageBy::Day => "day",
    };
    json!({
        "since_ms": since_ms,
        "by": by_name,
        "rows": rows.iter().map(|(key, f)| line(key, f)).collect::<Vec<_>>(),
        "total": line("total", &total),
    })
}

/// A tenant's quotas and what today and this month spent against them.
pub fn quota_json(
    store: &dyn Store,
    tenant: &Tenant,
    quotas: &crate::model::Quotas,
) -> Result<Value, crate::store::StoreError> {
    use crate::model::LedgerQuota;
    let (day, month) = crate::model::day_and_month(crate::model::now_ms());
    let mut lines = Vec::new();
    for quota in [LedgerQuota::TokensPerDay, LedgerQuota::CostPerDay, LedgerQuota::CostPerMonth] {
        let period = if quota == LedgerQuota::CostPerMonth { &month } else { &day };
        let key = format!("{}{period}", quota.prefix());
        let totals = store.ledger(tenant, &key)?.into_iter().find(|(k, _)| *k == key).map(|(_, t)| t);
        let totals = totals.unwrap_or_default();
        let money = quota != LedgerQuota::TokensPerDay;
        let shown = |n: u64| if money { json!(n as f64 / 1e6) } else { json!(n) };
        lines.push(json!({
            "quota": quota.name(),
            "period": period,
            "limit": quota.limit(quotas).map(shown),
            "spent": shown(totals.spent),
            "reserved": shown(totals.reserved),
        }));
    }
    Ok(json!({
        "tenant": tenant.to_string(),
        "quotas": {
            "concurrent_runs": quotas.concurrent_runs,
            "live_instances": quotas.live_instances,
            "memory": quotas.memory_bytes,
            "tokens_per_run": quotas.tokens_per_run,
            "tokens_per_day": quotas.tokens_per_day,
            "cost_per_day": quotas.cost_per_day_micros.map(|m| m as f64 / 1e6),
            "cost_per_month": quotas.cost_per_month_micros.map(|m| m as f64 / 1e6),
            "blob_storage": quotas.blob_bytes,
        },
        "ledger": lines,
    }))
}

/// Sets quota `key` (`concurrent_runs`, `tokens_per_run`, `tokens_per_day`,
/// `cost_per_day`, `cost_per_month`) of `quotas` to `value`: `none` unsets it
/// (the manifest's applies), `unlimited` lifts it (the manifest's too).
pub fn set_quota(quotas: &mut crate::model::Quotas, key: &str, value: &str) -> Result<(), String> {
    let none = value == "none";
    if value == "unlimited" {
        let most = if key == "memory" { u64::MAX.to_string() } else { u32::MAX.to_string() };
        return set_quota(quotas, key, &most);
    }
    let count = || -> Result<Option<u64>, String> {
        if none {
            return Ok(None);
        }
        value.parse::<u64>().map(Some).map_err(|_| format!("{key} is a whole number (or `none`), not {value:?}"))
    };
    let money = || -> Result<Option<u64>, String> {
        if none {
            return Ok(None);
        }
        let dollars = value.trim_start_matches('$').parse::<f64>().ok();
        dollars
            .and_then(crate::manifest::tenants::dollars_to_micros)
            .map(Some)
            .ok_or_else(|| format!("{key} is dollars (e.g. 5 or 2.50, or `none`), not {value:?}"))
    };
    // A count that must be at least 1 (a quota of none would stop the tenant for good).
    let slots = || -> Result<Option<u32>, String> {
        match count()? {
            Some(0) => Err(format!("{key} must be at least 1")),
            n => Ok(n.map(|n| n.min(u64::from(u32::MAX)) as u32)),
        }
    };
    match key {
        "concurrent_runs" => quotas.concurrent_runs = slots()?,
        "tokens_per_run" => quotas.tokens_per_run = count()?,
        "tokens_per_day" => quotas.tokens_per_day = count()?,
        "cost_per_day" => quotas.cost_per_day_micros = money()?,
        "cost_per_month" => quotas.cost_per_month_micros = money()?,
        "live_instances" => quotas.live_instances = slots()?,
        "memory" | "blob_storage" => {
            let bytes = match (none, crate::config::units::parse_size(value)) {
                (true, _) => None,
                (false, Ok(0)) => return Err(format!("{key} must be at least 1 byte")),
                (false, Ok(bytes)) => Some(bytes),
                (false, Err(e)) => return Err(format!("{key} is a size (e.g. 4GiB, or `none`): {e}")),
            };
            if key == "memory" {
                quotas.memory_bytes = bytes;
            } else {
                quotas.blob_bytes = bytes;
            }
        }
        other => {
            return Err(format!(
                "no quota {other:?}; the quotas are concurrent_runs, live_instances, memory, tokens_per_run, tokens_per_day, cost_per_day, cost_per_month and blob_storage"
            ));
        }
    }
    Ok(())
}

/// A token as listed: never its secret, nor the secret's hash.
pub fn token_json(token: &crate::model::ApiToken) -> Value {
    json!({
        "id": token.id,
        "tenant": token.tenant.to_string(),
        "role": token.role,
        "created_at_ms": token.created_at_ms,
        "expires_at_ms": token.expires_at_ms,
    })
}

/// A token just made, as its maker sees it once: [`token_json`] and the token itself.
pub fn minted_json(minted: &crate::access::Minted) -> Value {
    let mut made = token_json(&minted.record);
    made["token"] = json!(minted.token);
    made
}
