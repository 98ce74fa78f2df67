//! The store's roles on PostgreSQL: one impl per role trait. Each write is
//! one transaction; claims lock rows with `FOR UPDATE SKIP LOCKED`, so
//! hosts claiming at once each get different runs and never wait on each
//! other.

use std::sync::Arc;

use tokio::sync::Notify;

use super::rows::{RunRow, decode, encode, restat, run_from_row, tenant_key};
use super::{Failed, PgStore};
use crate::model::{
    AttemptLog, CacheEntry, DeadLetter, Executor, Fence, JournalEntry, Lease, ReplayKey, Report, RunRecord, RunStatus,
    TaskStats, Tenant,
};
use crate::store::{
    CacheStore, DlqStore, ExecutorStore, JournalStore, Lineage, OutputStore, RunFilter, RunStore, SecretReader,
    SecretStore, StateStore, StoreError, check_fence, lease_free,
};

/// The columns of [`run_from_row`], for `concat!`.
macro_rules! run_columns {
    () => {
        "record, status, lease_owner, lease_until, epoch, not_before"
    };
}

const SELECT_RUN_FOR_UPDATE: &str =
    concat!("SELECT ", run_columns!(), " FROM runs WHERE tenant = $1 AND id = $2 FOR UPDATE");
const UPDATE_RUN: &str = "UPDATE runs SET task = $3, parent = $4, status = $5, lease_owner = $6, lease_until = $7,
        epoch = $8, not_before = $9, record = $10 WHERE tenant = $1 AND id = $2";

/// Writes a run's row in full (it exists).
async fn write_run(client: &impl deadpool_postgres::GenericClient, run: &RunRecord) -> Result<(), Failed> {
    let row = RunRow::of(run)?;
    client
        .execute(
            UPDATE_RUN,
            &[
                &row.tenant,
                &row.id,
                &row.task,
                &row.parent,
                &row.status,
                &row.lease_owner,
                &row.lease_until,
                &row.epoch,
                &row.not_before,
                &row.record,
            ],
        )
        .await?;
    Ok(())
}

