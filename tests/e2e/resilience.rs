//! Resilience policies on real components with a test clock (no sleeping):
//! backoff sequences, retry_on, fallback chains, circuit breakers, parking
//! on a provider's breaker, the dead-letter queue, and on_oom.

use std::sync::Arc;
use std::time::Duration;

use cairn::clock::TestClock;
use cairn::model::{RunStatus, Tenant};
use cairn::store::prelude::*;

use crate::support::guests::{components, repo_root};
use crate::support::llm_server::{Fault, LlmServer, Script};
use crate::support::project::{Project, output_json};

/// `{writer}` and `{minimal}` become the resilience example components.
fn project(manifest: &str) -> Project {
    components();
    let built = repo_root().join("guest-examples/components");
    Project::new(
        &manifest
            .replace("{writer}", &built.join("flaky-writer.wasm").display().to_string())
            .replace("{minimal}", &built.join("minimal-writer.wasm").display().to_string()),
    )
}

fn kinds(run: &cairn::model::RunRecord) -> Vec<String> {
    run.attempts
        .iter()
        .map(|a| format!("{}:{}", a.task.as_deref().unwrap_or("?"), a.error.as_ref().map_or("ok", |e| e.kind.as_str())))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn backoff_follows_the_strategy_on_the_clock_and_spent_runs_go_to_the_dlq() {
    let project = project(
        r#"
        [tasks.exp]
        component = "{writer}"
        retries = { count = 4, strategy = "exponential", base_delay = "1s", max_delay = "1m" }

        [tasks.fib]
        component = "{writer}"
        retries = { count = 4, strategy = "fibonacci", base_delay = "1.5s" }

        [tasks.picky]
        component = "{writer}"
        retries = { count = 3, strategy = "linear", base_delay = "2s", retry_on = ["timeout"] }
        "#,
    );
    let clock = Arc::new(TestClock::new(1_000_000));
    let host = project.host_with_clock(clock.clone());
    let failing = r#"{"topic": "Tides", "always_fail": true}"#;
    let run = host.run("exp", failing).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.attempts.len(), 5);
    let secs = |list: &[f64]| list.iter().map(|s| Duration::from_secs_f64(*s)).collect::<Vec<_>>();
    assert_eq!(clock.sleeps(), secs(&[1.0, 2.0, 4.0, 8.0]));

    let fib = host.run("fib", failing).await.unwrap();
    assert_eq!(fib.attempts.len(), 5);
    assert_eq!(clock.sleeps()[4..], secs(&[1.5, 1.5, 3.0, 4.5]));

    let picky = host.run("picky", failing).await.unwrap();
    assert_eq!(picky.attempts.len(), 1, "`flaky` is not in retry_on");
    // A guest that claims a host-only kind gets no free retries.
    let posing =
        host.run("picky", r#"{"topic": "Tides", "always_fail": true, "fail_kind": "llm-circuit-open"}"#).await.unwrap();
    assert_eq!(posing.attempts.len(), 1, "{:?}", kinds(&posing));
    let not_retryable = host.run("exp", r#"{"no-topic": true}"#).await.unwrap();
    assert_eq!(kinds(&not_retryable), ["exp:invalid-input"], "a non-retryable error stops at once");

    let letters = host.store().dlq_list(&Tenant::default()).unwrap();
    assert_eq!(letters.len(), 5);
    let letter = letters.iter().find(|l| l.run_id == run.id).expect("the spent run is dead-lettered");
    assert_eq!(letter.input, failing);
    assert_eq!(letter.attempts.len(), 5);
    assert!(letter.attempts.iter().all(|a| a.error.as_ref().is_some_and(|e| e.kind == "flaky")));
    assert_eq!(letter.error.kind, "flaky");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fallback_chain_reaches_its_last_task() {
    let project = project(
        r#"
        [tasks.primary]
        component = "{writer}"
        retries = 1
        fallback = ["secondary", "minimal"]

        [tasks.secondary]
        component = "{writer}"

        [tasks.minimal]
        component = "{minimal}"
        "#,
    );
    let host = project.host_with_clock(Arc::new(TestClock::new(0)));
    let run = host.run("primary", r#"{"topic": "Tides", "always_fail": true}"#).await.unwrap();
    assert_eq!(kinds(&run), ["primary:flaky", "primary:flaky", "secondary:flaky", "minimal:ok"]);
    assert_eq!(run.produced_by.as_deref(), Some("minimal"));
    assert!(run.degraded);
    assert_eq!(output_json(&run)["writer"], "minimal-writer");
    assert!(host.store().dlq_list(&Tenant::default()).unwrap().is_empty(), "a degraded success is no dead letter");

    let healthy = host.run("primary", r#"{"topic": "Tides"}"#).await.unwrap();
    assert_eq!(healthy.produced_by.as_deref(), Some("primary"));
    assert!(!healthy.degraded);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_breaker_opens_fails_fast_half_opens_and_closes() {
    let project = project(
        r#"
        [tasks.guarded]
        component = "{writer}"
        circuit_breaker = { failure_threshold = 2, success_threshold = 1, timeout = "60s" }
        fallback = ["minimal"]

        [tasks.minimal]
        component = "{minimal}"
        "#,
    );
    let clock = Arc::new(TestClock::new(10_000_000));
    let host = project.host_with_clock(clock.clone());
    let failing = r#"{"topic": "Tides", "always_fail": true}"#;
    let state = |host: &cairn::runner::Host| {
        let stored = host.store().breakers(&Tenant::default()).unwrap();
        let state = stored.into_iter().find(|(n, _)| n == "task:guarded").unwrap().1;
        cairn::breakers::decode(&state).expect("a readable breaker state")
    };
    host.run("guarded", failing).await.unwrap();
    assert_eq!(state(&host).state_name(), "closed");
    host.run("guarded", failing).await.unwrap();
    assert_eq!(state(&host).state_name(), "open");
    // Open: the task is not attempted at all; the fallback answers.
    let fast = host.run("guarded", r#"{"topic": "Tides"}"#).await.unwrap();
    assert_eq!(kinds(&fast), ["guarded:circuit-open", "minimal:ok"]);
    // After the timeout a probe goes through; it fails: open again.
    clock.advance(Duration::from_secs(61));
    let probe = host.run("guarded", failing).await.unwrap();
    assert_eq!(kinds(&probe), ["guarded:flaky", "minimal:ok"]);
    assert_eq!(state(&host).state_name(), "open");
    assert_eq!(state(&host).opened, 2);
    // Next probe succeeds: closed.
    clock.advance(Duration::from_secs(61));
    let healed = host.run("guarded", r#"{"topic": "Tides"}"#).await.unwrap();
    assert_eq!(kinds(&healed), ["guarded:ok"]);
    assert_eq!(state(&host).state_name(), "closed");
    drop(host);

    let status = project.cli_json(&["status", "--json"]);
    let breaker = status["breakers"].as_array().unwrap().iter().find(|b| b["name"] == "task:guarded").unwrap();
    assert_eq!(breaker["state"], "closed");
    assert_eq!(breaker["times_opened"], 2);
    let guarded = status["tasks"].as_array().unwrap().iter().find(|t| t["task"] == "guarded").unwrap();
    assert_eq!(guarded["runs"], 5);
    assert_eq!(guarded["degraded"], 4, "runs 1 to 4 were answered by the fallback");
}

fn http_tasks(server: &LlmServer, tasks: &str, provider_extra: &str) -> Project {
    project(&format!(
        r#"
        [llm]
        default = "local"

        [llm.providers.local]
        kind = "openai-compatible"
        base_url = "{}"
        model = "test-model"
        timeout = "5s"
        max_retries = 0
        {provider_extra}
        {tasks}
        "#,
        server.base_url()
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_park_on_an_open_provider_breaker_and_resume_when_a_probe_succeeds() {
    let server = LlmServer::start(Script::new().faults([Fault::Status(503), Fault::Status(503)]));
    let project = http_tasks(
        &server,
        r#"
        [tasks.writer]
        component = "{writer}"
        retries = 2
        "#,
        r#"circuit_breaker = { failure_threshold = 2, success_threshold = 1, timeout = "30s" }"#,
    );
    let clock = Arc::new(TestClock::new(50_000_000));
    let host = project.host_with_clock(clock.clone());
    let run = host.run("writer", r#"{"topic": "Tides"}"#).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", kinds(&run));
    assert_eq!(
        kinds(&run),
        ["writer:llm-unavailable", "writer:llm-unavailable", "writer:llm-circuit-open", "writer:ok"]
    );
    assert_eq!(clock.sleeps(), [Duration::ZERO, Duration::ZERO, Duration::from_secs(30)], "parked until half-open");
    assert_eq!(server.requests(), 3, "no request while the breaker was open");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_fallback_answers_and_marks_the_run_degraded() {
    let server = LlmServer::start(Script::new().faults([Fault::Status(503)]));
    let project = http_tasks(
        &server,
        r#"
        [tasks.writer]
        component = "{writer}"
        cache = "auto"
        "#,
        r#"fallback = ["mock"]"#,
    );
    let host = project.host_with_clock(Arc::new(TestClock::new(0)));
    let run = host.run("writer", r#"{"topic": "Tides"}"#).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert!(run.degraded, "the mock, a fallback provider, answered");
    let again = host.run("writer", r#"{"topic": "Tides"}"#).await.unwrap();
    assert_eq!(again.cached_from, None, "a degraded answer is never cached");
    assert!(!again.degraded, "the provider is back");
    let journal = host.store().journal_of(&run.id).unwrap();
    assert!(journal.iter().any(|e| e.output.contains("\"provider\":\"mock\"")), "{journal:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_retry_does_not_repeat_completed_calls_and_can_stub_the_failing_one() {
    // Two calls succeed, then the provider is down for the rest of the run.
    let pass = || Fault::Delay(Duration::ZERO);
    let server = LlmServer::start(Script::new().faults([pass(), pass(), Fault::Status(503), Fault::Status(503)]));
    let project = http_tasks(
        &server,
        r#"
        [tasks.probe]
        component = "{probe}"
        retries = 1
        "#,
        "",
    );
    let clock = Arc::new(TestClock::new(0));
    let host = project.host_with_clock(clock.clone());
    let input = r#"{"mode": "llm-calls", "calls": 3}"#;
    let run = host.run("probe", input).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_ref().unwrap().kind, "llm-unavailable");
    assert_eq!(server.requests(), 4);
    drop(host);

    let listed = project.cli(&["dlq", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&run.id));
    let shown = project.cli_json(&["dlq", "show", &run.id]);
    assert_eq!(shown["input"], input);
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 2);

    // The provider is back: the retry replays the two recorded calls and makes only the third.
    let retried = project.cli_json(&["dlq", "retry", &run.id, "--json"]);
    assert_eq!(retried["status"], "succeeded", "{retried}");
    assert_eq!(server.requests(), 5);
    for i in 1..=2 {
        assert_eq!(server.count_for(&format!("question {i}")), 1, "question {i} is not asked again");
    }
    assert!(project.store().dlq_list(&Tenant::default()).unwrap().is_empty());

    // Another run fails on its third call; the retry stubs that call instead of asking.
    server.push_fault(pass());
    server.push_fault(pass());
    for _ in 0..2 {
        server.push_fault(Fault::Status(503));
    }
    let second =
        project.cli_json(&["run", "probe", "--json", "--input", r#"{"mode": "llm-calls", "calls": 3, "tag": 2}"#]);
    assert_eq!(second["status"], "failed");
    let before = server.requests();
    let stubbed = project.cli_json(&[
        "dlq",
        "retry",
        second["run_id"].as_str().unwrap(),
        "--stub-output",
        "stubbed answer",
        "--json",
    ]);
    assert_eq!(stubbed["status"], "succeeded", "{stubbed}");
    assert_eq!(stubbed["output"]["answers"][2], "stubbed answer");
    assert_eq!(server.requests(), before, "nothing was asked of the provider");
    let purge = project.cli(&["dlq", "purge"]);
    assert!(purge.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn on_oom_retries_with_more_memory() {
    let project = project(
        r#"
        [environments.small]
        resources = { memory = "32MiB" }

        [tasks.hungry]
        component = "{probe}"
        environment = "small"
        retries = 2
        on_oom = { grow = 2.0, max = "128MiB" }

        [tasks.capped]
        component = "{probe}"
        environment = "small"
        retries = 2
        on_oom = { grow = 2.0, max = "48MiB" }
        "#,
    );
    let host = project.host_with_clock(Arc::new(TestClock::new(0)));
    let run = host.run("hungry", r#"{"mode": "alloc", "mb": 40}"#).await.unwrap();
    assert_eq!(kinds(&run), ["hungry:out-of-memory", "hungry:ok"], "32 MiB is too little, 64 MiB is enough");
    let capped = host.run("capped", r#"{"mode": "alloc", "mb": 60}"#).await.unwrap();
    assert_eq!(capped.status, RunStatus::Failed);
    assert_eq!(capped.attempts.len(), 3, "growth stops at max; retries are spent");
}
