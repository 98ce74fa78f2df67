//! Runs in the background, as a server runs them: submitted (the record is
//! made and its id returned at once), cancelled, and waited for when the
//! host stops gracefully.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::cancel::Stop;
use super::{Host, RunOptions, RunnerError};
use crate::model::{RunRecord, Tenant};
use crate::store::{Lineage, RunFilter};

/// Counts the runs going on in the background, to wait for them.
#[derive(Debug, Default)]
pub struct Background {
    running: AtomicUsize,
    idle: Notify,
}

struct Running<'a>(&'a Background);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Background {
    fn enter(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running(self)
    }

    /// Background runs going on now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Waits until none is going on, or `limit` passes; returns whether none is.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.running() == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

impl Host {
    /// Makes a run of `task` on `input` and runs it in the background:
    /// returns its record (running) as soon as it is stored.
    pub async fn submit(
        self: &Arc<Self>,
        task: &str,
        input: &str,
        options: RunOptions,
    ) -> Result<RunRecord, RunnerError> {
        if self.stops.stopping() {
            return Err(RunnerError::NotAccepting);
        }
        if self.queue_only.load(Ordering::Relaxed) {
            return self.enqueue(task, input, &options).await;
        }
        let (run, spec) = self.create(task, input, &options).await?;
        let record = run.clone();
        let host = self.clone();
        self.in_background("run", &record.id, async move { host.start(run, &spec, &options).await })?;
        Ok(record)
    }

    /// Stores a new run of `task` as pending and unleased, for whichever
    /// worker claims it first; returns its record.
    pub async fn enqueue(&self, task: &str, input: &str, options: &RunOptions) -> Result<RunRecord, RunnerError> {
        let (mut run, spec) = self.checked_record(task, input, options)?;
        run.lease = None;
        run.epoch = 0;
        run.status = crate::model::RunStatus::Pending;
        self.store.create_run(&run).await?;
        tracing::info!(run = %run.id, task = %spec.name, "run queued for the workers");
        Ok(run)
    }

    /// Resumes a run in the background (see [`Host::resume`]); returns at once.
    pub fn resume_in_background(
        self: &Arc<Self>,
        tenant: &Tenant,
        run_id: &str,
        force: bool,
    ) -> Result<(), RunnerError> {
        let (host, tenant, id) = (self.clone(), tenant.clone(), run_id.to_owned());
        self.in_background("resumed run", run_id, async move { host.resume(&tenant, &id, force).await })
    }

    /// Retries a dead letter (see [`Host::retry_dead`]) in the background.
    pub fn retry_dead_in_background(
        self: &Arc<Self>,
        tenant: &Tenant,
        run_id: &str,
        stub: Option<String>,
    ) -> Result<(), RunnerError> {
        let (host, tenant, id) = (self.clone(), tenant.clone(), run_id.to_owned());
        if self.queue_only.load(Ordering::Relaxed) {
            return self.in_background(
                "dead-letter retry",
                run_id,
                async move { host.requeue_dead(&tenant, &id).await },
            );
        }
        self.in_background("dead-letter retry", run_id, async move { host.retry_dead(&tenant, &id, stub).await })
    }

    /// Drives `work` (a run of `run_id`) on its own task, counted among the
    /// background runs a graceful stop waits for.
    pub(super) fn in_background(
        self: &Arc<Self>,
        what: &'static str,
        run_id: &str,
        work: impl Future<Output = Result<RunRecord, RunnerError>> + Send + 'static,
    ) -> Result<(), RunnerError> {
        if self.stops.stopping() {
            return Err(RunnerError::NotAccepting);
        }
        let host = self.clone();
        let run_id = run_id.to_owned();
        self.spawn(async move {
            let _running = host.background.enter();
            match work.await {
                Err(e @ RunnerError::Stopped { .. }) => tracing::info!(run = %run_id, "{e}"),
                Err(e) => tracing::warn!(run = %run_id, "{what} ended with an error: {e}"),
                Ok(_) => {}
            }
        });
        Ok(())
    }

    /// Cancels what is left unfinished below `run`'s tree (its top-level
    /// run), in the background.
    pub(super) fn cancel_tree_of(&self, run: &RunRecord) {
        let Some(host) = self.me.upgrade() else { return };
        let (tenant, root) = (run.tenant.clone(), run.root.clone().unwrap_or_else(|| run.id.clone()));
        // At once: a child of the root whose submission is under way stops as it starts.
        self.stops.stop(&root, Stop::Cancel);
        self.spawn(async move {
            // Unless the root was retried meanwhile (a dead letter's retry re-attaches to its tree).
            match host.store.get_run(&tenant, &root) {
                Ok(r) if r.failed_on_tree_limits() => {}
                Ok(_) => return host.stops.forget_cancel(&root),
                Err(e) => {
                    host.stops.forget_cancel(&root);
                    return tracing::warn!(run = %root, "cannot cancel the rest of a tree that hit its limits: {e}");
                }
            }
            match host.cancel_below(&tenant, &root).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(run = %root, "cancelled {n} run(s) of a tree that hit its limits"),
                Err(e) => tracing::warn!(run = %root, "cannot cancel the rest of a tree that hit its limits: {e}"),
            }
        });
    }

