//! Group commit for the redb store: one writer thread takes every write of
//! the process, runs as many as are waiting in one write transaction, and
//! commits them with one fsync. A caller hears back only after the commit,
//! so nothing is acknowledged before it is durable.
//!
//! A lone writer pays one fsync per write (nothing to batch with); under
//! concurrency the cost of an fsync is shared by the whole batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, Durability, ReadableTable, Table, TableDefinition, TableHandle, WriteTransaction};

use super::StoreError;
use super::wal::{CHECKPOINT_BYTES, Wal};
use crate::model::TaskStats;

/// Most writes in one transaction.
pub const MAX_BATCH: usize = 4096;
/// Logged writes are applied to redb once this many are waiting…
pub const APPLY_BATCH: usize = 512;
/// …or once no write has come for this long.
pub const APPLY_IDLE: Duration = Duration::from_millis(5);

/// Journal records that are durable in the write-ahead log and acknowledged,
/// but not yet applied to redb, by encoded key. Readers look here first, so an
/// acknowledged record is always visible.
pub type Pending = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// The redb table logged records are applied to.
pub type JournalTable = TableDefinition<'static, &'static str, &'static [u8]>;

/// A write made durable by the write-ahead log: its frame, and the records it
/// stores (visible to readers in [`Pending`] until applied to the journal table).
pub struct Logged {
    /// The write-ahead-log frame.
    pub frame: Vec<u8>,
    /// (encoded key, encoded record) pairs.
    pub records: Vec<(String, Vec<u8>)>,
}

/// The tables of a batch's transaction, each opened once and shared by the
/// batch's writes.
pub struct Tables<'t> {
    txn: &'t WriteTransaction,
    open: Vec<(String, Table<'t, &'static str, &'static [u8]>)>,
    /// Changes to counts made by this batch's writes, by key: (added,
    /// taken away). Written once per key, by the store's [`BeforeCommit`],
    /// just before the batch commits.
    pub counts: BTreeMap<String, (TaskStats, TaskStats)>,
}

