//! Leases: which host works on a run. A host renews its leases while it
//! works; a run whose lease expired (or whose holder on this machine is no
//! longer alive) may be resumed by any host.

use std::sync::Arc;
use std::time::Duration;

use super::cancel::{Stop, StopToken};
use crate::model::{Fence, Lease, now_ms};
use crate::store::Beat;

/// How long a lease lasts without a heartbeat, unless the host is told
/// otherwise (`cairn worker --lease`). It is renewed every third of that.
pub const LEASE: Duration = Duration::from_secs(60);

/// This process's identity as a lease holder: `<hostname>-<pid>`.
pub fn host_id() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

/// This machine's name (`/etc/hostname`), as host ids and executor rows give it.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "host".into())
}

/// Whether a lease no longer protects its run: expired, or held by a
/// process of this machine that has exited (a `kill -9` needs no waiting).
pub fn is_stale(lease: &Lease, now_ms: u64) -> bool {
    if lease.expires_at_ms <= now_ms {
        return true;
    }
    let Some((host, pid)) = lease.owner.rsplit_once('-') else { return false };
    host == hostname() && pid.parse::<u32>().is_ok_and(|pid| pid != std::process::id() && !process_alive(pid))
}

/// Whether the host named `owner` (`<hostname>-<pid>`) is a live process
/// of this machine; `None` when it runs on another machine.
pub fn holder_alive(owner: &str) -> Option<bool> {
    let (host, pid) = owner.rsplit_once('-')?;
    let pid = pid.parse::<u32>().ok()?;
    (host == hostname()).then(|| process_alive(pid))
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Renews a lease every third of its length until dropped; when the
/// store says it was lost, stops the run at once.
pub struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Starts renewing the lease of run `id` held by `fence`. It holds the
    /// store only weakly, so closing the host closes the store at once.
    pub fn start(
        store: &Arc<dyn crate::store::Store>,
        id: String,
        fence: Fence,
        lease: Duration,
        stop: StopToken,
    ) -> Self {
        let store = Arc::downgrade(store);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let Some(store) = store.upgrade() else { break };
                let until = now_ms() + lease.as_millis() as u64;
                match store.heartbeat(&id, &fence, until).await {
                    Ok(Beat::Held) => {}
                    Ok(Beat::CancelRequested) => {
                        tracing::info!(run = %id, "a cancel was asked for; stopping the run");
                        stop.stop(Stop::Cancel);
                    }
                    Ok(Beat::Lost) => {
                        tracing::error!(run = %id, "lost the run's lease to another host; stopping its attempt");
                        stop.stop(Stop::Lost);
                        break;
                    }
                    Err(e) => tracing::warn!(run = %id, "cannot renew the run's lease: {e}"),
                }
            }
        });
        Heartbeat { task }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}
