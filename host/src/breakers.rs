//! The host's circuit breakers by name (`task:NAME`, `provider:NAME`), shared
//! by every run of the process and stored so `cairn status` and later
//! processes see them. The state machine is [`crate::policy::breaker`]'s;
//! this service keeps the states and persists them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::model::Tenant;
use crate::policy::breaker::{Admission, Breaker, BreakerConfig, BreakerState};
use crate::store::{StateStore, Transition};

/// Every breaker of a host.
pub struct Breakers {
    clock: Arc<dyn Clock>,
    store: Arc<dyn StateStore>,
    tenant: Tenant,
    states: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    /// The breakers stored for `tenant`, on `clock`.
    pub fn load(clock: Arc<dyn Clock>, store: Arc<dyn StateStore>, tenant: Tenant) -> Self {
        let states = match store.breakers(&tenant) {
            Ok(list) => list
                .into_iter()
                .filter_map(|(name, state)| match decode(&state) {
                    Ok(breaker) => Some((name, breaker)),
                    Err(e) => {
                        tracing::warn!(
                            "circuit breaker {name}: its stored state is unreadable ({e}); it starts closed"
                        );
                        None
                    }
                })
                .collect(),
            Err(e) => {
                tracing::warn!("cannot read circuit breakers, starting closed: {e}");
                HashMap::new()
            }
        };
        Breakers { clock, store, tenant, states: Mutex::new(states) }
    }

    /// Whether a call under breaker `name` may go through now.
    pub fn admit(&self, name: &str, config: BreakerConfig) -> Admission {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let breaker = states.entry(name.to_owned()).or_insert_with(|| Breaker::new(config));
        breaker.config = config;
        breaker.admit(self.clock.now_ms())
    }

    /// Records a call's outcome here and in the store, and returns whether
    /// the breaker rejects calls now.
    pub async fn record(&self, name: &str, config: BreakerConfig, success: bool) -> bool {
        self.note(name, config, success);
        self.publish(name, config, success).await;
        matches!(self.admit(name, config), Admission::Rejected { .. })
    }

    /// Records a call's outcome in this host's copy only, for a decision
    /// that cannot wait; [`Breakers::publish`] then stores it.
    pub fn note(&self, name: &str, config: BreakerConfig, success: bool) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let breaker = states.entry(name.to_owned()).or_insert_with(|| Breaker::new(config));
        apply(breaker, config, success, self.clock.now_ms());
    }

    /// Applies a call's outcome to the stored breaker in one atomic
    /// transition, so the outcomes every host sharing the store sees add up
    /// in one breaker, and takes the stored state as this host's copy.
    pub async fn publish(&self, name: &str, config: BreakerConfig, success: bool) {
        let clock = self.clock.clone();
        let label = name.to_owned();
        let transition: Transition = Arc::new(move |stored: Option<&[u8]>| {
            let mut breaker = match stored.map(decode) {
                Some(Ok(breaker)) => breaker,
                Some(Err(e)) => {
                    tracing::warn!("circuit breaker {label}: its stored state is unreadable ({e}); it restarts closed");
                    Breaker::new(config)
                }
                None => Breaker::new(config),
            };
            apply(&mut breaker, config, success, clock.now_ms());
            encode(&breaker).unwrap_or_default()
        });
        match self.store.update_breaker(&self.tenant, name, transition).await {
            Ok(stored) => match decode(&stored) {
                Ok(breaker) => {
                    let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
                    let mine = states.entry(name.to_owned()).or_insert(breaker);
                    if mine.state != breaker.state && breaker.state_name() == "open" {
                        tracing::warn!("circuit breaker {name} is open");
                    }
                    *mine = breaker;
                }
                Err(e) => tracing::warn!("circuit breaker {name}: the stored state is unreadable: {e}"),
            },
            Err(e) => tracing::warn!("cannot store circuit breaker {name}: {e}"),
        }
    }

    /// Takes every breaker's state from the store: what other hosts sharing
    /// it recorded since this host last wrote. Workers call it as they poll.
    pub async fn refresh(self: &Arc<Self>) {
        let this = self.clone();
        let read = tokio::task::spawn_blocking(move || this.store.breakers(&this.tenant)).await;
        let stored = match read {
            Ok(Ok(stored)) => stored,
            Ok(Err(e)) => {
                tracing::warn!("cannot read circuit breakers: {e}");
                return;
            }
            Err(_) => return,
        };
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        for (name, bytes) in stored {
            if let Ok(breaker) = decode(&bytes) {
                states.insert(name, breaker);
            }
        }
    }

    /// When breaker `name` lets a probe through, if it is open.
    pub fn retry_at(&self, name: &str) -> Option<u64> {
        match self.states.lock().unwrap_or_else(|e| e.into_inner()).get(name)?.state {
            BreakerState::Open { until_ms } => Some(until_ms),
            _ => None,
        }
    }

    /// The clock the breakers run on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// One call's outcome, at `now_ms`. An open breaker whose timeout passed
/// half-opens first, as it would have when the call was admitted. A success
/// admitted on a stale copy while another host opened the breaker leaves it
/// open: only a probe's success may close it.
fn apply(breaker: &mut Breaker, config: BreakerConfig, success: bool, now_ms: u64) {
    breaker.config = config;
    let admitted = breaker.admit(now_ms) == Admission::Allowed;
    if success {
        if admitted {
            breaker.on_success();
        }
    } else {
        breaker.on_failure(now_ms);
    }
}

/// A breaker's state as the store keeps it: JSON.
pub fn encode(breaker: &Breaker) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(breaker)
}

/// A stored breaker state.
pub fn decode(bytes: &[u8]) -> Result<Breaker, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::TestClock;
    use crate::store::postgres::{PgStore, testing};

    /// Two hosts on one PostgreSQL database (two connections, as two
    /// workers have): the failures each sees add up in one breaker, and the
    /// host that saw none of them fails fast once it re-reads the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_seen_by_two_hosts_open_one_breaker() {
        let url = testing::fresh_database();
        let clock: Arc<dyn Clock> = Arc::new(TestClock::new(1_000));
        let host = || {
            let store: Arc<dyn StateStore> = Arc::new(PgStore::connect(&url, true).unwrap());
            Arc::new(Breakers::load(clock.clone(), store, Tenant::default()))
        };
        let (a, b, c) = (host(), host(), host());
        let config = BreakerConfig { failure_threshold: 40, success_threshold: 1, timeout: Duration::from_secs(60) };
        let mut failures = Vec::new();
        for one in 0..39 {
            let host = if one % 2 == 0 { a.clone() } else { b.clone() };
            failures.push(tokio::spawn(async move { host.record("task:t", config, false).await }));
        }
        for failure in failures {
            assert!(!failure.await.unwrap(), "39 failures of 40 leave the breaker closed");
        }
        assert!(b.record("task:t", config, false).await, "the 40th failure, wherever it is seen, opens it");
        assert_eq!(c.admit("task:t", config), Admission::Allowed, "c has not looked yet");
        c.refresh().await;
        assert_eq!(c.admit("task:t", config), Admission::Rejected { retry_at_ms: 61_000 });
        let stored = c.store.breakers(&Tenant::default()).unwrap();
        assert_eq!(decode(&stored[0].1).unwrap().opened, 1, "opened once, not once per host");
    }
}
