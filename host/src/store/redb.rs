//! The embedded store: one redb file (`.cairn/cairn.redb`).
//!
//! Schema (all values are JSON unless noted; version 1):
//!
//! | table      | key                                   | value                 |
//! |------------|---------------------------------------|-----------------------|
//! | `meta`     | `"schema_version"`                    | u64 (as JSON)         |
//! | `runs`     | `"project/domain\x01<run id>"`        | [`RunRecord`]         |
//! | `journal`  | [`ReplayKey::encode`]                 | [`JournalEntry`]      |
//! | `logs`     | `"<run id>\x01<attempt, 10 digits>"`  | [`AttemptLog`]        |
//! | `reports`  | `"<run id>"`                          | [`Report`]            |
//! | `secrets`  | `"project/domain\x01<key>"`           | the value, UTF-8      |
//! | `cache`    | `"project/domain\x01<cache key>"`     | [`CacheEntry`]        |
//! | `dlq`      | `"project/domain\x01<run id>"`        | [`DeadLetter`]        |
//! | `breakers` | `"project/domain\x01<kind>:<name>"`   | [`Breaker`]           |
//! | `counters` | `"project/domain\x01<name>"`          | u64 (as JSON)         |
//!
//! Every write goes through the [`GroupCommitter`]: concurrent writes share
//! one transaction and one fsync, and each returns only once committed.

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::commit::{CommitStats, GroupCommitter, Logged, Pending, Tables, WriteOp};
use super::wal::Wal;
use super::{
    AttemptLog, CacheEntry, DeadLetter, JournalEntry, Lease, ReplayKey, Report, RunFilter, RunRecord, RunStatus, Store,
    StoreError, Tenant,
};
use crate::policy::breaker::Breaker;

/// Schema version this build writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const JOURNAL: TableDefinition<&str, &[u8]> = TableDefinition::new("journal");
const LOGS: TableDefinition<&str, &[u8]> = TableDefinition::new("logs");
const REPORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("reports");
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
const CACHE: TableDefinition<&str, &[u8]> = TableDefinition::new("cache");
const DLQ: TableDefinition<&str, &[u8]> = TableDefinition::new("dlq");
const BREAKERS: TableDefinition<&str, &[u8]> = TableDefinition::new("breakers");
const COUNTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("counters");

/// Separator inside composite keys; sorts before every printable character.
const SEP: char = '\u{1}';

/// A [`Store`] in one redb file.
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    committer: GroupCommitter,
    /// Acknowledged journal records not yet applied to redb (see [`Pending`]).
    pending: Pending,
}

fn io(operation: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |e| StoreError::Io { operation, message: e.to_string() }
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt { what, message: e.to_string() })
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { what, message: e.to_string() })
}

fn scoped(tenant: &Tenant, id: &str) -> String {
    format!("{tenant}{SEP}{id}")
}

/// The half-open key range of every key starting with `prefix`.
fn prefix_range(prefix: &str) -> (String, String) {
    (prefix.to_owned(), format!("{prefix}\u{10FFFF}"))
}

