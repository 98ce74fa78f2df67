//! What tenancy costs. Every figure is the median of several timed rounds
//! after a warm-up, with its spread; ratios are of medians from the same run
//! (these machines are shared and noisy):
//!
//! 1. the budget's reserve/settle step per live LLM call: journaled calls of
//!    the embedded mock (no latency) on a redb store, with a cost quota and a
//!    price (each call reserves its worst case in one store write and settles
//!    in another) against the same calls with no quota and no price (no
//!    ledger writes); one call at a time, and 64 runs × 10 calls at once
//!    (the writes then share group commits);
//! 2. sealing per secret read: a secret opened by the vault (AES-256-GCM: the
//!    data key unwrapped, the value decrypted) against the same read of the
//!    store without opening it;
//! 3. a share of the instance quotas per instance: a share of a tenant's
//!    `live_instances` and `memory` taken and given back (what every
//!    instance made pays) against a tokio semaphore permit (what a bare
//!    count of instances would cost); alone, and with 64 and 1,024 tasks
//!    contending for 8 shares (they queue, in order).
//!
//! Run with `./x bench` (or `cargo bench -p cairn --bench tenancy`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::access::vault::{Keyring, MasterKey, Vault};
use cairn::journal::{Journal, JournalMode};
use cairn::llm::ChatRequest;
use cairn::llm::mock::MockProvider;
use cairn::model::{Price, Quotas, Tenant};
use cairn::progress::Progress;
use cairn::services::budget::{Budget, PricedProvider};
use cairn::services::instances::{InstanceGate, Limits};
use cairn::services::llm::LlmCalls;
use cairn::store::prelude::*;
use cairn::store::redb::RedbStore;

#[path = "support/measure.rs"]
mod measure;
use measure::{Plan, Series, us_per};

/// Calls per round, one at a time.
const SEQUENTIAL: u64 = 200;
/// Runs at once, and calls per run.
const RUNS: usize = 64;
const CALLS: usize = 10;
/// Secret reads per round.
const READS: u64 = 5_000;
/// Shares taken per round, alone; tasks contending (how cost grows with the
/// line), shares taken by them all per round, and room for.
const SHARES: u64 = 20_000;
const CONTENDERS: [usize; 2] = [64, 1024];
const CONTENDED: usize = 12_800;
const ROOM: u32 = 8;

fn budget(store: &Arc<dyn Store>, run_id: &str) -> Arc<Budget> {
    Arc::new(Budget {
        store: store.clone(),
        tenant: Tenant::default(),
        run_id: run_id.to_owned(),
        task: "bench".into(),
        quotas: Quotas {
            cost_per_day_micros: Some(u64::MAX / 4),
            tokens_per_run: Some(u64::MAX / 4),
            ..Quotas::default()
        },
        providers: vec![PricedProvider {
            name: "mock".into(),
            price: Some(Price { input: 0.15, output: 0.6 }),
            max_tokens: 256,
            attempts: 1,
        }],
    })
}

/// `calls` live LLM calls of one run, each awaited (distinct prompts, so each is live).
async fn one_run(store: &Arc<dyn Store>, run_id: &str, calls: usize, priced: bool) {
    let progress = Arc::new(Progress::default());
    let mut llm = LlmCalls::new(Arc::new(MockProvider::default()), Duration::from_secs(30), progress);
    llm.budget = priced.then(|| budget(store, run_id));
    let mut journal = Journal::new(store.clone(), run_id, 1, JournalMode::Live);
    for i in 0..calls {
        let request = ChatRequest::simple(&format!("question {i} of {run_id}"), "You are a bench.", false);
        llm.complete(&mut journal, request).await.unwrap().unwrap();
    }
}

