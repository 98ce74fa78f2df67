//! Tenants: who a run, secret or journal belongs to.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Who a run, secret or journal belongs to: Flyte's project and domain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tenant {
    /// Project name.
    pub project: String,
    /// Domain, e.g. `development` or `production`.
    pub domain: String,
}

impl Default for Tenant {
    fn default() -> Self {
        Tenant { project: "default".into(), domain: "development".into() }
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project, self.domain)
    }
}

/// A tenant name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// Not `project/domain`.
    #[error("a tenant is written PROJECT/DOMAIN (e.g. acme/production), not {0:?}")]
    Form(String),
    /// A part with characters outside the allowed set, or too long.
    #[error(
        "the {part} {value:?} is not a usable name: use 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
    )]
    Name {
        /// `project` or `domain`.
        part: &'static str,
        /// What was given.
        value: String,
    },
}

fn valid_part(value: &str) -> bool {
    (1..=63).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && value.as_bytes()[0].is_ascii_alphanumeric()
}

impl Tenant {
    /// The tenant of `project` and `domain`, both checked: names become
    /// keys in the store and in token records, so they are kept plain.
    pub fn new(project: &str, domain: &str) -> Result<Tenant, TenantError> {
        for (part, value) in [("project", project), ("domain", domain)] {
            if !valid_part(value) {
                return Err(TenantError::Name { part, value: value.to_owned() });
            }
        }
        Ok(Tenant { project: project.to_owned(), domain: domain.to_owned() })
    }
}

impl std::str::FromStr for Tenant {
    type Err = TenantError;

    /// Reads `project/domain`.
    fn from_str(text: &str) -> Result<Tenant, TenantError> {
        let (project, domain) = text.split_once('/').ok_or_else(|| TenantError::Form(text.to_owned()))?;
        Tenant::new(project, domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!("acme/prod".parse::<Tenant>().unwrap(), Tenant { project: "acme".into(), domain: "prod".into() });
        assert!(matches!("acme".parse::<Tenant>(), Err(TenantError::Form(_))));
        assert!(matches!("Acme/prod".parse::<Tenant>(), Err(TenantError::Name { part: "project", .. })));
        assert!(matches!("acme/pr od".parse::<Tenant>(), Err(TenantError::Name { part: "domain", .. })));
        assert!(matches!("acme/".parse::<Tenant>(), Err(TenantError::Name { part: "domain", .. })));
        assert!("a/-x".parse::<Tenant>().is_err());
        assert_eq!(Tenant::default().to_string().parse::<Tenant>().unwrap(), Tenant::default());
    }
}