fn ms(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

#[async_trait::async_trait]
impl RunStore for PgStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let announce = run.lease.is_none() && !run.status.is_finished();
        let run = Arc::new(run.clone());
        self.write("create run", move |mut client| {
            let run = run.clone();
            async move {
                let row = RunRow::of(&run)?;
                let txn = client.transaction().await?;
                let inserted = txn
                    .execute(
                        "INSERT INTO runs (tenant, id, task, parent, status, lease_owner, lease_until, epoch, not_before, record)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (tenant, id) DO NOTHING",
                        &[
                            &row.tenant,
                            &row.id,
                            &row.task,
                            &row.parent,
                            &row.status,
                            &row.lease_owner,
                            &row.lease_until,
                            &row.epoch,
                            &row.not_before,
                            &row.record,
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    // The same record again is a retry whose first commit went unacknowledged.
                    let existing = txn
                        .query_one("SELECT record FROM runs WHERE tenant = $1 AND id = $2", &[&row.tenant, &row.id])
                        .await?;
                    if existing.get::<_, &str>(0) == row.record {
                        return Ok(());
                    }
                    return Err(StoreError::Corrupt { what: "run", message: format!("run {} already exists", run.id) }
                        .into());
                }
                restat(&txn, None, Some(&run)).await?;
                txn.commit().await?;
                Ok(())
            }
        })
        .await?;
        if announce {
            self.announce_work();
        }
        Ok(())
    }

    async fn update_run(&self, run: &RunRecord, fence: &Fence) -> Result<(), StoreError> {
        let announce = run.lease.is_none();
        let (run, fence) = (Arc::new(run.clone()), Arc::new(fence.clone()));
        self.write("update run", move |mut client| {
            let (run, fence) = (run.clone(), fence.clone());
            async move {
                let txn = client.transaction().await?;
                let tenant = tenant_key(&run.tenant);
                let Some(row) = txn.query_opt(SELECT_RUN_FOR_UPDATE, &[&tenant, &run.id]).await? else {
                    return Err(StoreError::NoSuchRun(run.id.clone()).into());
                };
                let current = run_from_row(&row)?;
                check_fence(&current, &fence)?;
                let mut run = (*run).clone();
                run.epoch = current.epoch;
                // The heartbeat may have renewed the lease since the caller read it: keep the later expiry.
                if let (Some(stored), Some(lease)) = (&current.lease, &mut run.lease)
                    && stored.owner == lease.owner
                {
                    lease.expires_at_ms = lease.expires_at_ms.max(stored.expires_at_ms);
                }
                write_run(&txn, &run).await?;
                restat(&txn, Some(&current), Some(&run)).await?;
                txn.commit().await?;
                Ok(())
            }
        })
        .await?;
        if announce {
            self.announce_work();
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
        let (tenant, id, owner) = (tenant_key(tenant), id.to_owned(), owner.to_owned());
        self.write("claim run", move |mut client| {
            let (tenant, id, owner) = (tenant.clone(), id.clone(), owner.clone());
            async move {
                let txn = client.transaction().await?;
                let Some(row) = txn.query_opt(SELECT_RUN_FOR_UPDATE, &[&tenant, &id]).await? else {
                    return Err(StoreError::NoSuchRun(id).into());
                };
                let mut run = run_from_row(&row)?;
                if run.status.is_finished() || (!force && !lease_free(&run, Some(&owner), now_ms, &[])) {
                    return Ok(None);
                }
                run.lease = Some(Lease { owner, expires_at_ms: lease_until_ms });
                run.status = RunStatus::Running;
                run.epoch += 1;
                write_run(&txn, &run).await?;
                txn.commit().await?;
                Ok(Some(run))
            }
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
        let (tenant, owner) = (tenant_key(tenant), owner.to_owned());
        self.write("claim runs", move |mut client| {
            let (tenant, owner) = (tenant.clone(), owner.clone());
            async move {
                let txn = client.transaction().await?;
                // Locked rows are skipped: another host is claiming (or writing) them.
                let rows = txn
                    .query(
                        concat!(
                            "SELECT ",
                            run_columns!(),
                            " FROM runs
                             WHERE tenant = $1 AND status IN ('pending', 'running') AND not_before <= $2
                               AND (lease_owner IS NULL OR lease_until <= $2
                                    OR lease_owner IN (SELECT id FROM executors WHERE stopped))
                             ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED"
                        ),
                        &[&tenant, &ms(now_ms), &(limit as i64)],
                    )
                    .await?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut run = run_from_row(row)?;
                    run.lease = Some(Lease { owner: owner.clone(), expires_at_ms: lease_until_ms });
                    run.epoch += 1;
                    claimed.push(run);
                }
                if !claimed.is_empty() {
                    let ids: Vec<&str> = claimed.iter().map(|r| r.id.as_str()).collect();
                    txn.execute(
                        "UPDATE runs SET lease_owner = $3, lease_until = $4, epoch = epoch + 1
                         WHERE tenant = $1 AND id = ANY($2)",
                        &[&tenant, &ids, &owner, &ms(lease_until_ms)],
                    )
                    .await?;
                }
                txn.commit().await?;
                Ok(claimed)
            }
        })
        .await
    }

    async fn heartbeat(&self, id: &str, fence: &Fence, lease_until_ms: u64) -> Result<bool, StoreError> {
        let (id, fence) = (id.to_owned(), Arc::new(fence.clone()));
        self.write("renew lease", move |client| {
            let (id, fence) = (id.clone(), fence.clone());
            async move {
                let tenant = tenant_key(&fence.tenant);
                let statement = client
                    .prepare_cached(
                        "UPDATE runs SET lease_until = $5
                         WHERE tenant = $1 AND id = $2 AND epoch = $3 AND lease_owner = $4",
                    )
                    .await?;
                let renewed = client
                    .execute(&statement, &[&tenant, &id, &(fence.epoch as i64), &fence.owner, &ms(lease_until_ms)])
                    .await?;
                Ok(renewed == 1)
            }
        })
        .await
    }

    async fn delete_run(&self, tenant: &Tenant, id: &str) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant_key(tenant), id.to_owned());
        self.write("delete run", move |mut client| {
            let (tenant, id) = (tenant.clone(), id.clone());
            async move {
                let txn = client.transaction().await?;
                let old = match txn.query_opt(SELECT_RUN_FOR_UPDATE, &[&tenant, &id]).await? {
                    Some(row) => Some(run_from_row(&row)?),
                    None => None,
                };
                txn.execute("DELETE FROM runs WHERE tenant = $1 AND id = $2", &[&tenant, &id]).await?;
                txn.execute("DELETE FROM journal WHERE run_id = $1", &[&id]).await?;
                txn.execute("DELETE FROM logs WHERE run_id = $1", &[&id]).await?;
                txn.execute("DELETE FROM reports WHERE run_id = $1", &[&id]).await?;
                txn.execute("DELETE FROM dlq WHERE tenant = $1 AND run_id = $2", &[&tenant, &id]).await?;
                restat(&txn, old.as_ref(), None).await?;
                txn.commit().await?;
                Ok(old.is_some())
            }
        })
        .await
    }

    fn get_run(&self, tenant: &Tenant, id: &str) -> Result<RunRecord, StoreError> {
        let (tenant, id) = (tenant_key(tenant), id.to_owned());
        self.read("read run", move |client| {
            let (tenant, id) = (tenant.clone(), id.clone());
            async move {
                let statement = client
                    .prepare_cached(concat!("SELECT ", run_columns!(), " FROM runs WHERE tenant = $1 AND id = $2"))
                    .await?;
                match client.query_opt(&statement, &[&tenant, &id]).await? {
                    Some(row) => Ok(run_from_row(&row)?),
                    None => Err(StoreError::NoSuchRun(id).into()),
                }
            }
        })
    }

    fn list_runs(&self, tenant: &Tenant, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        type Param = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;
        let mut sql = String::from(concat!("SELECT ", run_columns!(), " FROM runs WHERE tenant = $1"));
        let mut params: Vec<Param> = vec![Box::new(tenant_key(tenant))];
        let mut bind = |sql: &mut String, clause: &str, value: Param| {
            params.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", params.len())));
        };
        if let Some(status) = filter.status {
            bind(&mut sql, " AND status = ?", Box::new(status.as_str().to_owned()));
        }
        if let Some(task) = &filter.task {
            bind(&mut sql, " AND task = ?", Box::new(task.clone()));
        }
        match &filter.lineage {
            Lineage::Any => {}
            Lineage::TopLevel => sql.push_str(" AND parent IS NULL"),
            Lineage::ChildrenOf(parent) => bind(&mut sql, " AND parent = ?", Box::new(parent.clone())),
        }
        if let Some(before) = &filter.before {
            bind(&mut sql, " AND id < ?", Box::new(before.clone()));
        }
        sql.push_str(" ORDER BY id DESC");
        if let Some(limit) = filter.limit {
            bind(&mut sql, " LIMIT ?", Box::new(limit.min(i64::MAX as usize) as i64));
        }
        let (sql, params) = (Arc::new(sql), Arc::new(params));
        self.read("list runs", move |client| {
            let (sql, params) = (sql.clone(), params.clone());
            async move {
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| &**p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                let statement = client.prepare_cached(&sql).await?;
                let rows = client.query(&statement, &refs).await?;
                Ok(rows.iter().map(run_from_row).collect::<Result<Vec<_>, _>>()?)
            }
        })
    }

    fn task_stats(&self, tenant: &Tenant) -> Result<Vec<(String, TaskStats)>, StoreError> {
        let tenant = tenant_key(tenant);
        self.read("read task stats", move |client| {
            let tenant = tenant.clone();
            async move {
                let rows = client
                    .query(
                        "SELECT task, runs, succeeded, failed, cancelled, retries, degraded, cached
                         FROM task_stats WHERE tenant = $1 ORDER BY task",
                        &[&tenant],
                    )
                    .await?;
                let n = |row: &tokio_postgres::Row, i: usize| row.get::<_, i64>(i).max(0) as u64;
                Ok(rows
                    .iter()
                    .map(|row| {
                        let stats = TaskStats {
                            runs: n(row, 1),
                            succeeded: n(row, 2),
                            failed: n(row, 3),
                            cancelled: n(row, 4),
                            retries: n(row, 5),
                            degraded: n(row, 6),
                            cached: n(row, 7),
                        };
                        (row.get::<_, String>(0), stats)
                    })
                    .filter(|(_, stats)| !stats.is_empty())
                    .collect())
            }
        })
    }
}

