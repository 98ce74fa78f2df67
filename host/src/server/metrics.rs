//! `/metrics` in Prometheus' text format: stored runs by task and status,
//! retries, dead letters, breaker states and pool gauges, read when scraped;
//! attempts, LLM calls, tokens and latency histograms, counted from the
//! host's events since the server started.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::events::EventKind;
use crate::runner::Host;
use crate::services::instances::InstanceUse;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// A latency histogram.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum of the observations, in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", bucket.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// What the server counts from events.
#[derive(Debug, Default)]
pub struct Metrics {
    attempts_started: Mutex<HashMap<(String, u32), u64>>,
    attempts: Mutex<HashMap<&'static str, u64>>,
    llm_live: AtomicU64,
    llm_replayed: AtomicU64,
    traces: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    attempt_seconds: Histogram,
    llm_seconds: Histogram,
}

impl Metrics {
    /// Counts `host`'s events from now on.
    pub fn start(host: &Arc<Host>) -> Arc<Metrics> {
        let metrics = Arc::new(Metrics::default());
        let mut events = host.events().subscribe();
        let counting = Arc::downgrade(&metrics);
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let Some(metrics) = counting.upgrade() else { break };
                metrics.count(&event.run_id, event.at_ms, &event.kind);
            }
        });
        metrics
    }

    fn count(&self, run_id: &str, at_ms: u64, kind: &EventKind) {
        match kind {
            EventKind::AttemptStarted { attempt, .. } => {
                self.attempts_started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((run_id.to_owned(), *attempt), at_ms);
            }
            EventKind::AttemptEnded { attempt, error, llm_live, llm_replayed } => {
                let started = self
                    .attempts_started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(run_id.to_owned(), *attempt));
                if let Some(started) = started {
                    self.attempt_seconds.observe(at_ms.saturating_sub(started) as f64 / 1000.0);
                }
                let outcome = match error {
                    None => "succeeded",
                    Some(f) if f.kind == crate::model::FailureKind::Cancelled => "cancelled",
                    Some(f) if f.kind == crate::model::FailureKind::Interrupted => "interrupted",
                    Some(_) => "failed",
                };
                *self.attempts.lock().unwrap_or_else(|e| e.into_inner()).entry(outcome).or_default() += 1;
                self.llm_live.fetch_add(u64::from(*llm_live), Ordering::Relaxed);
                self.llm_replayed.fetch_add(u64::from(*llm_replayed), Ordering::Relaxed);
            }
            EventKind::Call { kind, duration_ms, prompt_tokens, completion_tokens, .. } => {
                if kind == "llm" {
                    self.llm_seconds.observe(*duration_ms as f64 / 1000.0);
                    self.prompt_tokens.fetch_add(u64::from(*prompt_tokens), Ordering::Relaxed);
                    self.completion_tokens.fetch_add(u64::from(*completion_tokens), Ordering::Relaxed);
                } else {
                    self.traces.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders every metric.
fn render(state: &AppState) -> Result<String, ApiError> {
    let (host, m) = (&state.host, &state.metrics);
    let store = host.store();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let stats = store.task_stats(host.tenant())?;
    let mut runs = Vec::new();
    for (task, c) in &stats {
        let running = c.runs.saturating_sub(c.succeeded + c.failed + c.cancelled);
        for (status, n) in
            [("succeeded", c.succeeded), ("failed", c.failed), ("cancelled", c.cancelled), ("unfinished", running)]
        {
            runs.push((format!("{{task=\"{}\",status=\"{status}\"}}", label(task)), n));
        }
    }
    gauge("cairn_runs", "Runs in the store, by task and status.", "gauge", runs);
    gauge(
        "cairn_retries_total",
        "Retries of stored runs, by task.",
        "counter",
        stats.iter().map(|(task, c)| (format!("{{task=\"{}\"}}", label(task)), c.retries)).collect(),
    );
    gauge(
        "cairn_runs_in_progress",
        "Runs this server is running now (its queue).",
        "gauge",
        vec![(String::new(), host.background_runs() as u64)],
    );
    gauge(
        "cairn_dlq_size",
        "Runs in the dead-letter queue.",
        "gauge",
        vec![(String::new(), store.dlq_count(host.tenant())? as u64)],
    );
    let breakers = crate::views::breakers_json(store.as_ref(), host.tenant())?;
    gauge(
        "cairn_breaker_open",
        "Circuit breakers: 1 when open, else 0; the state is a label.",
        "gauge",
        breakers
            .iter()
            .map(|b| {
                let state = b["state"].as_str().unwrap_or_default();
                (
                    format!("{{name=\"{}\",state=\"{state}\"}}", label(b["name"].as_str().unwrap_or_default())),
                    u64::from(state == "open"),
                )
            })
            .collect(),
    );
    let pools = host.pool_stats();
    for (name, help, value) in [
        (
            "cairn_pool_replicas",
            "Replicas alive.",
            (|p: &crate::pool::PoolStats| p.replicas as u64) as fn(&crate::pool::PoolStats) -> u64,
        ),
        ("cairn_pool_live", "Instances alive.", |p| p.live as u64),
        ("cairn_pool_idle", "Instances waiting for a call.", |p| p.idle as u64),
        ("cairn_pool_busy", "Instances serving a call.", |p| p.busy as u64),
        ("cairn_pool_queued", "Callers waiting for an instance.", |p| p.queued as u64),
        ("cairn_pool_instantiations_total", "Instances made.", |p| p.instantiations),
        ("cairn_pool_reuses_total", "Calls served by an instance that had served one before.", |p| p.reuses),
    ] {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        gauge(
            name,
            help,
            kind,
            pools
                .iter()
                .map(|p| {
                    (format!("{{tenant=\"{}\",environment=\"{}\"}}", label(&p.tenant), label(&p.environment)), value(p))
                })
                .collect(),
        );
    }
    let fresh = host.fresh_instances();
    gauge(
        "cairn_fresh_instances",
        "The host's fresh-instance slots: held by running instances, parked (instances waiting on their children, holding none), and waited for.",
        "gauge",
        vec![
            ("{state=\"held\"}".into(), fresh.held as u64),
            ("{state=\"parked\"}".into(), fresh.parked as u64),
            ("{state=\"queued\"}".into(), fresh.queued as u64),
        ],
    );
    let uses = host.instance_uses();
    for (name, help, value) in [
        (
            "cairn_tenant_instances",
            "Instances counted against their tenant's live_instances quota.",
            (|u: &InstanceUse| u64::from(u.instances)) as fn(&InstanceUse) -> u64,
        ),
        ("cairn_tenant_instance_memory_bytes", "Guest memory the tenant's instances may grow to.", |u| u.memory),
        ("cairn_tenant_instances_queued", "Attempts waiting for room under their tenant's instance quotas.", |u| {
            u.queued as u64
        }),
        ("cairn_tenant_instances_lent", "Shares lent by instances waiting on their children.", |u| u64::from(u.lent)),
        ("cairn_tenant_instances_live", "The tenant's instances alive, waiting parents included.", |u| {
            u64::from(u.live)
        }),
    ] {
        gauge(
            name,
            help,
            "gauge",
            uses.iter().map(|(t, u)| (format!("{{tenant=\"{}\"}}", label(&t.to_string())), value(u))).collect(),
        );
    }
    let attempts = m.attempts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut attempts: Vec<(String, u64)> =
        attempts.into_iter().map(|(outcome, n)| (format!("{{outcome=\"{outcome}\"}}"), n)).collect();
    attempts.sort();
    gauge("cairn_attempts_total", "Attempts ended since the server started, by outcome.", "counter", attempts);
    gauge(
        "cairn_llm_calls_total",
        "LLM calls since the server started: made live, or answered from the journal.",
        "counter",
        vec![
            ("{source=\"live\"}".into(), m.llm_live.load(Ordering::Relaxed)),
            ("{source=\"replayed\"}".into(), m.llm_replayed.load(Ordering::Relaxed)),
        ],
    );
    gauge(
        "cairn_traced_steps_total",
        "Traced steps recorded since the server started.",
        "counter",
        vec![(String::new(), m.traces.load(Ordering::Relaxed))],
    );
    gauge(
        "cairn_llm_tokens_total",
        "Tokens of live LLM calls since the server started.",
        "counter",
        vec![
            ("{kind=\"prompt\"}".into(), m.prompt_tokens.load(Ordering::Relaxed)),
            ("{kind=\"completion\"}".into(), m.completion_tokens.load(Ordering::Relaxed)),
        ],
    );
    if let Some(writer) = store.writer_stats() {
        let histogram = |out: &mut String, name: &str, help: &str, rows: &[(u64, u64)], scale: f64, sum: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            let mut cumulative = 0;
            for (bound, n) in rows {
                cumulative += n;
                let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 * scale);
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {sum}\n{name}_count {}",
                writer.commits, writer.commits
            );
        };
        histogram(
            &mut out,
            "cairn_store_commit_seconds",
            "How long the store's group commits took (log fsync or durable commit), by commit.",
            &writer.latencies_us,
            1e-6,
            writer.latency_sum_us as f64 / 1e6,
        );
        histogram(
            &mut out,
            "cairn_store_commit_batch_writes",
            "Writes per group commit (one fsync each).",
            &writer.batches,
            1.0,
            writer.writes as f64,
        );
    }
    m.attempt_seconds.render(&mut out, "cairn_attempt_duration_seconds", "How long attempts took.");
    m.llm_seconds.render(
        &mut out,
        "cairn_llm_call_duration_seconds",
        "How long live LLM calls took, journaling included.",
    );
    Ok(out)
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "status", responses((status = 200, description = "Prometheus text format 0.0.4")))]
pub async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    // Host-wide figures (pools, attempts, the store's commits): the operator's, not a tenant's.
    caller.require_server("reading the metrics")?;
    let text = render(&state)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
