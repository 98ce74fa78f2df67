//! `[llm]` and `[llm.providers.*]`: the named LLM providers (the embedded
//! `mock` is always one of them), their retries, fallbacks and circuit
//! breakers, and the default provider.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::policies::{RawBreaker, retry_policy};
use super::{DEFAULT_PROVIDER, ManifestError, ProviderKind, ProviderSpec};
use crate::config::locate::Locator;
use crate::config::units;
use crate::llm::mock::{MockConfig, MockRule};
use crate::policy::retry::RetryPolicy;

/// `[llm]` as written; the types keep the names serde shows in errors
/// ("expected internally tagged enum Provider").
pub(super) mod raw {
    use super::*;

    /// `[llm]` as written.
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Llm {
        pub default: Option<Spanned<String>>,
        #[serde(default)]
        pub providers: BTreeMap<String, Spanned<Provider>>,
    }

    /// One `[llm.providers.NAME]` table as written.
    #[derive(Deserialize)]
    #[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
    pub enum Provider {
        Mock {
            #[serde(default, deserialize_with = "units::opt_duration")]
            latency: Option<Duration>,
            model: Option<String>,
            script: Option<Spanned<PathBuf>>,
            rules: Option<Vec<MockRule>>,
            #[serde(default)]
            max_retries: u32,
            retries: Option<toml::Value>,
            #[serde(default)]
            fallback: Vec<String>,
            circuit_breaker: Option<RawBreaker>,
            price: Option<crate::model::Price>,
            max_tokens: Option<u32>,
        },
        OpenaiCompatible {
            base_url: String,
            model: String,
            api_key_secret: Option<String>,
            #[serde(default, deserialize_with = "units::opt_duration")]
            timeout: Option<Duration>,
            max_retries: Option<u32>,
            retries: Option<toml::Value>,
            #[serde(default)]
            fallback: Vec<String>,
            circuit_breaker: Option<RawBreaker>,
            price: Option<crate::model::Price>,
            max_tokens: Option<u32>,
        },
    }
}

