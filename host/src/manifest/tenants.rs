//! `[tenants."project/domain"]`: each tenant's quotas (`cairn quota set`
//! stores others over them).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::ManifestError;
use crate::config::locate::Locator;
use crate::config::units;
use crate::model::{Quotas, Tenant, TenantError};

pub(super) mod raw {
    use super::*;

    /// One `[tenants."project/domain"]` table as written.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TenantQuotas {
        pub concurrent_runs: Option<u32>,
        pub tokens_per_run: Option<u64>,
        pub tokens_per_day: Option<u64>,
        /// Dollars.
        pub cost_per_day: Option<f64>,
        /// Dollars.
        pub cost_per_month: Option<f64>,
        pub live_instances: Option<u32>,
        #[serde(default, deserialize_with = "units::opt_size")]
        pub memory: Option<u64>,
        #[serde(default, deserialize_with = "units::opt_size")]
        pub blob_storage: Option<u64>,
    }
}

/// Dollars as millionths of a dollar; `None` for a negative or odd amount.
pub fn dollars_to_micros(dollars: f64) -> Option<u64> {
    (dollars.is_finite() && dollars >= 0.0).then(|| (dollars * 1e6).round() as u64)
}

/// Checks every tenant's name and quotas.
pub(super) fn validate(
    tenants: BTreeMap<Spanned<String>, Spanned<raw::TenantQuotas>>,
    locate: &Locator,
) -> Result<BTreeMap<Tenant, Quotas>, ManifestError> {
    let mut checked = BTreeMap::new();
    for (name, quotas) in tenants {
        let tenant = name
            .get_ref()
            .parse::<Tenant>()
            .map_err(|e: TenantError| ManifestError::at(locate, name.span(), format!("[tenants]: {e}")))?;
        let span = quotas.span();
        let quotas = quotas.into_inner();
        let money = |key: &str, dollars: Option<f64>| -> Result<Option<u64>, ManifestError> {
            dollars
                .map(|d| {
                    dollars_to_micros(d).ok_or_else(|| {
                        ManifestError::at(
                            locate,
                            span.clone(),
                            format!("[tenants.\"{tenant}\"] {key} is dollars, not negative (e.g. 5.0), not {d}"),
                        )
                    })
                })
                .transpose()
        };
        for (key, zero) in [
            ("concurrent_runs", quotas.concurrent_runs == Some(0)),
            ("live_instances", quotas.live_instances == Some(0)),
            ("memory", quotas.memory == Some(0)),
            ("blob_storage", quotas.blob_storage == Some(0)),
        ] {
            if zero {
                return Err(ManifestError::at(
                    locate,
                    span.clone(),
                    format!("[tenants.\"{tenant}\"] {key} must be at least 1 (leave it out for no limit)"),
                ));
            }
        }
        let quotas = Quotas {
            concurrent_runs: quotas.concurrent_runs,
            live_instances: quotas.live_instances,
            memory_bytes: quotas.memory,
            tokens_per_run: quotas.tokens_per_run,
            tokens_per_day: quotas.tokens_per_day,
            cost_per_day_micros: money("cost_per_day", quotas.cost_per_day)?,
            cost_per_month_micros: money("cost_per_month", quotas.cost_per_month)?,
            blob_bytes: quotas.blob_storage,
        };
        checked.insert(tenant, quotas);
    }
    Ok(checked)
}
