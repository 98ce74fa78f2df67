//! Runs and their attempts, leases, dead letters and cached results.

use serde::{Deserialize, Serialize};

use super::{Failure, Tenant, Usage, now_ms};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Created, not started.
    Pending,
    /// An attempt is under way (held under a lease).
    Running,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error after all attempts.
    Failed,
    /// Stopped on request (`cairn runs cancel`): not retried, not dead-lettered.
    Cancelled,
}

impl RunStatus {
    /// Its name as the CLI prints and parses it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Whether a run in this status is over (succeeded, failed or cancelled).
    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled)
    }

    /// Parses a status name.
    pub fn parse(text: &str) -> Option<Self> {
        [RunStatus::Pending, RunStatus::Running, RunStatus::Succeeded, RunStatus::Failed, RunStatus::Cancelled]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// One call of the guest's `run` export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub number: u32,
    /// Start, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// End, ms since the Unix epoch.
    pub finished_at_ms: u64,
    /// `None` if it succeeded.
    pub error: Option<Failure>,
    /// LLM calls made live in this attempt.
    pub llm_live: u32,
    /// LLM calls answered from the journal in this attempt.
    pub llm_replayed: u32,
    /// Traced steps answered from the journal in this attempt.
    pub trace_replayed: u32,
    /// Outbound HTTP requests sent in this attempt.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub http_live: u32,
    /// Outbound HTTP requests answered from the journal in this attempt.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub http_replayed: u32,
    /// The task this attempt ran (the run's own, or a fallback).
    #[serde(default)]
    pub task: Option<String>,
    /// Set by the host for attempts that do not use up a retry: interrupted by
    /// a host crash, skipped on an open breaker, or parked on a provider's.
    #[serde(default)]
    pub not_counted: bool,
    /// The host (executor id, `<hostname>-<pid>`) that ran it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A lease: which host works on a running run, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Host id.
    pub owner: String,
    /// Expiry, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

/// What a write to a run carries to show that its writer still holds the
/// run: the lease's owner and the claim it holds it by (the run's
/// [`RunRecord::epoch`] when it was claimed). Every claim moves the epoch
/// on, so a host that stalled past its lease and wakes up holds a fence
/// that no longer matches, and the store refuses what it writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// The run's tenant.
    pub tenant: Tenant,
    /// The lease holder.
    pub owner: String,
    /// The claim.
    pub epoch: u64,
}

/// One run of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id (UUIDv7: sorts by creation time).
    pub id: String,
    /// Owner.
    pub tenant: Tenant,
    /// Task name.
    pub task: String,
    /// Input as given (JSON text, or the raw text if it was not JSON).
    pub input: String,
    /// Status.
    pub status: RunStatus,
    /// sha256 of the component that ran, once loaded.
    pub component_digest: Option<String>,
    /// Creation, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// End, ms since the Unix epoch.
    pub finished_at_ms: Option<u64>,
    /// Attempts so far.
    pub attempts: Vec<AttemptRecord>,
    /// Output JSON on success.
    pub output: Option<String>,
    /// Final error on failure.
    pub error: Option<Failure>,
    /// Tokens used by live LLM calls over all attempts.
    pub usage: Usage,
    /// The lease while running.
    pub lease: Option<Lease>,
    /// Claims so far: each claim of the run's lease adds one (see [`Fence`]).
    #[serde(default)]
    pub epoch: u64,
    /// Not to be claimed before this time, ms since the Unix epoch (a retry's backoff).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_before_ms: u64,
    /// Someone asked for the run to be cancelled (`cairn runs cancel`): its
    /// holder, wherever it runs, stops it as soon as it hears.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// Set when the output came from the cache: the run that computed it.
    #[serde(default)]
    pub cached_from: Option<String>,
    /// Set when the run replayed another run's journal with live calls forbidden.
    #[serde(default)]
    pub replay_of: Option<String>,
    /// The task whose attempt produced the output (a fallback when degraded).
    #[serde(default)]
    pub produced_by: Option<String>,
    /// Whether the output came from a fallback task or a fallback LLM provider.
    #[serde(default)]
    pub degraded: bool,
    /// Attempts before this index do not count against retries (a DLQ retry starts afresh).
    #[serde(default)]
    pub retry_from: usize,
    /// The run that submitted this one through `tasks`, for a child run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The group the parent submitted it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// How far below its top-level run it was submitted (0: top-level).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub depth: u32,
    /// The top-level run of its tree, for a child run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl RunRecord {
    /// Whether it failed because its tree of runs grew past a limit.
    pub fn failed_on_tree_limits(&self) -> bool {
        self.status == RunStatus::Failed && self.error.as_ref().is_some_and(|e| e.kind.is_tree_limit())
    }

    /// The fence of `owner` holding this run at its current claim.
    pub fn fence(&self, owner: &str) -> Fence {
        Fence { tenant: self.tenant.clone(), owner: owner.to_owned(), epoch: self.epoch }
    }

    /// A new, running record of `task` on `input` in `tenant`, created now,
    /// with no attempts, lease, links or result yet.
    pub fn new(id: String, tenant: Tenant, task: String, input: String) -> Self {
        RunRecord {
            id,
            tenant,
            task,
            input,
            status: RunStatus::Running,
            component_digest: None,
            created_at_ms: now_ms(),
            finished_at_ms: None,
            attempts: Vec::new(),
            output: None,
            error: None,
            usage: Default::default(),
            lease: None,
            epoch: 0,
            not_before_ms: 0,
            cancel_requested: false,
            cached_from: None,
            replay_of: None,
            produced_by: None,
            degraded: false,
            retry_from: 0,
            parent: None,
            group: None,
            depth: 0,
            root: None,
        }
    }
}

/// A run whose retries and fallbacks were all spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The run.
    pub run_id: String,
    /// Its task.
    pub task: String,
    /// Its input.
    pub input: String,
    /// When it landed here, ms since the Unix epoch.
    pub failed_at_ms: u64,
    /// The final error.
    pub error: Failure,
    /// Every attempt, with its error and timestamps.
    pub attempts: Vec<AttemptRecord>,
}

/// A cached task result: what a later run with the same cache key reuses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The task.
    pub task: String,
    /// The run that computed it.
    pub run_id: String,
    /// Its output JSON.
    pub output: String,
    /// When it was stored, ms since the Unix epoch.
    pub created_at_ms: u64,
}

impl AttemptRecord {
    /// The record of an option that was not attempted (breaker open,
    /// component unusable), or of an attempt cut short by a host crash: it
    /// does not use up a retry.
    pub fn not_attempted(number: u32, task: Option<String>, failure: Failure, started_at_ms: u64, now: u64) -> Self {
        AttemptRecord {
            number,
            started_at_ms,
            finished_at_ms: now,
            error: Some(failure),
            llm_live: 0,
            llm_replayed: 0,
            trace_replayed: 0,
            http_live: 0,
            http_replayed: 0,
            task,
            not_counted: true,
            host: None,
        }
    }

    /// Whether this attempt used up a retry: it failed, and the host did not
    /// mark it as interrupted, skipped on an open breaker or parked.
    pub fn counts_as_retry(&self) -> bool {
        self.error.is_some() && !self.not_counted
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Whether `id` can be a run's id: 1 to 64 ASCII letters, digits and
/// dashes (the host makes UUIDs). Ids name directories and prefix store
/// keys, so nothing else is taken from outside (an imported cassette).
pub fn is_run_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}
