//! Quotas and fairness between tenants: a daily budget is never overspent
//! by concurrent runs; a tenant at its concurrency quota queues; one tenant's
//! wide fan-out does not starve another tenant's run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::model::{FailureKind, RunRecord, RunStatus, Tenant};
use cairn::runner::worker::WorkOptions;
use cairn::runner::{Host, RunOptions};
use serde_json::json;

use crate::support::project::Project;

/// `count` runs of the probe on `input`, all started at once; their records as they end.
async fn at_once(host: &Arc<Host>, count: usize, input: &'static str) -> Vec<RunRecord> {
    let all: Vec<_> = (0..count)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { host.run("probe", input).await.unwrap() })
        })
        .collect();
    let mut runs = Vec::new();
    for run in all {
        runs.push(run.await.unwrap());
    }
    runs
}

/// A mock priced at $1,000 per million tokens, so a token is a tenth of a
/// cent, answering at most 40 tokens.
fn priced(store: Option<&str>, quota: &str) -> String {
    let store = store.map(|url| format!("store = \"{url}\"")).unwrap_or_default();
    format!(
        r#"
        {store}

        [llm]
        default = "priced"

        [llm.providers.priced]
        kind = "mock"
        latency = "100ms"
        price = {{ input = 1000.0, output = 1000.0 }}
        max_tokens = 40

        [tenants."default/development"]
        {quota}

        [tasks.probe]
        component = "{{probe}}"
        retries = 3
        "#
    )
}

