//! Journal records from many concurrent attempts, written together: a
//! record waits in a queue, a writer takes everything waiting (up to
//! [`MAX_BATCH`]), checks the fences and inserts the lot in one statement
//! (one round trip, one commit), then answers each caller. A lone record
//! still costs one commit, and when nothing else is being written its caller
//! writes it itself, with no hop to a writer; a thousand concurrent records
//! share a few commits. A caller hears back only after the commit, so a
//! guest never sees a result that a crash could lose.
//!
//! The fence check locks the runs' rows (`FOR SHARE`) until the commit: a
//! claim by another host, which updates the row, waits for this transaction,
//! so a record is never stored under a lease that was taken before it
//! committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::rows::{encode, tenant_key};
use super::{Failed, retrying};
use crate::model::{Fence, JournalEntry};
use crate::store::StoreError;

/// Most records in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Transactions in flight at once.
const WRITERS: usize = 4;

struct Job {
    entries: Vec<JournalEntry>,
    fence: Option<Fence>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue of records waiting to be written.
pub struct Batcher {
    queue: mpsc::UnboundedSender<Job>,
    /// Writes in progress, queued or not.
    busy: AtomicUsize,
    pool: Pool,
    server: Arc<str>,
    patience: Duration,
}

/// Counts a write in progress while it lives.
struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Batcher {
    /// Starts the writers on `handle`.
    pub fn start(handle: &tokio::runtime::Handle, pool: Pool, server: Arc<str>, patience: Duration) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..WRITERS {
            handle.spawn(writer(jobs.clone(), pool.clone(), server.clone(), patience));
        }
        Batcher { queue, busy: AtomicUsize::new(0), pool, server, patience }
    }

    /// Writes `entries` (under `fence`, if given) and waits for the commit.
    pub async fn put(&self, entries: Vec<JournalEntry>, fence: Option<Fence>) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Io { operation: "journal write", message: "the store is closing".into() };
        // Directly only over an idle connection: a new one would be made (and
        // driven) on the caller's runtime instead of the store's.
        let alone = self.busy.fetch_add(1, Ordering::SeqCst) == 0 && self.pool.status().available > 0;
        let _busy = Busy(&self.busy);
        let job = Job { entries, fence, reply };
        if alone {
            // Nothing else is being written: no batch to join, so no hop to a writer.
            write_batch(vec![job], &self.pool, &self.server, self.patience).await;
        } else {
            self.queue.send(job).map_err(|_| stopped())?;
        }
        answer.await.map_err(|_| stopped())?
    }
}

async fn writer(jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>, pool: Pool, server: Arc<str>, patience: Duration) {
    loop {
        let batch = {
            let mut jobs = jobs.lock().await;
            let Some(first) = jobs.recv().await else { return };
            let mut batch = vec![first];
            let mut records = batch[0].entries.len();
            while records < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => {
                        records += job.entries.len();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        write_batch(batch, &pool, &server, patience).await;
    }
}

/// Checks the fences and inserts the records of a batch in one statement,
/// so one round trip and one commit: the fenced runs' rows are locked
/// `FOR SHARE` (in one order, so batches never deadlock) until the commit,
/// and the records of a job whose fence moved on are left out. Returns the
/// refused jobs: index, whether the run is missing, the lease's holder.
const WRITE_BATCH: &str = "
WITH want AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::int4[])
        AS w(tenant, id, epoch, owner, job)
), locked AS (
    SELECT r.tenant, r.id, r.epoch, r.lease_owner FROM runs r
    WHERE (r.tenant, r.id) IN (SELECT tenant, id FROM want)
    ORDER BY r.tenant, r.id FOR SHARE
), refused AS (
    SELECT w.job, l.id IS NULL AS missing, l.lease_owner FROM want w
    LEFT JOIN locked l ON l.tenant = w.tenant AND l.id = w.id
    WHERE l.id IS NULL OR l.epoch <> w.epoch OR (l.lease_owner IS NOT NULL AND l.lease_owner <> w.owner)
), written AS (
    INSERT INTO journal (run_id, key, seq, entry)
    SELECT e.run_id, e.key, e.seq, e.entry
    FROM unnest($6::int4[], $7::text[], $8::text[], $9::int8[], $10::text[]) AS e(job, run_id, key, seq, entry)
    WHERE e.job NOT IN (SELECT job FROM refused)
    ON CONFLICT (run_id, key) DO NOTHING
)
SELECT job, missing, lease_owner FROM refused";

/// [`WRITE_BATCH`] for the commonest batch, one fenced record (a guest
/// awaiting its answer while nothing else is written): scalar parameters
/// plan and run faster than arrays. Returns the run's epoch and holder, no
/// row when the run is missing; the record is written only if they match.
const WRITE_ONE: &str = "
WITH locked AS (
    SELECT epoch, lease_owner FROM runs WHERE tenant = $1 AND id = $2 FOR SHARE
), written AS (
    INSERT INTO journal (run_id, key, seq, entry)
    SELECT $2, $5, $6, $7 FROM locked
    WHERE locked.epoch = $3 AND (locked.lease_owner IS NULL OR locked.lease_owner = $4)
    ON CONFLICT (run_id, key) DO NOTHING
)
SELECT epoch, lease_owner FROM locked";