#[async_trait::async_trait]
impl JournalStore for PgStore {
    async fn journal_put(&self, entry: &JournalEntry, fence: Option<&Fence>) -> Result<(), StoreError> {
        self.journal.put(vec![entry.clone()], fence.cloned()).await
    }

    async fn journal_put_all(&self, entries: &[JournalEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.journal.put(entries.to_vec(), None).await
    }

    fn journal_get(&self, key: &ReplayKey) -> Result<Option<JournalEntry>, StoreError> {
        let (run_id, key) = (key.run_id.clone(), key.encode());
        self.read("journal lookup", move |client| {
            let (run_id, key) = (run_id.clone(), key.clone());
            async move {
                let statement =
                    client.prepare_cached("SELECT entry FROM journal WHERE run_id = $1 AND key = $2").await?;
                match client.query_opt(&statement, &[&run_id, &key]).await? {
                    Some(row) => Ok(Some(decode("journal", row.get::<_, &str>(0))?)),
                    None => Ok(None),
                }
            }
        })
    }

    fn journal_of(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let run_id = run_id.to_owned();
        self.read("journal read", move |client| {
            let run_id = run_id.clone();
            async move {
                let statement =
                    client.prepare_cached("SELECT entry FROM journal WHERE run_id = $1 ORDER BY seq, key").await?;
                let rows = client.query(&statement, &[&run_id]).await?;
                Ok(rows.iter().map(|row| decode("journal", row.get::<_, &str>(0))).collect::<Result<Vec<_>, _>>()?)
            }
        })
    }
}

/// A write of one row by an upsert `sql` with text parameters.
macro_rules! upsert {
    ($store:expr, $what:expr, $sql:expr, $($param:expr),+ $(,)?) => {{
        let params: Arc<Vec<String>> = Arc::new(vec![$($param),+]);
        $store
            .write($what, move |client| {
                let params = params.clone();
                async move {
                    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                    let statement = client.prepare_cached($sql).await?;
                    Ok(client.execute(&statement, &refs).await?)
                }
            })
            .await
    }};
}

/// Rows of text columns read by `sql` with text parameters.
fn read_texts(
    store: &PgStore,
    what: &'static str,
    sql: &'static str,
    params: Vec<String>,
) -> Result<Vec<Vec<String>>, StoreError> {
    let params = Arc::new(params);
    store.read(what, move |client| {
        let params = params.clone();
        async move {
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            let statement = client.prepare_cached(sql).await?;
            let rows = client.query(&statement, &refs).await?;
            Ok(rows.iter().map(|row| (0..row.len()).map(|i| row.get::<_, String>(i)).collect()).collect())
        }
    })
}

/// The first column of the first row, if any.
fn first(rows: Vec<Vec<String>>) -> Option<String> {
    rows.into_iter().next().and_then(|row| row.into_iter().next())
}

#[async_trait::async_trait]
impl OutputStore for PgStore {
    async fn put_log(&self, run_id: &str, attempt: u32, log: &AttemptLog) -> Result<(), StoreError> {
        let (run_id, log) = (run_id.to_owned(), Arc::new(encode("log", log)?));
        self.write("write log", move |client| {
            let (run_id, log) = (run_id.clone(), log.clone());
            async move {
                client
                    .execute(
                        "INSERT INTO logs (run_id, attempt, log) VALUES ($1, $2, $3)
                         ON CONFLICT (run_id, attempt) DO UPDATE SET log = EXCLUDED.log",
                        &[&run_id, &(attempt as i32), &*log],
                    )
                    .await?;
                Ok(())
            }
        })
        .await
    }

