//! Warm instances under `reuse`: state that persists, instances that are
//! never reused after breaking, pool sizing and TTLs on an injected clock,
//! `depends_on` warming, the bounded queue, and `cairn status`.

use std::sync::Arc;
use std::time::Duration;

use cairn::clock::TestClock;
use cairn::model::RunStatus;
use cairn::pool::PoolStats;
use cairn::runner::Host;
use serde_json::json;

use crate::support::project::{Project, driver_and_refiner, output_json};

/// The probe in a pooled environment `warm`, and again in the default (fresh) one.
fn pooled(reuse: &str) -> Project {
    Project::new(&format!(
        r#"
        [environments.warm]
        resources = {{ memory = "64MiB", timeout = "2s" }}
        reuse = {reuse}

        [tasks.warm-probe]
        component = "{{probe}}"
        environment = "warm"
        retries = 0

        [tasks.fresh-probe]
        component = "{{probe}}"
        "#
    ))
}

fn stats(host: &Host, environment: &str) -> PoolStats {
    host.pools()
        .iter()
        .map(|pool| pool.stats())
        .find(|stats| stats.environment == environment)
        .unwrap_or_else(|| panic!("no pool for environment {environment:?}"))
}

async fn count(host: &Host, task: &str) -> u64 {
    let run = host.run(task, r#"{"mode": "counter"}"#).await.unwrap();
    let output = output_json(&run);
    assert_eq!(output["run_id"], run.id.as_str(), "the guest sees the run it serves, not the instance's first");
    output["count"].as_u64().unwrap()
}

#[tokio::test]
async fn globals_persist_on_a_reused_instance_and_never_without_reuse() {
    let project = pooled("{ replicas = 1, concurrency = 1 }");
    let host = project.host();
    let mut counts = Vec::new();
    for _ in 0..3 {
        counts.push(count(&host, "warm-probe").await);
    }
    assert_eq!(counts, [1, 2, 3], "one warm instance served all three runs");
    let pool = stats(&host, "warm");
    assert_eq!((pool.instantiations, pool.reuses, pool.live, pool.idle), (1, 2, 1, 1), "{pool:?}");
    for _ in 0..2 {
        assert_eq!(count(&host, "fresh-probe").await, 1, "without reuse every attempt gets a fresh instance");
    }
}

#[tokio::test]
async fn an_instance_that_trapped_or_hit_a_limit_is_never_reused() {
    let project = pooled("{ replicas = 1, concurrency = 1 }");
    let host = project.host();
    for breaking in [r#"{"mode": "trap"}"#, r#"{"mode": "loop"}"#, r#"{"mode": "alloc", "mb": 512}"#] {
        assert_eq!(count(&host, "warm-probe").await, 1, "a new instance");
        assert_eq!(count(&host, "warm-probe").await, 2, "the healthy instance is reused");
        let broken = host.run("warm-probe", breaking).await.unwrap();
        assert_eq!(broken.status, RunStatus::Failed, "{breaking}");
        let kind = &broken.error.as_ref().unwrap().kind;
        assert!(["trap", "timeout", "out-of-memory"].contains(&kind.as_str()), "{breaking}: {kind}");
        // The loop goes on: the next run must start from a new instance, not the broken one.
    }
    let pool = stats(&host, "warm");
    assert_eq!((pool.discarded, pool.instantiations, pool.live), (3, 3, 0), "{pool:?}");
}

#[tokio::test]
async fn a_task_error_leaves_the_instance_in_the_pool() {
    let project = pooled("{ replicas = 1, concurrency = 1 }");
    let host = project.host();
    assert_eq!(count(&host, "warm-probe").await, 1);
    let failed = host.run("warm-probe", r#"{"mode": "error", "kind": "nope", "retryable": false}"#).await.unwrap();
    assert_eq!(failed.error.unwrap().kind, "nope");
    assert_eq!(count(&host, "warm-probe").await, 2, "a returned error is not a broken instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_size_and_ttls_follow_the_injected_clock() {
    let project = pooled(r#"{ replicas = [1, 3], concurrency = 1, scaledown_ttl = "5m", idle_ttl = "30m" }"#);
    let clock = Arc::new(TestClock::new(1_000_000_000));
    let host = project.host_with_clock(clock.clone());
    host.start_environment(host.tenant(), "warm").await;
    let warmed = stats(&host, "warm");
    assert_eq!((warmed.replicas, warmed.live, warmed.instantiations), (1, 1, 1), "min replicas warm at start");

    // Three runs at once need three replicas: the pool grows to max.
    let sleepers = (0..3).map(|_| {
        let host = host.clone();
        tokio::spawn(async move { host.run("warm-probe", r#"{"mode": "sleep", "ms": 300}"#).await.unwrap() })
    });
    for run in futures_join(sleepers).await {
        assert_eq!(run.status, RunStatus::Succeeded);
    }
    let grown = stats(&host, "warm");
    assert_eq!((grown.replicas, grown.live, grown.peak_busy), (3, 3, 3), "{grown:?}");

    clock.advance(Duration::from_secs(299));
    host.sweep_pools();
    assert_eq!(stats(&host, "warm").replicas, 3, "idle for less than scaledown_ttl");
    clock.advance(Duration::from_secs(1));
    host.sweep_pools();
    assert_eq!(stats(&host, "warm").replicas, 1, "idle past scaledown_ttl: down to min");
    clock.advance(Duration::from_secs(25 * 60));
    host.sweep_pools();
    assert_eq!(stats(&host, "warm").live, 0, "no work for idle_ttl: the environment drops to zero");
    assert_eq!(count(&host, "warm-probe").await, 1, "work after zero gets a new instance");
}

async fn futures_join<T: Send + 'static>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn depends_on_loads_and_warms_the_dependencies() {
    let project = Project::new(&driver_and_refiner("{ replicas = 2, concurrency = 4 }"));
    let host = project.host();
    host.start_environment(host.tenant(), "driver").await;
    let llm = stats(&host, "llm");
    assert_eq!((llm.replicas, llm.live, llm.idle, llm.instantiations), (2, 8, 8, 8), "2 replicas × 4 warm: {llm:?}");

    let run = host.run("batch-driver", r#"{"topics": ["Tides", "Comets"]}"#).await.unwrap();
    assert_eq!(output_json(&run)["succeeded"], 2);
    let llm = stats(&host, "llm");
    assert_eq!(
        (llm.instantiations, llm.reuses, llm.peak_busy),
        (8, 0, 2),
        "the children ran on warmed instances: {llm:?}"
    );
}

#[tokio::test]
async fn callers_beyond_capacity_wait_a_bounded_time_then_fail_clearly() {
    let project = pooled(r#"{ replicas = 1, concurrency = 1, queue_timeout = "200ms" }"#);
    let host = project.host();
    let parent = json!({
        "mode": "fanout", "task": "warm-probe", "count": 2,
        "child": {"mode": "sleep", "ms": 1500},
    });
    let run = host.run("fresh-probe", &parent.to_string()).await.unwrap();
    let output = output_json(&run);
    assert_eq!(output["failed"], 1, "{output}");
    let error = &output["first_error"];
    assert_eq!(error["kind"], "queue-timeout", "{output}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("no instance became free within 200ms"), "{message}");
    assert!(message.contains("raise `reuse.replicas`"), "{message}");
    assert_eq!(stats(&host, "warm").queue_timeouts, 1);
}

#[test]
fn status_shows_each_pool() {
    let project = pooled("{ replicas = [1, 2], concurrency = 2 }");
    for _ in 0..2 {
        let out = project.cli(&["run", "warm-probe", "--input", r#"{"mode": "counter"}"#]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let status = project.cli_json(&["status", "--json"]);
    let pool = &status["pools"]["environments"][0];
    assert_eq!(pool["environment"], "warm", "{status}");
    assert_eq!(status["pools"]["host_running"], false, "{status}");
    // Each `cairn run` is its own host: it warmed one replica of 2 instances and ran on one of them.
    assert_eq!((pool["min_replicas"].as_u64(), pool["max_replicas"].as_u64()), (Some(1), Some(2)), "{pool}");
    assert_eq!((pool["instantiations"].as_u64(), pool["reuses"].as_u64()), (Some(2), Some(0)), "{pool}");
    assert_eq!((pool["live"].as_u64(), pool["busy"].as_u64()), (Some(2), Some(0)), "{pool}");
    let text = String::from_utf8_lossy(&project.cli(&["status"]).stdout).into_owned();
    let header = text.lines().find(|l| l.contains("INSTANTIATIONS")).unwrap_or_default();
    assert!(header.contains("LIVE") && header.contains("IDLE") && header.contains("QUEUED"), "{text}");
    let row: Vec<&str> =
        text.lines().find(|l| l.trim_start().starts_with("warm")).unwrap().split_whitespace().collect();
    assert_eq!(row, ["warm", "1/1-2", "2", "2", "0", "0", "1", "2", "0"], "{text}");
}

#[tokio::test]
async fn a_child_in_its_parents_pooled_environment_is_refused_at_once() {
    let project = pooled("{ replicas = 1, concurrency = 1 }");
    let host = project.host();
    let run =
        host.run("warm-probe", r#"{"mode": "call", "task": "warm-probe", "input": {"mode": "echo"}}"#).await.unwrap();
    let error = run.error.expect("refused");
    assert_eq!(error.kind, "invalid-child");
    assert!(error.message.contains("put the child task in another environment"), "{}", error.message);
}
