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
use zeroize::Zeroizing;

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

/// `key`'s declaration among an environment's `declared` secrets, or the
/// message saying it has none (for `secrets.get` and for HTTP placeholders).
pub(super) fn declaration<'a>(declared: &'a [SecretDecl], key: &str) -> Result<&'a SecretDecl, String> {
    declared.iter().find(|s| s.key == key).ok_or_else(|| {
        format!(
            "secret {key:?} is not declared by this task's environment; add it to the environment's `secrets` list in cairn.toml"
        )
    })
}

/// `key`'s value in `tenant`'s vault, read off the async threads; the inner
/// error is the message for a secret with no stored value.
pub(super) async fn stored(
    vault: &Arc<Vault>,
    tenant: &Tenant,
    key: &str,
) -> wasmtime::Result<Result<Zeroizing<String>, String>> {
    let (vault, owner, lookup_key) = (vault.clone(), tenant.clone(), key.to_owned());
    let value = tokio::task::spawn_blocking(move || vault.get(&owner, &lookup_key)).await??;
    Ok(value.ok_or_else(|| {
        format!("secret {key:?} has no value in tenant {tenant}; create it with `cairn secret create {key} VALUE`")
    }))
}

impl SecretsCtx {
    /// The value of a declared secret.
    async fn get(&self, key: String) -> wasmtime::Result<Result<String, SecretError>> {
        let declared = match declaration(&self.declared, &key) {
            Ok(declared) => declared,
            Err(message) => return Ok(Err(SecretError::NotDeclared(message))),
        };
        if let Some(hosts) = &declared.hosts {
            return Ok(Err(SecretError::NotDeclared(format!(
                "secret {key:?} is bound to outbound hosts ({}) and never handed to the task; put {{{{secret:{key}}}}} in a request header instead",
                hosts.describe()
            ))));
        }
        // The guest gets its own copy; the vault's is wiped when dropped.
        Ok(stored(&self.vault, &self.tenant, &key).await?.map(|v| String::clone(&v)).map_err(SecretError::NotFound))
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
