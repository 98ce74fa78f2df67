//! What the manifest targets share: parsing text as `cairn run` does, and
//! using a parsed manifest as the host does.

use std::path::Path;

use cairn::manifest::Manifest;
use cairn::model::{Failure, FailureKind};
use cairn::policy::breaker::{Breaker, BreakerState};

/// Where the fuzzed manifest claims to live: a directory that does not
/// exist, so that paths it names resolve to nothing.
const PATH: &str = "/nonexistent/cairn-fuzz/cairn.toml";

/// Parses `text` as a manifest and, when it is valid, uses it. A mock
/// provider's `script` names a file the parser reads (`/dev/zero` would
/// hang the fuzzer): a manifest with one is left out; the rules file's own
/// parser is fuzzed on every input instead.
pub fn parse_and_use(text: &str) {
    let _ = cairn::llm::mock::MockConfig::from_toml_str(text, "rules.toml");
    if let Ok(table) = toml::from_str::<toml::Table>(text)
        && names_a_script(&toml::Value::Table(table))
    {
        return;
    }
    match Manifest::parse(Path::new(PATH), text) {
        Ok(manifest) => use_manifest(&manifest),
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

fn names_a_script(value: &toml::Value) -> bool {
    match value {
        toml::Value::Table(table) => table.iter().any(|(key, value)| key == "script" || names_a_script(value)),
        toml::Value::Array(items) => items.iter().any(names_a_script),
        _ => false,
    }
}

/// What the host reads from a valid manifest: every reference resolves,
/// and the policies compute.
fn use_manifest(manifest: &Manifest) {
    assert!(manifest.providers.contains_key(&manifest.default_provider));
    assert!(manifest.environments.contains_key(cairn::manifest::DEFAULT_ENVIRONMENT));
    for provider in manifest.providers.values() {
        assert!(provider.fallback.iter().all(|name| manifest.providers.contains_key(name) && *name != provider.name));
        if let Some(retry) = &provider.retry {
            use_retry(retry);
        }
        if let Some(config) = provider.circuit_breaker {
            use_breaker(config);
        }
        if let Some(price) = provider.price {
            let _ = price.cost_micros(1_000, 1_000);
        }
    }
    for (name, environment) in &manifest.environments {
        let closure = manifest.environment_closure(name);
        assert_eq!(closure.last(), Some(name), "an environment comes after what it depends on");
        assert!(environment.depends_on.iter().all(|d| manifest.environments.contains_key(d)));
        if let Some(reuse) = environment.reuse {
            assert!(reuse.min_replicas <= reuse.max_replicas && reuse.capacity() >= 1);
        }
    }
    for task in manifest.tasks.values() {
        let _ = manifest.environment_of(task);
        let _ = manifest.provider_of(task);
        let _ = manifest.cache_of(task);
        assert!(manifest.task(&task.name).is_ok());
        assert!(task.fallback.iter().all(|name| manifest.tasks.contains_key(name) && *name != task.name));
        use_retry(&task.retry);
        if let Some(config) = task.circuit_breaker {
            use_breaker(config);
        }
    }
    for tenant in manifest.quotas.keys() {
        let _ = manifest.quotas_of(tenant, None);
    }
    let _ = manifest.state_dir();
}

fn use_retry(retry: &cairn::policy::retry::RetryPolicy) {
    let failure = Failure::new(FailureKind::Trap, "trap", true);
    for n in [1, 2, 3, 10, retry.count, retry.count.saturating_add(1)] {
        let _ = retry.base_wait(n);
        let _ = retry.wait(n, &mut || 0.5);
        let _ = retry.should_retry(&failure, n);
    }
}

fn use_breaker(config: cairn::policy::breaker::BreakerConfig) {
    let now = cairn::model::now_ms();
    let mut breaker = Breaker::new(config);
    breaker.on_failure(now);
    // A probe that fails opens it for `timeout`.
    breaker.state = BreakerState::HalfOpen { successes: 0 };
    breaker.on_failure(now);
    let _ = breaker.admit(now);
    breaker.on_success();
}
