//! The lease rules every store applies, in one place: who may write to a
//! run (its fence), who may claim it, and what a claim and a fenced update
//! change. A store only adds where the record is read and written.

use super::StoreError;
use crate::model::{Fence, Lease, RunRecord, RunStatus};

/// Whether `fence` may write to `current`: no claim came since the fence's,
/// and the lease (if any) is the fence's owner's.
pub fn check_fence(current: &RunRecord, fence: &Fence) -> Result<(), StoreError> {
    let holder = match &current.lease {
        Some(lease) if lease.owner != fence.owner => lease.owner.clone(),
        _ if current.epoch != fence.epoch => match &current.lease {
            Some(lease) => lease.owner.clone(),
            None => "nobody (a later claim released it)".to_owned(),
        },
        _ => return Ok(()),
    };
    Err(StoreError::LeaseLost { run_id: current.id.clone(), holder })
}

/// Whether a claimer at `now_ms` may take `run`'s lease: nobody holds it,
/// it expired, its holder is an executor that stopped cleanly (`stopped`),
/// or (for [`super::RunStore::claim_run`]) the claimer holds it already.
pub fn lease_free(run: &RunRecord, claimer: Option<&str>, now_ms: u64, stopped: &[String]) -> bool {
    match &run.lease {
        None => true,
        Some(lease) => {
            claimer == Some(lease.owner.as_str()) || lease.expires_at_ms <= now_ms || stopped.contains(&lease.owner)
        }
    }
}

/// Whether writing `run` may give idle hosts work: it is unfinished and
/// nobody holds it (new, released, reopened). Stores announce such writes.
pub fn offers_work(run: &RunRecord) -> bool {
    run.lease.is_none() && !run.status.is_finished()
}

/// What `run` becomes when `owner` claims it until `lease_until_ms`: its
/// lease, and the next epoch. The status is left to the caller.
pub fn take_lease(run: &mut RunRecord, owner: &str, lease_until_ms: u64) {
    run.lease = Some(Lease { owner: owner.to_owned(), expires_at_ms: lease_until_ms });
    run.epoch += 1;
}

/// [`super::RunStore::claim_run`]'s rule: the claimed record, or `None` when
/// `current` is finished or held by someone else (and not `force`d).
pub fn claim(current: &RunRecord, owner: &str, lease_until_ms: u64, now_ms: u64, force: bool) -> Option<RunRecord> {
    if current.status.is_finished() || (!force && !lease_free(current, Some(owner), now_ms, &[])) {
        return None;
    }
    let mut run = current.clone();
    take_lease(&mut run, owner, lease_until_ms);
    run.status = RunStatus::Running;
    Some(run)
}

/// [`super::RunStore::update_run`]'s rule: what replaces `current` when the
/// holder of `fence` writes `run`. The stored epoch is kept, and so is a
/// later expiry the heartbeat stored since the caller read the lease.
pub fn fenced_update(current: &RunRecord, run: &RunRecord, fence: &Fence) -> Result<RunRecord, StoreError> {
    check_fence(current, fence)?;
    let mut run = run.clone();
    run.epoch = current.epoch;
    // A cancel asked for since the holder read the unfinished run stays asked
    // for; a finished run's is moot, and a run reopened (a dead letter
    // retried) starts without one.
    if !current.status.is_finished() {
        run.cancel_requested |= current.cancel_requested;
    }
    if let (Some(stored), Some(lease)) = (&current.lease, &mut run.lease)
        && stored.owner == lease.owner
    {
        lease.expires_at_ms = lease.expires_at_ms.max(stored.expires_at_ms);
    }
    Ok(run)
}
