//! The host's circuit breakers by name (`task:NAME`, `provider:NAME`), shared
//! by every run of the process and stored so `cairn status` and later
//! processes see them. The state machine is [`crate::policy::breaker`]'s;
//! this service keeps the states and persists them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::model::Tenant;
use crate::policy::breaker::{Admission, Breaker, BreakerConfig, BreakerState};
use crate::store::StateStore;

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

    /// Records a call's outcome and stores the breaker.
    pub async fn record(&self, name: &str, config: BreakerConfig, success: bool) {
        let snapshot = self.note(name, config, success);
        self.persist(name, &snapshot).await;
    }

    /// Records a call's outcome in memory and returns the breaker as it is
    /// now, for [`Breakers::persist`].
    pub fn note(&self, name: &str, config: BreakerConfig, success: bool) -> Breaker {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let breaker = states.entry(name.to_owned()).or_insert_with(|| Breaker::new(config));
        breaker.config = config;
        if success {
            breaker.on_success();
        } else {
            breaker.on_failure(self.clock.now_ms());
            if breaker.state_name() == "open" {
                tracing::warn!("circuit breaker {name} is open");
            }
        }
        *breaker
    }

    /// Stores a breaker's state so `cairn status` and later processes see it.
    pub async fn persist(&self, name: &str, breaker: &Breaker) {
        let state = match encode(breaker) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!("cannot encode circuit breaker {name}: {e}");
                return;
            }
        };
        if let Err(e) = self.store.put_breaker(&self.tenant, name, &state).await {
            tracing::warn!("cannot store circuit breaker {name}: {e}");
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

/// A breaker's state as the store keeps it: JSON.
pub fn encode(breaker: &Breaker) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(breaker)
}

/// A stored breaker state.
pub fn decode(bytes: &[u8]) -> Result<Breaker, serde_json::Error> {
    serde_json::from_slice(bytes)
}
