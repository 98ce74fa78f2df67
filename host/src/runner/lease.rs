//! Leases: which host works on a run. A host renews its leases while it
//! works; a run whose lease expired (or whose holder on this machine is no
//! longer alive) may be resumed by any host.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{Lease, Tenant, now_ms};

/// How long a lease lasts without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often a held lease is renewed.
pub const HEARTBEAT: Duration = Duration::from_secs(20);

/// This process's identity as a lease holder: `<hostname>-<pid>`.
pub fn host_id() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "host".into())
}

/// When a lease taken now expires.
pub fn lease_until() -> u64 {
    now_ms() + LEASE.as_millis() as u64
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

/// Renews a lease every [`HEARTBEAT`] until dropped.
pub struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Starts renewing `owner`'s lease on run `id`. It holds the store only
    /// weakly, so closing the host closes the store at once.
    pub fn start(store: &Arc<dyn crate::store::Store>, tenant: Tenant, id: String, owner: String) -> Self {
        let store = Arc::downgrade(store);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let Some(store) = store.upgrade() else { break };
                match store.heartbeat(&tenant, &id, &owner, lease_until()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(run = %id, "lost the run's lease to another host");
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
