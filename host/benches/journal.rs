//! Journal benchmark. Every figure is the median of several timed rounds after
//! a warm-up round, with its spread; ratios are ratios of medians from the same
//! run (these machines are shared and noisy):
//!
//! 1. sequential durable journaled calls per second vs the physical limit
//!    measured in the same rounds on the same disk: a bare loop of `write` +
//!    `fsync` of a record of the same size;
//! 2. group commit: 1,000 concurrent runs each journaling 10 calls, on a new
//!    store each round; durable records per second, with the number of commits
//!    (fsyncs) and batch sizes, three ways:
//!    - a: journal records alone;
//!    - b: with each run's record writes mixed in, as `Host::run` makes them:
//!      the record created with its lease, the lease renewed halfway (a
//!      heartbeat), the record finished. A batch that carries such a write
//!      commits to redb durably, with every logged record, and empties the
//!      journal's write-ahead log;
//!    - c: a sustained (1,000 runs in flight, more waiting) until the log has
//!      passed its checkpoint size (`CHECKPOINT_BYTES`) three times, so
//!      checkpoints (a durable redb commit, then the log truncated) happen
//!      during the round;
//! 3. resume cost: replaying a journal of 1,000 recorded calls, µs per call.
//!
//! Run with `./x bench` (or `cargo bench -p cairn --bench journal`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn::journal::load::journal_load;
use cairn::journal::{Journal, JournalMode};
use cairn::model::{AttemptRecord, CallKind, JournalEntry, Lease, RunRecord, RunStatus, Tenant, now_ms};
use cairn::runner::lease::LEASE;
use cairn::store::Beat;
use cairn::store::prelude::*;
use cairn::store::redb::RedbStore;
use cairn::store::wal::CHECKPOINT_BYTES;

#[path = "support/measure.rs"]
mod measure;
use measure::{Plan, Series, num, per_second, us_per};

/// Calls per round of the sequential figures.
const SEQUENTIAL: u64 = 300;
/// Calls in the journal replayed by the resume figure.
const RESUME: u64 = 1000;
const PAYLOAD: usize = 256;
/// Runs in flight in the group-commit figures, and calls per run.
const RUNS: usize = 1000;
const CALLS: usize = 10;
/// Run-record writes per run in 2b and 2c: create, heartbeat, finish.
const RECORD_WRITES: u64 = 3;
/// The lease holder of the load's runs.
const OWNER: &str = "bench-host";

/// One run's store traffic: `calls` durable journal records and, `with_record`,
/// the run's record as `Host::run` writes it: created (with the lease) first,
/// a heartbeat halfway, finished last.
async fn one_run(
    store: Arc<dyn Store>,
    id: String,
    calls: usize,
    output: Arc<str>,
    with_record: bool,
) -> anyhow::Result<()> {
    let tenant = Tenant::default();
    let mut run = RunRecord {
        lease: Some(Lease { owner: OWNER.into(), expires_at_ms: lease_until() }),
        ..RunRecord::new(id, tenant.clone(), "load".into(), "{}".into())
    };
    if with_record {
        store.create_run(&run).await?;
    }
    let started_at_ms = now_ms();
    let mut journal = Journal::open(store.clone(), &run.id, 1, JournalMode::Live).await?;
    for call in 0..calls {
        if with_record && call == calls / 2 {
            assert_eq!(store.heartbeat(&run.id, &run.fence(OWNER), lease_until()).await?, Beat::Held);
        }
        let key = journal.next_key(CallKind::Llm, "load", &format!("call-{call}"));
        journal.record(key, output.to_string(), String::new(), Duration::ZERO, None).await?;
    }
    if !with_record {
        return Ok(());
    }
    run.attempts.push(AttemptRecord {
        number: 1,
        started_at_ms,
        finished_at_ms: now_ms(),
        error: None,
        llm_live: calls as u32,
        llm_replayed: 0,
        trace_replayed: 0,
        http_live: 0,
        http_replayed: 0,
        task: Some("load".into()),
        not_counted: false,
        host: None,
    });
    run.status = RunStatus::Succeeded;
    run.output = Some(output.to_string());
    run.finished_at_ms = Some(now_ms());
    run.lease = None;
    store.update_run(&run, &run.fence(OWNER)).await?;
    Ok(())
}

/// When a lease taken now expires.
fn lease_until() -> u64 {
    now_ms() + LEASE.as_millis() as u64
}

/// `runs` runs of [`one_run`], at most `in_flight` at once; the wall time.
async fn run_load(store: Arc<dyn Store>, round: usize, runs: usize, in_flight: usize, with_records: bool) -> Duration {
    let output: Arc<str> = format!("\"{}\"", "x".repeat(PAYLOAD - 2)).into();
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..runs {
        let (store, output, permits) = (store.clone(), output.clone(), permits.clone());
        let id = format!("0190bench-{round:04}-{i:08}");
        writers.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            one_run(store, id, CALLS, output, with_records).await
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap().unwrap();
    }
    started.elapsed()
}