    /// Cancels a run and its children, wherever they run: each ends
    /// `cancelled` (at its guest's next epoch tick, if it is mid-attempt),
    /// with no retry and no dead letter. A run driven here stops at once; one
    /// held by another host is marked in the store, and that host stops it as
    /// soon as it hears (a notice, or its next heartbeat); one nobody holds
    /// (queued, waiting out a backoff, left by a host that is gone) is ended
    /// here. Returns how many runs were told to stop.
    pub async fn cancel(&self, tenant: &Tenant, run_id: &str) -> Result<usize, RunnerError> {
        let run = self.store.get_run(tenant, run_id)?;
        self.cancel_all(tenant, vec![(run.id, run.status.is_finished())]).await
    }

    /// [`Host::cancel`] of `run_id`'s unfinished descendants, not of itself
    /// (finished).
    pub(super) async fn cancel_below(&self, tenant: &Tenant, run_id: &str) -> Result<usize, RunnerError> {
        let mut todo = Vec::new();
        self.push_children(tenant, run_id, &mut todo)?;
        self.cancel_all(tenant, todo).await
    }

    /// Cancels the unfinished runs of `todo` and of the trees below them,
    /// depth first (below a finished run too: a parent may end before its children).
    async fn cancel_all(&self, tenant: &Tenant, mut todo: Vec<(String, bool)>) -> Result<usize, RunnerError> {
        let mut stopped = 0;
        while let Some((id, finished)) = todo.pop() {
            if !finished {
                stopped += usize::from(self.cancel_one(tenant, &id).await?);
            }
            self.push_children(tenant, &id, &mut todo)?;
        }
        Ok(stopped)
    }

    /// Stops run `id` if driven here, else asks its holder to (or ends it if
    /// nobody holds it); whether it was under way.
    async fn cancel_one(&self, tenant: &Tenant, id: &str) -> Result<bool, RunnerError> {
        if self.stops.stop(id, Stop::Cancel) {
            return Ok(true);
        }
        let run = self.store.request_cancel(tenant, id).await?;
        if run.status.is_finished() {
            return Ok(false);
        }
        self.end_if_unheld(&run).await?;
        Ok(true)
    }

    /// Adds the children of `id` to `todo`, each with whether it is finished.
    fn push_children(&self, tenant: &Tenant, id: &str, todo: &mut Vec<(String, bool)>) -> Result<(), RunnerError> {
        let filter = RunFilter { lineage: Lineage::ChildrenOf(id.to_owned()), ..RunFilter::default() };
        todo.extend(self.store.list_runs(tenant, &filter)?.into_iter().map(|c| (c.id, c.status.is_finished())));
        Ok(())
    }

    /// Ends a run asked to cancel if nobody holds it: claims it and finishes
    /// it `cancelled` (a claim that fails means a host took it meanwhile; its
    /// take-up sees the request).
    async fn end_if_unheld(&self, run: &RunRecord) -> Result<(), RunnerError> {
        let now = crate::model::now_ms();
        if !crate::store::lease_free(run, None, now, &[]) {
            return Ok(());
        }
        let claimed = self.store.claim_run(&run.tenant, &run.id, &self.host_id, self.lease_until(), now, false).await?;
        if let Some(claimed) = claimed {
            self.finish(claimed, Err(Stop::Cancel.failure())).await?;
        }
        Ok(())
    }

    /// Whether the host is stopping (it takes no new runs).
    pub fn stopping(&self) -> bool {
        self.stops.stopping()
    }

    /// Stops gracefully: takes no new runs, lets the runs under way finish
    /// for up to `grace`, then stops the rest at their next epoch tick, each
    /// saved (its attempt `interrupted`, not counted; its lease released) to
    /// resume when a host starts again. Returns how many runs were stopped.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.stops.stop_all_new();
        if self.background.wait_idle(grace).await {
            return 0;
        }
        let left = self.stops.running();
        self.stops.stop_all(Stop::Shutdown);
        // Saving a stopped run is a store write or two.
        self.background.wait_idle(Duration::from_secs(10)).await;
        left
    }

    /// Background runs going on now.
    pub fn background_runs(&self) -> usize {
        self.background.running()
    }
}
