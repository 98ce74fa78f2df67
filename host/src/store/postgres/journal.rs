//! Journal records from many concurrent attempts, written together: a
//! record waits in a queue, a writer takes everything waiting (up to
//! [`MAX_BATCH`]), checks the fences and inserts the lot in one transaction
//! with one commit, then answers each caller. A lone record still costs one
//! commit; a thousand concurrent ones share a few. A caller hears back only
//! after the commit, so a guest never sees a result that a crash could lose.
//!
//! The fence check locks the runs' rows (`FOR SHARE`) until the commit: a
//! claim by another host, which updates the row, waits for this transaction,
//! so a record is never stored under a lease that was taken before it
//! committed.

use std::collections::HashMap;
use std::sync::Arc;
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
}

impl Batcher {
    /// Starts the writers on `handle`.
    pub fn start(handle: &tokio::runtime::Handle, pool: Pool, server: Arc<str>, patience: Duration) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..WRITERS {
            handle.spawn(writer(jobs.clone(), pool.clone(), server.clone(), patience));
        }
        Batcher { queue }
    }

    /// Writes `entries` (under `fence`, if given) and waits for the commit.
    pub async fn put(&self, entries: Vec<JournalEntry>, fence: Option<Fence>) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Io { operation: "journal write", message: "the store is closing".into() };
        self.queue.send(Job { entries, fence, reply }).map_err(|_| stopped())?;
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

/// Writes one batch and answers its callers.
async fn write_batch(batch: Vec<Job>, pool: &Pool, server: &Arc<str>, patience: Duration) {
    // The runs the fences name, and what each job asks of them.
    let fenced: Vec<(String, String)> = {
        let mut runs: Vec<(String, String)> = batch
            .iter()
            .filter_map(|job| {
                let fence = job.fence.as_ref()?;
                Some((tenant_key(&fence.tenant), job.entries.first()?.key.run_id.clone()))
            })
            .collect();
        runs.sort();
        runs.dedup();
        runs
    };
    let mut encoded = Vec::with_capacity(batch.len());
    for job in &batch {
        let mut mine = Vec::new();
        let mut failure = None;
        for entry in &job.entries {
            match encode("journal", entry) {
                Ok(text) => mine.push((entry.key.run_id.clone(), entry.key.encode(), entry.seq as i64, text)),
                Err(e) => failure = Some(e),
            }
        }
        encoded.push((mine, failure));
    }
    let fences: Vec<Option<Fence>> = batch.iter().map(|job| job.fence.clone()).collect();
    let encoded = Arc::new(encoded);
    let fences = Arc::new(fences);
    let fenced = Arc::new(fenced);
    let outcome = retrying(pool.clone(), server.clone(), patience, "journal write", {
        let (encoded, fences, fenced) = (encoded.clone(), fences.clone(), fenced.clone());
        move |mut client| {
            let (encoded, fences, fenced) = (encoded.clone(), fences.clone(), fenced.clone());
            async move {
                let txn = client.transaction().await?;
                // Lock the fenced runs in one order (sorted), so batches never deadlock.
                let mut holders: HashMap<(String, String), (i64, Option<String>)> = HashMap::new();
                if !fenced.is_empty() {
                    let tenants: Vec<&str> = fenced.iter().map(|(t, _)| t.as_str()).collect();
                    let ids: Vec<&str> = fenced.iter().map(|(_, id)| id.as_str()).collect();
                    for row in txn
                        .query(
                            "SELECT r.tenant, r.id, r.epoch, r.lease_owner FROM runs r
                             JOIN unnest($1::text[], $2::text[]) AS f(tenant, id) ON r.tenant = f.tenant AND r.id = f.id
                             ORDER BY r.tenant, r.id FOR SHARE OF r",
                            &[&tenants, &ids],
                        )
                        .await?
                    {
                        holders.insert((row.get(0), row.get(1)), (row.get(2), row.get(3)));
                    }
                }
                let mut verdicts: Vec<Result<(), StoreError>> = Vec::with_capacity(encoded.len());
                let (mut runs, mut keys, mut seqs, mut texts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for ((mine, failure), fence) in encoded.iter().zip(fences.iter()) {
                    if let Some(e) = failure {
                        verdicts.push(Err(e.clone()));
                        continue;
                    }
                    if let (Some(fence), Some((run_id, ..))) = (fence, mine.first()) {
                        let held = holders.get(&(tenant_key(&fence.tenant), run_id.clone()));
                        let verdict = match held {
                            None => Err(StoreError::NoSuchRun(run_id.clone())),
                            Some((epoch, owner)) => {
                                if *epoch as u64 == fence.epoch && owner.as_ref().is_none_or(|o| *o == fence.owner) {
                                    Ok(())
                                } else {
                                    Err(StoreError::LeaseLost {
                                        run_id: run_id.clone(),
                                        holder: owner.clone().unwrap_or_else(|| "nobody (released)".into()),
                                    })
                                }
                            }
                        };
                        if verdict.is_err() {
                            verdicts.push(verdict);
                            continue;
                        }
                    }
                    for (run, key, seq, text) in mine {
                        runs.push(run.as_str());
                        keys.push(key.as_str());
                        seqs.push(*seq);
                        texts.push(text.as_str());
                    }
                    verdicts.push(Ok(()));
                }
                if !runs.is_empty() {
                    txn.execute(
                        "INSERT INTO journal (run_id, key, seq, entry)
                         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[])
                         ON CONFLICT (run_id, key) DO NOTHING",
                        &[&runs, &keys, &seqs, &texts],
                    )
                    .await?;
                }
                txn.commit().await?;
                Ok::<_, Failed>(verdicts)
            }
        }
    })
    .await;
    match outcome {
        Ok(verdicts) => {
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
