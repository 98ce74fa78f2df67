//! What a tenant may use (quotas) and what its LLM calls spent (the ledger).

use serde::{Deserialize, Serialize};

/// A tenant's quotas; each `None` is unlimited. Costs are in millionths of
/// a dollar.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Runs attempting at once (a parent waiting on its children lends its
    /// share); more queue, they do not fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_runs: Option<u32>,
    /// Guest instances a host keeps for the tenant at once, warm ones
    /// included (an instance waiting on its children lends its share); more
    /// queue, they do not fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_instances: Option<u32>,
    /// Guest memory a host gives the tenant's instances at once, in bytes:
    /// each counts its environment's `resources.memory`, what it may grow to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// LLM tokens one run may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_run: Option<u64>,
    /// LLM tokens per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// LLM cost per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_day_micros: Option<u64>,
    /// LLM cost per UTC month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_month_micros: Option<u64>,
    /// Bytes the tenant's blobs (files passed between tasks) may take in
    /// the blob store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_bytes: Option<u64>,
}

impl Quotas {
    /// `self`, with every quota `over` sets taking its place.
    pub fn overridden_by(&self, over: &Quotas) -> Quotas {
        Quotas {
            concurrent_runs: over.concurrent_runs.or(self.concurrent_runs),
            live_instances: over.live_instances.or(self.live_instances),
            memory_bytes: over.memory_bytes.or(self.memory_bytes),
            tokens_per_run: over.tokens_per_run.or(self.tokens_per_run),
            tokens_per_day: over.tokens_per_day.or(self.tokens_per_day),
            cost_per_day_micros: over.cost_per_day_micros.or(self.cost_per_day_micros),
            cost_per_month_micros: over.cost_per_month_micros.or(self.cost_per_month_micros),
            blob_bytes: over.blob_bytes.or(self.blob_bytes),
        }
    }
}

/// What a provider's model costs, in dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens.
    pub input: f64,
    /// Per million completion tokens.
    pub output: f64,
}

impl Price {
    /// What `input` and `output` tokens cost, in millionths of a dollar,
    /// rounded up (a dollar per million tokens is a millionth per token).
    pub fn cost_micros(&self, input: u64, output: u64) -> u64 {
        (input as f64 * self.input + output as f64 * self.output).ceil().max(0.0) as u64
    }
}

/// A quota of the ledger, and its lines' keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerQuota {
    /// `tokens:run:RUN`.
    TokensPerRun,
    /// `tokens:day:YYYY-MM-DD`.
    TokensPerDay,
    /// `cost:day:YYYY-MM-DD`.
    CostPerDay,
    /// `cost:month:YYYY-MM`.
    CostPerMonth,
}

impl LedgerQuota {
    /// Every ledger quota.
    pub const ALL: [LedgerQuota; 4] =
        [LedgerQuota::TokensPerRun, LedgerQuota::TokensPerDay, LedgerQuota::CostPerDay, LedgerQuota::CostPerMonth];

    /// The start of its lines' keys.
    pub fn prefix(self) -> &'static str {
        match self {
            LedgerQuota::TokensPerRun => "tokens:run:",
            LedgerQuota::TokensPerDay => "tokens:day:",
            LedgerQuota::CostPerDay => "cost:day:",
            LedgerQuota::CostPerMonth => "cost:month:",
        }
    }

    /// Its name in the manifest and in `cairn quota set`.
    pub fn name(self) -> &'static str {
        match self {
            LedgerQuota::TokensPerRun => "tokens_per_run",
            LedgerQuota::TokensPerDay => "tokens_per_day",
            LedgerQuota::CostPerDay => "cost_per_day",
            LedgerQuota::CostPerMonth => "cost_per_month",
        }
    }

    /// The quota a line's key belongs to.
    pub fn of_key(key: &str) -> Option<LedgerQuota> {
        LedgerQuota::ALL.into_iter().find(|q| key.starts_with(q.prefix()))
    }

    /// Its limit in `quotas`.
    pub fn limit(self, quotas: &Quotas) -> Option<u64> {
        match self {
            LedgerQuota::TokensPerRun => quotas.tokens_per_run,
            LedgerQuota::TokensPerDay => quotas.tokens_per_day,
            LedgerQuota::CostPerDay => quotas.cost_per_day_micros,
            LedgerQuota::CostPerMonth => quotas.cost_per_month_micros,
        }
    }

    /// Its limit as people read it: `50000 tokens`, `$5.00`.
    pub fn shown(self, quotas: &Quotas) -> String {
        match (self, self.limit(quotas)) {
            (_, None) => "unlimited".into(),
            (LedgerQuota::TokensPerRun | LedgerQuota::TokensPerDay, Some(n)) => format!("{n} tokens"),
            (_, Some(micros)) => format!("${:.2}", micros as f64 / 1e6),
        }
    }
}

/// One amount of a reservation: `amount` more of the ledger line `key`,
/// which may not pass `limit` (spent and reserved together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    /// The line, e.g. `cost:day:2026-11-29` or `tokens:run:RUN`.
    pub key: String,
    /// What the call may spend at most.
    pub amount: u64,
    /// The quota on the line, if any.
    pub limit: Option<u64>,
}

/// A ledger line as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerTotals {
    /// Settled: what calls really spent.
    pub spent: u64,
    /// Held by calls under way (their worst case).
    pub reserved: u64,
}

/// One live LLM call's usage, as `cairn usage` adds them up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// When it was settled, ms since the Unix epoch.
    pub at_ms: u64,
    /// The run.
    pub run_id: String,
    /// The run's task.
    pub task: String,
    /// The provider that answered.
    pub provider: String,
    /// The model that answered.
    pub model: String,
    /// Tokens of the request.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
    /// What it cost, in millionths of a dollar.
    pub cost_micros: u64,
}

/// The UTC day (`YYYY-MM-DD`) and month (`YYYY-MM`) of `ms` since the epoch.
pub fn day_and_month(ms: u64) -> (String, String) {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = (ms / 86_400_000) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (format!("{year:04}-{month:02}-{day:02}"), format!("{year:04}-{month:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_are_utc_dates() {
        assert_eq!(day_and_month(0), ("1970-01-01".into(), "1970-01".into()));
        // 2026-11-29T14:00:00Z
        assert_eq!(day_and_month(1_795_960_800_000), ("2026-11-29".into(), "2026-11".into()));
        // 2024-02-29T23:59:59.999Z, a leap day
        assert_eq!(day_and_month(1_709_251_199_999), ("2024-02-29".into(), "2024-02".into()));
        assert_eq!(day_and_month(1_709_251_200_000), ("2024-03-01".into(), "2024-03".into()));
    }

    #[test]
    fn a_dollar_per_million_tokens_is_a_millionth_per_token() {
        let price = Price { input: 0.15, output: 0.6 };
        assert_eq!(price.cost_micros(1_000_000, 0), 150_000);
        assert_eq!(price.cost_micros(0, 10), 6);
        assert_eq!(price.cost_micros(1, 0), 1, "rounded up");
        assert_eq!(Price::default().cost_micros(100, 100), 0);
    }

    #[test]
    fn set_quotas_override_the_others() {
        let manifest = Quotas { tokens_per_run: Some(10), concurrent_runs: Some(2), ..Quotas::default() };
        let set = Quotas { tokens_per_run: Some(5), ..Quotas::default() };
        let both = manifest.overridden_by(&set);
        assert_eq!((both.tokens_per_run, both.concurrent_runs), (Some(5), Some(2)));
    }
}
