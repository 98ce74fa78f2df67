//! What the defences against hostile guests cost, and how that grows:
//!
//! 1. The fresh-instance slots (`services::fresh::FreshSlots`, fair between
//!    trees, parking) against a plain `tokio::sync::Semaphore`: an uncontended
//!    acquire and release, and a slot handed on while 1, 10, 100 and 1,000
//!    trees wait (the gate looks at every waiting tree per slot).
//! 2. Measuring a run's directory (`sandbox::usage::measure_at`, done when
//!    every call returns) against a plain `std::fs::read_dir` listing of the
//!    same directory, empty and with 100, 1,000 and 10,000 files.
//! 3. A healthy 20 ms run's latency beside trees of waiting parents of
//!    growing size (the starvation attack), as a ratio of its latency alone.
//!
//! Run with `./x bench` (or `cargo bench -p cairn --bench hostile`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::manifest::Manifest;
use cairn::runner::Host;
use cairn::sandbox::usage::{DiskLimits, measure_at};
use cairn::services::fresh::{FreshSlots, SlotPolicy};

#[path = "support/measure.rs"]
mod measure;
#[path = "support/probe.rs"]
mod probe;
use measure::{Plan, Series, us_per};
use probe::scratch_project;

const PAIRS: u64 = 20_000;

fn slots(runtime: &tokio::runtime::Runtime, plan: Plan) {
    println!("1. fresh-instance slots: acquire and release, µs per pair");
    let (mut fair, mut plain) = (Series::new(), Series::new());
    for round in plan.rounds() {
        let gate = FreshSlots::new(cairn::engine::FRESH_SLOTS);
        let started = Instant::now();
        runtime.block_on(async {
            for _ in 0..PAIRS {
                drop(gate.acquire("root").await);
            }
        });
        fair.add(round, us_per(started.elapsed(), PAIRS));
        let semaphore = Arc::new(tokio::sync::Semaphore::new(200));
        let started = Instant::now();
        runtime.block_on(async {
            for _ in 0..PAIRS {
                drop(semaphore.clone().acquire_owned().await.unwrap());
            }
        });
        plain.add(round, us_per(started.elapsed(), PAIRS));
    }
    println!("   tokio semaphore   {}", plain.show_us());
    println!("   fair slots        {}  = {}", fair.show_us(), fair.ratio(&plain));

    println!("   a slot handed on while trees wait (one waiter per tree), µs per hand-over");
    let mut fewest: Option<Series> = None;
    for trees in [1usize, 10, 100, 1_000] {
        let mut series = Series::new();
        for round in plan.rounds() {
            let took = runtime.block_on(async {
                let policy = SlotPolicy { slots: 1, share: 1, reserve: 0, parking: 0, parking_per_tree: 0 };
                let gate = FreshSlots::new(policy);
                let held = gate.acquire("holder").await;
                // Every tree queues one waiter; each, granted, gives the slot back.
                let mut waiters = Vec::new();
                for tree in 0..trees {
                    let gate = gate.clone();
                    waiters.push(tokio::spawn(async move { drop(gate.acquire(&format!("tree-{tree}")).await) }));
                }
                while gate.stats().queued < trees {
                    tokio::task::yield_now().await;
                }
                let started = Instant::now();
                drop(held);
                for waiter in waiters {
                    waiter.await.unwrap();
                }
                started.elapsed()
            });
            series.add(round, us_per(took, trees as u64));
        }
        match &fewest {
            None => println!("   {trees:>5} trees waiting  {}", series.show_us()),
            Some(base) => println!("   {trees:>5} trees waiting  {}  = {}", series.show_us(), series.ratio(base)),
        }
        fewest.get_or_insert(series);
    }
}

fn disk(plan: Plan) {
    println!("2. a run directory measured (sandbox::usage) vs listed (std::fs::read_dir), µs");
    let limits = DiskLimits { bytes: 1 << 40, entries: 1 << 20 };
    for files in [0usize, 100, 1_000, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..files {
            std::fs::write(dir.path().join(i.to_string()), b"x").unwrap();
        }
        let (mut measured, mut listed) = (Series::new(), Series::new());
        for round in plan.rounds() {
            let started = Instant::now();
            let usage = measure_at(dir.path(), limits).unwrap().unwrap();
            measured.add(round, us_per(started.elapsed(), 1));
            assert_eq!(usage.entries, files as u64);
            let started = Instant::now();
            let n = std::fs::read_dir(dir.path()).unwrap().count();
            listed.add(round, us_per(started.elapsed(), 1));
            assert_eq!(n, files);
        }
        println!(
            "   {files:>6} files: measured {}, listed {}  = {}",
            measured.show_us(),
            listed.show_us(),
            measured.ratio(&listed)
        );
    }
}

fn starvation(runtime: &tokio::runtime::Runtime) {
    println!("3. a 20 ms run beside a tree whose parents all wait (levels of width 2, leaves sleep 3 s)");
    let (_scratch, manifest) = scratch_project(
        "[environments.trees]\nresources = { timeout = \"120s\" }\n[tasks.probe]\ncomponent = {probe}\nenvironment = \"trees\"\n",
    );
    let host = runtime.block_on(async { Host::open(Manifest::load(&manifest).unwrap()).unwrap() });
    let healthy = r#"{"mode": "sleep", "ms": 20}"#;
    let latency = |host: &Arc<Host>, n: usize| -> Series {
        let mut series = Series::new();
        for round in Plan::new(1, n as u32).rounds() {
            let started = Instant::now();
            let run = runtime.block_on(host.run("probe", healthy)).unwrap();
            assert!(run.error.is_none(), "{:?}", run.error);
            series.add(round, us_per(started.elapsed(), 1));
        }
        series
    };
    let alone = latency(&host, 7);
    println!("   alone                         {}", alone.show_us());
    for levels in [5u32, 7, 9] {
        let parents = (1u64 << levels) - 1;
        let bomb = format!(r#"{{"mode": "bomb", "width": 2, "levels": {levels}, "leaf_ms": 3000}}"#);
        let tree = runtime.spawn({
            let host = host.clone();
            async move { host.run("probe", &bomb).await }
        });
        // Measured once the tree is in place: its parents waiting, its leaves asleep.
        let deadline = Instant::now() + Duration::from_secs(60);
        while host.fresh_instances().held + host.fresh_instances().parked < parents.min(250) as usize {
            assert!(Instant::now() < deadline, "the tree never grew: {:?}", host.fresh_instances());
            std::thread::sleep(Duration::from_millis(10));
        }
        let beside = latency(&host, 5);
        let slots = host.fresh_instances();
        println!(
            "   beside {:>4} runs ({parents:>3} waiting)  {}  = {}   (slots: {} held, {} parked, {} queued)",
            (1u64 << (levels + 1)) - 1,
            beside.show_us(),
            beside.ratio(&alone),
            slots.held,
            slots.parked,
            slots.queued
        );
        let tree = runtime.block_on(tree).unwrap().unwrap();
        assert!(tree.error.is_none(), "{:?}", tree.error);
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let plan = Plan::new(1, 7);
    println!("hostile: {}", plan.describe());
    slots(&runtime, plan);
    disk(plan);
    starvation(&runtime);
}