/// Checks `[llm]`: every provider, then the default, then the fallbacks
/// (which may name any provider). Returns the default provider's name and
/// the providers by name. Rules files of mock providers resolve against `dir`.
pub(super) fn validate(
    llm: raw::Llm,
    locate: &Locator,
    dir: &Path,
) -> Result<(String, BTreeMap<String, ProviderSpec>), ManifestError> {
    let mut providers = BTreeMap::new();
    // Spans do not survive serde's internally tagged enums: errors point at the provider's table.
    let mut provider_fallbacks: Vec<(String, Vec<Spanned<String>>)> = Vec::new();
    providers.insert(
        DEFAULT_PROVIDER.to_owned(),
        ProviderSpec {
            name: DEFAULT_PROVIDER.into(),
            kind: ProviderKind::Mock(MockConfig::default()),
            max_retries: 0,
            retry: None,
            fallback: Vec::new(),
            circuit_breaker: None,
            price: None,
            max_tokens: crate::llm::DEFAULT_MAX_TOKENS,
        },
    );
    for (name, spanned) in llm.providers {
        let span = spanned.span();
        let spec = match spanned.into_inner() {
            raw::Provider::Mock {
                latency,
                model,
                script,
                rules,
                max_retries,
                retries,
                fallback,
                circuit_breaker,
                price,
                max_tokens,
            } => {
                let mut config = match &script {
                    Some(file) => MockConfig::from_file(dir.join(file.get_ref()))
                        .map_err(|e| ManifestError::at(locate, file.span(), format!("llm provider {name:?}: {e}")))?,
                    None => MockConfig::default(),
                };
                if let Some(latency) = latency {
                    config.latency = latency;
                }
                if let Some(model) = model {
                    config.model = model;
                }
                if let Some(mut rules) = rules {
                    // Inline rules take precedence over the script's and the built-in ones.
                    rules.append(&mut config.rules);
                    config.rules = rules;
                }
                provider_fallbacks
                    .push((name.clone(), fallback.into_iter().map(|f| Spanned::new(span.clone(), f)).collect()));
                ProviderSpec {
                    name: name.clone(),
                    kind: ProviderKind::Mock(config),
                    max_retries,
                    retry: provider_retry(locate, &span, retries, &name)?,
                    fallback: Vec::new(),
                    circuit_breaker: circuit_breaker.map(RawBreaker::config),
                    price: checked_price(locate, &span, price, &name)?,
                    max_tokens: max_tokens.unwrap_or(crate::llm::DEFAULT_MAX_TOKENS),
                }
            }
            raw::Provider::OpenaiCompatible {
                base_url,
                model,
                api_key_secret,
                timeout,
                max_retries,
                retries,
                fallback,
                circuit_breaker,
                price,
                max_tokens,
            } => {
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    return Err(ManifestError::at(
                        locate,
                        span,
                        format!("llm provider {name:?}: base_url {base_url:?} must start with http:// or https://"),
                    ));
                }
                provider_fallbacks
                    .push((name.clone(), fallback.into_iter().map(|f| Spanned::new(span.clone(), f)).collect()));
                ProviderSpec {
                    name: name.clone(),
                    kind: ProviderKind::OpenAiCompatible {
                        base_url: base_url.trim_end_matches('/').to_owned(),
                        model,
                        api_key_secret,
                        timeout: timeout.unwrap_or(Duration::from_secs(60)),
                    },
                    max_retries: max_retries.unwrap_or(2),
                    retry: provider_retry(locate, &span, retries, &name)?,
                    fallback: Vec::new(),
                    circuit_breaker: circuit_breaker.map(RawBreaker::config),
                    price: checked_price(locate, &span, price, &name)?,
                    max_tokens: max_tokens.unwrap_or(crate::llm::DEFAULT_MAX_TOKENS),
                }
            }
        };
        providers.insert(name, spec);
    }
    let default_provider = match &llm.default {
        Some(reference) => check_provider(&providers, locate, reference, "[llm] default")?,
        None => DEFAULT_PROVIDER.to_owned(),
    };
    let mut resolved_fallbacks = Vec::new();
    for (name, list) in &provider_fallbacks {
        let owner = format!("llm provider {name:?} (fallback)");
        let mut names = Vec::new();
        for reference in list {
            let target = check_provider(&providers, locate, reference, &owner)?;
            if target == *name {
                return Err(ManifestError::at(locate, reference.span(), format!("{owner} lists itself")));
            }
            names.push(target);
        }
        resolved_fallbacks.push((name.clone(), names));
    }
    for (name, names) in resolved_fallbacks {
        if let Some(provider) = providers.get_mut(&name) {
            provider.fallback = names;
        }
    }
    Ok((default_provider, providers))
}

/// The provider `reference` names, which `owner` uses, or an error listing
/// the defined providers.
pub(super) fn check_provider(
    providers: &BTreeMap<String, ProviderSpec>,
    locate: &Locator,
    reference: &Spanned<String>,
    owner: &str,
) -> Result<String, ManifestError> {
    if providers.contains_key(reference.get_ref()) {
        Ok(reference.get_ref().clone())
    } else {
        let known: Vec<&str> = providers.keys().map(String::as_str).collect();
        Err(ManifestError::at(
            locate,
            reference.span(),
            format!(
                "{owner} names llm provider {:?}, which is not defined; defined providers: {}",
                reference.get_ref(),
                known.join(", ")
            ),
        ))
    }
}

/// A provider's `price`, if given: dollars per million tokens, not negative.
fn checked_price(
    locate: &Locator,
    span: &Range<usize>,
    price: Option<crate::model::Price>,
    name: &str,
) -> Result<Option<crate::model::Price>, ManifestError> {
    match price {
        Some(p) if !(p.input >= 0.0 && p.output >= 0.0 && p.input.is_finite() && p.output.is_finite()) => {
            Err(ManifestError::at(
                locate,
                span.clone(),
                format!(
                    "llm provider {name:?}: `price` is dollars per million tokens, {{ input = 0.15, output = 0.6 }}, never negative"
                ),
            ))
        }
        price => Ok(price),
    }
}

/// A provider's `retries`, if given.
fn provider_retry(
    locate: &Locator,
    span: &Range<usize>,
    value: Option<toml::Value>,
    name: &str,
) -> Result<Option<RetryPolicy>, ManifestError> {
    value.map(|v| retry_policy(locate, &v, span.clone(), &format!("llm provider {name:?}"))).transpose()
}
