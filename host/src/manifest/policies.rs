//! The `retries`, `circuit_breaker` and `cache` values that providers,
//! environments and tasks share, read from their raw TOML.

use std::ops::Range;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::{CachePolicy, ManifestError};
use crate::config::locate::Locator;
use crate::config::units;
use crate::policy::breaker::BreakerConfig;
use crate::policy::retry::{Jitter, RetryPolicy, Strategy};

/// The longest retry delay or breaker timeout: the policies compute with
/// them in float seconds and in milliseconds since the epoch, which a
/// duration near `Duration::MAX` overflows (a panic as the first retry is
/// scheduled or the breaker opens).
pub(super) const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration of at most [`MAX_WAIT`].
fn opt_wait<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let wait = units::duration(deserializer)?;
    if wait > MAX_WAIT {
        return Err(D::Error::custom(format!(
            "{wait:?} is longer than a retry delay or a breaker's timeout may be, a year (\"365d\")"
        )));
    }
    Ok(Some(wait))
}

/// `circuit_breaker = { failure_threshold, success_threshold, timeout }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
    #[serde(default, deserialize_with = "opt_wait")]
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
    #[serde(default, deserialize_with = "opt_wait")]
    base_delay: Option<Duration>,
    #[serde(default, deserialize_with = "opt_wait")]
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::{Manifest, ManifestError};
    use crate::policy::breaker::{Breaker, BreakerState};

    fn task(settings: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("/p/cairn.toml"), &format!("[tasks.t]\ncomponent = \"t.wasm\"\n{settings}\n"))
    }

    /// Found with the `manifest` fuzz target's checks: a retry delay whose
    /// float seconds round up past `Duration::MAX` panicked in `base_wait`
    /// (release builds too), a breaker timeout near it overflowed `until_ms`.
    #[test]
    fn waits_longer_than_a_year_are_refused() {
        let near_max = "18446744073709549568s1500s";
        for settings in [
            format!(
                "retries = {{ count = 1, strategy = \"linear\", base_delay = \"{near_max}\", max_delay = \"{near_max}\" }}"
            ),
            "retries = { count = 1, max_delay = \"366d\" }".to_owned(),
            "circuit_breaker = { timeout = \"18446744073709549568s\" }".to_owned(),
        ] {
            let Err(ManifestError::Invalid { line, message, .. }) = task(&settings) else {
                panic!("{settings} parsed")
            };
            assert_eq!(line, 3, "{message}");
            assert!(message.contains("longer than a retry delay or a breaker's timeout may be"), "{message}");
        }
    }

    #[test]
    fn the_longest_waits_compute() {
        let manifest = task(
            "retries = { count = 100, strategy = \"exponential\", base_delay = \"365d\", max_delay = \"365d\", jitter = \"equal\" }\n\
             circuit_breaker = { timeout = \"365d\" }",
        )
        .unwrap();
        let task = manifest.task("t").unwrap();
        for retry in [1, 2, 100, u32::MAX] {
            assert!(task.retry.wait(retry, &mut || 1.0) <= MAX_WAIT);
        }
        let mut breaker = Breaker::new(task.circuit_breaker.unwrap());
        breaker.state = BreakerState::HalfOpen { successes: 0 };
        breaker.on_failure(crate::model::now_ms());
        assert_eq!(breaker.state_name(), "open");
    }
}
