//! Cross-run result cache keys.
//!
//! Key = sha256 of (task name, contract hash, component digest under `auto`
//! or the author's version, canonical input). The contract hash covers the
//! WIT files this host was built with, so a new contract never reuses old
//! results.

use sha2::{Digest, Sha256};

use crate::journal::canonical_input;
use crate::manifest::CachePolicy;

/// sha256 of the `cairn:task` WIT files compiled into this host.
pub fn contract_hash() -> String {
    let mut hasher = Sha256::new();
    for text in [
        include_str!("../../../wit/types.wit"),
        include_str!("../../../wit/llm.wit"),
        include_str!("../../../wit/trace.wit"),
        include_str!("../../../wit/secrets.wit"),
        include_str!("../../../wit/report.wit"),
        include_str!("../../../wit/world.wit"),
    ] {
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// The cache key of a run, or `None` when the policy disables caching.
pub fn cache_key(policy: &CachePolicy, task: &str, component_digest: &str, input: &str) -> Option<String> {
    let version = match policy {
        CachePolicy::Disable => return None,
        CachePolicy::Auto => format!("component:{component_digest}"),
        CachePolicy::Version(version) => format!("version:{version}"),
    };
    let mut hasher = Sha256::new();
    for part in [task, &contract_hash(), &version, &canonical_input(input)] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    Some(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_policy() {
        let auto = CachePolicy::Auto;
        assert_eq!(cache_key(&CachePolicy::Disable, "t", "d", "{}"), None);
        let a = cache_key(&auto, "t", "d1", r#"{"a":1,"b":2}"#).unwrap();
        assert_eq!(a, cache_key(&auto, "t", "d1", r#"{ "b": 2, "a": 1 }"#).unwrap(), "canonical input");
        assert_ne!(a, cache_key(&auto, "t", "d2", r#"{"a":1,"b":2}"#).unwrap(), "component changed");
        assert_ne!(a, cache_key(&auto, "u", "d1", r#"{"a":1,"b":2}"#).unwrap(), "other task");
        let v1 = CachePolicy::Version("1".into());
        assert_eq!(cache_key(&v1, "t", "d1", "{}"), cache_key(&v1, "t", "d2", "{}"), "a version ignores the component");
        assert_ne!(cache_key(&v1, "t", "d1", "{}"), cache_key(&CachePolicy::Version("2".into()), "t", "d1", "{}"));
    }
}
