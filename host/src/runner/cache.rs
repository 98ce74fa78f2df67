//! Cross-run result cache keys.
//!
//! Key = sha256 of (task name, contract hash, component digest under `auto`
//! or the author's version, the task's interface hash, canonical input).
//! The contract hash covers
//! every WIT file this host was built with, so a new contract never reuses
//! old results.

use sha2::{Digest, Sha256};

use crate::journal::canonical_input;
use crate::manifest::CachePolicy;

/// sha256 of every file of `wit/` this host was built with, computed by
/// the build script (`host/build.rs`).
pub const CONTRACT_HASH: &str = env!("CAIRN_CONTRACT_HASH");

/// The contract hash; see [`CONTRACT_HASH`].
pub fn contract_hash() -> &'static str {
    CONTRACT_HASH
}

/// The cache key of a run, or `None` when the policy disables caching.
pub fn cache_key(
    policy: &CachePolicy,
    task: &str,
    component_digest: &str,
    interface: Option<&str>,
    input: &str,
) -> Option<String> {
    let version = match policy {
        CachePolicy::Disable => return None,
        CachePolicy::Auto => format!("component:{component_digest}"),
        CachePolicy::Version(version) => format!("version:{version}"),
    };
    let mut hasher = Sha256::new();
    // A task whose input or output changed shape never reuses results of the old one.
    let interface = interface.map_or_else(|| "interface:none".to_owned(), |hash| format!("interface:{hash}"));
    for part in [task, CONTRACT_HASH, &version, &interface, &canonical_input(input)] {
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
        assert_eq!(cache_key(&CachePolicy::Disable, "t", "d", None, "{}"), None);
        let a = cache_key(&auto, "t", "d1", None, r#"{"a":1,"b":2}"#).unwrap();
        assert_eq!(a, cache_key(&auto, "t", "d1", None, r#"{ "b": 2, "a": 1 }"#).unwrap(), "canonical input");
        assert_ne!(a, cache_key(&auto, "t", "d2", None, r#"{"a":1,"b":2}"#).unwrap(), "component changed");
        assert_ne!(a, cache_key(&auto, "u", "d1", None, r#"{"a":1,"b":2}"#).unwrap(), "other task");
        let v1 = CachePolicy::Version("1".into());
        assert_eq!(
            cache_key(&v1, "t", "d1", None, "{}"),
            cache_key(&v1, "t", "d2", None, "{}"),
            "a version ignores the component"
        );
        assert_ne!(
            cache_key(&v1, "t", "d1", None, "{}"),
            cache_key(&CachePolicy::Version("2".into()), "t", "d1", None, "{}")
        );
        assert_ne!(
            cache_key(&v1, "t", "d1", Some("a"), "{}"),
            cache_key(&v1, "t", "d1", Some("b"), "{}"),
            "interface changed"
        );
    }

    #[test]
    fn the_contract_hash_covers_every_wit_file() {
        let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut files = Vec::new();
        let mut dirs = vec![wit.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() { dirs.push(path) } else { files.push(path) }
            }
        }
        files.sort();
        assert!(files.iter().any(|f| f.ends_with("tasks.wit")), "tasks.wit is part of the contract");
        assert_eq!(env!("CAIRN_CONTRACT_FILES").parse::<usize>().unwrap(), files.len());
        let mut hasher = Sha256::new();
        for path in &files {
            hasher.update(path.strip_prefix(&wit).unwrap().to_str().unwrap().as_bytes());
            hasher.update([0]);
            hasher.update(std::fs::read(path).unwrap());
            hasher.update([0]);
        }
        assert_eq!(contract_hash(), hex::encode(hasher.finalize()), "built from the wit/ in the tree");
    }
}
