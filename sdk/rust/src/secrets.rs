//! Secrets declared by the task's environment. Their values never enter the
//! journal, the logs or the reports; keep them out of your output too.

use crate::SecretError;

/// The value of secret `key`. Fails when the environment does not declare the
/// key or no value is stored; `?` turns that into a non-retryable task error.
pub fn get(key: &str) -> Result<String, SecretError> {
    crate::bindings::cairn::task::secrets::get(key)
}
