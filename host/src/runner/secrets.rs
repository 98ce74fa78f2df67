//! The secret values a run could read, for its scrubber: its tasks'
//! environments' secrets and the API keys of their providers (and the
//! providers' fallbacks).

use super::Host;
use crate::access::scrub::Scrubber;
use crate::manifest::{ProviderKind, TaskSpec};
use crate::model::Tenant;

impl Host {
    /// The scrubber of a run of `tenant` over the task chain `tasks`.
    pub(super) fn scrubber_for(&self, tenant: &Tenant, tasks: &[TaskSpec]) -> Scrubber {
        let mut names: Vec<String> = Vec::new();
        for task in tasks {
            names.extend(self.manifest.environment_of(task).secrets.iter().map(|s| s.key.clone()));
            let primary = self.manifest.provider_of(task);
            let providers =
                std::iter::once(primary).chain(primary.fallback.iter().filter_map(|n| self.manifest.providers.get(n)));
            for provider in providers {
                if let ProviderKind::OpenAiCompatible { api_key_secret: Some(key), .. } = &provider.kind {
                    names.push(key.clone());
                }
            }
        }
        names.sort();
        names.dedup();
        // A secret that cannot be read cannot leak either.
        Scrubber::new(names.into_iter().filter_map(|name| {
            let value = self.vault.get(tenant, &name).ok().flatten()?;
            Some((name, value))
        }))
    }
}
