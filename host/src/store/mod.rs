//! Durable state: runs, their journals, logs and reports, and secrets.
//!
//! The operations are grouped by role ([`RunStore`], [`JournalStore`],
//! [`SecretStore`], …), each an operation a shared database can do
//! atomically, so that a PostgreSQL implementation can later let several
//! hosts share the work. [`Store`] is all roles together; a part of the host
//! holds only the roles it needs (a guest's secrets adapter reads secrets,
//! and nothing else). The store persists the records of [`crate::model`] and
//! knows nothing of engines, WIT, LLMs or policies: a breaker's state, for
//! one, is an opaque document here.
//! [`redb::RedbStore`] is the embedded default, one file under `.cairn/`.
//! Everything is scoped by [`Tenant`] from the first version on.

pub mod commit;
#[cfg(test)]
pub(crate) mod conformance;
pub mod fencing;
pub mod postgres;
pub mod redb;
pub mod sim_disk;
pub mod wal;

pub use fencing::{check_fence, lease_free};

use crate::model::{
    ApiToken, AttemptLog, CacheEntry, DeadLetter, Executor, Fence, JournalEntry, LedgerLine, LedgerTotals, Quotas,
    ReplayKey, Report, RunRecord, RunStatus, TaskStats, Tenant, UsageRecord,
};

/// Errors from the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open the store {path}: {message}")]
    Open {
        /// The database file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The file was written by a newer cairn.
    #[error(
        "the store {path} has schema version {found}, but this cairn understands up to {supported}; upgrade cairn or point it at another project"
    )]
    NewerSchema {
        /// The database file.
        path: String,
        /// Version in the file.
        found: u64,
        /// Highest version this build reads.
        supported: u64,
    },
    /// A read or write failed.
    #[error("store {operation} failed: {message}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The database's explanation.
        message: String,
    },
    /// A record could not be encoded or decoded.
    #[error("corrupt {what} record in the store: {message}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// The decoder's explanation.
        message: String,
    },
    /// A write, sync or commit failed: the store takes no more writes and
    /// acknowledges nothing more, since after a failed sync what the page
    /// cache holds can no longer be trusted to reach the disk. Whatever was
    /// acknowledged is on disk; a restart recovers it and resumes the runs.
    #[error("{}", halted_message(file, doing, cause, *full))]
    Halted {
        /// The file that failed.
        file: String,
        /// What was being done.
        doing: String,
        /// The operating system's (or database's) explanation.
        cause: String,
        /// Whether the disk is full.
        full: bool,
    },
    /// The journal's write-ahead log is damaged before its end: intact
    /// (acknowledged) frames follow the damage, so it is not cut off.
    #[error(
        "the journal log {path} is damaged at byte {offset} ({damaged} bytes unreadable), and {intact_after} intact frame(s) of acknowledged records follow the damage, so cairn will not drop them by cutting the log. Run `cairn store repair` to keep every intact record (the damaged log is saved beside it first)"
    )]
    LogDamaged {
        /// The log file.
        path: String,
        /// Where the damage starts.
        offset: u64,
        /// Bytes up to the next intact frame.
        damaged: u64,
        /// Intact frames after the damage.
        intact_after: usize,
    },
    /// The database server cannot be reached (PostgreSQL): nothing was
    /// written or read; hosts retry with backoff until it is back.
    #[error(
        "the store's database server ({server}) cannot be reached: {message}. Check that it is up and reachable; cairn keeps retrying"
    )]
    Unavailable {
        /// Where the server is (host and port; never a password).
        server: String,
        /// What the client saw.
        message: String,
    },
    /// A run id that does not exist.
    #[error("no run with id {0}; list runs with `cairn runs list`")]
    NoSuchRun(String),
    /// Another host took over the run (its lease expired here).
    #[error("run {run_id} is now held by {holder}; this host lost its lease and stops working on it")]
    LeaseLost {
        /// The run.
        run_id: String,
        /// Who holds it now.
        holder: String,
    },
}

impl StoreError {
    /// A [`StoreError::Halted`].
    pub fn halted(file: &str, doing: &str, cause: &str, full: bool) -> StoreError {
        StoreError::Halted { file: file.into(), doing: doing.into(), cause: cause.into(), full }
    }

