//! The domain model: what a run is, how its attempts went, why they failed,
//! what its journal holds, whom it belongs to, and what it cost.
//!
//! This module sits at the bottom of the crate and imports nothing from the
//! rest of it (a test in `layering` checks this). The store persists these
//! types, the policies decide over them, the runner and the adapters make
//! them; none of those is known here.

mod access;
mod executor;
mod failure;
pub mod files;
pub mod interface;
mod journal;
mod output;
mod quota;
mod run;
mod stats;
mod tenant;
mod time;
mod usage;

pub use access::{ApiToken, Role};
pub use executor::Executor;
pub use failure::{Failure, FailureKind, LimitHit, MAX_GUEST_MESSAGE, cut_with_note};
pub use journal::{CallKind, JournalEntry, ReplayKey};
pub use output::{AttemptLog, Report};
pub use quota::{LedgerLine, LedgerQuota, LedgerTotals, Price, Quotas, UsageRecord, day_and_month};
pub use run::{AttemptRecord, CacheEntry, DeadLetter, Fence, Lease, RunRecord, RunStatus, is_run_id};
pub use stats::TaskStats;
pub use tenant::{Tenant, TenantError};
pub use time::now_ms;
pub use usage::Usage;
