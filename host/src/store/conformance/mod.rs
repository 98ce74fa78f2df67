//! What every store does, as tests: the same checks run against redb and
//! against PostgreSQL (`conformance_suite!` in each store's tests), so a
//! store is a drop-in for another only if it passes them all.

mod dead_letters;
mod tenancy;

use std::collections::HashSet;
use std::sync::Arc;

use super::prelude::*;
use super::{Beat, Lineage, RunFilter, StoreError};
use crate::model::{
    AttemptLog, AttemptRecord, CacheEntry, CallKind, DeadLetter, Executor, Failure, FailureKind, JournalEntry, Lease,
    ReplayKey, Report, RunRecord, RunStatus, Tenant,
};

/// A store under test, with whatever must live as long as it (a directory).
pub struct Subject {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Kept alive for the test.
    pub _keep: Box<dyn std::any::Any + Send>,
}

/// Generates one test per check, each on a store made by `$make` (an
/// expression giving a [`Subject`]).
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::store::conformance::conformance_suite!(@tests $make;
            runs_are_created_listed_and_paged,
            finished_runs_are_found_among_many,
            the_first_journal_record_of_a_key_wins,
            leases_are_claimed_renewed_lost_and_fenced,
            stale_records_are_refused_among_good_ones,
            cancel_requests_reach_the_holder,
            runnable_runs_are_claimed_once_each,
            task_stats_follow_every_write,
            deleting_a_run_deletes_what_it_left,
            logs_reports_cache_and_dead_letters,
            a_run_is_failed_and_filed_in_one_write,
            a_dead_run_is_reopened_and_taken_out_in_one_write,
            breakers_counters_and_secrets,
            breaker_transitions_are_never_lost,
            executors_are_recorded_and_forgotten,
            concurrent_journal_writes_are_all_kept,
            tenants_are_found_with_and_without_work,
            a_tenant_sees_nothing_of_another,
            tokens_are_kept_by_id_and_listed_by_tenant,
            every_tenants_secrets_are_listed,
            concurrent_reservations_never_pass_a_limit,
            usage_records_and_quotas_are_kept_per_tenant,
        );
    };
    (@tests $make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let subject: $crate::store::conformance::Subject = $make;
                $crate::store::conformance::$check(subject.store.clone()).await;
            }
        )+
    };
}
pub(crate) use conformance_suite;
pub use dead_letters::*;
pub use tenancy::*;

fn tenant() -> Tenant {
    Tenant::default()
}

/// A run whose id sorts by `n` (as UUIDv7 ids sort by creation).
fn run(n: u32, task: &str) -> RunRecord {
    RunRecord::new(format!("0000-{n:06}"), tenant(), task.into(), "{}".into())
}

fn entry(run_id: &str, name: &str, seq: u64, output: &str) -> JournalEntry {
    JournalEntry {
        key: ReplayKey {
            run_id: run_id.into(),
            kind: CallKind::Llm,
            name: name.into(),
            input_hash: "h".into(),
            occurrence: 1,
        },
        seq,
        attempt: 1,
        output: output.into(),
        summary: String::new(),
        recorded_at_ms: 0,
        duration_ms: 0,
        usage: None,
    }
}

fn ids(runs: &[RunRecord]) -> Vec<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

fn finished(mut run: RunRecord, status: RunStatus) -> RunRecord {
    run.status = status;
    run.lease = None;
    run.finished_at_ms = Some(1);
    if status == RunStatus::Failed {
        run.error = Some(Failure::new(FailureKind::Trap, "no", false));
    }
    run
}