    fn logs_of(&self, run_id: &str) -> Result<Vec<(u32, AttemptLog)>, StoreError> {
        let run_id = run_id.to_owned();
        self.read("read logs", move |client| {
            let run_id = run_id.clone();
            async move {
                let rows = client
                    .query("SELECT attempt, log FROM logs WHERE run_id = $1 ORDER BY attempt", &[&run_id])
                    .await?;
                Ok(rows
                    .iter()
                    .map(|row| Ok((row.get::<_, i32>(0) as u32, decode("log", row.get::<_, &str>(1))?)))
                    .collect::<Result<Vec<_>, StoreError>>()?)
            }
        })
    }

    async fn put_report(&self, run_id: &str, report: &Report) -> Result<(), StoreError> {
        upsert!(
            self,
            "write report",
            "INSERT INTO reports (run_id, report) VALUES ($1, $2)
             ON CONFLICT (run_id) DO UPDATE SET report = EXCLUDED.report",
            run_id.to_owned(),
            encode("report", report)?,
        )?;
        Ok(())
    }

    fn get_report(&self, run_id: &str) -> Result<Option<Report>, StoreError> {
        let rows =
            read_texts(self, "read report", "SELECT report FROM reports WHERE run_id = $1", vec![run_id.to_owned()])?;
        first(rows).map(|text| decode("report", &text)).transpose()
    }
}

#[async_trait::async_trait]
impl CacheStore for PgStore {
    fn cache_get(&self, tenant: &Tenant, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        let rows = read_texts(
            self,
            "cache lookup",
            "SELECT entry FROM cache WHERE tenant = $1 AND key = $2",
            vec![tenant_key(tenant), key.to_owned()],
        )?;
        first(rows).map(|text| decode("cache", &text)).transpose()
    }

