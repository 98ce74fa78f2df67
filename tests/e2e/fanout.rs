//! Child runs through `tasks`: bounded fan-out, groups in the journal, a
//! parent retried or killed and resumed without resubmitting its children,
//! errors, progress output, and children from Python.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn::model::{CallKind, RunRecord, RunStatus, Tenant};
use cairn::store::RunFilter;
use cairn::store::prelude::*;
use serde_json::{Value, json};

use crate::support::guests::cairn_bin;
use crate::support::llm_server::{Fault, LlmServer, Script};
use crate::support::project::{Project, REFINER_CALLS, driver_and_refiner, output_json, refiner_script};

/// The probe as a fan-out parent (fresh instances) and as pooled children.
const PROBES: &str = r#"
[environments.workers]
resources = { memory = "64MiB", timeout = "30s" }
reuse = { replicas = 2, concurrency = 4 }

[tasks.parent]
component = "{probe}"
retries = 1

[tasks.child]
component = "{probe}"
environment = "workers"
"#;

fn children_of(store: &dyn Store, parent: &str) -> Vec<RunRecord> {
    let runs = store.list_runs(&Tenant::default(), &RunFilter::default()).unwrap();
    runs.into_iter().filter(|r| r.parent.as_deref() == Some(parent)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_children_never_exceeds_replicas_times_concurrency() {
    let project = Project::new(PROBES);
    let host = project.host();
    let parent =
        json!({"mode": "fanout", "task": "child", "count": 500, "child": {"mode": "sleep", "ms": 2, "i": null}});
    let run = host.run("parent", &parent.to_string()).await.unwrap();
    let output = output_json(&run);
    assert_eq!((output["children"].as_u64(), output["failed"].as_u64()), (Some(500), Some(0)), "{output}");
    let pool = host.pools().into_iter().map(|p| p.stats()).find(|s| s.environment == "workers").unwrap();
    assert!(pool.peak_busy <= 8, "at most 2 replicas × 4 instances busy at once: {pool:?}");
    assert_eq!(pool.instantiations, 8, "2 replicas × 4 warmed at start, none made later: {pool:?}");
    assert_eq!(pool.reuses, 492, "each warmed instance's first call is not a reuse; every other call is: {pool:?}");
    let children = children_of(host.store().as_ref(), &run.id);
    assert_eq!(children.len(), 500);
    assert!(children.iter().all(|c| c.status == RunStatus::Succeeded));
    let progress = host.progress().snapshot();
    assert_eq!((progress.children, progress.succeeded, progress.running), (500, 500, 0), "{progress:?}");
    // The rest wait for their turn, holding no run's working state.
    let window = cairn::runner::children::CHILDREN_IN_FLIGHT as u64;
    assert!(progress.peak_running > 8 && progress.peak_running <= window, "{progress:?}");
}

#[tokio::test]
async fn groups_and_children_are_recorded_in_the_parents_journal() {
    let project = Project::new(
        r#"
        [tasks.report-refiner]
        component = "{refiner}"

        [tasks.batch-driver]
        component = "{batch_driver}"
        "#,
    );
    let host = project.host();
    let input = json!({"topics": ["Tides", "Comets", "Glaciers"], "batch_size": 2});
    let run = host.run("batch-driver", &input.to_string()).await.unwrap();
    let output = output_json(&run);
    assert_eq!(output["succeeded"], 3, "{output}");
    let journal = host.store().journal_of(&run.id).unwrap();
    let shape: Vec<(CallKind, String)> = journal.iter().map(|e| (e.key.kind, e.key.name.clone())).collect();
    let expected = [
        (CallKind::Group, "batch-1"),
        (CallKind::Child, "report-refiner"),
        (CallKind::Child, "report-refiner"),
        (CallKind::Group, "batch-2"),
        (CallKind::Child, "report-refiner"),
    ];
    assert_eq!(shape, expected.map(|(k, n)| (k, n.to_owned())), "in submission order");
    let children = children_of(host.store().as_ref(), &run.id);
    assert_eq!(children.len(), 3);
    for entry in journal.iter().filter(|e| e.key.kind == CallKind::Child) {
        let link: Value = serde_json::from_str(&entry.output).unwrap();
        let child = children.iter().find(|c| c.id == link["run_id"]).expect("the journal names a real child");
        assert_eq!(child.group.as_deref(), link["group"].as_str(), "{link}");
        assert!(child.group.as_deref().unwrap().starts_with("batch-"));
    }
    let reported: Vec<&str> =
        output["reports"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert!(reported.iter().all(|id| children.iter().any(|c| c.id == *id)));
}

#[tokio::test]
async fn a_retried_parent_reattaches_to_its_children_instead_of_resubmitting() {
    let server = LlmServer::start(Script::new().reply("question", "an answer"));
    let project = Project::http(&server, PROBES);
    let parent = json!({
        "mode": "fanout", "task": "child", "count": 4, "fail_on_first_attempt": true,
        "child": {"mode": "llm-calls", "calls": 1, "i": null},
    });
    let run = project.host().run("parent", &parent.to_string()).await.unwrap();
    let output = output_json(&run);
    assert_eq!(run.attempts.len(), 2, "attempt 1 failed on purpose after its children finished");
    assert_eq!(output["failed"], 0, "{output}");
    let store = project.store();
    assert_eq!(children_of(&store, &run.id).len(), 4, "no child was submitted twice");
    // Four children with one call each: one request each, none again for the retry.
    assert_eq!(server.requests(), 4);
}

#[tokio::test]
async fn submission_errors_are_clear_task_errors() {
    let project = Project::new(PROBES);
    let host = project.host();
    let unknown = host.run("parent", r#"{"mode": "call", "task": "nope", "input": {}}"#).await.unwrap();
    let error = unknown.error.unwrap();
    assert_eq!(error.kind, "unknown-task");
    assert!(error.message.contains("no task of that name"), "{}", error.message);
    let failing =
        json!({"mode": "call", "task": "child", "input": {"mode": "error", "kind": "bad-topic", "retryable": false}});
    let failed = host.run("parent", &failing.to_string()).await.unwrap();
    let error = failed.error.unwrap();
    assert_eq!(error.kind, "bad-topic", "the child's own error kind reaches the parent");
    assert!(error.message.contains("child run") && error.message.contains("failed"), "{}", error.message);
}

#[test]
fn run_shows_plain_progress_lines_off_a_terminal_and_none_when_quiet() {
    let project = Project::new(PROBES);
    let input = json!({"mode": "fanout", "task": "child", "count": 20, "child": {"mode": "sleep", "ms": 5, "i": null}})
        .to_string();
    let out = project.cli(&["run", "parent", "--input", &input]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("children 20/20 done · 0 running · 0 failed · 0 retrying"), "{stderr}");
    assert!(!stderr.contains('\r'), "no in-place redraws when stderr is not a terminal: {stderr:?}");
    assert!(stderr.contains("children: 20 succeeded, 0 failed"), "{stderr}");
    let quiet = project.cli(&["run", "parent", "--quiet", "--input", &input]);
    let stderr = String::from_utf8_lossy(&quiet.stderr);
    assert!(quiet.status.success(), "{stderr}");
    assert!(!stderr.contains("children 20/20"), "{stderr}");
}

#[tokio::test]
async fn a_python_task_submits_children_and_sees_its_run() {
    let project = Project::new(
        r#"
        [tasks.py-probe]
        component = "{py_probe}"

        [tasks.child]
        component = "{probe}"
        "#,
    );
    let host = project.host();
    let run =
        host.run("py-probe", r#"{"mode": "call", "task": "child", "input": {"mode": "echo", "n": 7}}"#).await.unwrap();
    assert_eq!(output_json(&run)["output"], json!({"mode": "echo", "n": 7}));
    let children = children_of(host.store().as_ref(), &run.id);
    assert_eq!(children.len(), 1);
    let context = host.run("child", r#"{"mode": "counter"}"#).await.unwrap();
    assert_eq!(output_json(&context)["run_id"], context.id.as_str());
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_parent_killed_mid_fan_out_resumes_without_resubmitting_finished_children() {
    let topics = ["Tides", "Comets", "Glaciers", "Deserts", "Reefs", "Moons"];
    // Slow answers, so the kill lands with some children done and others mid-way.
    let server =
        LlmServer::start_blocking(refiner_script().faults((0..200).map(|_| Fault::Delay(Duration::from_millis(60)))));
    let project = Project::http(&server, &driver_and_refiner("{ replicas = 1, concurrency = 2 }"));
    let input = json!({"topics": topics}).to_string();
    let mut cairn = Command::new(cairn_bin())
        .arg("--manifest")
        .arg(&project.manifest)
        .args(["run", "batch-driver", "--quiet", "--input", &input])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Two children at a time: after 2 × 5 + 3 requests the first two are done.
    wait_until("13 requests", Duration::from_secs(60), || server.requests() >= 2 * REFINER_CALLS + 3);
    cairn.kill().unwrap(); // SIGKILL
    cairn.wait().unwrap();
    let seen_at_kill = server.requests();

    let (parent, finished_before, journaled) = {
        let store = project.store();
        let runs = store.list_runs(&Tenant::default(), &RunFilter::default()).unwrap();
        let parent = runs.iter().find(|r| r.task == "batch-driver").expect("the parent was recorded").clone();
        assert_eq!(parent.status, RunStatus::Running);
        let children = children_of(&store, &parent.id);
        let finished: Vec<RunRecord> = children.iter().filter(|c| c.status == RunStatus::Succeeded).cloned().collect();
        let journaled: usize = children
            .iter()
            .map(|c| store.journal_of(&c.id).unwrap().iter().filter(|e| e.key.kind == CallKind::Llm).count())
            .sum();
        (parent, finished, journaled)
    };
    assert!(finished_before.len() >= 2, "{} children had finished at the kill", finished_before.len());
    assert!(finished_before.len() < topics.len(), "the kill came mid-fan-out");

    let resumed = project.cli_json(&["runs", "resume", &parent.id, "--json"]);
    assert_eq!(resumed["status"], "succeeded", "{resumed}");
    assert_eq!(resumed["output"]["succeeded"], 6, "{resumed}");
    let after = server.requests() - seen_at_kill;
    eprintln!(
        "{} children finished and {journaled} calls journaled at the kill ({seen_at_kill} requests); {after} requests after resuming",
        finished_before.len()
    );
    assert_eq!(after, topics.len() * REFINER_CALLS - journaled, "only calls that were not journaled are made again");

    let store = project.store();
    let children = children_of(&store, &parent.id);
    assert_eq!(children.len(), topics.len(), "no child was submitted twice");
    for done in &finished_before {
        let now = children.iter().find(|c| c.id == done.id).unwrap();
        assert_eq!(now.attempts.len(), done.attempts.len(), "finished child {} did not run again", done.id);
    }
    let reported: Vec<&str> =
        resumed["output"]["reports"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    for done in &finished_before {
        assert!(reported.contains(&done.id.as_str()), "the resumed parent used child {}'s result", done.id);
    }
}

#[tokio::test]
async fn a_parent_failing_right_after_submitting_is_retried_without_duplicate_children() {
    let project = Project::new(PROBES);
    let host = project.host();
    let parent = json!({
        "mode": "fanout", "task": "child", "count": 50, "fail_after_submitting": true,
        "child": {"mode": "sleep", "ms": 20, "i": null},
    });
    let run = host.run("parent", &parent.to_string()).await.unwrap();
    let output = output_json(&run);
    assert_eq!(run.attempts.len(), 2, "attempt 1 failed at once, attempt 2 re-attached: {:?}", run.attempts);
    assert_eq!((output["children"].as_u64(), output["failed"].as_u64()), (Some(50), Some(0)), "{output}");
    let children = children_of(host.store().as_ref(), &run.id);
    assert_eq!(children.len(), 50, "every submission of the retry found the first attempt's child");
}

#[tokio::test]
async fn a_child_whose_parent_finished_is_recovered_on_its_own() {
    let project = Project::new(PROBES);
    let stranded = {
        let store = project.store();
        let record = |id: &str, task: &str, status: RunStatus| RunRecord {
            status,
            // A host of another machine whose lease ran out long ago.
            lease: Some(cairn::model::Lease { owner: "elsewhere-1".into(), expires_at_ms: 2 }),
            ..RunRecord::new(id.into(), Tenant::default(), task.into(), r#"{"mode": "echo", "n": 1}"#.into())
        };
        let mut parent = record("01900000-0000-7000-8000-00000000000a", "parent", RunStatus::Failed);
        parent.lease = None;
        let mut child = record("01900000-0000-7000-8000-00000000000b", "child", RunStatus::Running);
        child.parent = Some(parent.id.clone());
        store.create_run(&parent).await.unwrap();
        store.create_run(&child).await.unwrap();
        child.id
    };
    let host = project.host();
    let recovered = host.recover().await.unwrap();
    let child = recovered.iter().find(|r| r.id == stranded).expect("the stranded child was resumed");
    assert_eq!(child.status, RunStatus::Succeeded, "{child:?}");
}
