//! The store's roles on redb: one impl per role trait.

use super::index::{self, Family};
use super::*;
use crate::model::{Executor, Fence, TaskStats};
use crate::store::fencing::{claim, fenced_update, offers_work, take_lease};
use crate::store::{
    Beat, CacheStore, ExecutorStore, JournalStore, Lineage, OutputStore, RunFilter, RunStore, SecretReader,
    SecretStore, StateStore, Transition, check_fence, lease_free,
};

#[async_trait::async_trait]
impl RunStore for RedbStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let key = scoped(&run.tenant, &run.id);
        let value = encode("run", run)?;
        let id = run.id.clone();
        let unleased = offers_work(run);
        let run = run.clone();
        self.committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let t = tables.get(RUNS)?;
                if t.get(key.as_str()).map_err(|e| io("create run")(e.into()))?.is_some() {
                    return Err(StoreError::Corrupt { what: "run", message: format!("run {id} already exists") });
                }
                t.insert(key.as_str(), value.as_slice()).map_err(|e| io("create run")(e.into()))?;
                index::update(tables, None, Some(&run))
            }))
            .await?;
        if unleased {
            self.work.notify_waiters();
        }
        Ok(())
    }

    async fn update_run(&self, run: &RunRecord, fence: &Fence) -> Result<(), StoreError> {
        let key = scoped(&run.tenant, &run.id);
        let released = offers_work(run);
        let run = run.clone();
        let fence = fence.clone();
        self.committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let current = read_run(tables, &key, &run.id)?;
                let run = fenced_update(&current, &run, &fence)?;
                write_run(tables, &key, Some(&current), &run)
            }))
            .await?;
        if released {
            self.work.notify_waiters();
        }
        Ok(())
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
        self.write_returning(move |tables| {
            let current = read_run(tables, &key, &id)?;
            let Some(run) = claim(&current, &owner, lease_until_ms, now_ms, force) else { return Ok(None) };
            write_run(tables, &key, Some(&current), &run)?;
            Ok(Some(run))
        })
        .await
    }

    async fn claim_runnable(
        &self,
        tenant: &Tenant,
        owner: &str,
        lease_until_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stopped: Vec<String> =
            self.executors()?.into_iter().filter(|e| e.stopped_at_ms.is_some()).map(|e| e.id).collect();
        let mut candidates = Vec::new();
        for status in [RunStatus::Pending, RunStatus::Running] {
            let filter = RunFilter { status: Some(status), ..Default::default() };
            candidates.extend(
                self.list_runs(tenant, &filter)?
                    .into_iter()
                    .filter(|r| r.not_before_ms <= now_ms && lease_free(r, None, now_ms, &stopped))
                    .map(|r| r.id),
            );
        }
        // Oldest first: UUIDv7 ids sort by creation.
        candidates.sort();
        let (tenant, owner) = (tenant.clone(), owner.to_owned());
        self.write_returning(move |tables| {
            let mut claimed = Vec::new();
            for id in candidates {
                if claimed.len() >= limit {
                    break;
                }
                let key = scoped(&tenant, &id);
                let mut run = read_run(tables, &key, &id)?;
                // Checked again under the writer: another claim may have come first.
                if run.status.is_finished() || run.not_before_ms > now_ms || !lease_free(&run, None, now_ms, &stopped) {
                    continue;
                }
                let before = run.clone();
                take_lease(&mut run, &owner, lease_until_ms);
                write_run(tables, &key, Some(&before), &run)?;
                claimed.push(run);
            }
            Ok(claimed)
        })
        .await
    }

    async fn heartbeat(&self, id: &str, fence: &Fence, lease_until_ms: u64) -> Result<Beat, StoreError> {
        let key = scoped(&fence.tenant, id);
        let id = id.to_owned();
        let fence = fence.clone();
        let result = self
            .write_returning(move |tables| {
                let mut run = read_run(tables, &key, &id)?;
                check_fence(&run, &fence)?;
                let before = run.clone();
                match &mut run.lease {
                    Some(lease) => lease.expires_at_ms = lease_until_ms,
                    None => {
                        return Err(StoreError::LeaseLost { run_id: id.clone(), holder: "nobody (released)".into() });
                    }
                }
                write_run(tables, &key, Some(&before), &run)?;
                Ok(run.cancel_requested)
            })
            .await;
        match result {
            Ok(true) => Ok(Beat::CancelRequested),
            Ok(false) => Ok(Beat::Held),
            Err(StoreError::LeaseLost { .. }) => Ok(Beat::Lost),
            Err(e) => Err(e),
        }
    }

    async fn request_cancel(&self, tenant: &Tenant, id: &str) -> Result<RunRecord, StoreError> {
        let key = scoped(tenant, id);
        let id = id.to_owned();
        let run = self
            .write_returning(move |tables| {
                let mut run = read_run(tables, &key, &id)?;
                if !run.status.is_finished() && !run.cancel_requested {
                    let before = run.clone();
                    run.cancel_requested = true;
                    write_run(tables, &key, Some(&before), &run)?;
                }
                Ok(run)
            })
            .await?;
        let _ = self.cancels.send(run.id.clone());
        Ok(run)
    }

    async fn delete_run(&self, tenant: &Tenant, id: &str) -> Result<bool, StoreError> {
        let key = scoped(tenant, id);
        let id = id.to_owned();
        self.write_returning(move |tables| {
            let removed = {
                let t = tables.get(RUNS)?;
                let removed = t.remove(key.as_str()).map_err(|e| io("delete run")(e.into()))?;
                removed.map(|bytes| decode::<RunRecord>("run", bytes.value())).transpose()?
            };
            let Some(old) = &removed else {
                // Not this tenant's run (or none): another tenant's records stay.
                return Ok(false);
            };
            index::update(tables, Some(old), None)?;
            let prefix = format!("{id}{SEP}");
            remove_prefix(tables, JOURNAL, &prefix)?;
            remove_prefix(tables, LOGS, &prefix)?;
            let reports = tables.get(REPORTS)?;
            reports.remove(id.as_str()).map_err(|e| io("delete run")(e.into()))?;
            let letters = tables.get(DLQ)?;
            letters.remove(key.as_str()).map_err(|e| io("delete run")(e.into()))?;
            Ok(removed.is_some())
        })
        .await
    }

    fn get_run(&self, tenant: &Tenant, id: &str) -> Result<RunRecord, StoreError> {
        match self.get("read run", RUNS, &scoped(tenant, id))? {
            Some(bytes) => decode("run", &bytes),
            None => Err(StoreError::NoSuchRun(id.to_owned())),
        }
    }

    fn tenants(&self, with_work: bool) -> Result<Vec<Tenant>, StoreError> {
        const OP: &str = "list tenants";
        let txn = self.db.begin_read().map_err(|e| io(OP)(e.into()))?;
        let index = txn.open_table(RUN_INDEX).map_err(|e| io(OP)(e.into()))?;
        index::tenants(&index, with_work).map_err(|e| io(OP)(e))
    }

    fn finished_among(&self, tenant: &Tenant, ids: &[String]) -> Result<Vec<(String, Option<RunRecord>)>, StoreError> {
        const OP: &str = "read runs";
        let txn = self.db.begin_read().map_err(|e| io(OP)(e.into()))?;
        let runs = txn.open_table(RUNS).map_err(|e| io(OP)(e.into()))?;
        let mut finished = Vec::new();
        for id in ids {
            match runs.get(scoped(tenant, id).as_str()).map_err(|e| io(OP)(e.into()))? {
                Some(bytes) => {
                    let run: RunRecord = decode("run", bytes.value())?;
                    if run.status.is_finished() {
                        finished.push((id.clone(), Some(run)));
                    }
                }
                None => finished.push((id.clone(), None)),
            }
        }
        Ok(finished)
    }

    fn list_runs(&self, tenant: &Tenant, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        const OP: &str = "list runs";
        let txn = self.db.begin_read().map_err(|e| io(OP)(e.into()))?;
        let runs = txn.open_table(RUNS).map_err(|e| io(OP)(e.into()))?;
        let index = txn.open_table(RUN_INDEX).map_err(|e| io(OP)(e.into()))?;
        // The most selective index for the filter; the rest is checked on each record.
        let status = filter.status.map(|s| s.as_str());
        let source = match (&filter.lineage, status, &filter.task) {
            (Lineage::ChildrenOf(parent), _, _) => Some(index::prefix(Family::Parent, tenant, parent)),
            (Lineage::TopLevel, Some(status), _) => Some(index::prefix(Family::TopLevelStatus, tenant, status)),
            (_, Some(status), _) => Some(index::prefix(Family::Status, tenant, status)),
            (_, None, Some(task)) => Some(index::prefix(Family::Task, tenant, task)),
            (Lineage::TopLevel, None, None) => Some(index::prefix(Family::Parent, tenant, "")),
            (Lineage::Any, None, None) => None,
        };
        let prefix = source.clone().unwrap_or_else(|| format!("{tenant}{SEP}"));
        let (start, end) = prefix_range(&prefix);
        let end = match &filter.before {
            Some(before) => format!("{prefix}{before}"),
            None => end,
        };
        let limit = filter.limit.unwrap_or(usize::MAX);
        let keep = |run: &RunRecord| {
            filter.task.as_ref().is_none_or(|t| *t == run.task)
                && filter.status.is_none_or(|s| s == run.status)
                && match &filter.lineage {
                    Lineage::Any => true,
                    Lineage::TopLevel => run.parent.is_none(),
                    Lineage::ChildrenOf(parent) => run.parent.as_ref() == Some(parent),
                }
        };
        let mut found = Vec::new();
        let table = if source.is_some() { &index } else { &runs };
        for item in table.range(start.as_str()..end.as_str()).map_err(|e| io(OP)(e.into()))?.rev() {
            if found.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(|e| io(OP)(e.into()))?;
            let run: RunRecord = if source.is_some() {
                let id = &key.value()[prefix.len()..];
                match runs.get(scoped(tenant, id).as_str()).map_err(|e| io(OP)(e.into()))? {
                    Some(bytes) => decode("run", bytes.value())?,
                    None => {
                        return Err(StoreError::Corrupt {
                            what: "run index",
                            message: format!("the index names run {id}, which is not stored"),
                        });
                    }
                }
            } else {
                decode("run", value.value())?
            };
            if keep(&run) {
                found.push(run);
            }
        }
        Ok(found)
    }

    fn task_stats(&self, tenant: &Tenant) -> Result<Vec<(String, TaskStats)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| io("read task stats")(e.into()))?;
        let stats = txn.open_table(TASK_STATS).map_err(|e| io("read task stats")(e.into()))?;
        index::read_stats(&stats, tenant)
    }

    fn halted(&self) -> Option<StoreError> {
        self.committer.halted()
    }

    fn writer_stats(&self) -> Option<crate::store::WriterStats> {
        Some(self.committer.stats().writer_stats())
    }
}

