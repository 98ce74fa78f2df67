//! Journal benchmark, figures as ratios from one run (these machines are noisy):
//!
//! 1. sequential durable journaled calls per second vs the physical limit
//!    measured in the same run on the same disk: a bare loop of `write` +
//!    `fsync` of a record of the same size;
//! 2. group commit: 1,000 concurrent runs each journaling 10 calls; durable
//!    records per second, with the number of commits (fsyncs) and batch sizes;
//! 3. resume cost: replaying a journal of 1,000 recorded calls, µs per call.
//!
//! Run with `./x bench` (or `cargo bench -p cairn --bench journal`).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::journal::load::journal_load;
use cairn::journal::{Journal, JournalMode};
use cairn::model::{CallKind, JournalEntry};
use cairn::store::prelude::*;
use cairn::store::redb::RedbStore;

const SEQUENTIAL: usize = 1000;
const PAYLOAD: usize = 256;

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

        // 1a. The physical limit: write + fsync of one record, sequentially.
        let mut file = std::fs::File::create(scratch.path().join("baseline.log")).unwrap();
        let record = vec![b'x'; record_size];
        let started = Instant::now();
        for _ in 0..SEQUENTIAL {
            file.write_all(&record).unwrap();
            file.sync_data().unwrap();
        }
        let baseline = SEQUENTIAL as f64 / started.elapsed().as_secs_f64();

        // 1b. Durable journaled calls, one after another (each awaited, as a guest does).
        let started = Instant::now();
        for i in 0..SEQUENTIAL {
            let key = journal.next_key(CallKind::Llm, "complete", &format!("call-{i}"));
            journal.record(key, output.clone(), String::new(), Duration::ZERO, None).await.unwrap();
        }
        let sequential = SEQUENTIAL as f64 / started.elapsed().as_secs_f64();

        println!("journal benchmark (one run; ratios are the figures to compare)");
        println!("record size: {record_size} bytes");
        println!("1. sequential, one fsync per call");
        println!("   bare write + fsync (physical limit)   {baseline:>10.0} /s");
        println!("   durable journaled calls               {sequential:>10.0} /s");
        println!("   ratio                                  {:>10.2} x  (target >= 0.8)", sequential / baseline);

        // 2. Group commit under concurrency.
        let redb = Arc::new(RedbStore::open(&scratch.path().join("concurrent.redb")).unwrap());
        let report = journal_load(redb.clone(), 1000, 10, PAYLOAD, None).await.unwrap();
        let (commits, writes, largest) = redb.commit_stats().snapshot();
        let rate = report.records as f64 / report.elapsed.as_secs_f64();
        println!("2. group commit: 1,000 runs x 10 calls, concurrently");
        println!(
            "   {} durable records in {:.3} s        {rate:>10.0} /s  (target >= 50,000)",
            report.records,
            report.elapsed.as_secs_f64()
        );
        println!(
            "   {commits} commits (fsyncs) for {writes} writes: {:.1} per commit, largest batch {largest}",
            writes as f64 / commits.max(1) as f64
        );
        println!("   vs the bare fsync limit                {:>10.1} x", rate / baseline);

        // 3. Resume: a journal of 1,000 recorded calls replayed.
        let started = Instant::now();
        let mut replay = Journal::open(store.clone(), "sequential", 2, JournalMode::Live).await.unwrap();
        for i in 0..SEQUENTIAL {
            let key = replay.next_key(CallKind::Llm, "complete", &format!("call-{i}"));
            assert!(replay.lookup(&key).await.unwrap().is_some());
        }
        let per_call = started.elapsed().as_secs_f64() * 1e6 / SEQUENTIAL as f64;
        println!("3. resume: replaying 1,000 recorded calls (journal load included)");
        println!("   {per_call:>10.2} µs per call");
    });
}