impl RedbStore {
    /// Opens (or creates) the store file at `path`, creating its directory.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open { path: shown.clone(), message: e.to_string() })?;
        }
        let db = Database::create(path).map_err(|e| StoreError::Open {
            path: shown.clone(),
            message: match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "another cairn process has it open (one process per project store); wait for it to finish".into()
                }
                other => other.to_string(),
            },
        })?;
        let db = Arc::new(db);
        init_schema(&db, path)?;
        let wal = replay_wal(&db, &path.with_extension("wal"))?;
        let pending = Pending::default();
        let committer = GroupCommitter::start(db.clone(), wal, pending.clone(), JOURNAL)?;
        Ok(RedbStore { db, path: path.to_path_buf(), committer, pending })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes one key through the group committer; returns whether it existed.
    async fn remove_key(
        &self,
        operation: &'static str,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: String,
    ) -> Result<bool, StoreError> {
        let existed = Arc::new(AtomicBool::new(false));
        let out = existed.clone();
        self.committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let removed = tables.get(table)?.remove(key.as_str()).map_err(|e| io(operation)(e.into()))?.is_some();
                out.store(removed, Ordering::Relaxed);
                Ok(())
            }))
            .await?;
        Ok(existed.load(Ordering::Relaxed))
    }

    /// Group-commit counters: (transactions, writes, largest batch).
    pub fn commit_stats(&self) -> &CommitStats {
        self.committer.stats()
    }

    fn get(
        &self,
        operation: &'static str,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| io(operation)(e.into()))?;
        let t = txn.open_table(table).map_err(|e| io(operation)(e.into()))?;
        let value = t.get(key).map_err(|e| io(operation)(e.into()))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        operation: &'static str,
        table: TableDefinition<&str, &[u8]>,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| io(operation)(e.into()))?;
        let t = txn.open_table(table).map_err(|e| io(operation)(e.into()))?;
        let (start, end) = prefix_range(prefix);
        let mut out = Vec::new();
        for item in t.range(start.as_str()..end.as_str()).map_err(|e| io(operation)(e.into()))? {
            let (k, v) = item.map_err(|e| io(operation)(e.into()))?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }
}

fn init_schema(db: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(|e| io("open")(e.into()))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| io("open")(e.into()))?;
        let found: Option<u64> = match meta.get("schema_version").map_err(|e| io("open")(e.into()))? {
            Some(v) => Some(decode("meta", v.value())?),
            None => None,
        };
        match found {
            Some(version) if version > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    path: path.display().to_string(),
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(_) => {}
            None => {
                meta.insert("schema_version", encode("meta", &SCHEMA_VERSION)?.as_slice())
                    .map_err(|e| io("open")(e.into()))?;
            }
        }
        for table in [RUNS, JOURNAL, LOGS, REPORTS, SECRETS, CACHE, DLQ, BREAKERS, COUNTERS] {
            txn.open_table(table).map_err(|e| io("open")(e.into()))?;
        }
    }
    txn.commit().map_err(|e| io("open")(e.into()))
}

/// Applies what the journal's write-ahead log still holds (records logged
/// but not yet checkpointed when the last process stopped), then empties it.
fn replay_wal(db: &Database, path: &Path) -> Result<Wal, StoreError> {
    let (mut wal, entries) = Wal::open(path)?;
    if !entries.is_empty() {
        let txn = db.begin_write().map_err(|e| io("journal replay")(e.into()))?;
        {
            let mut t = txn.open_table(JOURNAL).map_err(|e| io("journal replay")(e.into()))?;
            for entry in &entries {
                let key = entry.key.encode();
                if t.get(key.as_str()).map_err(|e| io("journal replay")(e.into()))?.is_none() {
                    t.insert(key.as_str(), encode("journal", entry)?.as_slice())
                        .map_err(|e| io("journal replay")(e.into()))?;
                }
            }
        }
        txn.commit().map_err(|e| io("journal replay")(e.into()))?;
        tracing::info!("replayed {} journal records from {}", entries.len(), path.display());
    }
    if !wal.is_empty() {
        wal.truncate()?;
    }
    Ok(wal)
}

/// A write of one value under one key.
fn put_op(
    operation: &'static str,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
    key: String,
    value: Vec<u8>,
) -> WriteOp {
    Box::new(move |tables: &mut Tables<'_>| {
        tables.get(table)?.insert(key.as_str(), value.as_slice()).map_err(|e| io(operation)(e.into()))?;
        Ok(())
    })
}

fn read_run(tables: &mut Tables<'_>, key: &str, id: &str) -> Result<RunRecord, StoreError> {
    let t = tables.get(RUNS)?;
    let bytes = t.get(key).map_err(|e| io("read run")(e.into()))?.map(|v| v.value().to_vec());
    match bytes {
        Some(bytes) => decode("run", &bytes),
        None => Err(StoreError::NoSuchRun(id.to_owned())),
    }
}

