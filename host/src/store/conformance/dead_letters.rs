//! What every store does when a run moves into or out of the dead-letter
//! queue: the run's record and its letter change in one write, or neither.

use std::sync::Arc;

use super::super::StoreError;
use super::super::prelude::*;
use super::{finished, run, tenant};
use crate::model::{DeadLetter, Failure, Lease, RunStatus};

fn letter_of(run: &crate::model::RunRecord) -> DeadLetter {
    DeadLetter {
        run_id: run.id.clone(),
        task: run.task.clone(),
        input: run.input.clone(),
        failed_at_ms: 7,
        error: Failure::host("spent"),
        attempts: Vec::new(),
    }
}

pub async fn a_run_is_failed_and_filed_in_one_write(store: Arc<dyn Store>) {
    let t = tenant();
    let mut r = run(1, "t");
    r.lease = Some(Lease { owner: "a".into(), expires_at_ms: 1_000 });
    store.create_run(&r).await.unwrap();
    let a = r.fence("a");

    // A holder that lost the run files nothing, and fails nothing.
    let taken = store.claim_run(&t, &r.id, "b", 9_000, 2_000, false).await.unwrap().unwrap();
    let err = store.dlq_file(&finished(r.clone(), RunStatus::Failed), &a, &letter_of(&r)).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert_eq!(store.get_run(&t, &r.id).unwrap().status, RunStatus::Running);
    assert_eq!(store.dlq_get(&t, &r.id).unwrap(), None, "no letter without the failed run");

    // The holder fails it: run and letter together.
    let failed = finished(taken.clone(), RunStatus::Failed);
    store.dlq_file(&failed, &taken.fence("b"), &letter_of(&r)).await.unwrap();
    assert_eq!(store.get_run(&t, &r.id).unwrap().status, RunStatus::Failed);
    assert_eq!(store.dlq_get(&t, &r.id).unwrap(), Some(letter_of(&r)));
    assert_eq!(store.task_stats(&t).unwrap()[0].1.failed, 1, "the task's counts follow");
}

pub async fn a_dead_run_is_reopened_and_taken_out_in_one_write(store: Arc<dyn Store>) {
    let t = tenant();
    let failed = finished(run(2, "t"), RunStatus::Failed);
    store.create_run(&failed).await.unwrap();
    store.dlq_put(&t, &letter_of(&failed)).await.unwrap();
    let mut reopened = failed.clone();
    (reopened.status, reopened.error, reopened.finished_at_ms) = (RunStatus::Running, None, None);
    reopened.lease = Some(Lease { owner: "h".into(), expires_at_ms: 9_000 });

    // A stale fence (a claim came since) changes neither.
    let mut stale = reopened.fence("h");
    stale.epoch += 5;
    let err = store.dlq_reopen(&reopened, &stale, true).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert!(store.dlq_get(&t, &failed.id).unwrap().is_some(), "the letter stays in the queue");
    assert_eq!(store.get_run(&t, &failed.id).unwrap().status, RunStatus::Failed);

    let taken = store.dlq_reopen(&reopened, &reopened.fence("h"), true).await.unwrap();
    assert_eq!(taken, Some(letter_of(&failed)));
    assert_eq!(store.dlq_get(&t, &failed.id).unwrap(), None);
    let stored = store.get_run(&t, &failed.id).unwrap();
    assert_eq!((stored.status, stored.lease.map(|l| l.owner)), (RunStatus::Running, Some("h".to_owned())));

    // A second host retrying the same letter finds it gone and changes nothing.
    let mut other = reopened.clone();
    other.lease = Some(Lease { owner: "other".into(), expires_at_ms: 9_000 });
    assert_eq!(store.dlq_reopen(&other, &other.fence("other"), true).await.unwrap(), None);
    assert_eq!(store.get_run(&t, &failed.id).unwrap().lease.map(|l| l.owner), Some("h".to_owned()));

    // A failed child outside the queue reopens without a letter.
    let child = finished(run(3, "t"), RunStatus::Failed);
    store.create_run(&child).await.unwrap();
    let mut again = child.clone();
    (again.status, again.error, again.finished_at_ms) = (RunStatus::Running, None, None);
    assert_eq!(store.dlq_reopen(&again, &again.fence("h"), false).await.unwrap(), None);
    assert_eq!(store.get_run(&t, &child.id).unwrap().status, RunStatus::Running);
}