    async fn cache_put(&self, tenant: &Tenant, key: &str, entry: &CacheEntry) -> Result<(), StoreError> {
        upsert!(
            self,
            "cache write",
            "INSERT INTO cache (tenant, key, task, entry) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, key) DO UPDATE SET task = EXCLUDED.task, entry = EXCLUDED.entry",
            tenant_key(tenant),
            key.to_owned(),
            entry.task.clone(),
            encode("cache", entry)?,
        )?;
        Ok(())
    }

    async fn cache_clear(&self, tenant: &Tenant, task: Option<&str>) -> Result<usize, StoreError> {
        let removed = match task {
            Some(task) => upsert!(
                self,
                "cache clear",
                "DELETE FROM cache WHERE tenant = $1 AND task = $2",
                tenant_key(tenant),
                task.to_owned()
            )?,
            None => upsert!(self, "cache clear", "DELETE FROM cache WHERE tenant = $1", tenant_key(tenant))?,
        };
        Ok(removed as usize)
    }
}

#[async_trait::async_trait]
impl DlqStore for PgStore {
    async fn dlq_put(&self, tenant: &Tenant, letter: &DeadLetter) -> Result<(), StoreError> {
        upsert!(
            self,
            "dead letter",
            "INSERT INTO dlq (tenant, run_id, letter) VALUES ($1, $2, $3)
             ON CONFLICT (tenant, run_id) DO UPDATE SET letter = EXCLUDED.letter",
            tenant_key(tenant),
            letter.run_id.clone(),
            encode("dead letter", letter)?,
        )?;
        Ok(())
    }

