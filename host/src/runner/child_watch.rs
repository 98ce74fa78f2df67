//! Waiting for children that any host may run. A host that works on the
//! store's runs ([`super::Host::work`]) queues its runs' children unleased,
//! for whichever worker claims them, and its parents wait here: one loop per
//! host asks the store which of all the awaited children have finished, in
//! one read for many, and hands each parent its child's record. A child this
//! host finished itself is handed over at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Host, RunnerError};
use crate::model::RunRecord;

/// How often the store is asked about children run elsewhere.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Most ids asked about in one read.
const IDS_PER_READ: usize = 1000;

/// The children a host's parents wait for.
#[derive(Default)]
pub struct ChildWatch {
    awaited: Mutex<HashMap<String, Vec<oneshot::Sender<RunRecord>>>>,
    watching: AtomicBool,
}

impl ChildWatch {
    /// Children awaited now.
    pub fn awaited(&self) -> usize {
        self.awaited.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Hands a finished run to whoever here awaits it.
    pub(super) fn deliver(&self, run: &RunRecord) {
        let waiting = self.awaited.lock().unwrap_or_else(|e| e.into_inner()).remove(&run.id);
        for parent in waiting.into_iter().flatten() {
            let _ = parent.send(run.clone());
        }
    }

    fn ids(&self) -> Vec<String> {
        self.awaited.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }
}

impl Host {
    /// Waits until child run `id` (queued, or held by any host) finishes,
    /// and returns its record.
    pub(super) async fn child_finished(&self, id: &str) -> Result<RunRecord, RunnerError> {
        let watch = &self.children.watch;
        let (sender, finished) = oneshot::channel();
        watch.awaited.lock().unwrap_or_else(|e| e.into_inner()).entry(id.to_owned()).or_default().push(sender);
        if !watch.watching.swap(true, Ordering::SeqCst) {
            self.spawn(watch_children(self.children.host.clone()));
        }
        finished.await.map_err(|_| RunnerError::NotAccepting)
    }
}

/// The host's watch loop: runs while the host lives.
async fn watch_children(host: Weak<Host>) {
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let Some(host) = host.upgrade() else { return };
        let ids = host.children.watch.ids();
        for chunk in ids.chunks(IDS_PER_READ) {
            let (store, tenant, chunk) = (host.store.clone(), host.tenant.clone(), chunk.to_vec());
            // The read may block (PostgreSQL's synchronous reads wait on a channel).
            let read = tokio::task::spawn_blocking(move || store.finished_among(&tenant, &chunk)).await;
            match read {
                Ok(Ok(finished)) => {
                    for run in &finished {
                        host.children.watch.deliver(run);
                    }
                }
                Ok(Err(e)) => tracing::warn!("cannot check on child runs: {e}; trying again"),
                Err(_) => {}
            }
        }
    }
}
