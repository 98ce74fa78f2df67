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
//!
//! Every write is its own transaction, committed with redb's default
//! durability (fsync) before the call returns.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AttemptLog, JournalEntry, ReplayKey, Report, RunFilter, RunRecord, Store, StoreError, Tenant};

/// Schema version this build writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const JOURNAL: TableDefinition<&str, &[u8]> = TableDefinition::new("journal");
const LOGS: TableDefinition<&str, &[u8]> = TableDefinition::new("logs");
const REPORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("reports");
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");

/// Separator inside composite keys; sorts before every printable character.
const SEP: char = '\u{1}';

/// A [`Store`] in one redb file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
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
        let db =
            Database::create(path).map_err(|e| StoreError::Open { path: shown.clone(), message: e.to_string() })?;
        let store = RedbStore { db, path: path.to_path_buf() };
        store.init_schema()?;
        Ok(store)
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| io("open")(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| io("open")(e.into()))?;
            let found: Option<u64> = match meta.get("schema_version").map_err(|e| io("open")(e.into()))? {
                Some(v) => Some(decode("meta", v.value())?),
                None => None,
            };
            match found {
                Some(version) if version > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: self.path.display().to_string(),
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
            for table in [RUNS, JOURNAL, LOGS, REPORTS, SECRETS] {
                txn.open_table(table).map_err(|e| io("open")(e.into()))?;
            }
        }
        txn.commit().map_err(|e| io("open")(e.into()))
    }

    fn put(
        &self,
        operation: &'static str,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| io(operation)(e.into()))?;
        {
            let mut t = txn.open_table(table).map_err(|e| io(operation)(e.into()))?;
            t.insert(key, value).map_err(|e| io(operation)(e.into()))?;
        }
        txn.commit().map_err(|e| io(operation)(e.into()))
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

impl Store for RedbStore {
    fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let key = scoped(&run.tenant, &run.id);
        let value = encode("run", run)?;
        let txn = self.db.begin_write().map_err(|e| io("create run")(e.into()))?;
        {
            let mut t = txn.open_table(RUNS).map_err(|e| io("create run")(e.into()))?;
            if t.get(key.as_str()).map_err(|e| io("create run")(e.into()))?.is_some() {
                return Err(StoreError::Io {
                    operation: "create run",
                    message: format!("run {} already exists", run.id),
                });
            }
            t.insert(key.as_str(), value.as_slice()).map_err(|e| io("create run")(e.into()))?;
        }
        txn.commit().map_err(|e| io("create run")(e.into()))
    }

    fn update_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.put("update run", RUNS, &scoped(&run.tenant, &run.id), &encode("run", run)?)
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

    fn journal_get(&self, key: &ReplayKey) -> Result<Option<JournalEntry>, StoreError> {
        self.get("journal lookup", JOURNAL, &key.encode())?.map(|bytes| decode("journal", &bytes)).transpose()
    }

    fn journal_put(&self, entry: &JournalEntry) -> Result<(), StoreError> {
        let key = entry.key.encode();
        let value = encode("journal", entry)?;
        let txn = self.db.begin_write().map_err(|e| io("journal append")(e.into()))?;
        {
            let mut t = txn.open_table(JOURNAL).map_err(|e| io("journal append")(e.into()))?;
            if t.get(key.as_str()).map_err(|e| io("journal append")(e.into()))?.is_none() {
                t.insert(key.as_str(), value.as_slice()).map_err(|e| io("journal append")(e.into()))?;
            }
        }
        txn.commit().map_err(|e| io("journal append")(e.into()))
    }

    fn journal_of(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let mut entries: Vec<JournalEntry> = self
            .scan("journal read", JOURNAL, &format!("{run_id}{SEP}"))?
            .iter()
            .map(|(_, bytes)| decode("journal", bytes))
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.seq);
        Ok(entries)
    }

    fn put_log(&self, run_id: &str, attempt: u32, log: &AttemptLog) -> Result<(), StoreError> {
        self.put("write log", LOGS, &format!("{run_id}{SEP}{attempt:010}"), &encode("log", log)?)
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

    fn put_report(&self, run_id: &str, report: &Report) -> Result<(), StoreError> {
        self.put("write report", REPORTS, run_id, &encode("report", report)?)
    }

    fn get_report(&self, run_id: &str) -> Result<Option<Report>, StoreError> {
        self.get("read report", REPORTS, run_id)?.map(|b| decode("report", &b)).transpose()
    }

    fn put_secret(&self, tenant: &Tenant, key: &str, value: &str) -> Result<(), StoreError> {
        self.put("write secret", SECRETS, &scoped(tenant, key), value.as_bytes())
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

    fn delete_secret(&self, tenant: &Tenant, key: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(|e| io("delete secret")(e.into()))?;
        let existed = {
            let mut t = txn.open_table(SECRETS).map_err(|e| io("delete secret")(e.into()))?;
            let removed = t.remove(scoped(tenant, key).as_str()).map_err(|e| io("delete secret")(e.into()))?;
            removed.is_some()
        };
        txn.commit().map_err(|e| io("delete secret")(e.into()))?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CallKind, RunStatus, now_ms};

    fn run(id: &str, task: &str) -> RunRecord {
        RunRecord {
            id: id.into(),
            tenant: Tenant::default(),
            task: task.into(),
            input: "{}".into(),
            status: RunStatus::Running,
            component_digest: None,
            created_at_ms: now_ms(),
            finished_at_ms: None,
            attempts: vec![],
            output: None,
            error: None,
            usage: Default::default(),
            lease: None,
        }
    }

    #[test]
    fn runs_journal_and_secrets_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/cairn.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store.create_run(&run("01-a", "t1")).unwrap();
            store.create_run(&run("02-b", "t2")).unwrap();
            assert!(store.create_run(&run("01-a", "t1")).is_err(), "duplicate ids are refused");
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
            store.journal_put(&entry).unwrap();
            store.journal_put(&JournalEntry { output: "\"second\"".into(), ..entry }).unwrap();
            store.put_secret(&Tenant::default(), "api", "s3cret").unwrap();
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
        assert!(store.delete_secret(&Tenant::default(), "api").unwrap());
        assert!(!store.delete_secret(&Tenant::default(), "api").unwrap());
    }

    #[test]
    fn newer_schema_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store.put("test", META, "schema_version", b"99").unwrap();
        }
        let err = RedbStore::open(&path).err().expect("must refuse a newer file");
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}