fn fifty_concurrent_runs_never_overspend_a_daily_budget(store: Option<String>) {
    // One call of "question 1" costs 8 prompt and 40 completion tokens: $0.048.
    // The budget is ten runs' worth; each call reserves its worst case first.
    let budget_micros = 10 * 48_000;
    let project = Project::new(&priced(store.as_deref(), &format!("cost_per_day = {}", budget_micros as f64 / 1e6)));
    let host = project.host();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let runs = runtime.block_on(at_once(&host, 50, r#"{"mode": "llm-calls", "calls": 1}"#));
    let succeeded: Vec<&RunRecord> = runs.iter().filter(|r| r.status == RunStatus::Succeeded).collect();
    let refused: Vec<&RunRecord> = runs.iter().filter(|r| r.status == RunStatus::Failed).collect();
    assert_eq!(succeeded.len() + refused.len(), 50);
    assert!(!succeeded.is_empty() && succeeded.len() <= 10, "{} runs fit a budget of ten", succeeded.len());
    for run in &refused {
        let error = run.error.as_ref().unwrap();
        assert_eq!(error.kind, FailureKind::BudgetExceeded, "{error:?}");
        assert!(error.message.contains("cost_per_day quota ($0.48)") && !error.retryable, "{}", error.message);
        assert_eq!(run.attempts.len(), 1, "a budget refusal is not retried: {:?}", run.attempts);
    }
    let store = host.store();
    let tenant = Tenant::default();
    assert_eq!(store.dlq_count(&tenant).unwrap(), refused.len(), "every refused run is a dead letter");
    let day = store.ledger(&tenant, "cost:day:").unwrap();
    let (spent, reserved) = (day[0].1.spent, day[0].1.reserved);
    assert!(spent <= budget_micros, "spent {spent} of a budget of {budget_micros}");
    assert_eq!(reserved, 0, "every reservation is settled");
    let charged: u64 = runs.iter().map(|r| r.usage.cost_micros).sum();
    assert_eq!(charged, spent, "the runs' costs add up to what the ledger says was spent");
    assert_eq!(charged, succeeded.len() as u64 * 48_000);
    let usage = store.usage_since(&tenant, 0).unwrap();
    assert_eq!(usage.len(), succeeded.len(), "a usage record per live call");
}

#[test]
fn fifty_concurrent_runs_never_overspend_a_daily_budget_on_redb() {
    fifty_concurrent_runs_never_overspend_a_daily_budget(None);
}

#[test]
fn fifty_concurrent_runs_never_overspend_a_daily_budget_on_postgresql() {
    fifty_concurrent_runs_never_overspend_a_daily_budget(Some(cairn::store::postgres::testing::fresh_database()));
}

#[test]
fn a_tenant_at_its_concurrency_quota_queues_and_does_not_fail() {
    let project = Project::new(
        r#"
        [tenants."default/development"]
        concurrent_runs = 2

        [tasks.probe]
        component = "{probe}"
        "#,
    );
    let host = project.host();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let runs = runtime.block_on(at_once(&host, 6, r#"{"mode": "sleep", "ms": 300}"#));
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded), "queued, not failed");
    // At no moment were more than two attempts under way.
    let spans: Vec<(u64, u64)> =
        runs.iter().map(|r| (r.attempts[0].started_at_ms, r.attempts[0].finished_at_ms)).collect();
    let most = spans.iter().map(|(start, _)| spans.iter().filter(|(s, e)| s <= start && start < e).count()).max();
    assert_eq!(most, Some(2), "{spans:?}");
}

/// Time from queueing a run of tenant `tenant` to its end.
async fn probe_latency(host: &Arc<Host>, tenant: &Tenant) -> Duration {
    let started = Instant::now();
    let run = host.enqueue("probe", r#"{"mode": "llm-calls", "calls": 3}"#, &RunOptions::of(tenant)).await.unwrap();
    let run = host.finished(run).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    started.elapsed()
}

#[test]
fn one_tenants_fan_out_does_not_starve_another_tenants_run() {
    let project = Project::new(
        r#"
        # The probe's calls wait on the model, as real ones do: a busy host's CPU is not the measure.
        [llm.providers.mock]
        kind = "mock"
        latency = "200ms"

        [environments.parents]
        resources = { memory = "256MiB", timeout = "900s" }

        [tasks.parent]
        component = "{probe}"
        environment = "parents"

        [tasks.probe]
        component = "{probe}"
        "#,
    );
    let host = project.host();
    let (a, b) = (Tenant::new("wide", "prod").unwrap(), Tenant::new("small", "prod").unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let options = WorkOptions { concurrency: 8, kind: "test", poll: Duration::from_millis(100) };
        let worker = host.clone();
        let working = tokio::spawn(async move { worker.work(options, std::future::pending()).await });
        let mut unloaded: Vec<Duration> = Vec::new();
        for _ in 0..3 {
            unloaded.push(probe_latency(&host, &b).await);
        }
        unloaded.sort();
        let unloaded = unloaded[1];
        // Tenant A fans out 10,000 children, queued for the worker's eight slots.
        let input = r#"{"mode": "fanout", "count": 10000, "child": {"mode": "sleep", "ms": 1, "i": null}}"#;
        let parent = host.enqueue("parent", input, &RunOptions::of(&a)).await.unwrap();
        let children = cairn::store::RunFilter {
            lineage: cairn::store::Lineage::ChildrenOf(parent.id.clone()),
            limit: Some(500),
            ..Default::default()
        };
        let waited = Instant::now();
        while host.store().list_runs(&a, &children).unwrap().len() < 500 {
            assert!(waited.elapsed() < Duration::from_secs(120), "tenant A made no children");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let loaded = probe_latency(&host, &b).await;
        eprintln!("tenant B's probe: {unloaded:?} alone, {loaded:?} while tenant A fans out");
        let parent_now = host.store().get_run(&a, &parent.id).unwrap();
        assert!(!parent_now.status.is_finished(), "A's fan-out was still under way while B's run went through");
        assert!(
            loaded <= unloaded * 2,
            "tenant B's run took {loaded:?} while A fanned out, over twice its {unloaded:?} alone"
        );
        host.cancel(&a, &parent.id).await.unwrap();
        working.abort();
    });
}

/// The probe (64 MiB), a parent that fans out to it, a task whose instances
/// may grow to 512 MiB, and a pooled environment, under `quota`.
fn instance_quotas(quota: &str) -> Project {
    Project::new(&format!(
        r#"
        [tenants."default/development"]
        {quota}

        [environments.small]
        resources = {{ memory = "64MiB", timeout = "60s" }}

        [environments.big]
        resources = {{ memory = "512MiB" }}

        [environments.warm]
        resources = {{ memory = "64MiB" }}
        reuse = {{ replicas = 1, concurrency = 1 }}

        [tasks.probe]
        component = "{{probe}}"
        environment = "small"

        [tasks.parent]
        component = "{{probe}}"
        environment = "small"

        [tasks.big]
        component = "{{probe}}"
        environment = "big"

        [tasks.warm-probe]
        component = "{{probe}}"
        environment = "warm"
        "#
    ))
}

/// Runs `count` probes that sleep 200 ms, all at once; how long they took together.
async fn sleepers(host: &Arc<Host>, count: usize) -> Duration {
    let started = Instant::now();
    for run in at_once(host, count, r#"{"mode": "sleep", "ms": 200}"#).await {
        assert_eq!(run.status, RunStatus::Succeeded, "queued, not failed: {:?}", run.error);
    }
    started.elapsed()
}

#[test]
fn a_tenant_at_its_instance_quota_queues_and_a_waiting_parent_lends_its_share() {
    let project = instance_quotas("live_instances = 1");
    let host = project.host();
    let tenant = Tenant::default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // One instance at a time: the four sleeps follow each other.
        let took = sleepers(&host, 4).await;
        assert!(took >= Duration::from_millis(800), "four 200 ms sleeps in {took:?}: some ran side by side");
        // A parent holding the only share waits on children that need it: it lends
        // its share while it waits, so they run, one at a time.
        let fanout = r#"{"mode": "fanout", "count": 3, "child": {"mode": "sleep", "ms": 50, "i": null}}"#;
        let parents: Vec<_> = (0..3)
            .map(|_| {
                let host = host.clone();
                tokio::spawn(async move { host.run("parent", fanout).await.unwrap() })
            })
            .collect();
        for parent in parents {
            let parent = tokio::time::timeout(Duration::from_secs(60), parent).await;
            let parent = parent.expect("the parents and their children never deadlock").unwrap();
            assert_eq!(parent.status, RunStatus::Succeeded, "{:?}", parent.error);
        }
        // A parent's lent share went to its own children, never to another parent.
        let used = host.instance_use(&tenant);
        assert_eq!((used.peak_instances, used.peak_live), (1, 2), "{used:?}");
        // The same through a worker, whose children are claimed runs of their own.
        let options = WorkOptions { concurrency: 4, kind: "test", poll: Duration::from_millis(100) };
        let worker = host.clone();
        let working = tokio::spawn(async move { worker.work(options, std::future::pending()).await });
        let queued = host.enqueue("parent", fanout, &RunOptions::of(&tenant)).await.unwrap();
        let claimed = tokio::time::timeout(Duration::from_secs(60), host.finished(queued)).await;
        let claimed = claimed.expect("a worker's parent and children never deadlock").unwrap();
        assert_eq!(claimed.status, RunStatus::Succeeded, "{:?}", claimed.error);
        working.abort();
    });
    let used = host.instance_use(&tenant);
    assert_eq!((used.peak_instances, used.peak_live, used.live, used.queued, used.lent), (1, 2, 0, 0, 0), "{used:?}");
}

#[test]
fn the_memory_quota_counts_each_instances_limit_and_refuses_one_that_never_fits() {
    let project = instance_quotas(r#"memory = "128MiB""#);
    let host = project.host();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Two 64 MiB instances fit in 128 MiB: five sleeps take three rounds.
        let took = sleepers(&host, 5).await;
        assert!(took >= Duration::from_millis(600), "five 200 ms sleeps in {took:?}: over two ran side by side");
        let big = host.run("big", r#"{"mode": "echo"}"#).await.unwrap();
        let error = big.error.expect("refused");
        assert_eq!(error.kind, FailureKind::BudgetExceeded);
        assert!(!error.retryable);
        for needed in ["512 MiB", "128 MiB", "`memory`", "cairn quota set"] {
            assert!(error.message.contains(needed), "{needed:?} missing from: {}", error.message);
        }
        assert_eq!(big.attempts.len(), 1, "not retried");
    });
    let used = host.instance_use(&Tenant::default());
    assert_eq!((used.peak_memory, used.memory), (128 << 20, 0), "{used:?}");
}

#[test]
fn idle_warm_instances_make_room_under_the_instance_quota() {
    let project = instance_quotas("live_instances = 1");
    let host = project.host();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let warm = host.run("warm-probe", r#"{"mode": "counter"}"#).await.unwrap();
        assert_eq!(warm.status, RunStatus::Succeeded, "{:?}", warm.error);
        // The warm instance, idle now, holds the tenant's only share.
        assert_eq!(host.instance_use(&Tenant::default()).instances, 1);
        let fresh = tokio::time::timeout(Duration::from_secs(30), host.run("probe", r#"{"mode": "echo"}"#)).await;
        let fresh = fresh.expect("the idle instance made room").unwrap();
        assert_eq!(fresh.status, RunStatus::Succeeded, "{:?}", fresh.error);
        let again = host.run("warm-probe", r#"{"mode": "counter"}"#).await.unwrap();
        assert_eq!(again.status, RunStatus::Succeeded, "{:?}", again.error);
    });
    let pool = host.pool_stats().into_iter().find(|p| p.environment == "warm").expect("the warm pool");
    assert_eq!((pool.evicted, pool.instantiations), (1, 2), "{pool:?}");
}

#[test]
fn instance_quotas_are_set_and_shown_by_the_cli_and_bad_values_refused() {
    let project = instance_quotas("live_instances = 4");
    project.cli_ok(&["quota", "set", "memory", "1GiB"]);
    let (shown, _) = project.cli_ok(&["quota", "show"]);
    assert!(shown.contains("memory           1 GiB"), "{shown}");
    assert!(shown.contains("live_instances   4"), "the manifest's applies: {shown}");
    let json = project.cli_json(&["quota", "show", "--json"]);
    assert_eq!(json["quotas"]["memory"], 1u64 << 30);
    project.cli_ok(&["quota", "set", "live_instances", "2"]);
    assert_eq!(project.cli_json(&["quota", "show", "--json"])["quotas"]["live_instances"], 2);
    for (key, value, says) in [
        ("memory", "lots", "memory is a size"),
        ("memory", "0", "at least 1 byte"),
        ("live_instances", "0", "at least 1"),
        ("live_instances", "two", "whole number"),
    ] {
        let out = project.cli(&["quota", "set", key, value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{key} = {value}: {stderr}");
    }
    // Nothing was lost to the refused values.
    let json = project.cli_json(&["quota", "show", "--json"]);
    assert_eq!(
        (json["quotas"]["memory"].clone(), json["quotas"]["live_instances"].clone()),
        (json!(1u64 << 30), json!(2))
    );
    project.cli_ok(&["quota", "set", "memory", "unlimited"]);
    assert_eq!(project.cli_json(&["quota", "show", "--json"])["quotas"]["memory"], u64::MAX);
    let (shown, _) = project.cli_ok(&["quota", "show"]);
    assert!(shown.contains("memory           unlimited"), "{shown}");
}
