//! Who may do what: API tokens, each of one tenant and one role.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Tenant;

/// What a token may do in its tenant; each role may do what the ones
/// before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads runs, journals, logs, reports, status, dead letters and usage.
    Viewer,
    /// Also submits, cancels and resumes runs.
    Submitter,
    /// Also retries and purges dead letters, clears the cache, collects
    /// garbage and lists secrets' names.
    Operator,
    /// Also writes secrets, sets quotas and manages the tenant's tokens.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Submitter, Role::Operator, Role::Admin];

    /// Its name, as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Submitter => "submitter",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("no role {text:?}; the roles are viewer, submitter, operator and admin"))
    }
}

/// A stored API token. The secret part is kept only as its sha256: the
/// token itself is shown once, when it is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Its public id (the token starts with it).
    pub id: String,
    /// The tenant it acts as.
    pub tenant: Tenant,
    /// What it may do there.
    pub role: Role,
    /// Hex sha256 of the token's secret part.
    pub secret_sha256: String,
    /// When it was made.
    pub created_at_ms: u64,
    /// When it stops working, if ever.
    pub expires_at_ms: Option<u64>,
}

impl ApiToken {
    /// Whether it works at `now_ms`.
    pub fn live_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| now_ms < at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Viewer < Role::Submitter && Role::Submitter < Role::Operator && Role::Operator < Role::Admin);
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().unwrap_err().contains("viewer, submitter"));
    }
}