    fn dlq_list(&self, tenant: &Tenant) -> Result<Vec<DeadLetter>, StoreError> {
        read_texts(
            self,
            "list dead letters",
            "SELECT letter FROM dlq WHERE tenant = $1 ORDER BY run_id DESC",
            vec![tenant_key(tenant)],
        )?
        .into_iter()
        .filter_map(|row| row.into_iter().next())
        .map(|text| decode("dead letter", &text))
        .collect()
    }

    fn dlq_get(&self, tenant: &Tenant, run_id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let rows = read_texts(
            self,
            "read dead letter",
            "SELECT letter FROM dlq WHERE tenant = $1 AND run_id = $2",
            vec![tenant_key(tenant), run_id.to_owned()],
        )?;
        first(rows).map(|text| decode("dead letter", &text)).transpose()
    }

    fn dlq_count(&self, tenant: &Tenant) -> Result<usize, StoreError> {
        let rows = read_texts(
            self,
            "count dead letters",
            "SELECT count(*)::text FROM dlq WHERE tenant = $1",
            vec![tenant_key(tenant)],
        )?;
        Ok(first(rows).and_then(|n| n.parse().ok()).unwrap_or(0))
    }

    async fn dlq_remove(&self, tenant: &Tenant, run_id: &str) -> Result<bool, StoreError> {
        let removed = upsert!(
            self,
            "dead letter",
            "DELETE FROM dlq WHERE tenant = $1 AND run_id = $2",
            tenant_key(tenant),
            run_id.to_owned()
        )?;
        Ok(removed > 0)
    }
}

#[async_trait::async_trait]
impl StateStore for PgStore {
    async fn put_breaker(&self, tenant: &Tenant, name: &str, state: &[u8]) -> Result<(), StoreError> {
        let (tenant, name, state) = (tenant_key(tenant), name.to_owned(), Arc::new(state.to_vec()));
        self.write("breaker", move |client| {
            let (tenant, name, state) = (tenant.clone(), name.clone(), state.clone());
            async move {
                client
                    .execute(
                        "INSERT INTO breakers (tenant, name, state) VALUES ($1, $2, $3)
                         ON CONFLICT (tenant, name) DO UPDATE SET state = EXCLUDED.state",
                        &[&tenant, &name, &*state],
                    )
                    .await?;
                Ok(())
            }
        })
        .await
    }

    fn breakers(&self, tenant: &Tenant) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tenant = tenant_key(tenant);
        self.read("list breakers", move |client| {
            let tenant = tenant.clone();
            async move {
                let rows = client
                    .query("SELECT name, state FROM breakers WHERE tenant = $1 ORDER BY name", &[&tenant])
                    .await?;
                Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
            }
        })
    }

    async fn add_counters(&self, tenant: &Tenant, deltas: &[(String, u64)]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let tenant = tenant_key(tenant);
        let names: Arc<Vec<String>> = Arc::new(deltas.iter().map(|(name, _)| name.clone()).collect());
        let values: Arc<Vec<i64>> = Arc::new(deltas.iter().map(|(_, n)| ms(*n)).collect());
        self.write("counter", move |client| {
            let (tenant, names, values) = (tenant.clone(), names.clone(), values.clone());
            async move {
                client
                    .execute(
                        "INSERT INTO counters AS c (tenant, name, value)
                         SELECT $1, name, sum(value)::bigint FROM unnest($2::text[], $3::int8[]) AS d(name, value) GROUP BY name
                         ON CONFLICT (tenant, name) DO UPDATE SET value = c.value + EXCLUDED.value",
                        &[&tenant, &*names, &*values],
                    )
                    .await?;
                Ok(())
            }
        })
        .await
    }

