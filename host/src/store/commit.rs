//! Group commit for the redb store: one writer thread takes every write of
//! the process, runs as many as are waiting in one write transaction, and
//! commits them with one fsync. A caller hears back only after the commit,
//! so nothing is acknowledged before it is durable.
//!
//! A lone writer pays one fsync per write (nothing to batch with); under
//! concurrency the cost of an fsync is shared by the whole batch.
//!
//! Any failed write, sync or commit is final: the writer answers that batch
//! and every later write with [`StoreError::Halted`] and touches no file
//! again, so nothing is acknowledged that a restart could not find. What was
//! acknowledged before is durable (in the log or in redb) and still readable.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, Table, TableDefinition, TableHandle, WriteTransaction};

use super::wal::Wal;
use super::{StoreError, WriterStats};
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

/// A write made durable by the write-ahead log: its part of a frame, and the
/// records it stores (visible to readers in [`Pending`] until applied to the
/// journal table).
pub struct Logged {
    /// Its entries as a JSON array ([`Wal::payload`]).
    pub payload: Vec<u8>,
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
    /// Writes submitted and not yet taken by the writer.
    queued: AtomicU64,
    commits: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
    /// Batches by size: at most 1, 2, 4, … [`BATCH_BOUNDS`] writes.
    batches: [AtomicU64; BATCH_BOUNDS.len()],
    /// Commits by time taken (log append or redb commit, through to the replies).
    latencies: [AtomicU64; LATENCY_BOUNDS_US.len()],
    latency_sum_us: AtomicU64,
}

/// Upper bounds of the batch-size buckets.
pub const BATCH_BOUNDS: [u64; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
/// Upper bounds of the commit-latency buckets, in microseconds.
pub const LATENCY_BOUNDS_US: [u64; 12] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

impl CommitStats {
    /// (transactions committed, writes in them, largest batch).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
            self.largest_batch.load(Ordering::Relaxed),
        )
    }

    /// Writes waiting for the writer now.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Batch sizes and commit latencies so far, as histograms.
    pub fn writer_stats(&self) -> WriterStats {
        let load = |counters: &[AtomicU64]| counters.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<u64>>();
        WriterStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            batches: BATCH_BOUNDS.iter().copied().zip(load(&self.batches)).collect(),
            latencies_us: LATENCY_BOUNDS_US.iter().copied().zip(load(&self.latencies)).collect(),
            latency_sum_us: self.latency_sum_us.load(Ordering::Relaxed),
        }
    }
}

/// The writer thread and its queue.
pub struct GroupCommitter {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
    halted: Halt,
}

/// The error that stopped the writer, once one has.
pub type Halt = Arc<Mutex<Option<StoreError>>>;

/// Where the writer writes, and when it checkpoints.
pub struct Target {
    /// The database.
    pub db: Arc<Database>,
    /// Its file, as named in errors.
    pub db_path: String,
    /// The journal's write-ahead log.
    pub wal: Wal,
    /// Checkpoint once the log holds this many bytes.
    pub checkpoint_bytes: u64,
}

fn io(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Io { operation: "commit", message: e.into().to_string() }
}

