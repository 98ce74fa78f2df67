//! Reuse benchmark: the per-call cost of Cairn's instance paths against bare
//! wasmtime doing the same work in the same run. Every figure is the median of
//! several timed rounds after a warm-up round, with its spread; ratios are
//! ratios of medians (these machines are shared and noisy).
//!
//! Bare wasmtime is on its fastest path: the component pre-instantiated, `run`
//! resolved once and called as a typed function. Cairn is measured twice: its
//! attempt alone (`PreparedTask::call` in an existing run directory: no run
//! record, lease, cache or breaker work) and the whole run as a user pays it
//! (`Host::run`: record created, lease, journal, attempt, record finished, run
//! directory removed).
//!
//! 1. fresh instance per call (no `reuse`): bare store + instantiate + call +
//!    drop (and store + instantiate alone, the drop kept out of the timing) vs
//!    Cairn's attempt (pooling allocator + pre-instantiation, the run's
//!    directory preopened, captured stdio, limits, the output checked) and
//!    Cairn's whole run;
//! 2. warm instance (`reuse`): a bare call on one instance kept alive vs
//!    Cairn's attempt through the environment's pool and Cairn's whole run;
//! 3. the same for a trivial Python guest (componentize-py).
//!
//! Run with `cargo bench -p cairn --bench reuse` after `./x setup`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::manifest::Manifest;
use cairn::model::RunStatus;
use cairn::runner::Host;

#[path = "support/bare.rs"]
mod bare;
#[path = "support/measure.rs"]
mod measure;
use bare::{BarePre, ECHO, call_echo, fresh_call, new_store};
use measure::{Plan, Series, us_per};

const RUN: &str = "0190bench-0000-7000-8000-000000000001";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples")
}

/// Bare: `n` × (store, instantiate, typed call, drop), µs per call.
async fn bare_fresh(pre: &BarePre, n: u64) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        fresh_call(pre).await;
    }
    us_per(started.elapsed(), n)
}

/// Bare: `n` × (store, instantiate); the stores are dropped after the clock stops.
async fn bare_instantiate(pre: &BarePre, n: u64) -> f64 {
    let mut total = Duration::ZERO;
    for chunk in 0..n.div_ceil(200) {
        let this = (n - chunk * 200).min(200);
        let mut kept = Vec::with_capacity(this as usize);
        let started = Instant::now();
        for _ in 0..this {
            let mut store = new_store(pre.engine());
            let run = pre.instantiate(&mut store).await;
            kept.push((store, run));
        }
        total += started.elapsed();
        drop(kept);
    }
    us_per(total, n)
}

/// Bare: `n` typed calls on one instance, µs per call.
async fn bare_warm(pre: &BarePre, n: u64) -> f64 {
    let mut store = new_store(pre.engine());
    let run = pre.instantiate(&mut store).await;
    call_echo(&mut store, &run).await; // the first call pays the guest's lazy set-up
    let started = Instant::now();
    for _ in 0..n {
        call_echo(&mut store, &run).await;
    }
    us_per(started.elapsed(), n)
}

/// Cairn's attempt alone: `n` attempts of `task` in run [`RUN`]'s directory,
/// the task resolved once (as bare resolves its `InstancePre` once), µs per call.
async fn cairn_attempts(host: &Host, task: &str, n: u64) -> f64 {
    let task = host.prepare_task(task).await.unwrap().unwrap();
    let started = Instant::now();
    for _ in 0..n {
        task.call(ECHO, Some(RUN)).await.unwrap();
    }
    us_per(started.elapsed(), n)
}

/// Cairn's whole run: `n` × `Host::run`, µs per run.
async fn cairn_runs(host: &Host, task: &str, n: u64) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        let run = host.run(task, ECHO).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    }
    us_per(started.elapsed(), n)
}

/// Calls per round of each path.
#[derive(Clone, Copy)]
struct Counts {
    fresh: u64,
    warm: u64,
    runs: u64,
}

/// One guest's figures, µs per call.
#[derive(Default)]
struct Paths {
    bare_fresh: Series,
    bare_instantiate: Series,
    cairn_fresh: Series,
    cairn_fresh_run: Series,
    bare_warm: Series,
    cairn_warm: Series,
    cairn_warm_run: Series,
}