#[async_trait::async_trait]
impl JournalStore for RedbStore {
    async fn journal_put(&self, entry: &JournalEntry, fence: Option<&Fence>) -> Result<(), StoreError> {
        // One process writes a redb store, through one writer: the check
        // before the write cannot be overtaken by another host's claim, only
        // by a forced take-over in this process, whose stop signal ends the
        // old attempt as well.
        if let Some(fence) = fence {
            check_fence(&self.get_run(&fence.tenant, &entry.key.run_id)?, fence)?;
        }
        self.journal_put_all(std::slice::from_ref(entry)).await
    }

    async fn journal_put_all(&self, entries: &[JournalEntry]) -> Result<(), StoreError> {
        let payload = Wal::payload(entries)?;
        let records: Vec<(String, Vec<u8>)> =
            entries.iter().map(|e| Ok((e.key.encode(), encode("journal", e)?))).collect::<Result<_, StoreError>>()?;
        self.committer.write_logged(Logged { payload, records }).await
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
}

#[async_trait::async_trait]
impl OutputStore for RedbStore {
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
}

#[async_trait::async_trait]
impl CacheStore for RedbStore {
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
}

#[async_trait::async_trait]
impl StateStore for RedbStore {
    async fn update_breaker(&self, tenant: &Tenant, name: &str, transition: Transition) -> Result<Vec<u8>, StoreError> {
        // The single writer runs read and write back to back: nothing comes between.
        let key = scoped(tenant, name);
        self.write_returning(move |tables| {
            let table = tables.get(BREAKERS)?;
            let current = table.get(key.as_str()).map_err(|e| io("breaker")(e.into()))?.map(|v| v.value().to_vec());
            let next = transition(current.as_deref());
            table.insert(key.as_str(), next.as_slice()).map_err(|e| io("breaker")(e.into()))?;
            Ok(next)
        })
        .await
    }