pub async fn finished_runs_are_found_among_many(store: Arc<dyn Store>) {
    let t = tenant();
    for n in 0..6 {
        store.create_run(&run(n, "a")).await.unwrap();
    }
    for (n, status) in [(1, RunStatus::Succeeded), (2, RunStatus::Failed), (3, RunStatus::Cancelled)] {
        let current = store.get_run(&t, &run(n, "a").id).unwrap();
        store.update_run(&finished(current.clone(), status), &current.fence("nobody")).await.unwrap();
    }
    let asked: Vec<String> = [0, 1, 2, 3, 4, 9].iter().map(|n| run(*n, "a").id).collect();
    let mut found = store.finished_among(&t, &asked).unwrap();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let found_ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(found_ids, ["0000-000001", "0000-000002", "0000-000003", "0000-000009"], "finished or not stored");
    assert_eq!(found[1].1.as_ref().map(|r| r.status), Some(RunStatus::Failed));
    assert_eq!(found[0].1.as_ref().map(|r| r.id.as_str()), Some("0000-000001"));
    assert!(found[3].1.is_none(), "an id not stored is said to be gone");
    let other = Tenant { project: "p".into(), domain: "d".into() };
    let elsewhere = store.finished_among(&other, &asked).unwrap();
    assert!(elsewhere.iter().all(|(_, run)| run.is_none()), "tenant-scoped: none of them is stored there");
    assert!(store.finished_among(&t, &[]).unwrap().is_empty());
}

pub async fn runs_are_created_listed_and_paged(store: Arc<dyn Store>) {
    let t = tenant();
    let parent = run(1, "a");
    store.create_run(&parent).await.unwrap();
    store.create_run(&run(2, "b")).await.unwrap();
    let mut child = run(3, "a");
    child.parent = Some(parent.id.clone());
    child.status = RunStatus::Pending;
    store.create_run(&child).await.unwrap();
    let again = store.create_run(&run(2, "b")).await;
    assert!(again.is_err(), "a second run with an existing id is refused");
    assert_eq!(store.get_run(&t, "0000-000002").unwrap().task, "b", "the first record stays");
    assert!(matches!(store.get_run(&t, "nope"), Err(StoreError::NoSuchRun(_))));
    let other = Tenant { project: "p".into(), domain: "d".into() };
    assert!(matches!(store.get_run(&other, &parent.id), Err(StoreError::NoSuchRun(_))), "runs are tenant-scoped");

    let all = store.list_runs(&t, &RunFilter::default()).unwrap();
    assert_eq!(ids(&all), ["0000-000003", "0000-000002", "0000-000001"], "newest first");
    let of_a = store.list_runs(&t, &RunFilter { task: Some("a".into()), ..Default::default() }).unwrap();
    assert_eq!(ids(&of_a), ["0000-000003", "0000-000001"]);
    let pending = store.list_runs(&t, &RunFilter { status: Some(RunStatus::Pending), ..Default::default() }).unwrap();
    assert_eq!(ids(&pending), ["0000-000003"]);
    let top = store.list_runs(&t, &RunFilter { lineage: Lineage::TopLevel, ..Default::default() }).unwrap();
    assert_eq!(ids(&top), ["0000-000002", "0000-000001"]);
    let children =
        store.list_runs(&t, &RunFilter { lineage: Lineage::ChildrenOf(parent.id.clone()), ..Default::default() });
    assert_eq!(ids(&children.unwrap()), ["0000-000003"]);
    let page = store.list_runs(&t, &RunFilter { limit: Some(2), ..Default::default() }).unwrap();
    assert_eq!(ids(&page), ["0000-000003", "0000-000002"]);
    let next = store
        .list_runs(&t, &RunFilter { limit: Some(2), before: Some("0000-000002".into()), ..Default::default() })
        .unwrap();
    assert_eq!(ids(&next), ["0000-000001"], "the next page starts after the cursor");
    assert!(store.list_runs(&other, &RunFilter::default()).unwrap().is_empty());
    // A record comes back as written.
    let mut full = run(4, "c");
    full.attempts.push(AttemptRecord::not_attempted(1, Some("c".into()), Failure::host("x"), 5, 6));
    full.group = Some("g".into());
    full.degraded = true;
    store.create_run(&full).await.unwrap();
    assert_eq!(store.get_run(&t, &full.id).unwrap(), full);
}

pub async fn the_first_journal_record_of_a_key_wins(store: Arc<dyn Store>) {
    store.create_run(&run(1, "a")).await.unwrap();
    let id = "0000-000001";
    store.journal_put(&entry(id, "x", 0, "\"first\""), None).await.unwrap();
    store.journal_put(&entry(id, "x", 0, "\"second\""), None).await.unwrap();
    store.journal_put_all(&[entry(id, "z", 2, "\"2\""), entry(id, "y", 1, "\"1\"")]).await.unwrap();
    let journal = store.journal_of(id).unwrap();
    let outputs: Vec<&str> = journal.iter().map(|e| e.output.as_str()).collect();
    assert_eq!(outputs, ["\"first\"", "\"1\"", "\"2\""], "one record per key, the first, in seq order");
    let found = store.journal_get(&entry(id, "y", 0, "").key).unwrap().unwrap();
    assert_eq!(found, entry(id, "y", 1, "\"1\""));
    assert_eq!(store.journal_get(&entry(id, "none", 0, "").key).unwrap(), None);
    assert!(store.journal_of("other").unwrap().is_empty());
}

