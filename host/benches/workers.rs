//! Several hosts on PostgreSQL. Every figure is the median of timed rounds
//! after a warm-up round, with its spread; ratios are of medians measured in
//! the same run (these machines are shared and noisy):
//!
//! 1. sequential durable journaled calls on PostgreSQL, fenced as a worker's
//!    attempt writes them (each awaited, as a guest awaits its answer), vs a
//!    bare loop of single-row `INSERT`s, each its own commit, of the same size
//!    on the same server, in the same rounds;
//! 2. 1,000 runs x 10 calls: durable journal records and runs per second
//!    with 1, 2 and 3 workers, against redb in one process doing the same.
//!    Each worker has a store of its own (its pool, journal batcher and
//!    runtime, as a separate process has), claims runs with
//!    `claim_runnable` and works on up to 1,000/N at once: the run marked
//!    running, ten fenced journal records, a heartbeat halfway, the run
//!    finished. redb's one host claims from its own store the same way;
//! 3. kill to resume: two `cairn worker` processes, the first holding 8 runs
//!    mid-attempt is killed (`kill -9`) or stalled (`SIGSTOP`, which is what
//!    a host on another machine that died looks like from here: no process
//!    to find dead); the time until the other holds all 8.
//!
//! Needs a PostgreSQL server: `./x bench-workers` starts a private cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn::journal::{Journal, JournalMode};
use cairn::model::{AttemptRecord, CallKind, RunRecord, RunStatus, Tenant, now_ms};
use cairn::store::Beat;
use cairn::store::postgres::{PgStore, testing};
use cairn::store::prelude::*;
use cairn::store::redb::RedbStore;

#[path = "support/measure.rs"]
mod measure;
use measure::{Plan, Series, num, per_second};

/// Calls per round of the sequential figures.
const SEQUENTIAL: u64 = 300;
const PAYLOAD: usize = 256;
/// Runs per round of the worker figures, and calls per run.
const RUNS: usize = 1000;
const CALLS: usize = 10;
/// Runs the killed worker holds in figure 3.
const HELD: usize = 8;

fn lease_until() -> u64 {
    now_ms() + 30_000
}

/// Works on one claimed run as a worker's attempt does, from the store's side.
async fn work_on(store: Arc<dyn Store>, mut run: RunRecord, owner: String, output: Arc<str>) {
    let fence = run.fence(&owner);
    run.status = RunStatus::Running;
    store.update_run(&run, &fence).await.unwrap();
    let started_at_ms = now_ms();
    let mut journal = Journal::open(store.clone(), &run.id, 1, JournalMode::Live).await.unwrap();
    journal.set_fence(Some(&fence));
    for call in 0..CALLS {
        if call == CALLS / 2 {
            assert_eq!(store.heartbeat(&run.id, &fence, lease_until()).await.unwrap(), Beat::Held);
        }
        let key = journal.next_key(CallKind::Llm, "load", &format!("call-{call}"));
        journal.record(key, output.to_string(), String::new(), Duration::ZERO, None).await.unwrap();
    }
    run.attempts.push(AttemptRecord {
        number: 1,
        started_at_ms,
        finished_at_ms: now_ms(),
        error: None,
        llm_live: CALLS as u32,
        llm_replayed: 0,
        trace_replayed: 0,
        http_live: 0,
        http_replayed: 0,
        task: Some("load".into()),
        not_counted: false,
        host: Some(owner),
    });
    run.status = RunStatus::Succeeded;
    run.output = Some(output.to_string());
    run.finished_at_ms = Some(now_ms());
    run.lease = None;
    store.update_run(&run, &fence).await.unwrap();
}

/// One worker: claims runnable runs up to `slots` in flight until `finished` reaches [`RUNS`].
async fn worker(store: Arc<dyn Store>, owner: String, slots: usize, finished: Arc<AtomicUsize>) {
    let output: Arc<str> = format!("\"{}\"", "x".repeat(PAYLOAD - 2)).into();
    let permits = Arc::new(tokio::sync::Semaphore::new(slots));
    let mut working = tokio::task::JoinSet::new();
    while finished.load(Ordering::SeqCst) < RUNS {
        let free = permits.available_permits();
        let claimed = if free == 0 {
            Vec::new()
        } else {
            store.claim_runnable(&Tenant::default(), &owner, lease_until(), now_ms(), free).await.unwrap()
        };
        if claimed.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        for run in claimed {
            let permit = permits.clone().try_acquire_owned().unwrap();
            let (store, owner, output, finished) = (store.clone(), owner.clone(), output.clone(), finished.clone());
            working.spawn(async move {
                work_on(store, run, owner, output).await;
                finished.fetch_add(1, Ordering::SeqCst);
                drop(permit);
            });
        }
    }
    while working.join_next().await.is_some() {}
}