/// What the store does with a batch's [`Tables`] after its writes and
/// before it commits (an error aborts the batch like any I/O error).
pub type BeforeCommit = fn(&mut Tables<'_>) -> Result<(), StoreError>;

impl<'t> Tables<'t> {
    /// The tables of `txn`, none opened yet.
    pub fn new(txn: &'t WriteTransaction) -> Self {
        Tables { txn, open: Vec::new(), counts: BTreeMap::new() }
    }

    /// The table `definition`, opened on first use.
    pub fn get(
        &mut self,
        definition: TableDefinition<'static, &'static str, &'static [u8]>,
    ) -> Result<&mut Table<'t, &'static str, &'static [u8]>, StoreError> {
        let name = definition.name();
        let index = match self.open.iter().position(|(open, _)| open == name) {
            Some(index) => index,
            None => {
                let table = self.txn.open_table(definition).map_err(io)?;
                self.open.push((name.to_owned(), table));
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
    /// The write-ahead-log frame that makes this write durable by itself.
    logged: Option<Logged>,
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
    /// Starts the writer thread over `db`, logging journal writes to `wal` and
    /// showing them in `pending` until they are applied to redb.
    pub fn start(
        db: Arc<Database>,
        mut wal: Wal,
        pending: Pending,
        journal: JournalTable,
        before_commit: BeforeCommit,
    ) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let stats = Arc::new(CommitStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-commit".into())
            .spawn(move || writer_loop(&db, &mut wal, &jobs, &thread_stats, &pending, journal, before_commit))
            .map_err(|e| StoreError::Open { path: "(writer thread)".into(), message: e.to_string() })?;
        Ok(GroupCommitter { queue: Some(queue), thread: Some(thread), stats })
    }

    fn submit(&self, op: WriteOp, logged: Option<Logged>, reply: Reply) {
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

    /// Stores journal records durably through the write-ahead log: they are
    /// acknowledged once the log is synced, and applied to the journal table
    /// (first record of a key wins, no fsync) a little later.
    pub async fn write_logged(&self, logged: Logged) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(|_| Ok(())), Some(logged), Reply::Async(tx));
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

fn writer_loop(
    db: &Database,
    wal: &mut Wal,
    jobs: &mpsc::Receiver<Job>,
    stats: &CommitStats,
    pending: &Pending,
    journal: JournalTable,
    before_commit: BeforeCommit,
) {
    // Set when logged records could not be applied: the log must then keep
    // them (and readers see them in `pending`) until the next open replays them.
    let mut stuck = false;
    loop {
        let waiting = !pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty() && !stuck;
        let first = if !waiting {
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        } else {
            match jobs.recv_timeout(APPLY_IDLE) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    stuck |= !apply_pending(db, wal, pending, journal, false, stuck);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let size = batch.len() as u64;
        let count = |stats: &CommitStats| {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.writes.fetch_add(size, Ordering::Relaxed);
            stats.largest_batch.fetch_max(size, Ordering::Relaxed);
        };
        let log_start = wal.len();
        let frames: Vec<&[u8]> =
            batch.iter().filter_map(|job| job.logged.as_ref().map(|l| l.frame.as_slice())).collect();
        if !frames.is_empty()
            && let Err(e) = wal.append(&frames)
        {
            let message = e.to_string();
            for job in batch {
                job.reply.send(Err(StoreError::Io { operation: "commit", message: message.clone() }));
            }
            continue;
        }
        // Logged records are durable now: make them visible until they are applied.
        let logged_only = batch.iter().all(|job| job.logged.is_some());
        let mut others = Vec::new();
        {
            let mut visible = pending.lock().unwrap_or_else(|e| e.into_inner());
            for mut job in batch {
                match job.logged.take() {
                    Some(logged) => {
                        for (key, value) in logged.records {
                            visible.entry(key).or_insert(value);
                        }
                        if logged_only {
                            job.reply.send(Ok(()));
                        } else {
                            others.push(job);
                        }
                    }
                    None => others.push(job),
                }
            }
        }
        if logged_only {
            count(stats);
            let size = pending.lock().unwrap_or_else(|e| e.into_inner()).len();
            let checkpoint = wal.len() >= CHECKPOINT_BYTES;
            if size >= APPLY_BATCH || checkpoint {
                stuck |= !apply_pending(db, wal, pending, journal, checkpoint, stuck);
            }
            continue;
        }
        // A batch with other writes commits durably, with the pending records applied first.
        let mut replies = Vec::with_capacity(others.len());
        let mut failure: Option<String> = None;
        match db.begin_write() {
            Err(e) => {
                failure = Some(io(e).to_string());
                replies.extend(others.into_iter().map(|job| (job.reply, Ok(()))));
            }
            Ok(txn) => {
                let mut tables = Tables::new(&txn);
                if !stuck && let Err(e) = insert_pending(&mut tables, pending, journal) {
                    failure = Some(e.to_string());
                }
                for job in others {
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
                if failure.is_none()
                    && let Err(e) = before_commit(&mut tables)
                {
                    failure = Some(e.to_string());
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
        match failure {
            None => {
                // Everything logged so far is now durable in redb (unless some could not be applied).
                if !stuck {
                    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    if !wal.is_empty()
                        && let Err(e) = wal.truncate()
                    {
                        tracing::error!("cannot empty the journal log after a durable commit: {e}");
                    }
                }
                count(stats);
                for (reply, result) in replies {
                    reply.send(result);
                }
            }
            Some(message) => {
                // The batch's logged records are durable and were acknowledged with it only if
                // it succeeds: take its frames back out of the log. Earlier records stay.
                if wal.len() > log_start
                    && let Err(e) = wal.rewind(log_start)
                {
                    tracing::error!("cannot rewind the journal log after a failed batch: {e}");
                }
                for (reply, _) in replies {
                    reply.send(Err(StoreError::Io { operation: "commit", message: message.clone() }));
                }
            }
        }
    }
    apply_pending(db, wal, pending, journal, true, stuck);
}

/// Inserts every pending record into the journal table (the first record of a key wins).
fn insert_pending(tables: &mut Tables<'_>, pending: &Pending, journal: JournalTable) -> Result<(), StoreError> {
    let records: Vec<(String, Vec<u8>)> =
        pending.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let table = tables.get(journal)?;
    for (key, value) in &records {
        if table.get(key.as_str()).map_err(io)?.is_none() {
            table.insert(key.as_str(), value.as_slice()).map_err(io)?;
        }
    }
    Ok(())
}

/// Applies the pending records to redb in one transaction: without an fsync
/// normally (the log keeps them durable), durably when `checkpoint` is set,
/// after which the log is emptied (unless earlier records are `stuck`).
/// Returns whether the records were applied.
fn apply_pending(
    db: &Database,
    wal: &mut Wal,
    pending: &Pending,
    journal: JournalTable,
    checkpoint: bool,
    stuck: bool,
) -> bool {
    if stuck {
        return false;
    }
    let applied = (|| -> Result<(), StoreError> {
        let mut txn = db.begin_write().map_err(io)?;
        if !checkpoint {
            txn.set_durability(Durability::None)
                .map_err(|e| StoreError::Io { operation: "commit", message: e.to_string() })?;
        }
        {
            let mut tables = Tables::new(&txn);
            insert_pending(&mut tables, pending, journal)?;
        }
        txn.commit().map_err(io)
    })();
    match applied {
        Ok(()) => {
            pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
            if checkpoint
                && !wal.is_empty()
                && let Err(e) = wal.truncate()
            {
                tracing::error!("cannot empty the journal log after a checkpoint: {e}");
            }
            true
        }
        // The records stay durable in the log and visible in `pending`; the next open applies them.
        Err(e) => {
            tracing::error!("cannot apply logged journal records to redb (the log keeps them): {e}");
            false
        }
    }
}
