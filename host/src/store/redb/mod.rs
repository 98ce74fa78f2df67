//! The embedded store: one redb file (`.cairn/cairn.redb`).
//!
//! Schema (all values are JSON unless noted; version 2):
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
//! | `breakers` | `"project/domain\x01<kind>:<name>"`   | the breaker's state  |
//! | `counters` | `"project/domain\x01<name>"`          | u64 (as JSON)         |
//! | `run_index` | see [`index`]                        | empty                 |
//! | `task_stats` | `"project/domain\x01<task>"`        | [`crate::model::TaskStats`] |
//!
//! Version 2 added `run_index` and `task_stats`; a version-1 file is
//! migrated when it is opened, in one transaction (see [`migrate_v1`]).
//!
//! Every write goes through the [`GroupCommitter`]: concurrent writes share
//! one transaction and one fsync, and each returns only once committed.

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;
use super::commit::{CommitStats, GroupCommitter, Logged, Pending, Tables, WriteOp};
use super::wal::Wal;
use crate::model::{
    AttemptLog, CacheEntry, DeadLetter, JournalEntry, Lease, ReplayKey, Report, RunRecord, RunStatus, Tenant,
};

/// Schema version this build writes and reads.
pub const SCHEMA_VERSION: u64 = 2;

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

/// Memory redb may use to cache pages: the host's memory must not grow with
/// the store (redb's default is 1 GiB, which a busy store fills).
pub const CACHE_BYTES: usize = 64 << 20;

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
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| StoreError::Open {
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
        let committer = GroupCommitter::start(db.clone(), wal, pending.clone(), JOURNAL, index::flush_counts)?;
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
    // A current file needs no write (and no durable commit) to open: every
    // command opens the store, and a commit's cost grows with the file.
    if stored_version(db)? == Some(SCHEMA_VERSION) {
        return Ok(());
    }
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
            Some(1) => {
                drop(meta);
                migrate_v1(&txn)?;
                let mut meta = txn.open_table(META).map_err(|e| io("open")(e.into()))?;
                meta.insert("schema_version", encode("meta", &SCHEMA_VERSION)?.as_slice())
                    .map_err(|e| io("open")(e.into()))?;
            }
            Some(_) => {}
            None => {
                meta.insert("schema_version", encode("meta", &SCHEMA_VERSION)?.as_slice())
                    .map_err(|e| io("open")(e.into()))?;
            }
        }
        for table in [RUNS, JOURNAL, LOGS, REPORTS, SECRETS, CACHE, DLQ, BREAKERS, COUNTERS, RUN_INDEX, TASK_STATS] {
            txn.open_table(table).map_err(|e| io("open")(e.into()))?;
        }
    }
    txn.commit().map_err(|e| io("open")(e.into()))
}

/// The schema version a file records, read without writing.
fn stored_version(db: &Database) -> Result<Option<u64>, StoreError> {
    let txn = db.begin_read().map_err(|e| io("open")(e.into()))?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(io("open")(e.into())),
    };
    match meta.get("schema_version").map_err(|e| io("open")(e.into()))? {
        Some(v) => Ok(Some(decode("meta", v.value())?)),
        None => Ok(None),
    }
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

/// Writes `run` over `old` (`None`: a new run), with its index entries and
/// its task's counts, in the caller's transaction.
fn write_run(tables: &mut Tables<'_>, key: &str, old: Option<&RunRecord>, run: &RunRecord) -> Result<(), StoreError> {
    let value = encode("run", run)?;
    let t = tables.get(RUNS)?;
    t.insert(key, value.as_slice()).map_err(|e| io("write run")(e.into()))?;
    if old.is_some_and(|old| index::unchanged(old, run)) {
        return Ok(());
    }
    index::update(tables, old, Some(run))
}

/// Builds the indexes and task counts of a version-1 file from its runs,
/// through the same [`index::update`] every write goes through.
fn migrate_v1(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let runs = txn.open_table(RUNS).map_err(|e| io("migrate")(e.into()))?;
    let mut tables = Tables::new(txn);
    let mut migrated = 0usize;
    for item in runs.iter().map_err(|e| io("migrate")(e.into()))? {
        let (_, bytes) = item.map_err(|e| io("migrate")(e.into()))?;
        let run: RunRecord = decode("run", bytes.value())?;
        index::update(&mut tables, None, Some(&run))?;
        migrated += 1;
    }
    index::flush_counts(&mut tables)?;
    tracing::info!("store migrated from schema 1 to 2: indexed {migrated} run(s)");
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

mod index;
#[cfg(test)]
mod index_tests;
mod roles;
#[cfg(test)]
mod tests;

use index::{RUN_INDEX, TASK_STATS};