impl GroupCommitter {
    /// Starts the writer thread over `target`, logging journal writes to its
    /// log and showing them in `pending` until they are applied to redb.
    pub fn start(
        target: Target,
        pending: Pending,
        journal: JournalTable,
        before_commit: BeforeCommit,
    ) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let stats = Arc::new(CommitStats::default());
        let halted = Halt::default();
        let mut writer =
            Writer { target, stats: stats.clone(), pending, journal, before_commit, halted: halted.clone() };
        let thread = std::thread::Builder::new()
            .name("cairn-commit".into())
            .spawn(move || writer.run(&jobs))
            .map_err(|e| StoreError::Open { path: "(writer thread)".into(), message: e.to_string() })?;
        Ok(GroupCommitter { queue: Some(queue), thread: Some(thread), stats, halted })
    }

    /// The error that stopped the writer, if one has.
    pub fn halted(&self) -> Option<StoreError> {
        self.halted.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn submit(&self, op: WriteOp, logged: Option<Logged>, reply: Reply) {
        let job = Job { op, logged, reply };
        if let Some(halt) = self.halted() {
            return job.reply.send(Err(halt));
        }
        match &self.queue {
            Some(queue) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                if let Err(mpsc::SendError(job)) = queue.send(job) {
                    self.stats.queued.fetch_sub(1, Ordering::Relaxed);
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

/// Whether a redb error says the disk is full.
fn disk_full(message: &str) -> bool {
    message.contains("os error 28") || message.contains("No space left")
}

/// The writer thread's state.
struct Writer {
    target: Target,
    stats: Arc<CommitStats>,
    pending: Pending,
    journal: JournalTable,
    before_commit: BeforeCommit,
    halted: Halt,
}

impl Writer {
    fn run(&mut self, jobs: &mpsc::Receiver<Job>) {
        loop {
            let waiting = !self.visible().is_empty() && !self.is_halted();
            let first = if !waiting {
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            } else {
                match jobs.recv_timeout(APPLY_IDLE) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.apply_pending(false);
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
            self.stats.queued.fetch_sub(batch.len() as u64, Ordering::Relaxed);
            self.commit(batch);
        }
        // A clean stop checkpoints, so the next open has nothing to replay.
        self.apply_pending(true);
    }

    fn visible(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_halted(&self) -> bool {
        self.halted.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Stops the writer for good with `error` (the first error wins) and returns a copy.
    fn halt(&self, error: StoreError) -> StoreError {
        let mut halted = self.halted.lock().unwrap_or_else(|e| e.into_inner());
        let error = match error {
            halt @ StoreError::Halted { .. } => halt,
            other => {
                let cause = other.to_string();
                StoreError::halted(&self.target.db_path, "committing to the database", &cause, disk_full(&cause))
            }
        };
        if halted.is_none() {
            tracing::error!("{error}");
            *halted = Some(error);
        }
        halted.clone().expect("set above")
    }

    fn count(&self, size: u64, started: Instant) {
        let stats = &self.stats;
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats.writes.fetch_add(size, Ordering::Relaxed);
        stats.largest_batch.fetch_max(size, Ordering::Relaxed);
        if let Some(bucket) = BATCH_BOUNDS.iter().position(|bound| size <= *bound) {
            stats.batches[bucket].fetch_add(1, Ordering::Relaxed);
        }
        let micros = started.elapsed().as_micros() as u64;
        stats.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
        if let Some(bucket) = LATENCY_BOUNDS_US.iter().position(|bound| micros <= *bound) {
            stats.latencies[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn commit(&mut self, batch: Vec<Job>) {
        if let Some(halt) = self.halted.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            for job in batch {
                job.reply.send(Err(halt.clone()));
            }
            return;
        }
        let size = batch.len() as u64;
        let started = Instant::now();
        let payloads: Vec<&[u8]> =
            batch.iter().filter_map(|job| job.logged.as_ref().map(|l| l.payload.as_slice())).collect();
        if !payloads.is_empty()
            && let Err(e) = self.target.wal.append(&payloads)
        {
            let halt = self.halt(e);
            for job in batch {
                job.reply.send(Err(halt.clone()));
            }
            return;
        }
        if batch.iter().all(|job| job.logged.is_some()) {
            // Durable in the log: visible until applied, then acknowledged.
            {
                let mut visible = self.visible();
                for job in &batch {
                    for (key, value) in &job.logged.as_ref().expect("all logged").records {
                        visible.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
            }
            self.count(size, started);
            for job in batch {
                job.reply.send(Ok(()));
            }
            let checkpoint = self.target.wal.len() >= self.target.checkpoint_bytes;
            if self.visible().len() >= APPLY_BATCH || checkpoint {
                self.apply_pending(checkpoint);
            }
            return;
        }
        // A batch with other writes commits durably, with every logged record
        // (earlier ones and this batch's) applied in the same transaction. This
        // batch's records become visible only through that commit.
        let mut logged = Vec::new();
        let mut others = Vec::with_capacity(batch.len());
        for mut job in batch {
            if let Some(l) = job.logged.take() {
                logged.extend(l.records);
            }
            others.push(job);
        }
        let mut replies = Vec::with_capacity(others.len());
        let result = (|| -> Result<(), StoreError> {
            let txn = self.target.db.begin_write().map_err(io)?;
            {
                let mut tables = Tables::new(&txn);
                let earlier: Vec<(String, Vec<u8>)> =
                    self.visible().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                insert_first(&mut tables, self.journal, earlier.iter().chain(logged.iter()))?;
                let mut jobs = others.into_iter();
                for job in jobs.by_ref() {
                    match (job.op)(&mut tables) {
                        Err(e @ StoreError::Io { .. }) => {
                            replies.push((job.reply, Ok(())));
                            replies.extend(jobs.map(|job| (job.reply, Ok(()))));
                            return Err(e);
                        }
                        result => replies.push((job.reply, result)),
                    }
                }
                (self.before_commit)(&mut tables)?;
            }
            txn.commit().map_err(io)
        })();
        match result {
            Ok(()) => {
                // Every logged record is durable in redb now: the log can be emptied.
                self.visible().clear();
                if !self.target.wal.is_empty()
                    && let Err(e) = self.target.wal.truncate()
                {
                    let halt = self.halt(e);
                    for (reply, _) in replies {
                        reply.send(Err(halt.clone()));
                    }
                    return;
                }
                self.count(size, started);
                for (reply, result) in replies {
                    reply.send(result);
                }
            }
            Err(e) => {
                // Nothing of the batch is acknowledged; its logged records are in the
                // log (durable, never acknowledged) and a restart may apply them.
                let halt = self.halt(e);
                for (reply, _) in replies {
                    reply.send(Err(halt.clone()));
                }
            }
        }
    }

    /// Applies the pending records to redb in one transaction: without an
    /// fsync normally (the log keeps them durable), durably when `checkpoint`
    /// is set, after which the log is emptied. A failure halts the writer
    /// (the records stay durable in the log, and visible).
    fn apply_pending(&mut self, checkpoint: bool) {
        if self.is_halted() {
            return;
        }
        let records: Vec<(String, Vec<u8>)> = self.visible().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if records.is_empty() && (!checkpoint || self.target.wal.is_empty()) {
            return;
        }
        let applied = (|| -> Result<(), StoreError> {
            let mut txn = self.target.db.begin_write().map_err(io)?;
            if !checkpoint {
                txn.set_durability(Durability::None)
                    .map_err(|e| StoreError::Io { operation: "commit", message: e.to_string() })?;
            }
            {
                let mut tables = Tables::new(&txn);
                insert_first(&mut tables, self.journal, records.iter())?;
            }
            txn.commit().map_err(io)?;
            if checkpoint && !self.target.wal.is_empty() {
                self.target.wal.truncate()?;
            }
            Ok(())
        })();
        match applied {
            Ok(()) => {
                let mut visible = self.visible();
                for (key, _) in &records {
                    visible.remove(key);
                }
            }
            Err(e) => {
                self.halt(e);
            }
        }
    }
}

/// Inserts records into the journal table; the first record of a key wins.
fn insert_first<'a>(
    tables: &mut Tables<'_>,
    journal: JournalTable,
    records: impl Iterator<Item = &'a (String, Vec<u8>)>,
) -> Result<(), StoreError> {
    let table = tables.get(journal)?;
    for (key, value) in records {
        if table.get(key.as_str()).map_err(io)?.is_none() {
            table.insert(key.as_str(), value.as_slice()).map_err(io)?;
        }
    }
    Ok(())
}
