//! `cairn:task/secrets`: declared secrets only. Values are returned to the
//! guest and go nowhere else: not the journal, the logs or the reports. The
//! context can read secrets and do nothing else with the store.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use super::bindings::cairn::task::secrets::{self as wit, Host, SecretError};
use super::{CallReport, CallSetup, Capability, HostServices, HostState};
use crate::access::vault::Vault;
use crate::manifest::SecretDecl;
use crate::model::Tenant;

/// The `secrets` context of an instance.
pub struct SecretsCtx {
    vault: Arc<Vault>,
    tenant: Tenant,
    /// Secrets the task's environment declares.
    declared: Arc<[SecretDecl]>,
}

impl Capability for SecretsCtx {
    fn new(services: &HostServices) -> Self {
        SecretsCtx { vault: services.secrets.clone(), tenant: Tenant::default(), declared: Arc::new([]) }
    }

    fn reset(&mut self, call: &CallSetup<'_>) {
        if self.tenant != *call.tenant {
            self.tenant = call.tenant.clone();
        }
        if !Arc::ptr_eq(&self.declared, &call.env.secrets) {
            self.declared = call.env.secrets.clone();
        }
    }

    fn drain(&mut self, _report: &mut CallReport) {}
}

impl SecretsCtx {
    /// The value of a declared secret.
    async fn get(&self, key: String) -> wasmtime::Result<Result<String, SecretError>> {
        let Some(declared) = self.declared.iter().find(|s| s.key == key) else {
            return Ok(Err(SecretError::NotDeclared(format!(
                "secret {key:?} is not declared by this task's environment; add it to the environment's `secrets` list in cairn.toml"
            ))));
        };
        if let Some(hosts) = &declared.hosts {
            return Ok(Err(SecretError::NotDeclared(format!(
                "secret {key:?} is bound to outbound hosts ({}) and never handed to the task; put {{{{secret:{key}}}}} in a request header instead",
                hosts.describe()
            ))));
        }
        let vault = self.vault.clone();
        let tenant = self.tenant.clone();
        let lookup_key = key.clone();
        let value = tokio::task::spawn_blocking(move || vault.get(&tenant, &lookup_key)).await??;
        // The guest gets its own copy; the vault's is wiped when dropped.
        Ok(value.map(|v| String::clone(&v)).ok_or_else(|| {
            SecretError::NotFound(format!(
                "secret {key:?} has no value in tenant {}; create it with `cairn secret create {key} VALUE`",
                self.tenant
            ))
        }))
    }
}

struct SecretsImports;

impl HasData for SecretsImports {
    type Data<'a> = &'a mut SecretsCtx;
}

/// Links `cairn:task/secrets`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HostState, SecretsImports>(linker, |state| &mut state.caps.secrets)
}

impl Host for &mut SecretsCtx {
    #[tracing::instrument(name = "secrets.get", skip_all)]
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<String, SecretError>> {
        SecretsCtx::get(self, key).await
    }
}
