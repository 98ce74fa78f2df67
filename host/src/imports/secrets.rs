//! `cairn:task/secrets`: declared secrets only. Values are returned to the
//! guest and go nowhere else: not the journal, the logs or the reports.

use super::HostState;
use super::bindings::cairn::task::secrets::{Host, SecretError};

impl Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<String, SecretError>> {
        if !self.attempt.secrets.iter().any(|s| s.key == key) {
            return Ok(Err(SecretError::NotDeclared(format!(
                "secret {key:?} is not declared by this task's environment; add it to the environment's `secrets` list in cairn.toml"
            ))));
        }
        let store = self.attempt.store.clone();
        let tenant = self.attempt.tenant.clone();
        let lookup_key = key.clone();
        let value = tokio::task::spawn_blocking(move || store.get_secret(&tenant, &lookup_key)).await??;
        Ok(value.ok_or_else(|| {
            SecretError::NotFound(format!(
                "secret {key:?} has no value in tenant {}; create it with `cairn secret create {key} VALUE`",
                self.attempt.tenant
            ))
        }))
    }
}
