//! Builds a task's LLM provider from its manifest entry.

use std::sync::Arc;

use crate::llm::LlmProvider;
use crate::llm::mock::MockProvider;
use crate::llm::openai::{OpenAiConfig, OpenAiProvider};
use crate::llm::reliable::{Reliable, RetryConfig};
use crate::manifest::{ProviderKind, ProviderSpec};
use crate::store::Failure;

use super::attempt::host_failure;

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
                    kind: "missing-secret".into(),
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