/// Records of a lost lease written at the same moment as records of held
/// ones (so a store that batches writes puts them in one batch): only the
/// stale ones are refused.
pub async fn stale_records_are_refused_among_good_ones(store: Arc<dyn Store>) {
    let t = tenant();
    let (mut lost, mut held) = (run(1, "t"), run(2, "t"));
    for r in [&mut lost, &mut held] {
        r.lease = Some(Lease { owner: "a".into(), expires_at_ms: 1_000 });
        store.create_run(r).await.unwrap();
    }
    let (stale, good) = (lost.fence("a"), held.fence("a"));
    store.claim_run(&t, &lost.id, "b", 5_000, 2_000, false).await.unwrap().unwrap();
    let mut writes = Vec::new();
    for i in 0..200u64 {
        let (store, target, fence) = if i % 2 == 0 {
            (store.clone(), held.id.clone(), good.clone())
        } else {
            (store.clone(), lost.id.clone(), stale.clone())
        };
        writes.push(tokio::spawn(async move {
            store.journal_put(&entry(&target, &format!("call-{i}"), i, "x"), Some(&fence)).await
        }));
    }
    for (i, write) in writes.into_iter().enumerate() {
        let result = write.await.unwrap();
        if i % 2 == 0 {
            result.unwrap();
        } else {
            assert!(matches!(result, Err(StoreError::LeaseLost { ref holder, .. }) if holder == "b"), "{result:?}");
        }
    }
    assert_eq!(store.journal_of(&held.id).unwrap().len(), 100, "every record under a held lease is kept");
    assert!(store.journal_of(&lost.id).unwrap().is_empty(), "no record under the lost lease is");
    let missing = store.journal_put(&entry("no-such-run", "x", 0, "x"), Some(&good)).await;
    assert!(missing.is_err(), "a fenced record of a run that is not stored is refused");
}

/// A cancel asked for by anyone: marked without the holder's fence, heard
/// by listeners, kept through the holder's own writes, seen at its heartbeat.
pub async fn cancel_requests_reach_the_holder(store: Arc<dyn Store>) {
    let t = tenant();
    let mut r = run(1, "t");
    r.lease = Some(Lease { owner: "a".into(), expires_at_ms: 9_000 });
    store.create_run(&r).await.unwrap();
    let a = r.fence("a");
    assert_eq!(store.heartbeat(&r.id, &a, 9_000).await.unwrap(), Beat::Held);
    let mut heard = store.cancel_requests();
    // Asked again until heard: a store's listener may still be connecting (a
    // notice it misses reaches the holder at its next heartbeat instead).
    let mut id = None;
    for _ in 0..50 {
        let asked = store.request_cancel(&t, &r.id).await.unwrap();
        assert!(asked.cancel_requested);
        assert_eq!(asked.lease.as_ref().map(|l| l.owner.as_str()), Some("a"), "the holder keeps its lease");
        if let Ok(Ok(heard)) = tokio::time::timeout(std::time::Duration::from_millis(200), heard.recv()).await {
            id = Some(heard);
            break;
        }
    }
    assert_eq!(id.as_deref(), Some(r.id.as_str()), "listeners hear of it");
    // The holder writes its own (older) copy: the request stays.
    store.update_run(&r, &a).await.unwrap();
    assert!(store.get_run(&t, &r.id).unwrap().cancel_requested);
    assert_eq!(store.heartbeat(&r.id, &a, 9_500).await.unwrap(), Beat::CancelRequested);
    let done = finished(store.get_run(&t, &r.id).unwrap(), RunStatus::Cancelled);
    store.update_run(&done, &a).await.unwrap();
    let again = store.request_cancel(&t, &r.id).await.unwrap();
    assert_eq!(again.status, RunStatus::Cancelled, "a finished run is left as it is");
    assert!(matches!(store.request_cancel(&t, "nope").await, Err(StoreError::NoSuchRun(_))));
}