/// Counts checkpoints by watching the write-ahead log's size: it drops only
/// when a checkpoint truncates it.
struct LogWatch {
    stop: Arc<AtomicBool>,
    drops: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl LogWatch {
    fn start(path: PathBuf) -> LogWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let drops = Arc::new(AtomicU64::new(0));
        let (stopped, dropped) = (stop.clone(), drops.clone());
        let thread = std::thread::spawn(move || {
            let mut last = 0;
            while !stopped.load(Ordering::Relaxed) {
                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if len < last {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                last = len;
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        LogWatch { stop, drops, thread }
    }

    /// Checkpoints seen.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.drops.load(Ordering::Relaxed)
    }
}

/// The figures of one group-commit variant.
#[derive(Default)]
struct GroupCommit {
    /// Durable journal records per second.
    records: Series,
    /// Durable store writes (journal records and run-record writes) per second.
    writes: Series,
    /// Group commits (fsyncs) per round.
    commits: Series,
    /// Writes per commit.
    batch: Series,
    /// Largest batch of the last round.
    largest: u64,
    /// Checkpoints per round.
    checkpoints: Series,
    /// Bytes in the log after the last round, before the store closed.
    log_bytes: u64,
}

/// A new store for one round of one variant, its files removed with `dir`.
fn fresh_store(dir: &Path) -> (Arc<RedbStore>, PathBuf) {
    let _ = std::fs::remove_dir_all(dir);
    let path = dir.join("cairn.redb");
    (Arc::new(RedbStore::open(&path).unwrap()), path.with_extension("wal"))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // Under target/, so the store and the baseline file share a disk with the project.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-journal");
    std::fs::create_dir_all(&base).unwrap();
    let scratch = tempfile::tempdir_in(&base).unwrap();
    let output = format!("\"{}\"", "x".repeat(PAYLOAD - 2));

    runtime.block_on(async {
        // Size of one encoded record, for the baseline.
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&scratch.path().join("seq.redb")).unwrap());
        let mut journal = Journal::open(store.clone(), "sequential", 1, JournalMode::Live).await.unwrap();
        let sample_key = journal.next_key(CallKind::Llm, "complete", "sample");
        let sample = JournalEntry {
            key: sample_key.clone(),
            seq: 0,
            attempt: 1,
            output: output.clone(),
            summary: String::new(),
            recorded_at_ms: 0,
            duration_ms: 0,
            usage: None,
        };
        let record_size = serde_json::to_vec(&sample).unwrap().len() + sample_key.encode().len();

        // 1. Sequential: the physical limit (write + fsync of one record) and durable
        // journaled calls, one after another (each awaited, as a guest does), interleaved.
        let seq_plan = Plan::new(1, 11);
        let mut file = std::fs::File::create(scratch.path().join("baseline.log")).unwrap();
        let record = vec![b'x'; record_size];
        let (mut bare, mut journaled) = (Series::new(), Series::new());
        let mut calls = 0;
        for round in seq_plan.rounds() {
            let started = Instant::now();
            for _ in 0..SEQUENTIAL {
                file.write_all(&record).unwrap();
                file.sync_data().unwrap();
            }
            bare.add(round, per_second(SEQUENTIAL, started.elapsed()));
            let started = Instant::now();
            for _ in 0..SEQUENTIAL {
                calls += 1;
                let key = journal.next_key(CallKind::Llm, "complete", &format!("call-{calls}"));
                journal.record(key, output.clone(), String::new(), Duration::ZERO, None).await.unwrap();
            }
            journaled.add(round, per_second(SEQUENTIAL, started.elapsed()));
        }

        println!("journal benchmark: each figure the {}", seq_plan.describe());
        println!("record size: {record_size} bytes");
        println!("1. sequential, one fsync per call ({SEQUENTIAL} calls per round)");
        println!("   bare write + fsync (physical limit)   {}", bare.show("/s"));
        println!("   durable journaled calls               {}", journaled.show("/s"));
        println!("   ratio                                 {}  (target >= 0.8)", journaled.ratio(&bare));

        // 2. Group commit under concurrency, a new store each round; the variants interleaved.
        let plan = Plan::new(1, 5);
        let (mut alone, mut mixed, mut sustained) =
            (GroupCommit::default(), GroupCommit::default(), GroupCommit::default());
        // Runs in 2c: enough for the log to pass CHECKPOINT_BYTES three times, from
        // the log's bytes per run in 2a (no checkpoint there: 1,000 runs log far less).
        let mut sustained_runs = 0;
        for (index, round) in plan.rounds().enumerate() {
            for (variant, figures) in [("a", &mut alone), ("b", &mut mixed), ("c", &mut sustained)] {
                let (redb, wal) = fresh_store(&scratch.path().join(format!("group-{variant}")));
                let watch = LogWatch::start(wal.clone());
                let (elapsed, records, writes) = match variant {
                    "a" => {
                        let report = journal_load(redb.clone(), RUNS, CALLS, PAYLOAD, None).await.unwrap();
                        (report.elapsed, report.records, report.records)
                    }
                    "b" => {
                        let elapsed = run_load(redb.clone(), index, RUNS, RUNS, true).await;
                        let records = (RUNS * CALLS) as u64;
                        (elapsed, records, records + RECORD_WRITES * RUNS as u64)
                    }
                    _ => {
                        let elapsed = run_load(redb.clone(), index, sustained_runs, RUNS, false).await;
                        let records = (sustained_runs * CALLS) as u64;
                        (elapsed, records, records)
                    }
                };
                let checkpoints = watch.stop();
                figures.log_bytes = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                if variant == "a" && sustained_runs == 0 {
                    let per_run = (figures.log_bytes / RUNS as u64).max(record_size as u64 * CALLS as u64 / 2);
                    sustained_runs = (CHECKPOINT_BYTES * 3 + CHECKPOINT_BYTES / 2).div_ceil(per_run) as usize;
                }
                let (commits, committed, largest) = redb.commit_stats().snapshot();
                figures.records.add(round, per_second(records, elapsed));
                figures.writes.add(round, per_second(writes, elapsed));
                figures.commits.add(round, commits as f64);
                figures.batch.add(round, committed as f64 / commits.max(1) as f64);
                figures.checkpoints.add(round, checkpoints as f64);
                figures.largest = largest;
            }
        }
        let commits = |g: &GroupCommit| {
            format!(
                "{} commits (fsyncs) per round [{}–{}], {} writes per commit, largest batch {}",
                num(g.commits.median()),
                num(g.commits.spread().0),
                num(g.commits.spread().1),
                num(g.batch.median()),
                g.largest
            )
        };
        println!("2. group commit: {RUNS} runs in flight x {CALLS} calls, a new store per round ({})", plan.describe());
        println!("   a. journal records alone, {RUNS} runs");
        println!("      durable records                    {}  (target >= 50,000)", alone.records.show("/s"));
        println!("      {}", commits(&alone));
        println!("      vs the bare fsync limit            {}", alone.records.ratio(&bare));
        println!("   b. with run records (created with the lease, heartbeat, finished), {RUNS} runs");
        println!("      durable journal records            {}", mixed.records.show("/s"));
        println!("      durable writes (records + runs)    {}", mixed.writes.show("/s"));
        println!("      {}", commits(&mixed));
        println!("      log emptied by a durable redb commit, seen {} times per round", mixed.checkpoints.show(""));
        println!("      journal records, b / a             {}", mixed.records.ratio(&alone.records));
        println!(
            "   c. a sustained: {sustained_runs} runs, the log passing {} MiB (CHECKPOINT_BYTES) ~3 times",
            CHECKPOINT_BYTES >> 20
        );
        println!("      checkpoints per round              {}", sustained.checkpoints.show(""));
        println!("      durable journal records            {}", sustained.records.show("/s"));
        println!("      {}", commits(&sustained));
        println!("      journal records, c / a             {}", sustained.records.ratio(&alone.records));

        // 3. Resume: a journal of RESUME recorded calls replayed, each round as a new attempt.
        let mut recorded = Journal::open(store.clone(), "resume", 1, JournalMode::Live).await.unwrap();
        for i in 0..RESUME {
            let key = recorded.next_key(CallKind::Llm, "complete", &format!("call-{i}"));
            recorded.record(key, output.clone(), String::new(), Duration::ZERO, None).await.unwrap();
        }
        let resume_plan = Plan::new(1, 11);
        let mut replay = Series::new();
        for (attempt, round) in (2..).zip(resume_plan.rounds()) {
            let started = Instant::now();
            let mut journal = Journal::open(store.clone(), "resume", attempt, JournalMode::Live).await.unwrap();
            for i in 0..RESUME {
                let key = journal.next_key(CallKind::Llm, "complete", &format!("call-{i}"));
                assert!(journal.lookup(&key).await.unwrap().is_some());
            }
            replay.add(round, us_per(started.elapsed(), RESUME));
        }
        println!("3. resume: replaying {RESUME} recorded calls, journal load included ({})", resume_plan.describe());
        println!("   {} per call", replay.show("µs"));
    });
}
