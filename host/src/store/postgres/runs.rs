//! Runs on PostgreSQL: the [`RunStore`] role. Each write is one
//! transaction; claims lock rows with `FOR UPDATE SKIP LOCKED`, so hosts
//! claiming at once each get different runs and never wait on each other.
//! The lease rules are the ones every store applies ([`crate::store::fencing`]).

use std::sync::Arc;

use super::rows::{RunRow, ms, restat, run_from_row, run_from_row_at, tenant_from_key, tenant_key};
use super::{Failed, PgStore};
use crate::model::{Fence, RunRecord, TaskStats, Tenant};
use crate::store::fencing::{claim, fenced_update, offers_work, take_lease};
use crate::store::{Beat, Lineage, RunFilter, RunStore, StoreError};

/// The columns of [`run_from_row`], for `concat!`.
macro_rules! run_columns {
    () => {
        "record, status, lease_owner, lease_until, epoch, not_before, cancel_requested"
    };
}

const SELECT_RUN_FOR_UPDATE: &str =
    concat!("SELECT ", run_columns!(), " FROM runs WHERE tenant = $1 AND id = $2 FOR UPDATE");
const UPDATE_RUN: &str = "UPDATE runs SET task = $3, parent = $4, status = $5, lease_owner = $6, lease_until = $7,
        epoch = $8, not_before = $9, record = $10, cancel_requested = $11 WHERE tenant = $1 AND id = $2";

/// A run read with its row locked until the transaction ends.
pub(super) async fn locked_run(
    client: &impl deadpool_postgres::GenericClient,
    tenant: &str,
    id: &str,
) -> Result<RunRecord, Failed> {
    let statement = client.prepare_cached(SELECT_RUN_FOR_UPDATE).await?;
    match client.query_opt(&statement, &[&tenant, &id]).await? {
        Some(row) => Ok(run_from_row(&row)?),
        None => Err(StoreError::NoSuchRun(id.to_owned()).into()),
    }
}

/// Writes a run's row in full (it exists).
pub(super) async fn write_run(client: &impl deadpool_postgres::GenericClient, run: &RunRecord) -> Result<(), Failed> {
    let statement = client.prepare_cached(UPDATE_RUN).await?;
    client.execute(&statement, &RunRow::of(run)?.params()).await?;
    Ok(())
}