pub async fn leases_are_claimed_renewed_lost_and_fenced(store: Arc<dyn Store>) {
    let t = tenant();
    let mut r = run(1, "t");
    r.lease = Some(Lease { owner: "a".into(), expires_at_ms: 1_000 });
    r.epoch = 1;
    store.create_run(&r).await.unwrap();
    let a = r.fence("a");
    // Held by a until 1000: b cannot claim at 500, can once it expired.
    assert!(store.claim_run(&t, &r.id, "b", 5_000, 500, false).await.unwrap().is_none());
    assert_eq!(store.heartbeat(&r.id, &a, 2_000).await.unwrap(), Beat::Held, "the holder renews");
    assert!(store.claim_run(&t, &r.id, "b", 5_000, 1_500, false).await.unwrap().is_none(), "renewed");
    store.journal_put(&entry(&r.id, "by-a", 0, "1"), Some(&a)).await.unwrap();
    let claimed = store.claim_run(&t, &r.id, "b", 5_000, 2_000, false).await.unwrap().unwrap();
    assert_eq!(claimed.lease.as_ref().unwrap().owner, "b");
    assert_eq!(claimed.epoch, 2, "every claim moves the epoch on");
    assert_eq!(claimed.status, RunStatus::Running);
    // a has lost it: its heartbeat, updates and journal records are refused.
    assert_eq!(store.heartbeat(&r.id, &a, 9_000).await.unwrap(), Beat::Lost);
    let err = store.update_run(&r, &a).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { ref holder, .. } if holder == "b"), "{err}");
    let err = store.journal_put(&entry(&r.id, "late", 1, "2"), Some(&a)).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert_eq!(store.journal_of(&r.id).unwrap().len(), 1, "the stale record was not written");
    // A stale fence of the same owner (an older claim) is refused too.
    let b = claimed.fence("b");
    let again = store.claim_run(&t, &r.id, "b", 6_000, 2_100, false).await.unwrap().unwrap();
    assert_eq!(again.epoch, 3, "a holder's own claim moves the epoch on");
    assert_eq!(store.heartbeat(&r.id, &b, 9_000).await.unwrap(), Beat::Lost, "the older claim is fenced off");
    let b = again.fence("b");
    store.journal_put(&entry(&r.id, "by-b", 1, "3"), Some(&b)).await.unwrap();
    // c may take it over only by force.
    assert!(store.claim_run(&t, &r.id, "c", 9_000, 2_500, false).await.unwrap().is_none());
    let c = store.claim_run(&t, &r.id, "c", 9_000, 2_500, true).await.unwrap().unwrap();
    let mut done = finished(c.clone(), RunStatus::Succeeded);
    done.epoch = 99;
    store.update_run(&done, &c.fence("c")).await.unwrap();
    let stored = store.get_run(&t, &r.id).unwrap();
    assert_eq!(stored.epoch, c.epoch, "the stored epoch is kept whatever the record says");
    assert_eq!(stored.status, RunStatus::Succeeded);
    assert!(store.claim_run(&t, &r.id, "d", 9_000, 10_000, true).await.unwrap().is_none(), "finished: never claimed");
    assert!(matches!(store.claim_run(&t, "nope", "d", 1, 0, false).await, Err(StoreError::NoSuchRun(_))));
}

