//! An instance's share of its tenant's quotas, and a share lent while the
//! instance waits on its children (see [`super`]).

use std::sync::{Arc, Mutex, MutexGuard};

use super::{Amount, InstanceGate, Source};

struct ShareState {
    /// Bytes the instance may grow to.
    memory: u64,
    /// Where its room came from; empty while lent.
    parts: Vec<(Source, Amount)>,
    /// The earmark it is lent as, while it is.
    lent_as: Option<u64>,
    /// The instance waits in its pool for a call.
    idle: bool,
    /// The instance is being dropped to make room.
    evicting: bool,
}

impl ShareState {
    fn amount(&self) -> Amount {
        self.parts.iter().fold(Amount::default(), |sum, (_, amount)| sum.plus(*amount))
    }
}

/// One instance's share of its tenant's quotas, given back when dropped
/// (with the instance).
pub struct InstanceShare {
    gate: Arc<InstanceGate>,
    state: Mutex<ShareState>,
}

impl InstanceShare {
    /// A share of `gate` holding `parts`, for an instance of `memory` bytes.
    pub(super) fn new(gate: Arc<InstanceGate>, memory: u64, parts: Vec<(Source, Amount)>) -> Arc<Self> {
        let state = ShareState { memory, parts, lent_as: None, idle: false, evicting: false };
        Arc::new(InstanceShare { gate, state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, ShareState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the instance may grow to, as the share counts them.
    pub fn memory(&self) -> u64 {
        self.lock().memory
    }

    /// Marks the instance idle in its pool (its room can be had by having
    /// it dropped) or back at work. An idle instance's room is the tenant's
    /// own: what it had of a waiting parent's lent share goes back to the
    /// parent, and is counted against the quotas instead. `false` (and the
    /// instance stays as it was) when the quotas have no room for that: the
    /// caller drops the instance rather than keep it.
    pub fn set_idle(&self, idle: bool) -> bool {
        let limits = (self.gate.limits)();
        let mut share = self.lock();
        if share.idle == idle || share.lent_as.is_some() {
            return true;
        }
        let mut gate = self.gate.lock();
        if idle {
            let lent: Vec<_> = share.parts.iter().filter(|(s, _)| *s != Source::Quota).cloned().collect();
            if !lent.is_empty() {
                let amount = lent.iter().fold(Amount::default(), |sum, (_, a)| sum.plus(*a));
                if !gate.fits(amount, limits) {
                    return false;
                }
                share.parts.retain(|(s, _)| *s == Source::Quota);
                share.parts.push((Source::Quota, amount));
                gate.count(amount);
                gate.give(lent);
            }
            gate.idle = gate.idle.plus(share.amount());
        } else {
            gate.idle = gate.idle.minus(share.amount());
        }
        share.idle = idle;
        true
    }

    /// Marks an idle instance as being dropped to make room.
    pub fn set_evicting(&self) {
        let mut share = self.lock();
        if share.evicting {
            return;
        }
        share.evicting = true;
        let amount = share.amount();
        let mut gate = self.gate.lock();
        if share.idle {
            gate.idle = gate.idle.minus(amount);
            share.idle = false;
        }
        gate.evicting = gate.evicting.plus(amount);
    }

    /// Lends the share to run `run_id`'s children while the instance waits
    /// on one of them; the returned [`Lent`] takes it back.
    pub fn lend(self: &Arc<Self>, run_id: &str) -> Lent {
        let mut share = self.lock();
        if share.lent_as.is_some() || share.parts.is_empty() {
            return Lent { share: self.clone(), earmark: None };
        }
        let parts = std::mem::take(&mut share.parts);
        let mut gate = self.gate.lock();
        match gate.open_earmark(run_id, parts.clone()) {
            Some(id) => {
                share.lent_as = Some(id);
                Lent { share: self.clone(), earmark: Some(id) }
            }
            None => {
                share.parts = parts;
                Lent { share: self.clone(), earmark: None }
            }
        }
    }
}

impl Drop for InstanceShare {
    fn drop(&mut self) {
        let share = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let amount = share.amount();
        let mut gate = self.gate.lock();
        if share.idle {
            gate.idle = gate.idle.minus(amount);
        }
        if share.evicting {
            gate.evicting = gate.evicting.minus(amount);
        }
        gate.live -= 1;
        gate.give(std::mem::take(&mut share.parts));
    }
}

/// A share lent while its instance waits on a child run.
pub struct Lent {
    share: Arc<InstanceShare>,
    /// The earmark it was lent as (`None`: not lent, e.g. a nested wait).
    earmark: Option<u64>,
}

impl Lent {
    /// Takes the share back once the children borrowing it gave it back;
    /// nobody else takes from it meanwhile.
    pub async fn take_back(mut self) {
        let Some(id) = self.earmark else { return };
        loop {
            let closed = self.share.gate.lock().close_earmark(id);
            match closed {
                Ok(parts) => {
                    let mut share = self.share.lock();
                    share.parts = parts;
                    share.lent_as = None;
                    break;
                }
                Err(wake) => wake.notified().await,
            }
        }
        self.earmark = None;
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(id) = self.earmark else { return };
        // The wait was cancelled: the instance is being torn down. What its
        // children still use stays theirs; the rest goes back once unused.
        self.share.lock().lent_as = None;
        self.share.gate.lock().orphan_earmark(id);
    }
}
