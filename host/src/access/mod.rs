//! Who may do what, and what stays secret: API tokens (made and shown once,
//! stored as a hash, checked in constant time) and, in [`vault`], secrets
//! sealed at rest. Used alike by the CLI (no server) and the server.

pub mod scrub;
pub mod vault;

use sha2::{Digest, Sha256};

use crate::model::{ApiToken, Role, Tenant};

/// Every token starts with this, so that a leaked one is easy to spot.
pub const TOKEN_PREFIX: &str = "cairn_";

/// Why a presented token is refused. The messages never repeat the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// Not of the form a token has.
    #[error("the token is not a cairn token (cairn_<id>_<secret>); make one with `cairn tokens create`")]
    Malformed,
    /// No such token, or the secret part is wrong (told apart nowhere).
    #[error("the token is unknown or revoked; make a new one with `cairn tokens create`")]
    Unknown,
    /// The token's time is over.
    #[error("token {id} expired at {at_ms} ms since the epoch; make a new one with `cairn tokens create`")]
    Expired {
        /// The token's id.
        id: String,
        /// When it expired.
        at_ms: u64,
    },
}

/// A token just made: the token itself (shown once) and what is stored.
pub struct Minted {
    /// `cairn_<id>_<secret>`: give it to the client; it is not kept.
    pub token: String,
    /// The stored record (the secret only as its sha256).
    pub record: ApiToken,
}

/// A new token of `tenant` and `role`, valid until `expires_at_ms` if given.
pub fn mint(tenant: &Tenant, role: Role, now_ms: u64, expires_at_ms: Option<u64>) -> Minted {
    let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let record = ApiToken {
        id: id.clone(),
        tenant: tenant.clone(),
        role,
        secret_sha256: digest(&secret),
        created_at_ms: now_ms,
        expires_at_ms,
    };
    Minted { token: format!("{TOKEN_PREFIX}{id}_{secret}"), record }
}

/// When a token made at `now_ms` to last `age` (e.g. `90d`) stops working;
/// `None` without an age (until revoked).
pub fn expires_at(now_ms: u64, age: Option<&str>) -> Result<Option<u64>, String> {
    let Some(age) = age else { return Ok(None) };
    let lasts = crate::config::units::parse_duration(age)?;
    let at = u64::try_from(lasts.as_millis()).ok().and_then(|ms| now_ms.checked_add(ms));
    at.map(Some).ok_or_else(|| format!("a token that lasts {age} would outlive the clock; give a shorter age"))
}

/// The id and secret part of a presented token.
pub fn split(token: &str) -> Result<(&str, &str), AccessError> {
    let rest = token.strip_prefix(TOKEN_PREFIX).ok_or(AccessError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(AccessError::Malformed)?;
    if id.is_empty() || secret.is_empty() {
        return Err(AccessError::Malformed);
    }
    Ok((id, secret))
}

/// Checks a token's secret part against its stored record at `now_ms`.
pub fn check(record: Option<&ApiToken>, secret: &str, now_ms: u64) -> Result<(), AccessError> {
    let record = record.ok_or(AccessError::Unknown)?;
    if !same(digest(secret).as_bytes(), record.secret_sha256.as_bytes()) {
        return Err(AccessError::Unknown);
    }
    if !record.live_at(now_ms) {
        return Err(AccessError::Expired { id: record.id.clone(), at_ms: record.expires_at_ms.unwrap_or_default() });
    }
    Ok(())
}

/// Hex sha256 of `text`.
fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether `a` and `b` are equal, in time that does not depend on where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_checks_and_a_wrong_or_late_one_does_not() {
        let tenant = Tenant::new("acme", "prod").unwrap();
        let minted = mint(&tenant, Role::Viewer, 1_000, Some(2_000));
        assert!(!minted.record.secret_sha256.is_empty() && !minted.token.contains(&minted.record.secret_sha256));
        let (id, secret) = split(&minted.token).unwrap();
        assert_eq!(id, minted.record.id);
        assert_eq!(check(Some(&minted.record), secret, 1_500), Ok(()));
        assert_eq!(check(Some(&minted.record), "nope", 1_500), Err(AccessError::Unknown));
        assert_eq!(check(None, secret, 1_500), Err(AccessError::Unknown));
        assert!(matches!(check(Some(&minted.record), secret, 2_000), Err(AccessError::Expired { .. })));
        assert_eq!(split("Bearer x"), Err(AccessError::Malformed));
        assert_eq!(split("cairn_abc"), Err(AccessError::Malformed));
        assert_eq!(expires_at(1_000, None), Ok(None));
        assert_eq!(expires_at(1_000, Some("2s")), Ok(Some(3_000)));
        assert!(expires_at(1_000, Some("soon")).is_err());
        assert!(expires_at(u64::MAX, Some("1s")).unwrap_err().contains("outlive"));
        // Each token is new.
        assert_ne!(mint(&tenant, Role::Viewer, 0, None).token, minted.token);
    }
}
