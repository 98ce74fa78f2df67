//! How records map to rows: a run is a JSON document plus the columns that
//! claims, fences and listings select on (status, lease, epoch, not-before),
//! which are authoritative and merged into the document on reading.

use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::Row;

use super::PgStore;
use std::sync::Arc;

use crate::model::{Lease, RunRecord, RunStatus, TaskStats, Tenant};
use crate::store::StoreError;

/// The project/domain key of a tenant.
pub fn tenant_key(tenant: &Tenant) -> String {
    tenant.to_string()
}

/// The tenant a `tenant` column names.
pub fn tenant_from_key(key: &str) -> Result<Tenant, StoreError> {
    key.parse().map_err(|e: crate::model::TenantError| StoreError::Corrupt { what: "tenant", message: e.to_string() })
}

pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt { what, message: e.to_string() })
}

pub fn decode<T: DeserializeOwned>(what: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt { what, message: e.to_string() })
}

/// A run from a row of `record, status, lease_owner, lease_until, epoch,
/// not_before, cancel_requested`.
pub fn run_from_row(row: &Row) -> Result<RunRecord, StoreError> {
    run_from_row_at(row, 0)
}

/// [`run_from_row`] for those columns starting at column `at`.
pub fn run_from_row_at(row: &Row, at: usize) -> Result<RunRecord, StoreError> {
    let mut run: RunRecord = decode("run", row.get::<_, &str>(at))?;
    let status: &str = row.get(at + 1);
    run.status = RunStatus::parse(status)
        .ok_or_else(|| StoreError::Corrupt { what: "run", message: format!("unknown status {status:?}") })?;
    let owner: Option<String> = row.get(at + 2);
    let until: Option<i64> = row.get(at + 3);
    run.lease = owner.map(|owner| Lease { owner, expires_at_ms: until.unwrap_or(0).max(0) as u64 });
    run.epoch = row.get::<_, i64>(at + 4) as u64;
    run.not_before_ms = row.get::<_, i64>(at + 5) as u64;
    run.cancel_requested = row.get::<_, bool>(at + 6);
    Ok(run)
}

/// A time or count in ms as PostgreSQL's `bigint` (saturating).
pub fn ms(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

/// The column values of a run, ready to bind.
pub struct RunRow {
    pub tenant: String,
    pub id: String,
    pub task: String,
    pub parent: Option<String>,
    pub status: &'static str,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub epoch: i64,
    pub not_before: i64,
    pub record: String,
    pub cancel_requested: bool,
}

impl RunRow {
    pub fn of(run: &RunRecord) -> Result<Self, StoreError> {
        Ok(RunRow {
            tenant: tenant_key(&run.tenant),
            id: run.id.clone(),
            task: run.task.clone(),
            parent: run.parent.clone(),
            status: run.status.as_str(),
            lease_owner: run.lease.as_ref().map(|l| l.owner.clone()),
            lease_until: run.lease.as_ref().map(|l| ms(l.expires_at_ms)),
            epoch: run.epoch as i64,
            not_before: ms(run.not_before_ms),
            record: encode("run", run)?,
            cancel_requested: run.cancel_requested,
        })
    }
}

impl RunRow {
    /// The values in column order: tenant, id, task, parent, status,
    /// lease_owner, lease_until, epoch, not_before, record, cancel_requested
    /// (`$1`…`$11`).
    pub fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 11] {
        [
            &self.tenant,
            &self.id,
            &self.task,
            &self.parent,
            &self.status,
            &self.lease_owner,
            &self.lease_until,
            &self.epoch,
            &self.not_before,
            &self.record,
            &self.cancel_requested,
        ]
    }
}

/// The counts of a task as signed deltas, in [`adjust_stats`]'s order.
type Deltas = [i64; 7];

fn deltas(stats: TaskStats, sign: i64) -> Deltas {
    let n = |v: u64| sign * v as i64;
    [
        n(stats.runs),
        n(stats.succeeded),
        n(stats.failed),
        n(stats.cancelled),
        n(stats.retries),
        n(stats.degraded),
        n(stats.cached),
    ]
}

/// Adds `deltas` to a task's counts (in the caller's transaction).
pub async fn adjust_stats(
    client: &impl GenericClient,
    tenant: &str,
    task: &str,
    deltas: Deltas,
) -> Result<(), tokio_postgres::Error> {
    if deltas.iter().all(|d| *d == 0) {
        return Ok(());
    }
    let statement = client
        .prepare_cached(
            "INSERT INTO task_stats AS s (tenant, task, runs, succeeded, failed, cancelled, retries, degraded, cached)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant, task) DO UPDATE SET
                runs = s.runs + EXCLUDED.runs, succeeded = s.succeeded + EXCLUDED.succeeded,
                failed = s.failed + EXCLUDED.failed, cancelled = s.cancelled + EXCLUDED.cancelled,
                retries = s.retries + EXCLUDED.retries, degraded = s.degraded + EXCLUDED.degraded,
                cached = s.cached + EXCLUDED.cached",
        )
        .await?;
    let [a, b, c, d, e, f, g] = deltas;
    client.execute(&statement, &[&tenant, &task, &a, &b, &c, &d, &e, &f, &g]).await?;
    Ok(())
}

/// Adjusts the counts for replacing `old` with `new` (either may be absent):
/// one statement when both are of the same task.
pub async fn restat(
    client: &impl GenericClient,
    old: Option<&RunRecord>,
    new: Option<&RunRecord>,
) -> Result<(), tokio_postgres::Error> {
    let before = old.map(|r| (tenant_key(&r.tenant), r.task.clone(), TaskStats::of(r)));
    let after = new.map(|r| (tenant_key(&r.tenant), r.task.clone(), TaskStats::of(r)));
    match (&before, &after) {
        _ if before == after => {}
        (Some((t0, k0, s0)), Some((t1, k1, s1))) if t0 == t1 && k0 == k1 => {
            let (old, new) = (deltas(*s0, -1), deltas(*s1, 1));
            adjust_stats(client, t1, k1, std::array::from_fn(|i| old[i] + new[i])).await?;
        }
        _ => {
            if let Some((tenant, task, stats)) = &before {
                adjust_stats(client, tenant, task, deltas(*stats, -1)).await?;
            }
            if let Some((tenant, task, stats)) = &after {
                adjust_stats(client, tenant, task, deltas(*stats, 1)).await?;
            }
        }
    }
    Ok(())
}

/// A write of one row by `sql` (an upsert or a delete) with text
/// parameters; returns the rows it touched.
pub async fn write_texts(
    store: &PgStore,
    what: &'static str,
    sql: &'static str,
    params: Vec<String>,
) -> Result<u64, StoreError> {
    let params = Arc::new(params);
    store
        .write(what, move |client| {
            let params = params.clone();
            async move {
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                let statement = client.prepare_cached(sql).await?;
                Ok(client.execute(&statement, &refs).await?)
            }
        })
        .await
}

/// Rows of text columns read by `sql` with text parameters.
pub fn read_texts(
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
pub fn first(rows: Vec<Vec<String>>) -> Option<String> {
    rows.into_iter().next().and_then(|row| row.into_iter().next())
}