/// A batch as [`WRITE_BATCH`] takes it: the fences, then the records, each
/// tagged with its job's index.
#[derive(Default)]
struct Columns {
    tenants: Vec<String>,
    ids: Vec<String>,
    epochs: Vec<i64>,
    owners: Vec<String>,
    fenced_jobs: Vec<i32>,
    jobs: Vec<i32>,
    runs: Vec<String>,
    keys: Vec<String>,
    seqs: Vec<i64>,
    entries: Vec<String>,
}

/// Writes one batch and answers its callers.
async fn write_batch(batch: Vec<Job>, pool: &Pool, server: &Arc<str>, patience: Duration) {
    let mut columns = Columns::default();
    let mut verdicts: Vec<Result<(), StoreError>> = Vec::with_capacity(batch.len());
    let mut run_of_job: Vec<String> = Vec::with_capacity(batch.len());
    for (index, job) in batch.iter().enumerate() {
        let index = index as i32;
        let encoded: Result<Vec<String>, StoreError> = job.entries.iter().map(|e| encode("journal", e)).collect();
        run_of_job.push(job.entries.first().map(|e| e.key.run_id.clone()).unwrap_or_default());
        let texts = match encoded {
            Ok(texts) => texts,
            Err(e) => {
                verdicts.push(Err(e));
                continue;
            }
        };
        if let (Some(fence), Some(first)) = (&job.fence, job.entries.first()) {
            columns.tenants.push(tenant_key(&fence.tenant));
            columns.ids.push(first.key.run_id.clone());
            columns.epochs.push(fence.epoch as i64);
            columns.owners.push(fence.owner.clone());
            columns.fenced_jobs.push(index);
        }
        for (entry, text) in job.entries.iter().zip(texts) {
            columns.jobs.push(index);
            columns.runs.push(entry.key.run_id.clone());
            columns.keys.push(entry.key.encode());
            columns.seqs.push(entry.seq as i64);
            columns.entries.push(text);
        }
        verdicts.push(Ok(()));
    }
    let columns = Arc::new(columns);
    let one_fenced = columns.jobs.len() == 1 && columns.fenced_jobs.len() == 1;
    let outcome = if columns.jobs.is_empty() {
        Ok(Vec::new())
    } else if one_fenced {
        retrying(pool.clone(), server.clone(), patience, "journal write", move |client| {
            let c = columns.clone();
            async move {
                let statement = client.prepare_cached(WRITE_ONE).await?;
                let row = client
                    .query_opt(
                        &statement,
                        &[&c.tenants[0], &c.ids[0], &c.epochs[0], &c.owners[0], &c.keys[0], &c.seqs[0], &c.entries[0]],
                    )
                    .await?;
                let job = c.fenced_jobs[0] as usize;
                let refused = match row {
                    None => Some((job, true, None)),
                    Some(row) => {
                        let (epoch, holder): (i64, Option<String>) = (row.get(0), row.get(1));
                        let held = epoch == c.epochs[0] && holder.as_ref().is_none_or(|h| *h == c.owners[0]);
                        (!held).then_some((job, false, holder))
                    }
                };
                Ok::<_, Failed>(refused.into_iter().collect::<Vec<(usize, bool, Option<String>)>>())
            }
        })
        .await
    } else {
        retrying(pool.clone(), server.clone(), patience, "journal write", move |client| {
            let c = columns.clone();
            async move {
                let statement = client.prepare_cached(WRITE_BATCH).await?;
                let refused = client
                    .query(
                        &statement,
                        &[
                            &c.tenants,
                            &c.ids,
                            &c.epochs,
                            &c.owners,
                            &c.fenced_jobs,
                            &c.jobs,
                            &c.runs,
                            &c.keys,
                            &c.seqs,
                            &c.entries,
                        ],
                    )
                    .await?;
                Ok::<_, Failed>(
                    refused
                        .iter()
                        .map(|row| (row.get::<_, i32>(0) as usize, row.get::<_, bool>(1), row.get(2)))
                        .collect::<Vec<(usize, bool, Option<String>)>>(),
                )
            }
        })
        .await
    };
    match outcome {
        Ok(refused) => {
            for (job, missing, holder) in refused {
                let run_id = run_of_job[job].clone();
                verdicts[job] = Err(if missing {
                    StoreError::NoSuchRun(run_id)
                } else {
                    StoreError::LeaseLost { run_id, holder: holder.unwrap_or_else(|| "nobody (released)".into()) }
                });
            }
            for (job, verdict) in batch.into_iter().zip(verdicts) {
                drop(job.reply.send(verdict));
            }
        }
        Err(e) => {
            for job in batch {
                drop(job.reply.send(Err(e.clone())));
            }
        }
    }
}
