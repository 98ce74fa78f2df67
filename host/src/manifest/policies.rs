//! The `retries`, `circuit_breaker` and `cache` values that providers,
//! environments and tasks share, read from their raw TOML.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{CachePolicy, ManifestError};
use crate::config::locate::Locator;
use crate::config::units;
use crate::policy::breaker::BreakerConfig;
use crate::policy::retry::{Jitter, RetryPolicy, Strategy};

/// `circuit_breaker = { failure_threshold, success_threshold, timeout }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
    #[serde(default, deserialize_with = "units::opt_duration")]
    timeout: Option<Duration>,
}

impl RawBreaker {
    /// The breaker, with defaults for what is not given and thresholds of at least 1.
    pub(super) fn config(self) -> BreakerConfig {
        let defaults = BreakerConfig::default();
        BreakerConfig {
            failure_threshold: self.failure_threshold.unwrap_or(defaults.failure_threshold).max(1),
            success_threshold: self.success_threshold.unwrap_or(defaults.success_threshold).max(1),
            timeout: self.timeout.unwrap_or(defaults.timeout),
        }
    }
}

/// `retries = { count, strategy, base_delay, max_delay, jitter, retry_on }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    count: u32,
    #[serde(default)]
    strategy: Strategy,
    #[serde(default, deserialize_with = "units::opt_duration")]
    base_delay: Option<Duration>,
    #[serde(default, deserialize_with = "units::opt_duration")]
    max_delay: Option<Duration>,
    #[serde(default)]
    jitter: Jitter,
    retry_on: Option<Vec<String>>,
}

/// `retries = N` or `retries = { count, strategy, base_delay, max_delay, jitter, retry_on }`.
pub(super) fn retry_policy(
    locate: &Locator,
    value: &toml::Value,
    span: Range<usize>,
    owner: &str,
) -> Result<RetryPolicy, ManifestError> {
    match value {
        toml::Value::Integer(n) if (0..=100).contains(n) => Ok(RetryPolicy::count(*n as u32)),
        toml::Value::Integer(_) => {
            Err(ManifestError::at(locate, span, format!("{owner}: retries must be between 0 and 100")))
        }
        toml::Value::Table(_) => {
            let raw: RawRetry = value.clone().try_into().map_err(|e: toml::de::Error| {
                ManifestError::at(locate, span.clone(), format!("{owner}: retries: {}", e.message()))
            })?;
            if raw.count > 100 {
                return Err(ManifestError::at(locate, span, format!("{owner}: retries must be between 0 and 100")));
            }
            let defaults = RetryPolicy::default();
            Ok(RetryPolicy {
                count: raw.count,
                strategy: raw.strategy,
                base_delay: raw.base_delay.unwrap_or(defaults.base_delay),
                max_delay: raw.max_delay.unwrap_or(defaults.max_delay),
                jitter: raw.jitter,
                retry_on: raw.retry_on,
            })
        }
        _ => Err(ManifestError::at(
            locate,
            span,
            format!("{owner}: retries must be a whole number or a table {{ count, strategy, ... }}"),
        )),
    }
}

/// `cache = "auto" | "disable" | { version = "..." }`.
pub(super) fn cache_policy(
    locate: &Locator,
    value: &Spanned<toml::Value>,
    owner: &str,
) -> Result<CachePolicy, ManifestError> {
    let bad = || {
        ManifestError::at(
            locate,
            value.span(),
            format!("{owner}: cache must be \"auto\", \"disable\" or {{ version = \"...\" }}"),
        )
    };
    match value.get_ref() {
        toml::Value::String(mode) if mode == "auto" => Ok(CachePolicy::Auto),
        toml::Value::String(mode) if mode == "disable" => Ok(CachePolicy::Disable),
        toml::Value::Table(table) if table.len() == 1 => match table.get("version") {
            Some(toml::Value::String(version)) if !version.is_empty() => Ok(CachePolicy::Version(version.clone())),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}
