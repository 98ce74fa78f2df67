//! Waiting for runs that any host may finish: children a working host
//! queued for whichever worker claims them, and runs released to wait out a
//! backoff (see [`super::Host::work`]). One loop per host asks the store
//! which of all the awaited runs have finished, in one read for many, and
//! hands each waiter its run's record; a run this host finished itself is
//! handed over at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Host, RunnerError};
use crate::model::{RunRecord, Tenant};

/// How often the store is asked about runs awaited.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Most ids asked about in one read.
const IDS_PER_READ: usize = 1000;

/// Told a run's record once it finished (`None`: it is not stored any more).
type Waiter = oneshot::Sender<Option<RunRecord>>;

/// The runs a host's callers (parents, API requests) wait for.
pub struct FinishWatch {
    /// The host, for the watch loop.
    host: Weak<Host>,
    /// By run id: its tenant and its waiters.
    awaited: Mutex<HashMap<String, (Tenant, Vec<Waiter>)>>,
    watching: AtomicBool,
}

impl FinishWatch {
    pub(super) fn new(host: Weak<Host>) -> Self {
        FinishWatch { host, awaited: Mutex::default(), watching: AtomicBool::new(false) }
    }

    /// Hands a finished run to whoever here awaits it.
    pub(super) fn deliver(&self, run: &RunRecord) {
        self.settle(&run.id, Some(run));
    }

    /// Hands `run` (`None`: it is not stored any more) to the waiters of `id`.
    fn settle(&self, id: &str, run: Option<&RunRecord>) {
        let waiting = self.awaited.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        for waiter in waiting.into_iter().flat_map(|(_, waiters)| waiters) {
            let _ = waiter.send(run.cloned());
        }
    }

    /// The awaited run ids, by tenant.
    fn ids(&self) -> HashMap<Tenant, Vec<String>> {
        let mut ids: HashMap<Tenant, Vec<String>> = HashMap::new();
        for (id, (tenant, _)) in self.awaited.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            ids.entry(tenant.clone()).or_default().push(id.clone());
        }
        ids
    }
}

impl Host {
    /// Waits until `tenant`'s run `id` (queued, released, or held by any
    /// host) finishes, and returns its record.
    pub(super) async fn finished_elsewhere(&self, tenant: &Tenant, id: &str) -> Result<RunRecord, RunnerError> {
        let watch = &self.finished;
        let (sender, finished) = oneshot::channel();
        {
            let mut awaited = watch.awaited.lock().unwrap_or_else(|e| e.into_inner());
            awaited.entry(id.to_owned()).or_insert_with(|| (tenant.clone(), Vec::new())).1.push(sender);
        }
        if !watch.watching.swap(true, Ordering::SeqCst) {
            self.spawn(watch_runs(watch.host.clone()));
        }
        match finished.await.map_err(|_| RunnerError::NotAccepting)? {
            Some(run) => Ok(run),
            None => Err(crate::store::StoreError::NoSuchRun(id.to_owned()).into()),
        }
    }
}

/// The host's watch loop: runs while the host lives.
async fn watch_runs(host: Weak<Host>) {
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let Some(host) = host.upgrade() else { return };
        let reads = host.finished.ids().into_iter().flat_map(|(tenant, ids)| {
            ids.chunks(IDS_PER_READ).map(|chunk| (tenant.clone(), chunk.to_vec())).collect::<Vec<_>>()
        });
        for (tenant, chunk) in reads {
            let store = host.store.clone();
            // The read may block (PostgreSQL's synchronous reads wait on a channel).
            let read = tokio::task::spawn_blocking(move || store.finished_among(&tenant, &chunk)).await;
            match read {
                Ok(Ok(finished)) => {
                    for (id, run) in &finished {
                        host.finished.settle(id, run.as_ref());
                    }
                }
                Ok(Err(e)) => tracing::warn!("cannot check on awaited runs: {e}; trying again"),
                Err(_) => {}
            }
        }
    }
}
