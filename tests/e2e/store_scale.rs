//! The store as a long-running service needs it: retention deletes what is
//! past its age and nothing else, a run's directory goes when it succeeds,
//! and `runs list` pages with a cursor.

use std::time::Duration;

use cairn::model::{
    AttemptLog, CallKind, DeadLetter, Failure, FailureKind, JournalEntry, ReplayKey, RunRecord, RunStatus, Tenant,
    now_ms,
};
use cairn::sandbox::RunDirs;
use cairn::store::StoreError;
use cairn::store::prelude::*;

use crate::support::project::Project;

const HOUR_MS: u64 = 3_600_000;

/// A run of `task` made `age_ms` ago (its id carries that time, as a real one would).
fn aged(task: &str, age_ms: u64, status: RunStatus) -> RunRecord {
    let made = now_ms() - age_ms;
    let stamp = uuid::Timestamp::from_unix(uuid::NoContext, made / 1000, ((made % 1000) * 1_000_000) as u32);
    let id = uuid::Uuid::new_v7(stamp).to_string();
    let mut run = RunRecord::new(id, Tenant::default(), task.into(), "{}".into());
    run.created_at_ms = made;
    run.status = status;
    if status.is_finished() {
        run.finished_at_ms = Some(made + 1000);
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_finished_runs_past_their_age_and_nothing_else() {
    let project = Project::new(
        r#"
        retention = { finished = "1h", failed = "2h" }

        [tasks.probe]
        component = "{probe}"
        "#,
    );
    let tenant = Tenant::default();
    let dirs = RunDirs::open(&project.path().join(".cairn/runs")).unwrap();
    let old_success = aged("probe", 3 * HOUR_MS, RunStatus::Succeeded);
    let success_past_finished = aged("probe", 90 * 60_000, RunStatus::Succeeded);
    let failure_past_failed = aged("probe", 3 * HOUR_MS, RunStatus::Failed);
    let failure_within_failed = aged("probe", 90 * 60_000, RunStatus::Failed);
    let old_running = aged("probe", 5 * HOUR_MS, RunStatus::Running);
    let old_pending = aged("probe", 5 * HOUR_MS, RunStatus::Pending);
    let recent = aged("probe", 60_000, RunStatus::Succeeded);
    let all = [
        &old_success,
        &success_past_finished,
        &failure_past_failed,
        &failure_within_failed,
        &old_running,
        &old_pending,
        &recent,
    ];
    {
        let store = project.store();
        for run in all {
            store.create_run(run).await.unwrap();
            let key = ReplayKey {
                run_id: run.id.clone(),
                kind: CallKind::Llm,
                name: "complete".into(),
                input_hash: "h".into(),
                occurrence: 1,
            };
            let entry = JournalEntry {
                key,
                seq: 0,
                attempt: 1,
                output: "{}".into(),
                summary: String::new(),
                recorded_at_ms: 0,
                duration_ms: 0,
                usage: None,
            };
            store.journal_put(&entry, None).await.unwrap();
            let log = AttemptLog { stdout: "out".into(), stderr: String::new() };
            store.put_log(&run.id, 1, &log).await.unwrap();
            std::fs::write(dirs.work_dir(&run.id).unwrap().join("file.txt"), "kept until the run goes").unwrap();
            if run.status == RunStatus::Failed {
                let letter = DeadLetter {
                    run_id: run.id.clone(),
                    task: run.task.clone(),
                    input: run.input.clone(),
                    failed_at_ms: run.finished_at_ms.unwrap(),
                    error: Failure::new(FailureKind::Trap, "t", true),
                    attempts: Vec::new(),
                };
                store.dlq_put(&tenant, &letter).await.unwrap();
            }
        }
    }
    let host = project.host();
    let report = host.apply_retention().await.unwrap();
    let mut removed = report.removed.clone();
    removed.sort();
    let mut expected = vec![old_success.id.clone(), success_past_finished.id.clone(), failure_past_failed.id.clone()];
    expected.sort();
    assert_eq!(removed, expected, "the host's own pass waits a minute, so this one did all the work");
    let store = host.store();
    for run in all {
        let gone = expected.contains(&run.id);
        match store.get_run(&tenant, &run.id) {
            Err(StoreError::NoSuchRun(id)) if gone => assert_eq!(id, run.id, "the error names the run"),
            Ok(kept) if !gone => assert_eq!(kept.id, run.id),
            other => panic!("run {} ({:?}), gone: {gone}: {other:?}", run.id, run.status),
        }
        assert_eq!(store.journal_of(&run.id).unwrap().is_empty(), gone, "journal of {}", run.id);
        assert_eq!(store.logs_of(&run.id).unwrap().is_empty(), gone, "logs of {}", run.id);
        let dir = project.path().join(".cairn/runs").join(&run.id);
        assert_eq!(!dir.exists(), gone, "directory of {}", run.id);
    }
    let letters: Vec<String> = store.dlq_list(&tenant).unwrap().into_iter().map(|l| l.run_id).collect();
    assert_eq!(letters, std::slice::from_ref(&failure_within_failed.id), "the dead letter goes with its run");
    assert_eq!(store.dlq_count(&tenant).unwrap(), 1);
    assert!(store.dlq_get(&tenant, &failure_within_failed.id).unwrap().is_some());
    assert!(store.dlq_get(&tenant, &failure_past_failed.id).unwrap().is_none());
    // A second pass finds nothing more to do.
    assert!(host.apply_retention().await.unwrap().removed.is_empty());
    let stats: std::collections::BTreeMap<_, _> = store.task_stats(&tenant).unwrap().into_iter().collect();
    assert_eq!(stats["probe"].runs, 4, "the counts follow the deletions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_succeeded_runs_directory_goes_when_it_ends_unless_kept() {
    for (keep, expect_dir) in [("false", false), ("true", true)] {
        let project = Project::new(&format!(
            r#"
            retention = {{ keep_dirs = {keep} }}

            [tasks.probe]
            component = "{{probe}}"
            "#
        ));
        let host = project.host();
        let wrote = host.run("probe", r#"{"mode": "fs"}"#).await.unwrap();
        assert_eq!(wrote.status, RunStatus::Succeeded, "{:?}", wrote.error);
        let dir = project.path().join(".cairn/runs").join(&wrote.id);
        assert_eq!(dir.exists(), expect_dir, "keep_dirs = {keep}");
        // A failed run keeps its directory for a dead-letter retry.
        let failed = host.run("probe", r#"{"mode": "trap"}"#).await.unwrap();
        assert_eq!(failed.status, RunStatus::Failed);
        assert!(project.path().join(".cairn/runs").join(&failed.id).is_dir(), "keep_dirs = {keep}");
    }
}

#[test]
fn runs_list_pages_with_a_cursor_and_lists_children_of_a_run() {
    let project = Project::new(
        r#"
        [tasks.probe]
        component = "{probe}"
        "#,
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ids: Vec<String> = runtime.block_on(async {
        let host = project.host();
        let mut ids = Vec::new();
        for i in 0..7 {
            ids.push(host.run("probe", &format!(r#"{{"mode": "echo", "i": {i}}}"#)).await.unwrap().id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ids
    });
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let page = |extra: &[&str]| -> (Vec<String>, String) {
        let mut args = vec!["runs", "list", "--json", "--limit", "3"];
        args.extend_from_slice(extra);
        let out = project.cli(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ids = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["run_id"].as_str().unwrap().to_owned())
            .collect();
        (ids, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (first, _) = page(&[]);
    assert_eq!(first, newest_first[..3]);
    let (second, _) = page(&["--before", &first[2]]);
    assert_eq!(second, newest_first[3..6]);
    let (third, _) = page(&["--before", &second[2]]);
    assert_eq!(third, newest_first[6..]);
    let table = project.cli(&["runs", "list", "--limit", "3"]);
    let hint = String::from_utf8_lossy(&table.stderr);
    assert!(hint.contains(&format!("--before {}", first[2])), "the table names the next page: {hint}");
    let (none, _) = page(&["--parent", &ids[0]]);
    assert!(none.is_empty(), "a probe echo submits no children");
}
