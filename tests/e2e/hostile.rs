//! A guest that attacks the host from inside the sandbox: a task that
//! submits itself without end is contained by its environment's tree limits
//! (children per run, depth, descendants per tree), each ending the run with
//! a kind of its own and never filling the store.

use cairn::model::{FailureKind, RunRecord, RunStatus, Tenant};
use cairn::runner::Host;
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
    let error = run.error.expect("the sixth child is refused");
    assert_eq!(error.kind, FailureKind::TooManyChildren, "{}", error.message);
    assert_eq!(run.attempts.len(), 1, "not retried");
    assert_eq!(all_runs(&host).len(), 1 + 5);
}

#[tokio::test]
async fn a_wide_bomb_stops_at_the_tree_limit_and_the_tree_stays_full_for_the_next_host() {
    let project = bomb_project("max_descendants = 20, max_depth = 8");
    let host = project.host();
    let run = host.run("probe", r#"{"mode": "bomb", "width": 3}"#).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.expect("the tree is full");
    assert_eq!(error.kind, FailureKind::TooManyDescendants, "{}", error.message);
    let below = all_runs(&host).into_iter().filter(|r| r.id != run.id).count();
    assert_eq!(below, 20, "exactly the tree's limit of runs below its top-level run");
    // Counted in the store, so another host (here: the next start) adds none.
    drop(host);
    let again = project.host();
    let resumed = again.resume(&Tenant::default(), &run.id, true).await;
    assert!(resumed.is_err(), "a finished bomb is not resumed");
    let held = again.store().ledger(&Tenant::default(), "descendants:").unwrap();
    assert_eq!(held.len(), 1);
    assert!(held[0].1.reserved <= 20, "{held:?}");
    assert_eq!(all_runs(&again).len(), 21);
}
