//! Reuse benchmark: the per-call cost of Cairn's instance paths against bare
//! wasmtime doing the same work in the same run (ratios are the figures to
//! compare; these machines are shared and noisy):
//!
//! 1. fresh instance per call (no `reuse`): a `PreparedTask::call` (pooling
//!    allocator + pre-instantiation, the run's directory preopened, captured
//!    stdio, limits, the output checked) vs bare store + instantiate + call +
//!    drop; and bare store + instantiate alone, with the drop kept out of the
//!    timing;
//! 2. warm instance through the environment's pool (`reuse`) vs a bare call
//!    on one instance kept alive;
//! 3. the same two paths for a trivial Python guest (componentize-py): warm
//!    vs fresh through Cairn.
//!
//! Run with `cargo bench -p cairn --bench reuse` after `./x setup`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::manifest::Manifest;
use cairn::runner::Host;
use wasmtime::component::{Component, InstancePre};

#[path = "support/bare.rs"]
mod bare;
use bare::{Bare, ECHO, bare_pre, call_echo, new_store};

const ROUNDS: u32 = 5;
const RUN: &str = "0190bench-0000-7000-8000-000000000001";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples")
}

fn us(total: Duration, n: u32) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(n)
}

/// Bare: `n` × (store, instantiate, call, drop).
async fn bare_fresh(pre: &InstancePre<Bare>, n: u32) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let mut store = new_store(pre.engine());
        let instance = pre.instantiate_async(&mut store).await.unwrap();
        let run = instance.get_func(&mut store, "run").unwrap();
        call_echo(&mut store, &run).await;
    }
    started.elapsed()
}

/// Bare: `n` × (store, instantiate); the stores are dropped after the clock stops.
async fn bare_instantiate(pre: &InstancePre<Bare>, n: u32) -> Duration {
    let mut total = Duration::ZERO;
    for chunk in 0..n.div_ceil(200) {
        let this = (n - chunk * 200).min(200);
        let mut kept = Vec::with_capacity(this as usize);
        let started = Instant::now();
        for _ in 0..this {
            let mut store = new_store(pre.engine());
            let instance = pre.instantiate_async(&mut store).await.unwrap();
            kept.push((store, instance));
        }
        total += started.elapsed();
        drop(kept);
    }
    total
}

/// Bare: `n` calls on one instance.
async fn bare_warm(pre: &InstancePre<Bare>, n: u32) -> Duration {
    let mut store = new_store(pre.engine());
    let instance = pre.instantiate_async(&mut store).await.unwrap();
    let run = instance.get_func(&mut store, "run").unwrap();
    call_echo(&mut store, &run).await;
    let started = Instant::now();
    for _ in 0..n {
        call_echo(&mut store, &run).await;
    }
    started.elapsed()
}

/// Cairn: `n` attempts of `task`, resolved once (as bare resolves its `InstancePre` once).
async fn cairn_calls(host: &Host, task: &str, n: u32) -> Duration {
    let task = host.prepare_task(task).await.unwrap().unwrap();
    let started = Instant::now();
    for _ in 0..n {
        task.call(ECHO, Some(RUN)).await.unwrap();
    }
    started.elapsed()
}

/// Timings of one guest, summed over rounds.
#[derive(Default)]
struct Paths {
    bare_fresh: Duration,
    bare_instantiate: Duration,
    bare_warm: Duration,
    cairn_fresh: Duration,
    cairn_warm: Duration,
}

async fn measure(
    host: &Host,
    pre: &InstancePre<Bare>,
    fresh_task: &str,
    warm_task: &str,
    fresh: u32,
    warm: u32,
) -> Paths {
    // Warm-up: artifacts loaded, pools filled, lazy guest set-up done.
    bare_fresh(pre, 5).await;
    cairn_calls(host, fresh_task, 5).await;
    cairn_calls(host, warm_task, 5).await;
    let mut paths = Paths::default();
    for _ in 0..ROUNDS {
        paths.bare_fresh += bare_fresh(pre, fresh).await;
        paths.cairn_fresh += cairn_calls(host, fresh_task, fresh).await;
        paths.bare_instantiate += bare_instantiate(pre, fresh).await;
        paths.bare_warm += bare_warm(pre, warm).await;
        paths.cairn_warm += cairn_calls(host, warm_task, warm).await;
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
    let pre_of = |path: &Path| {
        let component: Component = host.engine().load(path).unwrap().component;
        bare_pre(&engine, &component)
    };
    let (rust_pre, py_pre) = (pre_of(&probe), pre_of(&py_probe));
    let (rust_fresh, rust_warm, py_fresh, py_warm) = (2000, 20_000, 100, 5000);
    let (rust, py) = runtime.block_on(async {
        let rust = measure(&host, &rust_pre, "probe", "warm-probe", rust_fresh, rust_warm).await;
        let py = measure(&host, &py_pre, "py-probe", "warm-py-probe", py_fresh, py_warm).await;
        (rust, py)
    });

    let n = |calls: u32| calls * ROUNDS;
    println!("reuse benchmark (one run; ratios are the figures to compare; {:?} allocator)", host.engine().allocator());
    for (guest, paths, fresh, warm) in
        [("Rust probe", &rust, rust_fresh, rust_warm), ("Python py-probe", &py, py_fresh, py_warm)]
    {
        let bare_fresh = us(paths.bare_fresh, n(fresh));
        let bare_instantiate = us(paths.bare_instantiate, n(fresh));
        let cairn_fresh = us(paths.cairn_fresh, n(fresh));
        let bare_warm = us(paths.bare_warm, n(warm));
        let cairn_warm = us(paths.cairn_warm, n(warm));
        println!("{guest} (echo), fresh: mean of {}, warm: mean of {}", n(fresh), n(warm));
        println!("  bare store + instantiate (drop excluded)       {bare_instantiate:>10.1} µs");
        println!("  bare store + instantiate + call + drop         {bare_fresh:>10.1} µs");
        println!("  Cairn fresh instance per call                  {cairn_fresh:>10.1} µs");
        println!("  Cairn fresh / bare fresh                       {:>10.2} x", cairn_fresh / bare_fresh);
        println!("  bare warm call on one instance                 {bare_warm:>10.2} µs");
        println!("  Cairn warm call through the pool               {cairn_warm:>10.2} µs");
        println!("  Cairn warm / bare warm                         {:>10.2} x", cairn_warm / bare_warm);
        println!("  Cairn fresh / Cairn warm                       {:>10.0} x", cairn_fresh / cairn_warm);
        println!("  bare fresh / bare warm                         {:>10.0} x", bare_fresh / bare_warm);
    }
}
