//! `reuse = { replicas, concurrency, scaledown_ttl, idle_ttl, queue_timeout }`:
//! how an environment keeps warm instances of its tasks (see `crate::pool`).

use std::time::Duration;

use serde::Deserialize;

use crate::config::units;

/// The shortest `scaledown_ttl` and `idle_ttl` accepted.
pub const MIN_TTL: Duration = Duration::from_secs(30);

/// An environment's pool of warm, reusable instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReusePolicy {
    /// Replicas warmed when the environment starts and kept while it has work.
    pub min_replicas: u32,
    /// Replicas the pool may grow to under load.
    pub max_replicas: u32,
    /// Instances per replica; an instance serves one call at a time.
    pub concurrency: u32,
    /// A replica above `min_replicas` idle this long is dropped.
    pub scaledown_ttl: Duration,
    /// The whole environment, idle this long, drops to zero instances.
    pub idle_ttl: Duration,
    /// How long a caller may wait for a free instance before failing.
    pub queue_timeout: Duration,
}

impl Default for ReusePolicy {
    fn default() -> Self {
        ReusePolicy {
            min_replicas: 1,
            max_replicas: 1,
            concurrency: 1,
            scaledown_ttl: Duration::from_secs(300),
            idle_ttl: Duration::from_secs(1800),
            queue_timeout: Duration::from_secs(600),
        }
    }
}

impl ReusePolicy {
    /// Most instances the pool holds at once: max replicas × concurrency.
    pub fn capacity(&self) -> usize {
        (self.max_replicas * self.concurrency) as usize
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    replicas: Option<toml::Value>,
    concurrency: Option<i64>,
    #[serde(default, deserialize_with = "units::opt_duration")]
    scaledown_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "units::opt_duration")]
    idle_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "units::opt_duration")]
    queue_timeout: Option<Duration>,
}

/// Parses and checks a `reuse` table; the error says what to change.
pub fn parse(value: &toml::Value) -> Result<ReusePolicy, String> {
    let raw: Raw = value.clone().try_into().map_err(|e: toml::de::Error| e.message().to_owned())?;
    let defaults = ReusePolicy::default();
    let count = |v: &toml::Value| match v {
        toml::Value::Integer(n) if (0..=100).contains(n) => Ok(*n as u32),
        _ => Err("replicas must be a whole number from 0 to 100, or [min, max]".to_owned()),
    };
    let (min_replicas, max_replicas) = match &raw.replicas {
        None => (defaults.min_replicas, defaults.max_replicas),
        Some(toml::Value::Array(pair)) if pair.len() == 2 => (count(&pair[0])?, count(&pair[1])?),
        Some(toml::Value::Array(_)) => return Err("replicas = [min, max] takes exactly two numbers".into()),
        Some(n) => {
            let n = count(n)?;
            (n, n)
        }
    };
    if max_replicas == 0 {
        return Err("replicas: the maximum must be at least 1".into());
    }
    if min_replicas > max_replicas {
        return Err(format!("replicas = [{min_replicas}, {max_replicas}]: min is larger than max"));
    }
    let concurrency = match raw.concurrency {
        None => defaults.concurrency,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(n) => return Err(format!("concurrency = {n}: it must be from 1 to 1000")),
    };
    let ttl = |value: Option<Duration>, default: Duration, key: &str| match value {
        Some(ttl) if ttl < MIN_TTL => Err(format!(
            "{key} = {ttl:?} is too short; it must be at least {MIN_TTL:?}, or instances would be dropped between calls"
        )),
        Some(ttl) => Ok(ttl),
        None => Ok(default),
    };
    let scaledown_ttl = ttl(raw.scaledown_ttl, defaults.scaledown_ttl, "scaledown_ttl")?;
    let idle_ttl = ttl(raw.idle_ttl, defaults.idle_ttl, "idle_ttl")?;
    let queue_timeout = raw.queue_timeout.unwrap_or(defaults.queue_timeout);
    Ok(ReusePolicy { min_replicas, max_replicas, concurrency, scaledown_ttl, idle_ttl, queue_timeout })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<ReusePolicy, String> {
        parse(&toml::from_str::<toml::Value>(&format!("reuse = {text}")).unwrap()["reuse"])
    }

    #[test]
    fn replicas_take_a_number_or_a_range() {
        let fixed = policy("{ replicas = 2, concurrency = 4 }").unwrap();
        assert_eq!((fixed.min_replicas, fixed.max_replicas, fixed.capacity()), (2, 2, 8));
        let range = policy("{ replicas = [0, 3], scaledown_ttl = \"5m\", idle_ttl = \"30m\" }").unwrap();
        assert_eq!((range.min_replicas, range.max_replicas), (0, 3));
        assert_eq!(range.scaledown_ttl, Duration::from_secs(300));
    }

    #[test]
    fn bad_values_say_what_to_change() {
        assert!(policy("{ idle_ttl = \"10s\" }").unwrap_err().contains("at least 30s"));
        assert!(policy("{ scaledown_ttl = \"29s\" }").unwrap_err().contains("scaledown_ttl"));
        assert!(policy("{ replicas = [3, 1] }").unwrap_err().contains("min is larger than max"));
        assert!(policy("{ replicas = 0 }").unwrap_err().contains("at least 1"));
        assert!(policy("{ concurrency = 0 }").unwrap_err().contains("from 1 to 1000"));
        assert!(policy("{ replica = 2 }").unwrap_err().contains("unknown field"));
    }
}
