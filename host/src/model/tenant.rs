//! Tenants: who a run, secret or journal belongs to.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Who a run, secret or journal belongs to: Flyte's project and domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
