//! The redb store on real files: reopen, schema versions, leases, group commit, the log.

use super::*;
use crate::model::CallKind;
use crate::store::RunFilter;
use crate::store::prelude::*;

/// A journal entry of run `run_id`: the first occurrence of one call.
fn entry(run_id: &str, kind: CallKind, output: &str) -> JournalEntry {
    JournalEntry {
        key: ReplayKey { run_id: run_id.into(), kind, name: "c".into(), input_hash: "h".into(), occurrence: 1 },
        seq: 0,
        attempt: 1,
        output: output.into(),
        summary: String::new(),
        recorded_at_ms: 0,
        duration_ms: 0,
        usage: None,
    }
}

fn run(id: &str, task: &str) -> RunRecord {
    RunRecord::new(id.into(), Tenant::default(), task.into(), "{}".into())
}

#[tokio::test]
async fn runs_journal_and_secrets_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s/cairn.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        store.create_run(&run("01-a", "t1")).await.unwrap();
        store.create_run(&run("02-b", "t2")).await.unwrap();
        assert!(store.create_run(&run("01-a", "t1")).await.is_err(), "duplicate ids are refused");
        let key = ReplayKey {
            run_id: "01-a".into(),
            kind: CallKind::Llm,
            name: "complete".into(),
            input_hash: "h".into(),
            occurrence: 1,
        };
        let entry = JournalEntry {
            key: key.clone(),
            seq: 0,
            attempt: 1,
            output: "\"first\"".into(),
            summary: String::new(),
            recorded_at_ms: 0,
            duration_ms: 0,
            usage: None,
        };
        store.journal_put(&entry, None).await.unwrap();
        store.journal_put(&JournalEntry { output: "\"second\"".into(), ..entry }, None).await.unwrap();
        store.put_secret(&Tenant::default(), "api", "s3cret").await.unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let listed = store.list_runs(&Tenant::default(), &RunFilter::default()).unwrap();
    assert_eq!(listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["02-b", "01-a"]);
    let only_t1 =
        store.list_runs(&Tenant::default(), &RunFilter { task: Some("t1".into()), ..Default::default() }).unwrap();
    assert_eq!(only_t1.len(), 1);
    let journal = store.journal_of("01-a").unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].output, "\"first\"", "the first record of a key wins");
    assert!(store.journal_of("02-b").unwrap().is_empty());
    assert_eq!(store.get_secret(&Tenant::default(), "api").unwrap().as_deref(), Some("s3cret"));
    assert_eq!(store.list_secrets(&Tenant::default()).unwrap(), ["api"]);
    let other = Tenant { project: "p".into(), domain: "d".into() };
    assert_eq!(store.get_secret(&other, "api").unwrap(), None, "secrets are tenant-scoped");
    assert!(store.delete_secret(&Tenant::default(), "api").await.unwrap());
    assert!(!store.delete_secret(&Tenant::default(), "api").await.unwrap());
}

#[tokio::test]
async fn newer_schema_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("schema_version", b"99".as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&path).err().expect("must refuse a newer file");
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("g.redb")).unwrap());
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let store = store.clone();
        writers.spawn(async move {
            store.journal_put(&entry(&format!("r{i}"), CallKind::Trace, "1"), None).await.unwrap();
            // Acknowledged means readable.
            assert_eq!(store.journal_of(&format!("r{i}")).unwrap().len(), 1);
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let (commits, writes, largest) = store.commit_stats().snapshot();
    assert_eq!(writes, 200);
    assert!(commits < 200 && largest > 1, "{commits} commits, largest batch {largest}: writes were batched");
}

/// Holds the store's writer inside a batch until `queued` more writes wait
/// behind it; they are then certain to share the next batch. Returns the
/// release and the holder.
async fn hold_writer(
    store: &Arc<RedbStore>,
) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<Result<(), StoreError>>) {
    let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let held = store.clone();
    let holder = tokio::spawn(async move {
        held.committer
            .write_async(Box::new(move |_| {
                entered_tx.send(()).unwrap();
                gate.recv().unwrap();
                Ok(())
            }))
            .await
    });
    entered.recv().unwrap();
    (release, holder)
}