async fn measure(host: &Host, pre: &BarePre, fresh_task: &str, warm_task: &str, n: Counts, plan: Plan) -> Paths {
    let mut paths = Paths::default();
    for round in plan.rounds() {
        paths.bare_fresh.add(round, bare_fresh(pre, n.fresh).await);
        paths.cairn_fresh.add(round, cairn_attempts(host, fresh_task, n.fresh).await);
        paths.cairn_fresh_run.add(round, cairn_runs(host, fresh_task, n.runs).await);
        paths.bare_instantiate.add(round, bare_instantiate(pre, n.fresh).await);
        paths.bare_warm.add(round, bare_warm(pre, n.warm).await);
        paths.cairn_warm.add(round, cairn_attempts(host, warm_task, n.warm).await);
        paths.cairn_warm_run.add(round, cairn_runs(host, warm_task, n.runs).await);
    }
    paths
}

fn main() {
    let probe = examples().join("components/probe.wasm");
    let py_probe = examples().join("components/py-probe.wasm");
    assert!(probe.is_file() && py_probe.is_file(), "build the guests first: ./x setup");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let manifest = scratch.path().join("cairn.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
            [environments.warm]
            reuse = {{ replicas = 1, concurrency = 1 }}
            [environments.warm-py]
            reuse = {{ replicas = 1, concurrency = 1 }}

            [tasks.probe]
            component = {probe:?}
            [tasks.warm-probe]
            component = {probe:?}
            environment = "warm"
            [tasks.py-probe]
            component = {py_probe:?}
            [tasks.warm-py-probe]
            component = {py_probe:?}
            environment = "warm-py"
            "#,
            probe = probe.display().to_string(),
            py_probe = py_probe.display().to_string(),
        ),
    )
    .unwrap();
    let host: Arc<Host> = runtime.block_on(async { Host::open(Manifest::load(&manifest).unwrap()).unwrap() });
    let engine = host.engine().engine().clone();
    let pre_of = |path: &Path| BarePre::new(&engine, &host.engine().load(path).unwrap().component);
    let (rust_pre, py_pre) = (pre_of(&probe), pre_of(&py_probe));
    let rust_n = Counts { fresh: 1000, warm: 20_000, runs: 100 };
    let py_n = Counts { fresh: 50, warm: 2000, runs: 50 };
    let plan = Plan::new(1, 11);
    let (rust, py) = runtime.block_on(async {
        let rust = measure(&host, &rust_pre, "probe", "warm-probe", rust_n, plan).await;
        let py = measure(&host, &py_pre, "py-probe", "warm-py-probe", py_n, plan).await;
        (rust, py)
    });

    println!("reuse benchmark: each figure the {} ({:?} allocator)", plan.describe(), host.engine().allocator());
    println!("bare: typed call, export resolved once; Cairn attempt: PreparedTask::call; Cairn run: Host::run");
    for (guest, paths, n) in [("Rust probe", &rust, rust_n), ("Python py-probe", &py, py_n)] {
        println!(
            "{guest} (echo), µs per call; per round: fresh {}, warm {}, whole runs {} of each",
            n.fresh, n.warm, n.runs
        );
        println!("  bare store + instantiate (drop excluded)       {}", paths.bare_instantiate.show("µs"));
        println!("  bare store + instantiate + call + drop         {}", paths.bare_fresh.show("µs"));
        println!("  Cairn attempt, fresh instance                  {}", paths.cairn_fresh.show("µs"));
        println!("  Cairn whole run, fresh instance                {}", paths.cairn_fresh_run.show("µs"));
        println!("  bare warm call on one instance                 {}", paths.bare_warm.show("µs"));
        println!("  Cairn attempt, warm instance from the pool     {}", paths.cairn_warm.show("µs"));
        println!("  Cairn whole run, warm instance from the pool   {}", paths.cairn_warm_run.show("µs"));
        println!("  ratios of medians (per-round spread):");
        println!("  Cairn attempt fresh / bare fresh               {}", paths.cairn_fresh.ratio(&paths.bare_fresh));
        println!("  Cairn run fresh / bare fresh                   {}", paths.cairn_fresh_run.ratio(&paths.bare_fresh));
        println!("  Cairn attempt warm / bare warm                 {}", paths.cairn_warm.ratio(&paths.bare_warm));
        println!("  Cairn run warm / bare warm                     {}", paths.cairn_warm_run.ratio(&paths.bare_warm));
        println!("  Cairn attempt fresh / Cairn attempt warm       {}", paths.cairn_fresh.ratio(&paths.cairn_warm));
        println!(
            "  Cairn run fresh / Cairn run warm               {}",
            paths.cairn_fresh_run.ratio(&paths.cairn_warm_run)
        );
        println!("  bare fresh / bare warm                         {}", paths.bare_fresh.ratio(&paths.bare_warm));
    }
}