    /// Whether this error stopped the store (see [`StoreError::Halted`]).
    pub fn is_halted(&self) -> bool {
        matches!(self, StoreError::Halted { .. })
    }
}

fn halted_message(file: &str, doing: &str, cause: &str, full: bool) -> String {
    let (what, fix) = if full {
        ("the disk is full", "free space on the disk, then start cairn again")
    } else {
        ("the disk reported an error", "check the disk, then start cairn again")
    };
    format!(
        "{what}: {doing} ({file}) failed: {cause}. The store has stopped taking writes and acknowledges nothing more; everything acknowledged so far is on disk. To go on, {fix}: it recovers the store from disk, and `cairn runs resume` (or the next `cairn run`) takes the interrupted runs up where they stopped"
    )
}

/// Which runs a listing takes by their parent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Lineage {
    /// Every run, children included.
    #[default]
    Any,
    /// Only runs that no run submitted.
    TopLevel,
    /// Only the children of this run.
    ChildrenOf(String),
}

/// Filter for [`RunStore::list_runs`]: runs newest first, answered from an
/// index, so a page costs the same whatever the store holds.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of this task.
    pub task: Option<String>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// By parent.
    pub lineage: Lineage,
    /// Only runs made before this one (a page's cursor: the last id of the previous page).
    pub before: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// Runs and their leases.
