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
//! | `executors` | executor id                          | [`crate::model::Executor`] (made on first use) |
//! | `tokens`   | token id                              | [`crate::model::ApiToken`] (made on first use) |
//!
//! Version 2 added `run_index` and `task_stats`; a version-1 file is
//! migrated when it is opened, in one transaction (see [`migrate_v1`]).
//!
//! Every write goes through the [`GroupCommitter`]: concurrent writes share
//! one transaction and one fsync, and each returns only once committed.

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;
use super::commit::{CommitStats, GroupCommitter, Logged, Pending, Tables, Target, WriteOp};
use super::sim_disk::SimDisk;
use super::wal::{self, CHECKPOINT_BYTES, LogFile, Wal};
use crate::model::{AttemptLog, CacheEntry, DeadLetter, JournalEntry, ReplayKey, Report, RunRecord, RunStatus, Tenant};

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
/// Executor id → JSON [`crate::model::Executor`] (made on first use: no schema change).
const EXECUTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("executors");

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
    /// Pinged when a run is created or released (see [`crate::store::ExecutorStore::work_signal`]).
    work: Arc<tokio::sync::Notify>,
    /// Cancel requests (see [`crate::store::ExecutorStore::cancel_requests`]).
    cancels: tokio::sync::broadcast::Sender<String>,
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

/// Where a store keeps its two files (the database and the journal's log).
#[derive(Debug, Clone)]
pub enum Backing {
    /// Real files: the database at this path, the log beside it (`.wal`).
    Path(PathBuf),
    /// Files on a simulated disk (power-loss and fault tests).
    Simulated(Arc<SimDisk>),
}

/// The database's name on a simulated disk.
pub const SIM_DB: &str = "cairn.redb";
/// The log's name on a simulated disk.
pub const SIM_WAL: &str = "cairn.wal";

/// Sizes a store runs with; the defaults suit a host, tests shrink them.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Checkpoint once the journal's log holds this many bytes.
    pub checkpoint_bytes: u64,
    /// Memory redb may use to cache pages.
    pub cache_bytes: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { checkpoint_bytes: CHECKPOINT_BYTES, cache_bytes: CACHE_BYTES }
    }
}

fn open_error(path: &str) -> impl Fn(redb::DatabaseError) -> StoreError + '_ {
    move |e| StoreError::Open {
        path: path.to_owned(),
        message: match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                "another cairn process has it open (one process per project store); wait for it to finish".into()
            }
            other => other.to_string(),
        },
    }
}

