//! The provider registry: a task's LLM provider chain built from its
//! manifest entry once per host, so breakers and connections are shared by
//! runs; and the providers' retry counts flushed to the store.

use std::sync::Arc;

use super::Host;
use crate::llm::LlmProvider;
use crate::llm::chain::{Member, ProviderChain};
use crate::llm::mock::MockProvider;
use crate::llm::openai::{OpenAiConfig, OpenAiProvider};
use crate::llm::reliable::{Reliable, RetryConfig};
use crate::manifest::TaskSpec;
use crate::manifest::{ProviderKind, ProviderSpec};
use crate::model::{Failure, FailureKind};

fn host_failure(message: String) -> Failure {
    Failure::host(message)
}

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
                Some(key) => Some(secret(key).map_err(host_failure)?.ok_or_else(|| Failure {
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
            Arc::new(OpenAiProvider::new(config).map_err(|e| host_failure(e.to_string()))?)
        }
    };
    Ok(Arc::new(wrap(inner)))
}

impl Host {
    /// The task's provider chain (its provider, then that provider's
    /// fallbacks), each member with JSON validation and provider retries.
    /// Built once per host, so breakers and connections are shared by runs.
    pub(super) fn provider_for(&self, task: &TaskSpec) -> Result<Arc<ProviderChain>, Failure> {
        let primary = self.manifest.provider_of(task);
        if let Some(chain) = self.providers.lock().unwrap_or_else(|e| e.into_inner()).get(&primary.name) {
            return Ok(chain.clone());
        }
        let secret = |key: &str| self.store.get_secret(&self.tenant, key).map_err(|e| e.to_string());
        let mut members = Vec::new();
        let fallbacks = primary.fallback.iter().filter_map(|name| self.manifest.providers.get(name));
        for spec in std::iter::once(primary).chain(fallbacks) {
            let reliable = build_provider(spec, secret)?;
            members.push(Member {
                name: spec.name.clone(),
                retries: reliable.retry_counter(),
                provider: reliable,
                breaker: spec.circuit_breaker,
            });
        }
        let chain = Arc::new(ProviderChain::new(members, self.breakers.clone()));
        self.providers.lock().unwrap_or_else(|e| e.into_inner()).insert(primary.name.clone(), chain.clone());
        Ok(chain)
    }

    /// Adds the providers' retries since the last flush to the store's counters.
    pub(super) async fn flush_provider_retries(&self) {
        let chains: Vec<Arc<ProviderChain>> =
            self.providers.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let deltas: Vec<(String, u64)> = chains
            .iter()
            .flat_map(|chain| chain.take_retries())
            .map(|(provider, n)| (format!("provider:{provider}:retries"), n))
            .collect();
        if !deltas.is_empty()
            && let Err(e) = self.store.add_counters(&self.tenant, &deltas).await
        {
            tracing::warn!("cannot store provider retry counts: {e}");
        }
    }
}
