//! Group commit for the redb store: one writer thread takes every write of
//! the process, runs as many as are waiting in one write transaction, and
//! commits them with one fsync. A caller hears back only after the commit,
//! so nothing is acknowledged before it is durable.
//!
//! A lone writer pays one fsync per write (nothing to batch with); under
//! concurrency the cost of an fsync is shared by the whole batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, Durability, Table, TableDefinition, WriteTransaction};

use super::StoreError;
use super::wal::{CHECKPOINT_BYTES, Wal};

/// Most writes in one transaction.
pub const MAX_BATCH: usize = 4096;

/// The tables of a batch's transaction, each opened once and shared by the
/// batch's writes.
pub struct Tables<'t> {
    txn: &'t WriteTransaction,
    open: Vec<(String, Table<'t, &'static str, &'static [u8]>)>,
}

impl<'t> Tables<'t> {
    /// The table `definition`, opened on first use.
    pub fn get(
        &mut self,
        definition: TableDefinition<'static, &'static str, &'static [u8]>,
    ) -> Result<&mut Table<'t, &'static str, &'static [u8]>, StoreError> {
        let name = definition.to_string();
        let index = match self.open.iter().position(|(open, _)| *open == name) {
            Some(index) => index,
            None => {
                let table = self.txn.open_table(definition).map_err(io)?;
                self.open.push((name, table));
                self.open.len() - 1
            }
        };
        Ok(&mut self.open[index].1)
    }
}

/// One write: runs inside the shared transaction. An [`StoreError::Io`] aborts
/// the whole batch; any other error fails only this write (which must then
/// have written nothing).
pub type WriteOp = Box<dyn FnOnce(&mut Tables<'_>) -> Result<(), StoreError> + Send>;

enum Reply {
    Sync(mpsc::SyncSender<Result<(), StoreError>>),
    Async(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
}

impl Reply {
    fn send(self, result: Result<(), StoreError>) {
        // A caller that stopped waiting (dropped) does not matter: the write is done.
        match self {
            Reply::Sync(tx) => drop(tx.send(result)),
            Reply::Async(tx) => drop(tx.send(result)),
        }
    }
}

struct Job {
    op: WriteOp,
    /// A write-ahead-log frame that makes this write durable by itself.
    logged: Option<Vec<u8>>,
    reply: Reply,
}

/// Counters of the writer thread.
#[derive(Debug, Default)]
pub struct CommitStats {
    commits: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
}

impl CommitStats {
    /// (transactions committed, writes in them, largest batch).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
            self.largest_batch.load(Ordering::Relaxed),
        )
    }
}

/// The writer thread and its queue.
pub struct GroupCommitter {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
}

fn io(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Io { operation: "commit", message: e.into().to_string() }
}

impl GroupCommitter {
    /// Starts the writer thread over `db`, logging journal writes to `wal`.
    pub fn start(db: Arc<Database>, mut wal: Wal) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let stats = Arc::new(CommitStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-commit".into())
            .spawn(move || writer_loop(&db, &mut wal, &jobs, &thread_stats))
            .map_err(|e| StoreError::Open { path: "(writer thread)".into(), message: e.to_string() })?;
        Ok(GroupCommitter { queue: Some(queue), thread: Some(thread), stats })
    }

    fn submit(&self, op: WriteOp, logged: Option<Vec<u8>>, reply: Reply) {
        let job = Job { op, logged, reply };
        match &self.queue {
            Some(queue) => {
                if let Err(mpsc::SendError(job)) = queue.send(job) {
                    job.reply.send(Err(stopped()));
                }
            }
            None => job.reply.send(Err(stopped())),
        }
    }

    /// Runs `op` in the next group commit and waits for it, blocking the thread.
    pub fn write(&self, op: WriteOp) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(op, None, Reply::Sync(tx));
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// Runs `op` in the next group commit and waits for it without blocking a thread.
    pub async fn write_async(&self, op: WriteOp) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(op, None, Reply::Async(tx));
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Like [`GroupCommitter::write_async`] for a write whose `frame` in the
    /// write-ahead log makes it durable: the log is synced, redb is not.
    pub async fn write_logged(&self, op: WriteOp, frame: Vec<u8>) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(op, Some(frame), Reply::Async(tx));
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// The writer's counters.
    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }
}

impl Drop for GroupCommitter {
    fn drop(&mut self) {
        // Closing the queue lets the thread finish what is queued and exit.
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Io { operation: "commit", message: "the store's writer thread has stopped".into() }
}

fn writer_loop(db: &Database, wal: &mut Wal, jobs: &mpsc::Receiver<Job>, stats: &CommitStats) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let size = batch.len() as u64;
        let logged_only = batch.iter().all(|job| job.logged.is_some());
        let log_start = wal.len();
        let frames: Vec<&[u8]> = batch.iter().filter_map(|job| job.logged.as_deref()).collect();
        let mut failure: Option<String> = None;
        if !frames.is_empty()
            && let Err(e) = wal.append(&frames)
        {
            failure = Some(e.to_string());
        }
        let mut replies = Vec::with_capacity(batch.len());
        match (failure.is_none()).then(|| db.begin_write()) {
            None => replies.extend(batch.into_iter().map(|job| (job.reply, Ok(())))),
            Some(Err(e)) => {
                failure = Some(io(e).to_string());
                replies.extend(batch.into_iter().map(|job| (job.reply, Ok(()))));
            }
            Some(Ok(mut txn)) => {
                if logged_only && let Err(e) = txn.set_durability(Durability::None) {
                    failure = Some(format!("cannot defer durability to the journal log: {e}"));
                }
                let mut tables = Tables { txn: &txn, open: Vec::new() };
                for job in batch {
                    if failure.is_some() {
                        replies.push((job.reply, Ok(())));
                        continue;
                    }
                    match (job.op)(&mut tables) {
                        Err(e @ StoreError::Io { .. }) => {
                            failure = Some(e.to_string());
                            replies.push((job.reply, Ok(())));
                        }
                        result => replies.push((job.reply, result)),
                    }
                }
                drop(tables);
                // On failure the transaction is dropped uncommitted: nothing of the batch is written.
                if failure.is_none()
                    && let Err(e) = txn.commit()
                {
                    failure = Some(io(e).to_string());
                }
            }
        }
        if failure.is_some() && wal.len() > log_start {
            // The batch failed: its log frames must not come back at the next open.
            if let Err(e) = wal.rewind(log_start) {
                tracing::error!("cannot rewind the journal log after a failed batch: {e}");
            }
        }
        if failure.is_none() {
            // A durable redb commit covers everything logged so far; otherwise checkpoint a large log.
            let checkpoint = if logged_only { wal.len() >= CHECKPOINT_BYTES } else { !wal.is_empty() };
            if checkpoint {
                let durable = || -> Result<(), redb::Error> {
                    if logged_only {
                        db.begin_write()?.commit()?;
                    }
                    Ok(())
                };
                match durable().map_err(io).and_then(|()| wal.truncate()) {
                    Ok(()) => {}
                    Err(e) => tracing::error!("journal checkpoint failed (the log keeps the records): {e}"),
                }
            }
        }
        match failure {
            None => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.writes.fetch_add(size, Ordering::Relaxed);
                stats.largest_batch.fetch_max(size, Ordering::Relaxed);
                for (reply, result) in replies {
                    reply.send(result);
                }
            }
            Some(message) => {
                for (reply, _) in replies {
                    reply.send(Err(StoreError::Io { operation: "commit", message: message.clone() }));
                }
            }
        }
    }
}
