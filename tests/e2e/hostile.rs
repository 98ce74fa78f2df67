//! A guest that attacks the host from inside the sandbox: a task that
//! submits itself without end is contained by its environment's tree limits
//! (children per run, depth, descendants per tree), each ending the run with
//! a kind of its own and never filling the store.

use cairn::model::{FailureKind, RunRecord, RunStatus, Tenant};
use cairn::runner::Host;
use cairn::store::prelude::*;
use cairn::store::{Lineage, RunFilter};

use crate::support::project::Project;

fn bomb_project(limits: &str) -> Project {
    Project::new(&format!(
        r#"
        [environments.bombs]
        resources = {{ timeout = "60s", {limits} }}

        [tasks.probe]
        component = "{{probe}}"
        environment = "bombs"
        retries = 2
        "#
    ))
}

/// Every run of the default tenant in `host`'s store.
fn all_runs(host: &Host) -> Vec<RunRecord> {
    let filter = RunFilter { lineage: Lineage::Any, limit: Some(100_000), ..Default::default() };
    host.store().list_runs(&Tenant::default(), &filter).unwrap()
}

#[tokio::test]
async fn a_self_submitting_chain_stops_at_the_depth_limit() {
    let project = bomb_project("max_depth = 3");
    let host = project.host();
    let run = host.run("probe", r#"{"mode": "bomb", "width": 1}"#).await.unwrap();
    host.wait_for_children().await;
    let error = run.error.expect("the bomb is refused");
    assert_eq!(error.kind, FailureKind::TooDeep, "{}", error.message);
    assert!(!error.retryable);
    assert_eq!(run.attempts.len(), 1, "not retried");
    assert!(error.message.contains("max_depth"), "{}", error.message);
    let runs = all_runs(&host);
    let mut depths: Vec<u32> = runs.iter().map(|r| r.depth).collect();
    depths.sort();
    assert_eq!(depths, [0, 1, 2, 3], "a top-level run and three levels below it");
    assert!(runs.iter().filter(|r| r.depth > 0).all(|r| r.root.as_deref() == Some(run.id.as_str())));
}

#[tokio::test]
async fn a_run_submits_no_more_children_than_its_limit() {
    let project = bomb_project("max_children = 5");
    let host = project.host();
    let input = r#"{"mode": "fanout", "count": 8, "child": {"mode": "echo", "i": null}}"#;
    let run = host.run("probe", input).await.unwrap();
    host.wait_for_children().await;
    let error = run.error.expect("the sixth child is refused");
    assert_eq!(error.kind, FailureKind::TooManyChildren, "{}", error.message);
    assert_eq!(run.attempts.len(), 1, "not retried");
    assert_eq!(all_runs(&host).len(), 1 + 5);
}

#[tokio::test]
async fn a_wide_bomb_stops_at_the_tree_limit_and_its_retry_grows_it_no_further() {
    // Past a host's first chunk of 64, so both ways of counting are taken.
    let project = bomb_project("max_descendants = 150, max_depth = 8");
    let host = project.host();
    let run = host.run("probe", r#"{"mode": "bomb", "width": 3}"#).await.unwrap();
    host.wait_for_children().await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.clone().expect("the tree is full");
    assert_eq!(error.kind, FailureKind::TooManyDescendants, "{}", error.message);
    let below = all_runs(&host).into_iter().filter(|r| r.id != run.id).count();
    assert!((150 - 64..=150).contains(&below), "{below} runs below the top-level run: never past the limit");
    let held = host.store().ledger(&Tenant::default(), "descendants:").unwrap();
    assert_eq!(held.len(), 1);
    assert!(held[0].1.reserved <= 150, "{held:?}");
    // Retried from the dead-letter queue, the bomb re-attaches to its tree and adds nothing.
    let retried = host.retry_dead(&Tenant::default(), &run.id, None).await.unwrap();
    host.wait_for_children().await;
    assert_eq!(retried.status, RunStatus::Failed);
    assert_eq!(all_runs(&host).len(), below + 1, "no run was added by the retry");
}

#[tokio::test]
async fn a_tree_that_hit_its_limit_is_cancelled_not_resumed() {
    let project = bomb_project("max_children = 3");
    let host = project.host();
    // Three children that would sleep for a minute, then a fourth, refused.
    let input = r#"{"mode": "fanout", "count": 4, "child": {"mode": "sleep", "ms": 60000, "i": null}}"#;
    let run = host.run("probe", input).await.unwrap();
    let error = run.error.clone().expect("the fourth child is refused");
    assert_eq!(error.kind, FailureKind::TooManyChildren, "{}", error.message);
    // What the tree still had running is cancelled rather than left to sleep out.
    if tokio::time::timeout(std::time::Duration::from_secs(30), host.wait_for_children()).await.is_err() {
        let left: Vec<_> = all_runs(&host)
            .into_iter()
            .filter(|r| !r.status.is_finished())
            .map(|r| (r.id, r.depth, r.status, r.parent, r.attempts.len()))
            .collect();
        panic!("the rest of the tree never ended: {left:?}");
    }
    let runs = all_runs(&host);
    assert!(runs.iter().all(|r| r.status.is_finished()), "{:?}", runs.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(runs.iter().any(|r| r.status == RunStatus::Cancelled), "the sleeping leaves were cancelled");

    // A run of that tree a crashed host left behind is cancelled at the next
    // start, not resumed (and growing the tree) at every start.
    let mut orphan = runs.iter().find(|r| r.depth == 1).expect("a child").clone();
    orphan.id = uuid::Uuid::now_v7().to_string();
    orphan.status = RunStatus::Running;
    orphan.error = None;
    orphan.finished_at_ms = None;
    orphan.lease = Some(cairn::model::Lease { owner: "gone-host".into(), expires_at_ms: 1 });
    host.store().create_run(&orphan).await.unwrap();
    let recovered = host.recover().await.unwrap();
    let ended = recovered.iter().find(|r| r.id == orphan.id).expect("looked at by recovery");
    assert_eq!(ended.status, RunStatus::Cancelled, "{:?}", ended.error);
    assert_eq!(all_runs(&host).len(), runs.len() + 1, "nothing was added to the tree");
}

#[tokio::test]
async fn an_input_error_report_or_group_past_its_limit_ends_the_run_with_its_own_kind() {
    let project = bomb_project(r#"max_input = "2KiB", max_report = "64KiB", max_journal = "64KiB""#);
    let host = project.host();

    let big = format!(r#"{{"mode": "echo", "pad": "{}"}}"#, "x".repeat(4096));
    let run = host.run("probe", &big).await.unwrap();
    assert_eq!(run.error.as_ref().map(|e| e.kind.clone()), Some(FailureKind::InputTooLarge), "{:?}", run.error);
    assert!(run.input.len() < 512, "the record keeps the input's start only");
    let long = format!(r#"{{"mode": "error", "kind": "{}", "message": "{}"}}"#, "k".repeat(500), "m".repeat(1500));
    let run = host.run("probe", &long).await.unwrap();
    let error = run.error.unwrap();
    assert!(error.kind.as_str().len() < 200 && error.kind.as_str().contains("cut by the host"), "{}", error.kind);

    let flood = r#"{"mode": "flood", "report_bytes": 16384, "times": 8}"#;
    let run = host.run("probe", flood).await.unwrap();
    let error = run.error.expect("the report is refused");
    assert_eq!((error.kind.clone(), error.retryable), (FailureKind::ReportTooLarge, false), "{}", error.message);
    assert_eq!(run.attempts.len(), 1);

    for groups in [r#"{"mode": "flood", "groups": 100}"#, r#"{"mode": "flood", "groups": 2, "name_bytes": 2000}"#] {
        let run = host.run("probe", groups).await.unwrap();
        let error = run.error.expect("the groups are refused");
        assert_eq!(error.kind, FailureKind::GroupLimit, "{}", error.message);
    }
    let traces = r#"{"mode": "flood", "traces": 10, "trace_bytes": 16384}"#;
    let run = host.run("probe", traces).await.unwrap();
    let error = run.error.expect("the journal is refused");
    assert_eq!((error.kind.clone(), error.retryable), (FailureKind::JournalTooLarge, false), "{}", error.message);
    assert!(error.message.contains("max_journal"), "{}", error.message);
    let fine = r#"{"mode": "flood", "report_bytes": 1000, "groups": 10, "traces": 2, "trace_bytes": 1000}"#;
    let fine = host.run("probe", fine).await.unwrap();
    assert_eq!(fine.status, RunStatus::Succeeded, "{:?}", fine.error);
}

#[test]
fn a_guests_error_message_is_kept_to_16_kib() {
    let project = bomb_project("max_children = 5");
    let message = "m".repeat(100_000);
    let input = serde_json::json!({"mode": "error", "kind": "boom", "message": message}).to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let run = runtime.block_on(project.host().run("probe", &input)).unwrap();
    let error = run.error.unwrap();
    assert!(error.message.len() < 17 << 10, "{}", error.message.len());
    assert!(error.message.ends_with("more bytes cut by the host]"));
}

#[test]
fn gc_removes_a_tree_of_any_depth_and_keeps_a_run_whose_files_it_cannot_remove() {
    let project = bomb_project("max_children = 5");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (deep, stuck) = runtime.block_on(async {
        let host = project.host();
        let failing = r#"{"mode": "error", "kind": "boom"}"#;
        (host.run("probe", failing).await.unwrap(), host.run("probe", failing).await.unwrap())
    });
    let runs = project.path().join(".cairn/runs");
    // A tree deeper than a process may hold descriptors, made through handles as a guest can.
    std::fs::create_dir_all(runs.join(&deep.id).join("work")).unwrap();
    let mut level =
        cap_std::fs::Dir::open_ambient_dir(runs.join(&deep.id).join("work"), cap_std::ambient_authority()).unwrap();
    for _ in 0..3_000 {
        level.create_dir("d").unwrap();
        level = level.open_dir("d").unwrap();
    }
    drop(level);
    // A "directory" that is a file: it cannot be removed as one.
    std::fs::remove_dir_all(runs.join(&stuck.id)).ok();
    std::fs::write(runs.join(&stuck.id), b"not a directory").unwrap();
    let out = project.cli(&["gc", "--older-than", "0s"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("kept run {}", stuck.id)), "{said}");
    assert!(!runs.join(&deep.id).exists(), "the deep tree is gone");
    let store = project.store();
    assert!(store.get_run(&Tenant::default(), &deep.id).is_err());
    assert!(store.get_run(&Tenant::default(), &stuck.id).is_ok(), "its record stays with its files");
}