impl RedbStore {
    /// Opens (or creates) the store file at `path`, creating its directory.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_on(Backing::Path(path.to_path_buf()), Tuning::default())
    }

    /// Opens (or creates) a store on `backing`, tuned by `tuning`.
    pub fn open_on(backing: Backing, tuning: Tuning) -> Result<Self, StoreError> {
        let (db, path, wal_path, log): (Database, PathBuf, String, Box<dyn LogFile>) = match &backing {
            Backing::Path(path) => {
                let shown = path.display().to_string();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StoreError::Open { path: shown.clone(), message: e.to_string() })?;
                }
                if !path.exists() {
                    create_file(path, tuning)?;
                }
                let db =
                    Database::builder().set_cache_size(tuning.cache_bytes).create(path).map_err(open_error(&shown))?;
                let wal_path = path.with_extension("wal");
                let log = Box::new(wal::open_file(&wal_path)?);
                (db, path.clone(), wal_path.display().to_string(), log)
            }
            Backing::Simulated(disk) => {
                if !disk.exists(SIM_DB) {
                    let creating = format!("{SIM_DB}.new");
                    // A file a crash left half laid out starts over.
                    let file = disk.file(&creating);
                    file.set_len(0)
                        .and_then(|()| file.sync())
                        .map_err(|e| StoreError::Open { path: creating.clone(), message: e.to_string() })?;
                    let db = Database::builder()
                        .set_cache_size(tuning.cache_bytes)
                        .create_with_backend(file)
                        .map_err(open_error(&creating))?;
                    init_schema(&db, Path::new(&creating))?;
                    drop(db);
                    disk.rename(&creating, SIM_DB)
                        .map_err(|e| StoreError::Open { path: SIM_DB.into(), message: e.to_string() })?;
                }
                let db = Database::builder()
                    .set_cache_size(tuning.cache_bytes)
                    .create_with_backend(disk.file(SIM_DB))
                    .map_err(open_error(SIM_DB))?;
                (db, PathBuf::from(SIM_DB), SIM_WAL.to_owned(), Box::new(disk.file(SIM_WAL)))
            }
        };
        let db = Arc::new(db);
        init_schema(&db, &path)?;
        let wal = replay_wal(&db, log, &wal_path)?;
        let pending = Pending::default();
        let target = Target {
            db: db.clone(),
            db_path: path.display().to_string(),
            wal,
            checkpoint_bytes: tuning.checkpoint_bytes,
        };
        let committer = GroupCommitter::start(target, pending.clone(), JOURNAL, index::flush_counts)?;
        let (cancels, _) = tokio::sync::broadcast::channel(1024);
        Ok(RedbStore { db, path, committer, pending, work: Arc::default(), cancels })
    }

    /// Repairs a journal log that is damaged before its end (see
    /// [`StoreError::LogDamaged`]): saves the log beside itself, applies every
    /// intact frame (before and after the damage) to the database durably,
    /// and empties the log. Returns what it kept and lost; a log without such
    /// damage is left alone.
    pub fn repair(path: &Path) -> Result<Repair, StoreError> {
        let shown = path.display().to_string();
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(open_error(&shown))?;
        init_schema(&db, path)?;
        let wal_path = path.with_extension("wal");
        let failed = |doing: &str, e: std::io::Error| wal::failure(&wal_path.display().to_string(), doing, &e);
        let bytes = std::fs::read(&wal_path).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(Vec::new()),
            _ => Err(failed("reading the journal log", e)),
        })?;
        let scan = wal::scan(&bytes);
        if scan.beyond.is_empty() {
            return Ok(Repair::default());
        }
        let saved = wal_path.with_extension(format!("wal.damaged-{}", crate::model::now_ms()));
        let mut copy = std::fs::File::create(&saved).map_err(|e| failed("saving the damaged log", e))?;
        std::io::Write::write_all(&mut copy, &bytes)
            .and_then(|()| copy.sync_all())
            .map_err(|e| failed("saving the damaged log", e))?;
        let mut records = scan.entries.len();
        let mut entries = scan.entries;
        for (_, mut beyond) in scan.beyond.clone() {
            records += beyond.len();
            entries.append(&mut beyond);
        }
        write_entries(&db, &entries, "log repair")?;
        let log = std::fs::OpenOptions::new().write(true).open(&wal_path).map_err(|e| failed("emptying the log", e))?;
        log.set_len(0).and_then(|()| log.sync_all()).map_err(|e| failed("emptying the log", e))?;
        let first_beyond = scan.beyond[0].0;
        let intact_bytes: usize = scan.end + (bytes.len() - first_beyond);
        Ok(Repair {
            damaged_at: Some(scan.end as u64),
            frames_after: scan.beyond.len(),
            records,
            bytes_lost: (bytes.len() - intact_bytes.min(bytes.len())) as u64,
            saved_to: Some(saved),
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` in the next group commit and returns what it returned, once
    /// the commit is durable.
    async fn write_returning<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Tables<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let slot = Arc::new(std::sync::Mutex::new(None));
        let out = slot.clone();
        self.committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let value = op(tables)?;
                *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
                Ok(())
            }))
            .await?;
        let value = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        value.ok_or_else(|| StoreError::Io { operation: "write", message: "the write ended without its result".into() })
    }

    /// Removes one key through the group committer; returns whether it existed.
    async fn remove_key(
        &self,
        operation: &'static str,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: String,
    ) -> Result<bool, StoreError> {
        self.write_returning(move |tables| {
            Ok(tables.get(table)?.remove(key.as_str()).map_err(|e| io(operation)(e.into()))?.is_some())
        })
        .await
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
        // Tables added without a schema change are made on their first write.
        let t = match txn.open_table(table) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(io(operation)(e.into())),
        };
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
        let t = match txn.open_table(table) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(io(operation)(e.into())),
        };
        let (start, end) = prefix_range(prefix);
        let mut out = Vec::new();
        for item in t.range(start.as_str()..end.as_str()).map_err(|e| io(operation)(e.into()))? {
            let (k, v) = item.map_err(|e| io(operation)(e.into()))?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }
}

/// Creates a new store file whole or not at all: redb cannot open a file a
/// crash cut short while it was being laid out, so the file is made under
/// another name, given its schema (one durable commit), and then renamed
/// into place, with its directory synced.
fn create_file(path: &Path, tuning: Tuning) -> Result<(), StoreError> {
    let shown = path.display().to_string();
    let failed = |e: std::io::Error| StoreError::Open { path: shown.clone(), message: e.to_string() };
    let creating = path.with_extension("redb.new");
    match std::fs::remove_file(&creating) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
        _ => {}
    }
    let db = Database::builder()
        .set_cache_size(tuning.cache_bytes)
        .create(&creating)
        .map_err(open_error(&creating.display().to_string()))?;
    init_schema(&db, &creating)?;
    drop(db);
    std::fs::rename(&creating, path).map_err(failed)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(failed)?;
    }
    Ok(())
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

/// What [`RedbStore::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repair {
    /// Where the damage started (`None`: the log needed no repair).
    pub damaged_at: Option<u64>,
    /// Intact frames found after the damage.
    pub frames_after: usize,
    /// Journal records kept (applied to the database).
    pub records: usize,
    /// Bytes that could not be read (the records in them are lost).
    pub bytes_lost: u64,
    /// Where the damaged log was saved.
    pub saved_to: Option<PathBuf>,
}

/// Writes journal entries durably in one transaction (the first record of a key wins).
fn write_entries(db: &Database, entries: &[JournalEntry], operation: &'static str) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(|e| io(operation)(e.into()))?;
    {
        let mut t = txn.open_table(JOURNAL).map_err(|e| io(operation)(e.into()))?;
        for entry in entries {
            let key = entry.key.encode();
            if t.get(key.as_str()).map_err(|e| io(operation)(e.into()))?.is_none() {
                t.insert(key.as_str(), encode("journal", entry)?.as_slice()).map_err(|e| io(operation)(e.into()))?;
            }
        }
    }
    txn.commit().map_err(|e| io(operation)(e.into()))
}

/// Applies what the journal's write-ahead log still holds (records logged
/// but not yet checkpointed when the last process stopped), then empties it.
fn replay_wal(db: &Database, log: Box<dyn LogFile>, path: &str) -> Result<Wal, StoreError> {
    let (mut wal, entries) = Wal::open(log, path)?;
    if !entries.is_empty() {
        write_entries(db, &entries, "journal replay")?;
        tracing::info!("replayed {} journal records from {path}", entries.len());
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

mod access;
mod dlq;
mod index;
#[cfg(test)]
mod index_tests;
mod roles;
#[cfg(test)]
mod tests;

use index::{RUN_INDEX, TASK_STATS};