///
/// In every role, each method is atomic, and a write has reached stable
/// storage when it returns. Writes are async so that an implementation can
/// batch concurrent ones into one transaction (group commit) without holding
/// a thread per waiting caller; reads are quick and synchronous. A run is
/// worked on only by the holder of its lease.
#[async_trait::async_trait]
pub trait RunStore: Send + Sync {
    /// Creates a run; fails if the id exists.
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    /// Replaces a run's record, provided the fence's owner still holds its
    /// lease at the fence's claim (or no one holds it and no claim came
    /// since); otherwise fails with [`StoreError::LeaseLost`]. The stored
    /// epoch is kept whatever the record says.
    async fn update_run(&self, run: &RunRecord, fence: &Fence) -> Result<(), StoreError>;
    /// Takes the lease of an unfinished run whose lease is free, expired at
    /// `now_ms`, already `owner`'s, or (with `force`) held by anyone, and
    /// moves its epoch on. Returns the run as claimed, or `None` if it is
    /// finished or someone else holds it.
    async fn claim_run(
        &self,
        tenant: &Tenant,
        id: &str,
        owner: &str,
        lease_until_ms: u64,
        now_ms: u64,
        force: bool,
    ) -> Result<Option<RunRecord>, StoreError>;
    /// Claims up to `limit` runnable runs of a tenant for `owner`, oldest
    /// first: unfinished, not before their `not_before_ms`, and free (no
    /// lease, an expired one, or one of an executor that stopped cleanly).
    /// Concurrent claimers never get the same run. Each claim moves the
    /// run's epoch on; the status is left as it was (a pending run stays
    /// pending until its new holder starts it).
    async fn claim_runnable(
        &self,
        tenant: &Tenant,
        owner: &str,
        lease_until_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError>;
    /// Extends a lease held at the fence's claim; says whether it is still
    /// held, and whether someone asked for the run to be cancelled.
    async fn heartbeat(&self, id: &str, fence: &Fence, lease_until_ms: u64) -> Result<Beat, StoreError>;
    /// Marks an unfinished run to be cancelled, whoever holds it (no fence:
    /// anyone may ask), and tells every host listening
    /// ([`ExecutorStore::cancel_requests`]). Returns the run as stored.
    async fn request_cancel(&self, tenant: &Tenant, id: &str) -> Result<RunRecord, StoreError>;
    /// Deletes a run with its journal, logs, report and dead letter; returns whether it existed.
    async fn delete_run(&self, tenant: &Tenant, id: &str) -> Result<bool, StoreError>;
    /// Reads one run.
    fn get_run(&self, tenant: &Tenant, id: &str) -> Result<RunRecord, StoreError>;
    /// Those of the runs `ids` that are finished, with their records, and
    /// those not stored (`None`; deleted, say); unfinished ones are left out.
    /// One read for many, as a host waiting on runs others finish asks.
    fn finished_among(&self, tenant: &Tenant, ids: &[String]) -> Result<Vec<(String, Option<RunRecord>)>, StoreError>;
    /// The tenants that have runs, or (`with_work`) unfinished (pending or
    /// running) ones, which a worker shares its free slots between. Costs a
    /// seek or two per tenant, not a read per run.
    fn tenants(&self, with_work: bool) -> Result<Vec<Tenant>, StoreError>;
    /// Runs of a tenant, newest first.
    fn list_runs(&self, tenant: &Tenant, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError>;
    /// What the stored runs of each task of a tenant add up to, by task name.
    fn task_stats(&self, tenant: &Tenant) -> Result<Vec<(String, TaskStats)>, StoreError>;
    /// The error that stopped the store taking writes, if one has
    /// ([`StoreError::Halted`]): the host then takes no more work.
    fn halted(&self) -> Option<StoreError> {
        None
    }
    /// How the store's writer is doing, where it has one (for metrics).
    fn writer_stats(&self) -> Option<WriterStats> {
        None
    }
}

/// A store writer's counts: batches by size and commits by latency, each
/// bucket counting the observations at most its bound (not cumulative).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Commits (batches) so far.
    pub commits: u64,
    /// Writes in them.
    pub writes: u64,
    /// (at most this many writes, batches).
    pub batches: Vec<(u64, u64)>,
    /// (at most this many microseconds, commits).
    pub latencies_us: Vec<(u64, u64)>,
    /// Sum of the commits' latencies.
    pub latency_sum_us: u64,
}

/// Run journals: the recorded result of every journaled call.
#[async_trait::async_trait]
pub trait JournalStore: Send + Sync {
    /// Records an entry durably. Recording the same key twice keeps the
    /// first. With a fence, only while its owner holds the run at its claim
    /// (else [`StoreError::LeaseLost`], and nothing is written).
    async fn journal_put(&self, entry: &JournalEntry, fence: Option<&Fence>) -> Result<(), StoreError>;
    /// Records many entries in one transaction (journal import).
    async fn journal_put_all(&self, entries: &[JournalEntry]) -> Result<(), StoreError>;
    /// The entry recorded under `key`, if any.
    fn journal_get(&self, key: &ReplayKey) -> Result<Option<JournalEntry>, StoreError>;
    /// Every entry of a run, in recording order.
    fn journal_of(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError>;
}

/// What attempts leave besides results: captured logs and reports.
#[async_trait::async_trait]
pub trait OutputStore: Send + Sync {
    /// Stores the captured stdout/stderr of one attempt.
    async fn put_log(&self, run_id: &str, attempt: u32, log: &AttemptLog) -> Result<(), StoreError>;
    /// The logs of every attempt of a run.
    fn logs_of(&self, run_id: &str) -> Result<Vec<(u32, AttemptLog)>, StoreError>;
    /// Stores a run's report (all tabs).
    async fn put_report(&self, run_id: &str, report: &Report) -> Result<(), StoreError>;
    /// A run's report, if it made one.
    fn get_report(&self, run_id: &str) -> Result<Option<Report>, StoreError>;
}

/// Cached task results.
#[async_trait::async_trait]
pub trait CacheStore: Send + Sync {
    /// The cached result under `key`, if any.
    fn cache_get(&self, tenant: &Tenant, key: &str) -> Result<Option<CacheEntry>, StoreError>;
    /// Stores a result in the cache.
    async fn cache_put(&self, tenant: &Tenant, key: &str, entry: &CacheEntry) -> Result<(), StoreError>;
    /// Drops cached results (of one task, or all); returns how many.
    async fn cache_clear(&self, tenant: &Tenant, task: Option<&str>) -> Result<usize, StoreError>;
}

/// The dead-letter queue.
#[async_trait::async_trait]
pub trait DlqStore: Send + Sync {
    /// Files a run in the dead-letter queue.
    async fn dlq_put(&self, tenant: &Tenant, letter: &DeadLetter) -> Result<(), StoreError>;
    /// The dead letters of a tenant, newest first.
    fn dlq_list(&self, tenant: &Tenant) -> Result<Vec<DeadLetter>, StoreError>;
    /// One run's dead letter, if it is in the queue.
    fn dlq_get(&self, tenant: &Tenant, run_id: &str) -> Result<Option<DeadLetter>, StoreError>;
    /// How many dead letters a tenant has (keys are counted, letters are not read).
    fn dlq_count(&self, tenant: &Tenant) -> Result<usize, StoreError>;
    /// Removes a run from the queue; returns whether it was there.
    async fn dlq_remove(&self, tenant: &Tenant, run_id: &str) -> Result<bool, StoreError>;
    /// Writes a run's final, failed record (fenced as [`RunStore::update_run`])
    /// and files its dead letter, in one transaction: a crash leaves the run
    /// either unfinished (and resumable) or failed and in the queue, never
    /// failed outside it.
    async fn dlq_file(&self, run: &RunRecord, fence: &Fence, letter: &DeadLetter) -> Result<(), StoreError>;
    /// Takes a run's letter out of the queue and writes its reopened record
    /// (fenced as [`RunStore::update_run`]), in one transaction. Returns the
    /// letter taken. With `letter_required` and no letter in the queue
    /// (another host took it), nothing is written and `Ok(None)` returned.
    async fn dlq_reopen(
        &self,
        run: &RunRecord,
        fence: &Fence,
        letter_required: bool,
    ) -> Result<Option<DeadLetter>, StoreError>;
}

/// A change to a stored document computed from its current value; see
/// [`StateStore::update_breaker`].
pub type Transition = std::sync::Arc<dyn Fn(Option<&[u8]>) -> Vec<u8> + Send + Sync>;

/// Host state shared by runs: circuit breakers (opaque documents) and counters.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// Moves circuit breaker `name` (`task:NAME`, `provider:NAME`) from its
    /// stored state (a document the store does not read; `None` when there is
    /// none) to `transition`'s result, atomically: hosts sharing the store
    /// never lose each other's transitions. Returns the state stored.
    /// `transition` may be called more than once (on a conflict) and must be pure.
    async fn update_breaker(&self, tenant: &Tenant, name: &str, transition: Transition) -> Result<Vec<u8>, StoreError>;
    /// Every stored breaker of a tenant.
    fn breakers(&self, tenant: &Tenant) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Adds to named counters (e.g. `provider:NAME:retries`).
    async fn add_counters(&self, tenant: &Tenant, deltas: &[(String, u64)]) -> Result<(), StoreError>;
    /// Every counter of a tenant.
    fn counters(&self, tenant: &Tenant) -> Result<Vec<(String, u64)>, StoreError>;
}

/// Reading secrets. The store holds each value as an opaque sealed document
/// (`access::vault` seals and opens them); it never sees a value itself.
pub trait SecretReader: Send + Sync {
    /// A secret's sealed document.
    fn get_secret(&self, tenant: &Tenant, key: &str) -> Result<Option<String>, StoreError>;
}

/// Managing secrets' sealed documents.
#[async_trait::async_trait]
pub trait SecretStore: SecretReader {
    /// Creates or replaces a secret's sealed document.
    async fn put_secret(&self, tenant: &Tenant, key: &str, sealed: &str) -> Result<(), StoreError>;
    /// Every secret of every tenant, with its sealed document (a key
    /// rotation re-wraps them all).
    fn all_secrets(&self) -> Result<Vec<(Tenant, String, String)>, StoreError>;
    /// The keys (never the values) of a tenant's secrets.
    fn list_secrets(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError>;
    /// Deletes a secret; returns whether it existed.
    async fn delete_secret(&self, tenant: &Tenant, key: &str) -> Result<bool, StoreError>;
}

/// API tokens: each of one tenant and one role, kept by id with the sha256
/// of its secret part (never the token itself).
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync {
    /// Creates or replaces a token.
    async fn put_token(&self, token: &ApiToken) -> Result<(), StoreError>;
    /// A token by id.
    fn get_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError>;
    /// The tokens of `tenant`, or of every tenant, by id.
    fn list_tokens(&self, tenant: Option<&Tenant>) -> Result<Vec<ApiToken>, StoreError>;
    /// Deletes a token; returns whether it existed.
    async fn delete_token(&self, id: &str) -> Result<bool, StoreError>;
}

/// What tenants may spend and have spent: quotas set by `cairn quota set`,
/// the budget ledger (each line's spent and reserved amounts) and a record
/// per live LLM call. A reservation is one atomic step over all its lines,
/// so concurrent calls can never hold more than a limit between them.
#[async_trait::async_trait]
pub trait LedgerStore: Send + Sync {
    /// Adds each line's amount to its reserved total, all or none: none if
    /// any line would pass its limit (spent + reserved + amount), whose key
    /// is then returned.
    async fn reserve(&self, tenant: &Tenant, lines: &[LedgerLine]) -> Result<Option<String>, StoreError>;
    /// Ends reservations: each line `(key, reserved, spent)` gives back what
    /// was reserved and adds what was spent; `usage` records the call.
    async fn settle(
        &self,
        tenant: &Tenant,
        lines: &[(String, u64, u64)],
        usage: Option<&UsageRecord>,
    ) -> Result<(), StoreError>;
    /// The ledger lines of a tenant whose keys start with `prefix`, by key.
    fn ledger(&self, tenant: &Tenant, prefix: &str) -> Result<Vec<(String, LedgerTotals)>, StoreError>;
    /// The usage records of a tenant since `since_ms`, oldest first.
    fn usage_since(&self, tenant: &Tenant, since_ms: u64) -> Result<Vec<UsageRecord>, StoreError>;
    /// Sets a tenant's quotas (over the manifest's).
    async fn put_quotas(&self, tenant: &Tenant, quotas: &Quotas) -> Result<(), StoreError>;
    /// A tenant's quotas as set, if ever.
    fn get_quotas(&self, tenant: &Tenant) -> Result<Option<Quotas>, StoreError>;
}

/// The executors working on the store's runs, and news of work for them.
#[async_trait::async_trait]
pub trait ExecutorStore: Send + Sync {
    /// Creates or replaces an executor's row (its start, heartbeats, clean stop).
    async fn put_executor(&self, executor: &Executor) -> Result<(), StoreError>;
    /// Every executor the store knows, by id.
    fn executors(&self) -> Result<Vec<Executor>, StoreError>;
    /// Drops rows of executors not seen since `before_ms`; returns how many.
    async fn forget_executors(&self, before_ms: u64) -> Result<usize, StoreError>;
    /// Woken when runnable work may have appeared (a run created or
    /// released, here or, for a shared store, by another host): idle
    /// executors wait on it instead of polling fast.
    fn work_signal(&self) -> std::sync::Arc<tokio::sync::Notify>;
    /// The ids of runs someone asked to cancel ([`RunStore::request_cancel`]),
    /// here or, for a shared store, on another host, as they are asked.
    fn cancel_requests(&self) -> tokio::sync::broadcast::Receiver<String>;
}

/// What a lease's holder hears when it renews it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Renewed.
    Held,
    /// Another claim took it: the holder must stop, writing nothing more.
    Lost,
    /// Renewed, and someone asked for the run to be cancelled.
    CancelRequested,
}

/// Every role of a store: what the runner, the CLI and the server hold.
pub trait Store:
    RunStore
    + JournalStore
    + OutputStore
    + CacheStore
    + DlqStore
    + StateStore
    + SecretStore
    + TokenStore
    + LedgerStore
    + ExecutorStore
{
}

impl<T> Store for T where
    T: RunStore
        + JournalStore
        + OutputStore
        + CacheStore
        + DlqStore
        + StateStore
        + SecretStore
        + TokenStore
        + LedgerStore
        + ExecutorStore
        + ?Sized
{
}

/// Every role, for code that holds a whole [`Store`]: `use cairn::store::prelude::*;`.
pub mod prelude {
    pub use super::{
        CacheStore, DlqStore, ExecutorStore, JournalStore, LedgerStore, OutputStore, RunStore, SecretReader,
        SecretStore, StateStore, Store, TokenStore,
    };
}
