//! The provider registry: a task's LLM provider chain built from its
//! manifest entry once per host, so breakers and connections are shared by
//! runs; and the providers' retry counts flushed to the store.

use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap as HashMap;

use super::Host;
use crate::breakers::Breakers;
use crate::llm::LlmProvider;
use crate::llm::chain::{Member, ProviderChain};
use crate::llm::mock::MockProvider;
use crate::llm::openai::{OpenAiConfig, OpenAiProvider};
use crate::llm::reliable::{Reliable, RetryConfig};
use crate::manifest::{Manifest, ProviderKind, ProviderSpec, TaskSpec};
use crate::model::{Failure, FailureKind, Tenant};

/// Builds a provider from its manifest entry; `secret` reads the API key.
pub fn build_provider(
    spec: &ProviderSpec,
    secret: impl Fn(&str) -> Result<Option<String>, String>,
) -> Result<Arc<Reliable>, Failure> {
    let retry = RetryConfig { max_retries: spec.max_retries, ..RetryConfig::default() };
    let wrap = |inner: Arc<dyn LlmProvider>| -> Reliable {
        match &spec.retry {
            Some(policy) => Reliable::with_policy(inner, policy.clone()),
            None => Reliable::new(inner, retry),
        }
    };
    let inner: Arc<dyn LlmProvider> = match &spec.kind {
        ProviderKind::Mock(config) => Arc::new(MockProvider::new(config.clone()).with_name(spec.name.clone())),
        ProviderKind::OpenAiCompatible { base_url, model, api_key_secret, timeout } => {
            let api_key = match api_key_secret {
                None => None,
                Some(key) => Some(secret(key).map_err(Failure::host)?.ok_or_else(|| Failure {
                    kind: FailureKind::MissingSecret,
                    message: format!(
                        "llm provider {:?} needs the API key secret {key:?}, which has no value; create it with `cairn secret create {key} VALUE`",
                        spec.name
                    ),
                    retryable: false,
                })?),
            };
            let config = OpenAiConfig {
                name: spec.name.clone(),
                base_url: base_url.clone(),
                model: model.clone(),
                timeout: *timeout,
                api_key,
            };
            Arc::new(OpenAiProvider::new(config).map_err(|e| Failure::host(e.to_string()))?)
        }
    };
    Ok(Arc::new(wrap(inner)))
}

/// The provider registry: each primary provider's chain, built on first use
/// and shared by every run of the host.
pub struct Providers {
    chains: Mutex<HashMap<String, Arc<ProviderChain>>>,
    breakers: Arc<Breakers>,
}

impl Providers {
    /// An empty registry whose chains use `breakers`.
    pub fn new(breakers: Arc<Breakers>) -> Self {
        Providers { chains: Mutex::default(), breakers }
    }

    /// The chain of `primary` (the provider, then its fallbacks from
    /// `manifest`), each member with JSON validation and provider retries;
    /// `secret` reads API keys.
    pub fn chain(
        &self,
        manifest: &Manifest,
        primary: &ProviderSpec,
        secret: impl Fn(&str) -> Result<Option<String>, String>,
    ) -> Result<Arc<ProviderChain>, Failure> {
        if let Some(chain) = self.chains.lock().unwrap_or_else(|e| e.into_inner()).get(&primary.name) {
            return Ok(chain.clone());
        }
        let mut members = Vec::new();
        let fallbacks = primary.fallback.iter().filter_map(|name| manifest.providers.get(name));
        for spec in std::iter::once(primary).chain(fallbacks) {
            let reliable = build_provider(spec, &secret)?;
            members.push(Member {
                name: spec.name.clone(),
                retries: reliable.retry_counter(),
                provider: reliable,
                breaker: spec.circuit_breaker,
            });
        }
        let chain = Arc::new(ProviderChain::new(members, self.breakers.clone()));
        self.chains.lock().unwrap_or_else(|e| e.into_inner()).insert(primary.name.clone(), chain.clone());
        Ok(chain)
    }

    /// Each provider's retries since the last call, as counter deltas
    /// (`provider:NAME:retries`).
    pub fn take_retries(&self) -> Vec<(String, u64)> {
        let chains: Vec<Arc<ProviderChain>> =
            self.chains.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        chains
            .iter()
            .flat_map(|chain| chain.take_retries())
            .map(|(provider, n)| (format!("provider:{provider}:retries"), n))
            .collect()
    }
}

impl Host {
    /// The task's provider chain in `tenant`'s registry (with its API keys).
    pub(super) fn provider_for(&self, task: &TaskSpec, tenant: &Tenant) -> Result<Arc<ProviderChain>, Failure> {
        let secret = |key: &str| {
            let value = self.vault.get(tenant, key).map_err(|e| e.to_string())?;
            Ok(value.map(|v| String::clone(&v)))
        };
        self.scope(tenant).providers.chain(&self.manifest, self.manifest.provider_of(task), secret)
    }

    /// Adds the providers' retries since the last flush to each tenant's counters.
    pub(super) async fn flush_provider_retries(&self) {
        for scope in self.scopes() {
            let deltas = scope.providers.take_retries();
            if !deltas.is_empty()
                && let Err(e) = self.store.add_counters(&scope.tenant, &deltas).await
            {
                tracing::warn!("cannot store provider retry counts of {}: {e}", scope.tenant);
            }
        }
    }
}