async fn until_queued(store: &RedbStore, writes: u64) {
    while store.commit_stats().queued() < writes {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_does_not_fail_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("f.redb")).unwrap());
    store.create_run(&run("dup", "t")).await.unwrap();
    let (release, holder) = hold_writer(&store).await;
    let (a, b) = (store.clone(), store.clone());
    let duplicate = tokio::spawn(async move { a.create_run(&run("dup", "t")).await });
    let fresh = tokio::spawn(async move { b.create_run(&run("new", "t")).await });
    until_queued(&store, 2).await;
    let (commits_before, _, _) = store.commit_stats().snapshot();
    release.send(()).unwrap();
    holder.await.unwrap().unwrap();
    assert!(duplicate.await.unwrap().is_err(), "the duplicate id is refused");
    fresh.await.unwrap().unwrap();
    let (commits, _, largest) = store.commit_stats().snapshot();
    assert_eq!((commits - commits_before, largest), (2, 2), "the holder's batch, then one batch of both writes");
    assert!(store.get_run(&Tenant::default(), "new").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_halts_the_store_and_shows_none_of_its_records() {
    use crate::store::sim_disk::SimDisk;
    let disk = SimDisk::new();
    let store = Arc::new(RedbStore::open_on(Backing::Simulated(disk.clone()), Tuning::default()).unwrap());
    let kept = entry("r", CallKind::Llm, "\"kept\"");
    store.journal_put(&kept, None).await.unwrap();
    // A journal record shares a batch with a write whose I/O fails.
    let (release, holder) = hold_writer(&store).await;
    let (a, b) = (store.clone(), store.clone());
    let lost = JournalEntry { key: ReplayKey { occurrence: 2, ..kept.key.clone() }, ..kept.clone() };
    let key = lost.key.clone();
    let logged = tokio::spawn(async move { a.journal_put(&lost, None).await });
    let failing = tokio::spawn(async move {
        b.committer
            .write_async(Box::new(|_| Err(StoreError::Io { operation: "test", message: "the disk said no".into() })))
            .await
    });
    until_queued(&store, 2).await;
    release.send(()).unwrap();
    holder.await.unwrap().unwrap();
    let (logged, failing) = (logged.await.unwrap().unwrap_err(), failing.await.unwrap().unwrap_err());
    assert!(logged.is_halted() && failing.is_halted(), "{logged} / {failing}");
    assert!(store.journal_get(&key).unwrap().is_none(), "a record of a failed batch is never visible");
    assert_eq!(store.journal_get(&kept.key).unwrap(), Some(kept.clone()), "an acknowledged one still is");
    let refused = store.create_run(&run("later", "t")).await.unwrap_err();
    assert!(refused.to_string().contains("stopped taking writes"), "{refused}");
    drop(store);
    let reopened = RedbStore::open_on(Backing::Simulated(disk), Tuning::default()).unwrap();
    assert_eq!(reopened.journal_get(&kept.key).unwrap(), Some(kept), "a restart finds what was acknowledged");
    assert!(reopened.halted().is_none());
}

#[tokio::test]
async fn records_left_in_the_log_are_replayed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.redb");
    drop(RedbStore::open(&path).unwrap());
    // A process that logged a record and died before applying it to redb.
    let entry = entry("r", CallKind::Llm, "\"logged\"");
    let wal_path = path.with_extension("wal");
    let (mut wal, _) = Wal::open(Box::new(wal::open_file(&wal_path).unwrap()), "w.wal").unwrap();
    wal.append(&[&Wal::payload(std::slice::from_ref(&entry)).unwrap()]).unwrap();
    drop(wal);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.journal_of("r").unwrap(), vec![entry]);
    assert_eq!(std::fs::metadata(path.with_extension("wal")).unwrap().len(), 0, "the log is emptied once applied");
}

mod conformance {
    crate::store::conformance::conformance_suite!({
        let dir = tempfile::tempdir().unwrap();
        let store = super::RedbStore::open(&dir.path().join("c.redb")).unwrap();
        crate::store::conformance::Subject { store: std::sync::Arc::new(store), _keep: Box::new(dir) }
    });
}