    fn breakers(&self, tenant: &Tenant) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = format!("{tenant}{SEP}");
        Ok(self
            .scan("list breakers", BREAKERS, &prefix)?
            .into_iter()
            .map(|(key, bytes)| (key[prefix.len()..].to_owned(), bytes))
            .collect())
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
}

#[async_trait::async_trait]
impl ExecutorStore for RedbStore {
    async fn put_executor(&self, executor: &Executor) -> Result<(), StoreError> {
        self.committer
            .write_async(put_op("record executor", EXECUTORS, executor.id.clone(), encode("executor", executor)?))
            .await
    }

    fn executors(&self) -> Result<Vec<Executor>, StoreError> {
        const OP: &str = "list executors";
        let txn = self.db.begin_read().map_err(|e| io(OP)(e.into()))?;
        let table = match txn.open_table(EXECUTORS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(io(OP)(e.into())),
        };
        let mut found = Vec::new();
        for item in table.iter().map_err(|e| io(OP)(e.into()))? {
            let (_, value) = item.map_err(|e| io(OP)(e.into()))?;
            found.push(decode("executor", value.value())?);
        }
        Ok(found)
    }

    async fn forget_executors(&self, before_ms: u64) -> Result<usize, StoreError> {
        let count = Arc::new(AtomicUsize::new(0));
        let out = count.clone();
        self.committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let mut removed = 0;
                tables
                    .get(EXECUTORS)?
                    .retain(|_, value| {
                        let old = serde_json::from_slice::<Executor>(value).is_ok_and(|e| e.seen_at_ms < before_ms);
                        removed += usize::from(old);
                        !old
                    })
                    .map_err(|e| io("forget executors")(e.into()))?;
                out.store(removed, Ordering::Relaxed);
                Ok(())
            }))
            .await?;
        Ok(count.load(Ordering::Relaxed))
    }

    fn work_signal(&self) -> Arc<tokio::sync::Notify> {
        self.work.clone()
    }

    fn cancel_requests(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.cancels.subscribe()
    }
}