/// Queues [`RUNS`] pending runs (untimed).
async fn queue(store: &Arc<dyn Store>, round: usize) {
    let mut all = tokio::task::JoinSet::new();
    for i in 0..RUNS {
        let store = store.clone();
        all.spawn(async move {
            let mut run =
                RunRecord::new(format!("0190work-{round:04}-{i:06}"), Tenant::default(), "load".into(), "{}".into());
            (run.status, run.lease) = (RunStatus::Pending, None);
            store.create_run(&run).await.unwrap();
        });
    }
    while all.join_next().await.is_some() {}
}

/// [`RUNS`] runs worked on by one worker per store of `stores`; the wall time.
async fn work_round(stores: &[Arc<dyn Store>], round: usize) -> Duration {
    queue(&stores[0], round).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let slots = RUNS / stores.len();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for (i, store) in stores.iter().enumerate() {
        workers.spawn(worker(store.clone(), format!("bench-worker-{i}"), slots, finished.clone()));
    }
    while workers.join_next().await.is_some() {}
    started.elapsed()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn spawn_worker(project: &Path, lease: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--manifest")
        .arg(project.join("cairn.toml"))
        .args(["worker", "--concurrency", &HELD.to_string(), "--lease", lease])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn held_by(store: &dyn Store, ids: &[String], pid: u32) -> usize {
    let owner = format!("-{pid}");
    ids.iter()
        .filter(|id| {
            let run = store.get_run(&Tenant::default(), id).unwrap();
            run.lease.is_some_and(|l| l.owner.ends_with(&owner))
        })
        .count()
}

/// Figure 3, one round: the seconds from the first worker's kill (or stall)
/// until the second holds every run the first held.
fn takeover(url: &str, signal: i32) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let probe = repo().join("guest-examples/components/probe.wasm");
    let manifest = format!(
        "store = \"{url}\"\n[environments.slow]\nresources = {{ timeout = \"10m\" }}\n[tasks.probe]\ncomponent = \"{}\"\nenvironment = \"slow\"\n",
        probe.display()
    );
    std::fs::write(dir.path().join("cairn.toml"), manifest).unwrap();
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(url, true).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut first = spawn_worker(dir.path(), "3s");
    let ids: Vec<String> = runtime.block_on(async {
        let host = cairn::runner::Host::open(cairn::manifest::Manifest::load(&dir.path().join("cairn.toml")).unwrap())
            .unwrap();
        let mut ids = Vec::new();
        for _ in 0..HELD {
            let run = host.enqueue("probe", r#"{"mode": "sleep", "ms": 600000}"#, &Default::default()).await.unwrap();
            ids.push(run.id);
        }
        ids
    });
    while held_by(store.as_ref(), &ids, first.id()) < HELD {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut second = spawn_worker(dir.path(), "3s");
    std::thread::sleep(Duration::from_secs(2)); // the second is up and polling
    let struck = Instant::now();
    unsafe { libc::kill(first.id() as i32, signal) };
    if signal == libc::SIGKILL {
        // Reaped at once, as a service manager or shell would: a zombie's pid still looks alive.
        let _ = first.wait();
    }
    while held_by(store.as_ref(), &ids, second.id()) < HELD {
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = struck.elapsed().as_secs_f64();
    for child in [&mut first, &mut second] {
        let _ = child.kill();
        let _ = child.wait();
    }
    took
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-workers");
    std::fs::create_dir_all(&base).unwrap();
    let scratch = tempfile::tempdir_in(&base).unwrap();
    let output = format!("\"{}\"", "x".repeat(PAYLOAD - 2));

    runtime.block_on(async {
        // 1. Sequential: bare INSERT + commit vs fenced journaled calls, interleaved.
        let url = testing::fresh_database();
        let (client, connection) = testing::config(&url).connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute("CREATE TABLE bare (k bigint PRIMARY KEY, v bytea NOT NULL)").await.unwrap();
        let insert = client.prepare("INSERT INTO bare (k, v) VALUES ($1, $2)").await.unwrap();
        let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url, true).unwrap());
        let mut run = RunRecord::new("sequential".into(), Tenant::default(), "load".into(), "{}".into());
        (run.status, run.lease) = (RunStatus::Pending, None);
        store.create_run(&run).await.unwrap();
        let run = store.claim_runnable(&Tenant::default(), "bench", lease_until(), now_ms(), 1).await.unwrap();
        let fence = run[0].fence("bench");
        let mut journal = Journal::open(store.clone(), "sequential", 1, JournalMode::Live).await.unwrap();
        journal.set_fence(Some(&fence));
        let record = vec![b'x'; PAYLOAD + 160];
        let plan = Plan::new(1, 7);
        let (mut bare, mut journaled) = (Series::new(), Series::new());
        let mut calls = 0i64;
        for round in plan.rounds() {
            let started = Instant::now();
            for _ in 0..SEQUENTIAL {
                calls += 1;
                client.execute(&insert, &[&calls, &record]).await.unwrap();
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
        println!("workers benchmark: each figure the {}", plan.describe());
        println!("1. sequential on PostgreSQL, one commit per call ({SEQUENTIAL} per round)");
        println!("   bare INSERT + commit                 {}", bare.show("/s"));
        println!("   durable journaled calls (fenced)     {}", journaled.show("/s"));
        println!("   ratio                                {}  (target >= 0.8)", journaled.ratio(&bare));

        // 2. Workers: redb in one process, then 1, 2 and 3 workers on PostgreSQL, interleaved.
        let plan = Plan::new(1, 3);
        let mut figures: Vec<(String, Series, Series)> = Vec::new();
        let variants = ["redb, one process", "PostgreSQL, 1 worker", "PostgreSQL, 2 workers", "PostgreSQL, 3 workers"];
        for name in variants {
            figures.push((name.to_owned(), Series::new(), Series::new()));
        }
        for (index, round) in plan.rounds().enumerate() {
            for (v, figure) in figures.iter_mut().enumerate() {
                let stores: Vec<Arc<dyn Store>> = if v == 0 {
                    let dir = scratch.path().join(format!("redb-{index}"));
                    vec![Arc::new(RedbStore::open(&dir.join("cairn.redb")).unwrap())]
                } else {
                    let url = testing::fresh_database();
                    (0..v).map(|_| Arc::new(PgStore::connect(&url, true).unwrap()) as Arc<dyn Store>).collect()
                };
                let elapsed = work_round(&stores, index).await;
                figure.1.add(round, per_second((RUNS * CALLS) as u64, elapsed));
                figure.2.add(round, per_second(RUNS as u64, elapsed));
            }
        }
        println!("2. {RUNS} runs x {CALLS} calls, {RUNS} in flight in all ({})", plan.describe());
        let redb = figures[0].1.clone();
        for (name, records, runs) in &figures {
            println!(
                "   {name:<24} records {:<28} runs {:<22} vs redb {}",
                records.show("/s"),
                runs.show("/s"),
                records.ratio(&redb)
            );
        }
        let one = figures[1].1.clone();
        println!(
            "   growth: 2 workers / 1 = {}, 3 workers / 1 = {}",
            figures[2].1.ratio(&one),
            figures[3].1.ratio(&one)
        );
    });

    // 3. Kill to resume, a fresh database each round.
    let plan = Plan::new(0, 3);
    let (mut killed, mut stalled) = (Series::new(), Series::new());
    for round in plan.rounds() {
        killed.add(round, takeover(&testing::fresh_database(), libc::SIGKILL));
        stalled.add(round, takeover(&testing::fresh_database(), libc::SIGSTOP));
    }
    println!("3. a worker holding {HELD} runs stops; the other holds all {HELD} after ({}), lease 3s", plan.describe());
    println!("   kill -9 (its process is found gone)   {}", killed.show("s"));
    println!("   SIGSTOP (as a host on another machine) {}", stalled.show("s"));
    println!("   stalled / lease                        {}", num(stalled.median() / 3.0));
}