fn write_run(tables: &mut Tables<'_>, key: &str, run: &RunRecord) -> Result<(), StoreError> {
    let value = encode("run", run)?;
    let t = tables.get(RUNS)?;
    t.insert(key, value.as_slice()).map_err(|e| io("write run")(e.into()))?;
    Ok(())
}

fn remove_prefix(
    tables: &mut Tables<'_>,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
    prefix: &str,
) -> Result<(), StoreError> {
    let t = tables.get(table)?;
    let (start, end) = prefix_range(prefix);
    t.retain_in(start.as_str()..end.as_str(), |_, _| false).map_err(|e| io("delete")(e.into()))?;
    Ok(())
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let key = scoped(&run.tenant, &run.id);
        let value = encode("run", run)?;
        let id = run.id.clone();
        self.committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let t = tables.get(RUNS)?;
                if t.get(key.as_str()).map_err(|e| io("create run")(e.into()))?.is_some() {
                    return Err(StoreError::Corrupt { what: "run", message: format!("run {id} already exists") });
                }
                t.insert(key.as_str(), value.as_slice()).map_err(|e| io("create run")(e.into()))?;
                Ok(())
            }))
            .await
    }

    async fn update_run(&self, run: &RunRecord, owner: &str) -> Result<(), StoreError> {
        let key = scoped(&run.tenant, &run.id);
        let run = run.clone();
        let owner = owner.to_owned();
        self.committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let current = read_run(tables, &key, &run.id)?;
                if let Some(lease) = &current.lease
                    && lease.owner != owner
                {
                    return Err(StoreError::LeaseLost { run_id: run.id.clone(), holder: lease.owner.clone() });
                }
                // The heartbeat may have renewed the lease since the caller read it: keep the later expiry.
                let mut run = run;
                if let (Some(stored), Some(lease)) = (&current.lease, &mut run.lease)
                    && stored.owner == lease.owner
                {
                    lease.expires_at_ms = lease.expires_at_ms.max(stored.expires_at_ms);
                }
                write_run(tables, &key, &run)
            }))
            .await
    }

    async fn claim_run(
        &self,
        tenant: &Tenant,
        id: &str,
        owner: &str,
        lease_until_ms: u64,
        now_ms: u64,
        force: bool,
    ) -> Result<Option<RunRecord>, StoreError> {
        let key = scoped(tenant, id);
        let (id, owner) = (id.to_owned(), owner.to_owned());
        let claimed = Arc::new(std::sync::Mutex::new(None));
        let out = claimed.clone();
        self.committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let mut run = read_run(tables, &key, &id)?;
                if matches!(run.status, RunStatus::Succeeded | RunStatus::Failed) {
                    return Ok(());
                }
                let free = match &run.lease {
                    None => true,
                    Some(lease) => force || lease.owner == owner || lease.expires_at_ms <= now_ms,
                };
                if !free {
                    return Ok(());
                }
                run.lease = Some(Lease { owner, expires_at_ms: lease_until_ms });
                run.status = RunStatus::Running;
                write_run(tables, &key, &run)?;
                *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(run);
                Ok(())
            }))
            .await?;
        let run = claimed.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(run)
    }

    async fn heartbeat(&self, tenant: &Tenant, id: &str, owner: &str, lease_until_ms: u64) -> Result<bool, StoreError> {
        let key = scoped(tenant, id);
        let (id, owner) = (id.to_owned(), owner.to_owned());
        let result = self
            .committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let mut run = read_run(tables, &key, &id)?;
                match &mut run.lease {
                    Some(lease) if lease.owner == owner => {
                        lease.expires_at_ms = lease_until_ms;
                        write_run(tables, &key, &run)
                    }
                    Some(lease) => Err(StoreError::LeaseLost { run_id: id.clone(), holder: lease.owner.clone() }),
                    None => Err(StoreError::LeaseLost { run_id: id.clone(), holder: "nobody (finished)".into() }),
                }
            }))
            .await;
        match result {
            Ok(()) => Ok(true),
            Err(StoreError::LeaseLost { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn delete_run(&self, tenant: &Tenant, id: &str) -> Result<bool, StoreError> {
        let key = scoped(tenant, id);
        let id = id.to_owned();
        let existed = Arc::new(AtomicBool::new(false));
        let out = existed.clone();
        self.committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let removed = {
                    let t = tables.get(RUNS)?;
                    t.remove(key.as_str()).map_err(|e| io("delete run")(e.into()))?.is_some()
                };
                out.store(removed, Ordering::Relaxed);
                let prefix = format!("{id}{SEP}");
                remove_prefix(tables, JOURNAL, &prefix)?;
                remove_prefix(tables, LOGS, &prefix)?;
                let reports = tables.get(REPORTS)?;
                reports.remove(id.as_str()).map_err(|e| io("delete run")(e.into()))?;
                Ok(())
            }))
            .await?;
        Ok(existed.load(Ordering::Relaxed))
    }

    fn get_run(&self, tenant: &Tenant, id: &str) -> Result<RunRecord, StoreError> {
        match self.get("read run", RUNS, &scoped(tenant, id))? {
            Some(bytes) => decode("run", &bytes),
            None => Err(StoreError::NoSuchRun(id.to_owned())),
        }
    }

    fn list_runs(&self, tenant: &Tenant, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let mut runs = Vec::new();
        // UUIDv7 ids sort by creation time; walk newest first.
        for (_, bytes) in self.scan("list runs", RUNS, &format!("{tenant}{SEP}"))?.into_iter().rev() {
            let run: RunRecord = decode("run", &bytes)?;
            if filter.task.as_ref().is_some_and(|t| *t != run.task) || filter.status.is_some_and(|s| s != run.status) {
                continue;
            }
            runs.push(run);
            if filter.limit.is_some_and(|limit| runs.len() >= limit) {
                break;
            }
        }
        Ok(runs)
    }

    async fn journal_put(&self, entry: &JournalEntry) -> Result<(), StoreError> {
        self.journal_put_all(std::slice::from_ref(entry)).await
    }

    async fn journal_put_all(&self, entries: &[JournalEntry]) -> Result<(), StoreError> {
        let frame = Wal::frame(entries)?;
        let records: Vec<(String, Vec<u8>)> =
            entries.iter().map(|e| Ok((e.key.encode(), encode("journal", e)?))).collect::<Result<_, StoreError>>()?;
        self.committer.write_logged(Logged { frame, records }).await
    }

    fn journal_get(&self, key: &ReplayKey) -> Result<Option<JournalEntry>, StoreError> {
        let key = key.encode();
        // `pending` first, then redb: a record applied in between is then found in redb,
        // which also holds the first record of a key when both have one.
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let stored = self.get("journal lookup", JOURNAL, &key)?;
        stored.or(pending).map(|bytes| decode("journal", &bytes)).transpose()
    }

    fn journal_of(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let prefix = format!("{run_id}{SEP}");
        let mut found: std::collections::BTreeMap<String, Vec<u8>> = {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let (start, end) = prefix_range(&prefix);
            pending.range(start..end).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        // Read redb after `pending`: a record applied in between is then found in redb.
        found.extend(self.scan("journal read", JOURNAL, &prefix)?);
        let mut entries: Vec<JournalEntry> =
            found.values().map(|bytes| decode("journal", bytes)).collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.seq);
        Ok(entries)
    }

    async fn put_log(&self, run_id: &str, attempt: u32, log: &AttemptLog) -> Result<(), StoreError> {
        let op = put_op("write log", LOGS, format!("{run_id}{SEP}{attempt:010}"), encode("log", log)?);
        self.committer.write_async(op).await
    }

    fn logs_of(&self, run_id: &str) -> Result<Vec<(u32, AttemptLog)>, StoreError> {
        self.scan("read logs", LOGS, &format!("{run_id}{SEP}"))?
            .iter()
            .map(|(key, bytes)| {
                let attempt = key.rsplit(SEP).next().and_then(|n| n.parse().ok()).unwrap_or(0);
                Ok((attempt, decode("log", bytes)?))
            })
            .collect()
    }

    async fn put_report(&self, run_id: &str, report: &Report) -> Result<(), StoreError> {
        self.committer.write_async(put_op("write report", REPORTS, run_id.to_owned(), encode("report", report)?)).await
    }

    fn get_report(&self, run_id: &str) -> Result<Option<Report>, StoreError> {
        self.get("read report", REPORTS, run_id)?.map(|b| decode("report", &b)).transpose()
    }

    fn cache_get(&self, tenant: &Tenant, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        self.get("cache lookup", CACHE, &scoped(tenant, key))?.map(|b| decode("cache", &b)).transpose()
    }

    async fn cache_put(&self, tenant: &Tenant, key: &str, entry: &CacheEntry) -> Result<(), StoreError> {
        self.committer.write_async(put_op("cache write", CACHE, scoped(tenant, key), encode("cache", entry)?)).await
    }

    async fn cache_clear(&self, tenant: &Tenant, task: Option<&str>) -> Result<usize, StoreError> {
        let prefix = format!("{tenant}{SEP}");
        let task = task.map(str::to_owned);
        let count = Arc::new(AtomicUsize::new(0));
        let out = count.clone();
        self.committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let t = tables.get(CACHE)?;
                let (start, end) = prefix_range(&prefix);
                let mut removed = 0;
                t.retain_in(start.as_str()..end.as_str(), |_, value| {
                    let matches = match &task {
                        None => true,
                        Some(task) => serde_json::from_slice::<CacheEntry>(value).is_ok_and(|e| e.task == *task),
                    };
                    removed += usize::from(matches);
                    !matches
                })
                .map_err(|e| io("cache clear")(e.into()))?;
                out.store(removed, Ordering::Relaxed);
                Ok(())
            }))
            .await?;
        Ok(count.load(Ordering::Relaxed))
    }

    async fn dlq_put(&self, tenant: &Tenant, letter: &DeadLetter) -> Result<(), StoreError> {
        self.committer
            .write_async(put_op("dead letter", DLQ, scoped(tenant, &letter.run_id), encode("dead letter", letter)?))
            .await
    }

    fn dlq_list(&self, tenant: &Tenant) -> Result<Vec<DeadLetter>, StoreError> {
        self.scan("list dead letters", DLQ, &format!("{tenant}{SEP}"))?
            .into_iter()
            .rev()
            .map(|(_, bytes)| decode("dead letter", &bytes))
            .collect()
    }

    async fn dlq_remove(&self, tenant: &Tenant, run_id: &str) -> Result<bool, StoreError> {
        self.remove_key("dead letter", DLQ, scoped(tenant, run_id)).await
    }

    async fn put_breaker(&self, tenant: &Tenant, name: &str, breaker: &Breaker) -> Result<(), StoreError> {
        self.committer.write_async(put_op("breaker", BREAKERS, scoped(tenant, name), encode("breaker", breaker)?)).await
    }

    fn breakers(&self, tenant: &Tenant) -> Result<Vec<(String, Breaker)>, StoreError> {
        let prefix = format!("{tenant}{SEP}");
        self.scan("list breakers", BREAKERS, &prefix)?
            .into_iter()
            .map(|(key, bytes)| Ok((key[prefix.len()..].to_owned(), decode("breaker", &bytes)?)))
            .collect()
    }

    async fn add_counters(&self, tenant: &Tenant, deltas: &[(String, u64)]) -> Result<(), StoreError> {
        let deltas: Vec<(String, u64)> = deltas.iter().map(|(name, n)| (scoped(tenant, name), *n)).collect();
        self.committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let t = tables.get(COUNTERS)?;
                for (key, delta) in &deltas {
                    let current: u64 = match t.get(key.as_str()).map_err(|e| io("counter")(e.into()))? {
                        Some(v) => decode("counter", v.value())?,
                        None => 0,
                    };
                    let value = encode("counter", &(current + delta))?;
                    t.insert(key.as_str(), value.as_slice()).map_err(|e| io("counter")(e.into()))?;
                }
                Ok(())
            }))
            .await
    }

    fn counters(&self, tenant: &Tenant) -> Result<Vec<(String, u64)>, StoreError> {
        let prefix = format!("{tenant}{SEP}");
        self.scan("list counters", COUNTERS, &prefix)?
            .into_iter()
            .map(|(key, bytes)| Ok((key[prefix.len()..].to_owned(), decode("counter", &bytes)?)))
            .collect()
    }

    async fn put_secret(&self, tenant: &Tenant, key: &str, value: &str) -> Result<(), StoreError> {
        self.committer
            .write_async(put_op("write secret", SECRETS, scoped(tenant, key), value.as_bytes().to_vec()))
            .await
    }

    fn get_secret(&self, tenant: &Tenant, key: &str) -> Result<Option<String>, StoreError> {
        self.get("read secret", SECRETS, &scoped(tenant, key))?
            .map(|b| {
                String::from_utf8(b).map_err(|_| StoreError::Corrupt { what: "secret", message: "not UTF-8".into() })
            })
            .transpose()
    }

    fn list_secrets(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{tenant}{SEP}");
        Ok(self
            .scan("list secrets", SECRETS, &prefix)?
            .into_iter()
            .map(|(k, _)| k[prefix.len()..].to_owned())
            .collect())
    }

    async fn delete_secret(&self, tenant: &Tenant, key: &str) -> Result<bool, StoreError> {
        self.remove_key("delete secret", SECRETS, scoped(tenant, key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CallKind;

    /// A journal entry of run `run_id`: the first occurrence of one call.
    fn entry(run_id: &str, kind: CallKind, output: &str) -> JournalEntry {
        JournalEntry {
            key: ReplayKey { run_id: run_id.into(), kind, name: "c".into(), input_hash: "h".into(), occurrence: 1 },
            seq: 0,
            attempt: 1,
            output: output.into(),
            summary: String::new(),
            recorded_at_ms: 0,
            duration_ms: 0,
            usage: None,
        }
    }

    fn run(id: &str, task: &str) -> RunRecord {
        RunRecord::new(id.into(), Tenant::default(), task.into(), "{}".into())
    }

    #[tokio::test]
    async fn runs_journal_and_secrets_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/cairn.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store.create_run(&run("01-a", "t1")).await.unwrap();
            store.create_run(&run("02-b", "t2")).await.unwrap();
            assert!(store.create_run(&run("01-a", "t1")).await.is_err(), "duplicate ids are refused");
            let key = ReplayKey {
                run_id: "01-a".into(),
                kind: CallKind::Llm,
                name: "complete".into(),
                input_hash: "h".into(),
                occurrence: 1,
            };
            let entry = JournalEntry {
                key: key.clone(),
                seq: 0,
                attempt: 1,
                output: "\"first\"".into(),
                summary: String::new(),
                recorded_at_ms: 0,
                duration_ms: 0,
                usage: None,
            };
            store.journal_put(&entry).await.unwrap();
            store.journal_put(&JournalEntry { output: "\"second\"".into(), ..entry }).await.unwrap();
            store.put_secret(&Tenant::default(), "api", "s3cret").await.unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let listed = store.list_runs(&Tenant::default(), &RunFilter::default()).unwrap();
        assert_eq!(listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["02-b", "01-a"]);
        let only_t1 =
            store.list_runs(&Tenant::default(), &RunFilter { task: Some("t1".into()), ..Default::default() }).unwrap();
        assert_eq!(only_t1.len(), 1);
        let journal = store.journal_of("01-a").unwrap();
        assert_eq!(journal.len(), 1);
        assert_eq!(journal[0].output, "\"first\"", "the first record of a key wins");
        assert!(store.journal_of("02-b").unwrap().is_empty());
        assert_eq!(store.get_secret(&Tenant::default(), "api").unwrap().as_deref(), Some("s3cret"));
        assert_eq!(store.list_secrets(&Tenant::default()).unwrap(), ["api"]);
        let other = Tenant { project: "p".into(), domain: "d".into() };
        assert_eq!(store.get_secret(&other, "api").unwrap(), None, "secrets are tenant-scoped");
        assert!(store.delete_secret(&Tenant::default(), "api").await.unwrap());
        assert!(!store.delete_secret(&Tenant::default(), "api").await.unwrap());
    }

    #[tokio::test]
    async fn newer_schema_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            let txn = store.db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema_version", b"99".as_slice()).unwrap();
            txn.commit().unwrap();
        }
        let err = RedbStore::open(&path).err().expect("must refuse a newer file");
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }

    #[tokio::test]
    async fn leases_are_claimed_renewed_and_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("l.redb")).unwrap();
        let tenant = Tenant::default();
        let mut r = run("01-lease", "t");
        r.lease = Some(Lease { owner: "a".into(), expires_at_ms: 1_000 });
        store.create_run(&r).await.unwrap();
        // Held by a until 1000: b cannot claim at 500, can at 1000.
        assert!(store.claim_run(&tenant, &r.id, "b", 5_000, 500, false).await.unwrap().is_none());
        assert!(store.heartbeat(&tenant, &r.id, "a", 2_000).await.unwrap());
        assert!(store.claim_run(&tenant, &r.id, "b", 5_000, 1_500, false).await.unwrap().is_none());
        let claimed = store.claim_run(&tenant, &r.id, "b", 5_000, 2_000, false).await.unwrap().unwrap();
        assert_eq!(claimed.lease.as_ref().unwrap().owner, "b");
        // a has lost it: its heartbeat and updates are refused.
        assert!(!store.heartbeat(&tenant, &r.id, "a", 9_000).await.unwrap());
        let err = store.update_run(&r, "a").await.unwrap_err();
        assert!(matches!(err, StoreError::LeaseLost { ref holder, .. } if holder == "b"), "{err}");
        // c may take it over only by force.
        assert!(store.claim_run(&tenant, &r.id, "c", 9_000, 2_500, false).await.unwrap().is_none());
        assert!(store.claim_run(&tenant, &r.id, "c", 9_000, 2_500, true).await.unwrap().is_some());
        // A finished run is never claimed.
        let mut done = store.get_run(&tenant, &r.id).unwrap();
        done.status = RunStatus::Succeeded;
        done.lease = None;
        store.update_run(&done, "c").await.unwrap();
        assert!(store.claim_run(&tenant, &r.id, "d", 9_000, 10_000, true).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(&dir.path().join("g.redb")).unwrap());
        let mut writers = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            let store = store.clone();
            writers.spawn(async move {
                store.journal_put(&entry(&format!("r{i}"), CallKind::Trace, "1")).await.unwrap();
                // Acknowledged means readable.
                assert_eq!(store.journal_of(&format!("r{i}")).unwrap().len(), 1);
            });
        }
        while let Some(done) = writers.join_next().await {
            done.unwrap();
        }
        let (commits, writes, largest) = store.commit_stats().snapshot();
        assert_eq!(writes, 200);
        assert!(commits < 200 && largest > 1, "{commits} commits, largest batch {largest}: writes were batched");
    }

    #[tokio::test]
    async fn a_failed_write_does_not_fail_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("f.redb")).unwrap();
        store.create_run(&run("dup", "t")).await.unwrap();
        let (dup, new) = (run("dup", "t"), run("new", "t"));
        let (duplicate, fresh) = tokio::join!(store.create_run(&dup), store.create_run(&new));
        assert!(duplicate.is_err());
        fresh.unwrap();
        assert!(store.get_run(&Tenant::default(), "new").is_ok());
    }

    #[tokio::test]
    async fn records_left_in_the_log_are_replayed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.redb");
        drop(RedbStore::open(&path).unwrap());
        // A process that logged a record and died before applying it to redb.
        let entry = entry("r", CallKind::Llm, "\"logged\"");
        let (mut wal, _) = Wal::open(&path.with_extension("wal")).unwrap();
        wal.append(&[&Wal::frame(std::slice::from_ref(&entry)).unwrap()]).unwrap();
        drop(wal);
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.journal_of("r").unwrap(), vec![entry]);
        assert_eq!(std::fs::metadata(path.with_extension("wal")).unwrap().len(), 0, "the log is emptied once applied");
    }
}