#[async_trait::async_trait]
impl RunStore for PgStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let announce = offers_work(run);
        let run = Arc::new(run.clone());
        self.write("create run", move |mut client| {
            let run = run.clone();
            async move {
                let row = RunRow::of(&run)?;
                let txn = client.transaction().await?;
                let insert = txn
                    .prepare_cached(
                        "INSERT INTO runs (tenant, id, task, parent, status, lease_owner, lease_until, epoch, not_before, record,
                                           cancel_requested)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (tenant, id) DO NOTHING",
                    )
                    .await?;
                let inserted = txn.execute(&insert, &row.params()).await?;
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
        let announce = offers_work(run);
        let (run, fence) = (Arc::new(run.clone()), Arc::new(fence.clone()));
        self.write("update run", move |mut client| {
            let (run, fence) = (run.clone(), fence.clone());
            async move {
                let txn = client.transaction().await?;
                let current = locked_run(&txn, &tenant_key(&run.tenant), &run.id).await?;
                let run = fenced_update(&current, &run, &fence)?;
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
                let current = locked_run(&txn, &tenant, &id).await?;
                let Some(run) = claim(&current, &owner, lease_until_ms, now_ms, force) else {
                    return Ok(None);
                };
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
                let runnable = txn
                    .prepare_cached(concat!(
                        "SELECT ",
                        run_columns!(),
                        " FROM runs
                         WHERE tenant = $1 AND status IN ('pending', 'running') AND not_before <= $2
                           AND (lease_owner IS NULL OR lease_until <= $2
                                OR lease_owner IN (SELECT id FROM executors WHERE stopped))
                         ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED"
                    ))
                    .await?;
                let rows = txn.query(&runnable, &[&tenant, &ms(now_ms), &(limit as i64)]).await?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut run = run_from_row(row)?;
                    take_lease(&mut run, &owner, lease_until_ms);
                    claimed.push(run);
                }
                if !claimed.is_empty() {
                    let ids: Vec<&str> = claimed.iter().map(|r| r.id.as_str()).collect();
                    let take = txn
                        .prepare_cached(
                            "UPDATE runs SET lease_owner = $3, lease_until = $4, epoch = epoch + 1
                             WHERE tenant = $1 AND id = ANY($2)",
                        )
                        .await?;
                    txn.execute(&take, &[&tenant, &ids, &owner, &ms(lease_until_ms)]).await?;
                }
                txn.commit().await?;
                Ok(claimed)
            }
        })
        .await
    }

    async fn heartbeat(&self, id: &str, fence: &Fence, lease_until_ms: u64) -> Result<Beat, StoreError> {
        let (id, fence) = (id.to_owned(), Arc::new(fence.clone()));
        self.write("renew lease", move |client| {
            let (id, fence) = (id.clone(), fence.clone());
            async move {
                let tenant = tenant_key(&fence.tenant);
                let statement = client
                    .prepare_cached(
                        "UPDATE runs SET lease_until = $5
                         WHERE tenant = $1 AND id = $2 AND epoch = $3 AND lease_owner = $4
                         RETURNING cancel_requested",
                    )
                    .await?;
                let renewed = client
                    .query_opt(&statement, &[&tenant, &id, &(fence.epoch as i64), &fence.owner, &ms(lease_until_ms)])
                    .await?;
                Ok(match renewed {
                    None => Beat::Lost,
                    Some(row) if row.get::<_, bool>(0) => Beat::CancelRequested,
                    Some(_) => Beat::Held,
                })
            }
        })
        .await
    }

    async fn request_cancel(&self, tenant: &Tenant, id: &str) -> Result<RunRecord, StoreError> {
        let (tenant, id) = (tenant_key(tenant), id.to_owned());
        let run = self
            .write("request a cancel", move |client| {
                let (tenant, id) = (tenant.clone(), id.clone());
                async move {
                    // The flag only: the holder's fenced writes keep it (see `fenced_update`).
                    let statement = client
                        .prepare_cached(concat!(
                            "UPDATE runs SET cancel_requested = true
                             WHERE tenant = $1 AND id = $2 AND status IN ('pending', 'running') RETURNING ",
                            run_columns!()
                        ))
                        .await?;
                    if let Some(row) = client.query_opt(&statement, &[&tenant, &id]).await? {
                        return Ok(run_from_row(&row)?);
                    }
                    let read = client
                        .prepare_cached(concat!("SELECT ", run_columns!(), " FROM runs WHERE tenant = $1 AND id = $2"))
                        .await?;
                    match client.query_opt(&read, &[&tenant, &id]).await? {
                        Some(row) => Ok(run_from_row(&row)?),
                        None => Err(StoreError::NoSuchRun(id).into()),
                    }
                }
            })
            .await?;
        if !run.status.is_finished() {
            self.announce_cancel(&run.id);
        }
        Ok(run)
    }

    async fn delete_run(&self, tenant: &Tenant, id: &str) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant_key(tenant), id.to_owned());
        self.write("delete run", move |mut client| {
            let (tenant, id) = (tenant.clone(), id.clone());
            async move {
                let txn = client.transaction().await?;
                let old =
                    match txn.query_opt(&txn.prepare_cached(SELECT_RUN_FOR_UPDATE).await?, &[&tenant, &id]).await? {
                        Some(row) => Some(run_from_row(&row)?),
                        None => None,
                    };
                if old.is_none() {
                    // Not this tenant's run (or none): another tenant's records stay.
                    return Ok(false);
                }
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

    fn tenants(&self, with_work: bool) -> Result<Vec<Tenant>, StoreError> {
        let names = self.read("list tenants", move |client| async move {
            // A loose index scan: one seek per tenant, not a read per run.
            let statement = client
                .prepare_cached(
                    "WITH RECURSIVE t(tenant) AS (
                         (SELECT tenant FROM runs ORDER BY tenant LIMIT 1)
                         UNION ALL
                         SELECT (SELECT r.tenant FROM runs r WHERE r.tenant > t.tenant ORDER BY r.tenant LIMIT 1)
                         FROM t WHERE t.tenant IS NOT NULL)
                     SELECT tenant FROM t
                     WHERE tenant IS NOT NULL
                       AND (NOT $1 OR EXISTS (SELECT 1 FROM runs w
                                              WHERE w.tenant = t.tenant AND w.status IN ('pending', 'running')))",
                )
                .await?;
            let rows = client.query(&statement, &[&with_work]).await?;
            Ok(rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>())
        })?;
        names.iter().map(|name| tenant_from_key(name)).collect()
    }

    fn finished_among(&self, tenant: &Tenant, ids: &[String]) -> Result<Vec<(String, Option<RunRecord>)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (tenant, ids) = (tenant_key(tenant), Arc::new(ids.to_vec()));
        self.read("read runs", move |client| {
            let (tenant, ids) = (tenant.clone(), ids.clone());
            async move {
                let statement = client
                    .prepare_cached(
                        "SELECT asked.id, r.record, r.status, r.lease_owner, r.lease_until, r.epoch, r.not_before,
                                r.cancel_requested
                         FROM unnest($2::text[]) AS asked(id)
                         LEFT JOIN runs r ON r.tenant = $1 AND r.id = asked.id
                         WHERE r.id IS NULL OR r.status IN ('succeeded', 'failed', 'cancelled')",
                    )
                    .await?;
                let rows = client.query(&statement, &[&tenant, &*ids]).await?;
                let mut found = Vec::with_capacity(rows.len());
                for row in &rows {
                    let id: String = row.get(0);
                    let record: Option<&str> = row.get(1);
                    found.push((id, record.map(|_| run_from_row_at(row, 1)).transpose()?));
                }
                Ok(found)
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
