//! A tree of runs whose parents all wait on their children cannot starve
//! the host: waiting parents park their fresh-instance slots, no tree holds
//! more than half of them, and an unrelated run keeps its latency.

use std::time::{Duration, Instant};

use cairn::model::RunStatus;

use crate::support::project::Project;

/// The median time of `n` runs of `input`, one after the other.
async fn median_latency(host: &std::sync::Arc<cairn::runner::Host>, input: &str, n: usize) -> Duration {
    let mut took = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let run = host.run("probe", input).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
        took.push(started.elapsed());
    }
    took.sort();
    took[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tree_of_waiting_parents_does_not_starve_an_unrelated_run() {
    let project = Project::new(
        r#"
        [environments.trees]
        resources = { timeout = "60s" }

        [tasks.probe]
        component = "{probe}"
        environment = "trees"
        "#,
    );
    let host = project.host();
    // The unrelated run does a little work of its own (a 50 ms wait).
    let healthy = r#"{"mode": "sleep", "ms": 50}"#;
    median_latency(&host, healthy, 2).await;
    let unloaded = median_latency(&host, healthy, 5).await;

    // 255 parents, each waiting on two children, above 256 leaves that sleep:
    // more waiting parents than the host has fresh-instance slots (200).
    let bomb = r#"{"mode": "bomb", "width": 2, "levels": 8, "leaf_ms": 4000}"#;
    let tree = tokio::spawn({
        let host = host.clone();
        async move { host.run("probe", bomb).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let slots = host.fresh_instances();
        if slots.parked >= 150 && slots.held >= 90 {
            break;
        }
        assert!(Instant::now() < deadline, "the tree never filled the host: {slots:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let slots = host.fresh_instances();
    let policy = cairn::engine::FRESH_SLOTS;
    assert!(slots.held <= policy.slots - policy.reserve, "a tree leaves the reserve to others: {slots:?}");
    let loaded = median_latency(&host, healthy, 5).await;
    let tree = tree.await.unwrap().unwrap();
    assert_eq!(tree.status, RunStatus::Succeeded, "{:?}", tree.error);
    eprintln!("healthy run's median: {unloaded:?} unloaded, {loaded:?} beside a tree of 511 runs");
    assert!(loaded <= unloaded * 2, "{loaded:?} beside the tree, {unloaded:?} unloaded");
    assert_eq!(host.fresh_instances(), Default::default(), "every slot came back");
}