/// `tasks` tasks at once, each taking a hold from `take` and giving it back
/// `each` times (yielding while it holds one): µs per hold.
async fn contend<F, Fut, H>(tasks: usize, each: usize, take: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = H> + Send,
    H: Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..tasks)
        .map(|_| {
            let take = take.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    let held = take().await;
                    tokio::task::yield_now().await;
                    drop(held);
                }
            })
        })
        .collect();
    let held = (tasks.len() * each) as u64;
    for task in tasks {
        task.await.unwrap();
    }
    us_per(started.elapsed(), held)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tenancy");
    std::fs::create_dir_all(&base).unwrap();
    let scratch = tempfile::tempdir_in(&base).unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&scratch.path().join("bench.redb")).unwrap());

    runtime.block_on(async {
        // 1a. One call at a time.
        let plan = Plan::new(1, 9);
        println!("tenancy: {}", plan.describe());
        let (mut free, mut counted) = (Series::new(), Series::new());
        for (n, round) in plan.rounds().enumerate() {
            let started = Instant::now();
            one_run(&store, &format!("free-{n}"), SEQUENTIAL as usize, false).await;
            free.add(round, us_per(started.elapsed(), SEQUENTIAL));
            let started = Instant::now();
            one_run(&store, &format!("counted-{n}"), SEQUENTIAL as usize, true).await;
            counted.add(round, us_per(started.elapsed(), SEQUENTIAL));
        }
        println!("1. a live LLM call, one at a time ({SEQUENTIAL} per round):");
        println!("   without a quota or a price  {}", free.show_us());
        println!("   reserved and settled        {}  = {}", counted.show_us(), counted.ratio(&free));

        // 1b. Many runs at once.
        let (mut free, mut counted) = (Series::new(), Series::new());
        for (n, round) in plan.rounds().enumerate() {
            for (priced, series) in [(false, &mut free), (true, &mut counted)] {
                let started = Instant::now();
                let runs: Vec<_> = (0..RUNS)
                    .map(|r| {
                        let store = store.clone();
                        tokio::spawn(async move { one_run(&store, &format!("{priced}-{n}-{r}"), CALLS, priced).await })
                    })
                    .collect();
                for run in runs {
                    run.await.unwrap();
                }
                series.add(round, us_per(started.elapsed(), (RUNS * CALLS) as u64));
            }
        }
        println!("   {RUNS} runs × {CALLS} calls at once, per call:");
        println!("   without a quota or a price  {}", free.show_us());
        println!("   reserved and settled        {}  = {}", counted.show_us(), counted.ratio(&free));

        // 2. Secret reads.
        let tenant = Tenant::default();
        let vault = Vault::new(store.clone(), Keyring::of(MasterKey::generate()));
        vault.put(&tenant, "api-key", "sk-0123456789abcdef0123456789abcdef").await.unwrap();
        let plan = Plan::new(1, 11);
        let (mut raw, mut opened) = (Series::new(), Series::new());
        for round in plan.rounds() {
            let started = Instant::now();
            for _ in 0..READS {
                std::hint::black_box(store.get_secret(&tenant, "api-key").unwrap());
            }
            raw.add(round, us_per(started.elapsed(), READS));
            let started = Instant::now();
            for _ in 0..READS {
                std::hint::black_box(vault.get(&tenant, "api-key").unwrap());
            }
            opened.add(round, us_per(started.elapsed(), READS));
        }
        println!("2. a secret read ({READS} per round):");
        println!("   the stored document         {}", raw.show_us());
        println!("   opened (sealed at rest)     {}  = {}", opened.show_us(), opened.ratio(&raw));

        // 3. Instance shares.
        let gate =
            InstanceGate::new(|| Limits { instances: Some(ROOM), memory: Some(u64::from(ROOM) << 26) }, || false);
        let permits = Arc::new(tokio::sync::Semaphore::new(ROOM as usize));
        let (mut bare, mut shared) = (Series::new(), Series::new());
        for round in plan.rounds() {
            let started = Instant::now();
            for _ in 0..SHARES {
                drop(std::hint::black_box(permits.clone().acquire_owned().await.unwrap()));
            }
            bare.add(round, us_per(started.elapsed(), SHARES));
            let started = Instant::now();
            for _ in 0..SHARES {
                drop(std::hint::black_box(gate.acquire(64 << 20, None).await.unwrap()));
            }
            shared.add(round, us_per(started.elapsed(), SHARES));
        }
        println!("3. an instance's share of its tenant's quotas ({SHARES} per round):");
        println!("   a semaphore permit          {}", bare.show_us());
        println!("   a quota share               {}  = {}", shared.show_us(), shared.ratio(&bare));
        for contenders in CONTENDERS {
            let each = CONTENDED / contenders;
            let (mut bare, mut shared) = (Series::new(), Series::new());
            for round in plan.rounds() {
                let take_permit = {
                    let permits = permits.clone();
                    move || {
                        let permits = permits.clone();
                        async move { permits.acquire_owned().await.unwrap() }
                    }
                };
                bare.add(round, contend(contenders, each, take_permit).await);
                let take_share = {
                    let gate = gate.clone();
                    move || {
                        let gate = gate.clone();
                        async move { gate.acquire(64 << 20, None).await.unwrap() }
                    }
                };
                shared.add(round, contend(contenders, each, take_share).await);
            }
            println!("   {contenders} tasks for {ROOM} at once, per share:");
            println!("   a semaphore permit          {}", bare.show_us());
            println!("   a quota share               {}  = {}", shared.show_us(), shared.ratio(&bare));
        }
    });
}