#[async_trait::async_trait]
impl SecretStore for RedbStore {
    async fn put_secret(&self, tenant: &Tenant, key: &str, sealed: &str) -> Result<(), StoreError> {
        self.committer
            .write_async(put_op("write secret", SECRETS, scoped(tenant, key), sealed.as_bytes().to_vec()))
            .await
    }

    fn all_secrets(&self) -> Result<Vec<(Tenant, String, String)>, StoreError> {
        let mut all = Vec::new();
        for (key, value) in self.scan("list secrets", SECRETS, "")? {
            let Some((tenant, name)) = key.split_once(SEP) else { continue };
            let Ok(tenant) = tenant.parse::<Tenant>() else { continue };
            let text = String::from_utf8(value)
                .map_err(|_| StoreError::Corrupt { what: "secret", message: "not UTF-8".into() })?;
            all.push((tenant, name.to_owned(), text));
        }
        Ok(all)
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

impl SecretReader for RedbStore {
    fn get_secret(&self, tenant: &Tenant, key: &str) -> Result<Option<String>, StoreError> {
        self.get("read secret", SECRETS, &scoped(tenant, key))?
            .map(|b| {
                String::from_utf8(b).map_err(|_| StoreError::Corrupt { what: "secret", message: "not UTF-8".into() })
            })
            .transpose()
    }
}