    fn counters(&self, tenant: &Tenant) -> Result<Vec<(String, u64)>, StoreError> {
        let tenant = tenant_key(tenant);
        self.read("list counters", move |client| {
            let tenant = tenant.clone();
            async move {
                let rows = client
                    .query("SELECT name, value FROM counters WHERE tenant = $1 ORDER BY name", &[&tenant])
                    .await?;
                Ok(rows.iter().map(|row| (row.get(0), row.get::<_, i64>(1).max(0) as u64)).collect())
            }
        })
    }
}

#[async_trait::async_trait]
impl SecretStore for PgStore {
    async fn put_secret(&self, tenant: &Tenant, key: &str, value: &str) -> Result<(), StoreError> {
        upsert!(
            self,
            "write secret",
            "INSERT INTO secrets (tenant, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (tenant, key) DO UPDATE SET value = EXCLUDED.value",
            tenant_key(tenant),
            key.to_owned(),
            value.to_owned(),
        )?;
        Ok(())
    }

    fn list_secrets(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError> {
        Ok(read_texts(
            self,
            "list secrets",
            "SELECT key FROM secrets WHERE tenant = $1 ORDER BY key",
            vec![tenant_key(tenant)],
        )?
        .into_iter()
        .filter_map(|row| row.into_iter().next())
        .collect())
    }

    async fn delete_secret(&self, tenant: &Tenant, key: &str) -> Result<bool, StoreError> {
        let removed = upsert!(
            self,
            "delete secret",
            "DELETE FROM secrets WHERE tenant = $1 AND key = $2",
            tenant_key(tenant),
            key.to_owned()
        )?;
        Ok(removed > 0)
    }
}

impl SecretReader for PgStore {
    fn get_secret(&self, tenant: &Tenant, key: &str) -> Result<Option<String>, StoreError> {
        Ok(first(read_texts(
            self,
            "read secret",
            "SELECT value FROM secrets WHERE tenant = $1 AND key = $2",
            vec![tenant_key(tenant), key.to_owned()],
        )?))
    }
}

#[async_trait::async_trait]
impl ExecutorStore for PgStore {
    async fn put_executor(&self, executor: &Executor) -> Result<(), StoreError> {
        let stopping = executor.stopped_at_ms.is_some();
        let (id, seen, record) =
            (executor.id.clone(), ms(executor.seen_at_ms), Arc::new(encode("executor", executor)?));
        self.write("record executor", move |client| {
            let (id, record) = (id.clone(), record.clone());
            async move {
                client
                    .execute(
                        "INSERT INTO executors (id, seen_at, stopped, record) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (id) DO UPDATE SET seen_at = EXCLUDED.seen_at, stopped = EXCLUDED.stopped,
                            record = EXCLUDED.record",
                        &[&id, &seen, &stopping, &*record],
                    )
                    .await?;
                Ok(())
            }
        })
        .await?;
        if stopping {
            // Its runs are free for the others at once.
            self.announce_work();
        }
        Ok(())
    }

    fn executors(&self) -> Result<Vec<Executor>, StoreError> {
        read_texts(self, "list executors", "SELECT record FROM executors ORDER BY id", Vec::new())?
            .into_iter()
            .filter_map(|row| row.into_iter().next())
            .map(|text| decode("executor", &text))
            .collect()
    }

    async fn forget_executors(&self, before_ms: u64) -> Result<usize, StoreError> {
        let before = ms(before_ms);
        let removed = self
            .write("forget executors", move |client| async move {
                Ok(client.execute("DELETE FROM executors WHERE seen_at < $1", &[&before]).await?)
            })
            .await?;
        Ok(removed as usize)
    }

    fn work_signal(&self) -> Arc<Notify> {
        self.work.clone()
    }
}