pub async fn runnable_runs_are_claimed_once_each(store: Arc<dyn Store>) {
    let t = tenant();
    // 1: unleased pending; 2: leased, live; 3: leased, expired; 4: finished;
    // 5: not before 5,000; 6: held by an executor that stopped cleanly.
    let mut runs: Vec<RunRecord> = (1..=6).map(|n| run(n, "t")).collect();
    runs[0].status = RunStatus::Pending;
    runs[1].lease = Some(Lease { owner: "live".into(), expires_at_ms: 10_000 });
    runs[2].lease = Some(Lease { owner: "dead".into(), expires_at_ms: 500 });
    runs[3] = finished(runs[3].clone(), RunStatus::Succeeded);
    runs[4].status = RunStatus::Pending;
    runs[4].not_before_ms = 5_000;
    runs[5].lease = Some(Lease { owner: "gone".into(), expires_at_ms: 10_000 });
    for r in &runs {
        store.create_run(r).await.unwrap();
    }
    let gone = Executor {
        id: "gone".into(),
        host: "h".into(),
        kind: "worker".into(),
        concurrency: 1,
        started_at_ms: 0,
        seen_at_ms: 900,
        stopped_at_ms: Some(900),
    };
    store.put_executor(&gone).await.unwrap();
    let first = store.claim_runnable(&t, "w", 20_000, 1_000, 2).await.unwrap();
    assert_eq!(ids(&first), ["0000-000001", "0000-000003"], "oldest first, up to the limit");
    assert!(first.iter().all(|r| r.lease.as_ref().unwrap().owner == "w"));
    assert_eq!(first[0].status, RunStatus::Pending, "a claim leaves the status to the run's new holder");
    assert_eq!(store.get_run(&t, &first[0].id).unwrap().lease, first[0].lease, "the claim is stored");
    let second = store.claim_runnable(&t, "w", 20_000, 1_000, 10).await.unwrap();
    assert_eq!(ids(&second), ["0000-000006"], "a stopped executor's runs are free at once");
    assert!(store.claim_runnable(&t, "w", 20_000, 1_000, 10).await.unwrap().is_empty());
    let later = store.claim_runnable(&t, "w2", 30_000, 25_000, 10).await.unwrap();
    assert_eq!(
        ids(&later),
        ["0000-000001", "0000-000002", "0000-000003", "0000-000005", "0000-000006"],
        "at 25,000 every lease has expired and the not-before passed"
    );
    assert_eq!(store.get_run(&t, "0000-000001").unwrap().epoch, 2, "claimed twice");

    // Claimers racing over many runs get each run once.
    let race = Tenant { project: "race".into(), domain: "d".into() };
    for n in 100..160 {
        let mut r = RunRecord { tenant: race.clone(), ..run(n, "race") };
        r.status = RunStatus::Pending;
        store.create_run(&r).await.unwrap();
    }
    let claimers: Vec<_> = (0..4)
        .map(|i| {
            let (store, race) = (store.clone(), race.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store.claim_runnable(&race, &format!("c{i}"), 90_000, 40_000, 3).await.unwrap();
                    if got.is_empty() {
                        break mine;
                    }
                    mine.extend(got.into_iter().map(|r| r.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            assert!(seen.insert(id.clone()), "run {id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 60, "every run was claimed");
}

pub async fn task_stats_follow_every_write(store: Arc<dyn Store>) {
    let t = tenant();
    let stats = |store: &Arc<dyn Store>| store.task_stats(&t).unwrap();
    let (a, b) = (run(1, "a"), run(2, "a"));
    store.create_run(&a).await.unwrap();
    store.create_run(&b).await.unwrap();
    store.create_run(&run(3, "z")).await.unwrap();
    let now = stats(&store);
    assert_eq!(now.iter().map(|(task, s)| (task.as_str(), s.runs)).collect::<Vec<_>>(), [("a", 2), ("z", 1)]);
    let mut ok = finished(a.clone(), RunStatus::Succeeded);
    ok.degraded = true;
    store.update_run(&ok, &a.fence("any")).await.unwrap();
    let mut failed = finished(b.clone(), RunStatus::Failed);
    failed.attempts = vec![
        AttemptRecord::not_attempted(1, Some("a".into()), Failure::host("x"), 0, 0),
        AttemptRecord::not_attempted(2, Some("a".into()), Failure::host("x"), 0, 0),
    ];
    failed.attempts[0].not_counted = false;
    store.update_run(&failed, &b.fence("any")).await.unwrap();
    let (_, s) = stats(&store).into_iter().find(|(task, _)| task == "a").unwrap();
    assert_eq!((s.runs, s.succeeded, s.failed, s.degraded, s.retries), (2, 1, 1, 1, 1));
    assert!(store.delete_run(&t, &b.id).await.unwrap());
    let (_, s) = stats(&store).into_iter().find(|(task, _)| task == "a").unwrap();
    assert_eq!((s.runs, s.succeeded, s.failed, s.retries), (1, 1, 0, 0), "a deleted run leaves the counts");
    assert!(store.delete_run(&t, "0000-000003").await.unwrap());
    assert!(stats(&store).iter().all(|(task, _)| task != "z"), "a task with no runs left is not listed");
}

pub async fn deleting_a_run_deletes_what_it_left(store: Arc<dyn Store>) {
    let t = tenant();
    let r = finished(run(1, "a"), RunStatus::Failed);
    store.create_run(&r).await.unwrap();
    store.journal_put(&entry(&r.id, "x", 0, "1"), None).await.unwrap();
    store.put_log(&r.id, 1, &AttemptLog::default()).await.unwrap();
    store.put_report(&r.id, &Report::default()).await.unwrap();
    let letter = DeadLetter {
        run_id: r.id.clone(),
        task: "a".into(),
        input: "{}".into(),
        failed_at_ms: 1,
        error: Failure::host("x"),
        attempts: Vec::new(),
    };
    store.dlq_put(&t, &letter).await.unwrap();
    assert!(store.delete_run(&t, &r.id).await.unwrap());
    assert!(!store.delete_run(&t, &r.id).await.unwrap(), "gone already");
    assert!(matches!(store.get_run(&t, &r.id), Err(StoreError::NoSuchRun(_))));
    assert!(store.journal_of(&r.id).unwrap().is_empty());
    assert!(store.logs_of(&r.id).unwrap().is_empty());
    assert_eq!(store.get_report(&r.id).unwrap(), None);
    assert_eq!(store.dlq_get(&t, &r.id).unwrap(), None);
}

pub async fn logs_reports_cache_and_dead_letters(store: Arc<dyn Store>) {
    let t = tenant();
    let log = AttemptLog { stdout: "out".into(), stderr: "err".into() };
    store.put_log("r", 2, &log).await.unwrap();
    store.put_log("r", 1, &AttemptLog::default()).await.unwrap();
    let logs = store.logs_of("r").unwrap();
    assert_eq!(logs.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(logs[1].1, log);
    let mut report = Report::default();
    report.tabs.insert("main".into(), "<p>hi</p>".into());
    store.put_report("r", &report).await.unwrap();
    assert_eq!(store.get_report("r").unwrap(), Some(report));

    let hit = |task: &str| CacheEntry { task: task.into(), run_id: "r".into(), output: "1".into(), created_at_ms: 0 };
    store.cache_put(&t, "k1", &hit("a")).await.unwrap();
    store.cache_put(&t, "k2", &hit("b")).await.unwrap();
    store.cache_put(&t, "k3", &hit("b")).await.unwrap();
    assert_eq!(store.cache_get(&t, "k1").unwrap(), Some(hit("a")));
    assert_eq!(store.cache_get(&Tenant { project: "x".into(), domain: "y".into() }, "k1").unwrap(), None);
    assert_eq!(store.cache_clear(&t, Some("b")).await.unwrap(), 2);
    assert_eq!(store.cache_get(&t, "k2").unwrap(), None);
    assert_eq!(store.cache_clear(&t, None).await.unwrap(), 1);

    let letter = |id: &str| DeadLetter {
        run_id: id.into(),
        task: "a".into(),
        input: "{}".into(),
        failed_at_ms: 1,
        error: Failure::host("x"),
        attempts: Vec::new(),
    };
    store.dlq_put(&t, &letter("0001")).await.unwrap();
    store.dlq_put(&t, &letter("0002")).await.unwrap();
    let listed = store.dlq_list(&t).unwrap();
    assert_eq!(listed.iter().map(|l| l.run_id.as_str()).collect::<Vec<_>>(), ["0002", "0001"], "newest first");
    assert_eq!(store.dlq_count(&t).unwrap(), 2);
    assert_eq!(store.dlq_get(&t, "0001").unwrap(), Some(letter("0001")));
    assert!(store.dlq_remove(&t, "0001").await.unwrap());
    assert!(!store.dlq_remove(&t, "0001").await.unwrap());
    assert_eq!(store.dlq_count(&t).unwrap(), 1);
}

/// Many hosts moving one breaker at once: every transition sees the one
/// before it (a lost update would leave the count short).
pub async fn breaker_transitions_are_never_lost(store: Arc<dyn Store>) {
    let t = tenant();
    let count = |stored: Option<&[u8]>| -> u64 {
        stored.map(|b| std::str::from_utf8(b).unwrap().parse().unwrap()).unwrap_or(0)
    };
    let add_one: super::Transition = Arc::new(move |stored| (count(stored) + 1).to_string().into_bytes());
    let mut all = Vec::new();
    for _ in 0..64 {
        let (store, t, add_one) = (store.clone(), t.clone(), add_one.clone());
        all.push(tokio::spawn(async move { store.update_breaker(&t, "task:shared", add_one).await.unwrap() }));
    }
    let mut seen = HashSet::new();
    for one in all {
        assert!(seen.insert(one.await.unwrap()), "two transitions started from the same state");
    }
    assert_eq!(store.breakers(&t).unwrap(), [("task:shared".to_owned(), b"64".to_vec())]);
}

pub async fn breakers_counters_and_secrets(store: Arc<dyn Store>) {
    let t = tenant();
    let other = Tenant { project: "p".into(), domain: "d".into() };
    let set = |to: &'static [u8]| -> super::Transition { Arc::new(move |_| to.to_vec()) };
    assert_eq!(store.update_breaker(&t, "task:a", set(b"{\"open\":1}")).await.unwrap(), b"{\"open\":1}");
    store.update_breaker(&t, "task:a", set(b"{\"open\":2}")).await.unwrap();
    store.update_breaker(&t, "provider:m", set(b"{}")).await.unwrap();
    assert_eq!(
        store.breakers(&t).unwrap(),
        [("provider:m".to_owned(), b"{}".to_vec()), ("task:a".to_owned(), b"{\"open\":2}".to_vec())]
    );
    assert!(store.breakers(&other).unwrap().is_empty());
    store.add_counters(&t, &[("x".into(), 2), ("y".into(), 1)]).await.unwrap();
    store.add_counters(&t, &[("x".into(), 3)]).await.unwrap();
    assert_eq!(store.counters(&t).unwrap(), [("x".to_owned(), 5), ("y".to_owned(), 1)]);
    store.put_secret(&t, "api", "s3cret").await.unwrap();
    store.put_secret(&t, "api", "s3cret2").await.unwrap();
    store.put_secret(&t, "b", "v").await.unwrap();
    assert_eq!(store.get_secret(&t, "api").unwrap().as_deref(), Some("s3cret2"));
    assert_eq!(store.get_secret(&other, "api").unwrap(), None, "secrets are tenant-scoped");
    assert_eq!(store.list_secrets(&t).unwrap(), ["api", "b"]);
    assert!(store.delete_secret(&t, "api").await.unwrap());
    assert!(!store.delete_secret(&t, "api").await.unwrap());
    assert_eq!(store.get_secret(&t, "api").unwrap(), None);
}

pub async fn executors_are_recorded_and_forgotten(store: Arc<dyn Store>) {
    let executor = |id: &str, seen: u64| Executor {
        id: id.into(),
        host: "h".into(),
        kind: "worker".into(),
        concurrency: 8,
        started_at_ms: 1,
        seen_at_ms: seen,
        stopped_at_ms: None,
    };
    store.put_executor(&executor("a", 100)).await.unwrap();
    store.put_executor(&executor("b", 5_000)).await.unwrap();
    store.put_executor(&executor("a", 200)).await.unwrap();
    assert_eq!(store.executors().unwrap(), [executor("a", 200), executor("b", 5_000)]);
    assert_eq!(store.forget_executors(1_000).await.unwrap(), 1);
    assert_eq!(store.executors().unwrap(), [executor("b", 5_000)]);
    // Creating an unleased run wakes whoever waits for work.
    let signal = store.work_signal();
    let woken = signal.notified();
    let mut pending = run(1, "a");
    pending.status = RunStatus::Pending;
    store.create_run(&pending).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), woken).await.expect("the work signal fired");
}

pub async fn concurrent_journal_writes_are_all_kept(store: Arc<dyn Store>) {
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("run-{w}");
                for n in 0..20u64 {
                    store.journal_put(&entry(&id, &format!("c{n}"), n, &n.to_string()), None).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    for w in 0..32 {
        let journal = store.journal_of(&format!("run-{w}")).unwrap();
        assert_eq!(journal.iter().map(|e| e.seq).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
    }
}
