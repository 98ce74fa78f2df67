//! Startup benchmark, figures as ratios from one run (these machines are noisy):
//!
//! 1. compiling the report refiner vs loading it from the precompiled-artifact cache;
//! 2. a fresh instance + call of a trivial guest (`probe`, mode `echo`) through
//!    Cairn's attempt path (run directory, journal, captured stdio, limits,
//!    epoch deadline) vs bare wasmtime doing store + instantiate + call + drop
//!    on the same component, with the same engine and with a default engine.
//!
//! Run with `./x bench` (or `cargo bench -p cairn --bench startup` after `./x setup`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn::engine::CairnEngine;
use cairn::manifest::Manifest;
use cairn::runner::Host;
use wasmtime::Engine;
use wasmtime::component::Component;

#[path = "support/bare.rs"]
mod bare;
use bare::{bare_pre, call_echo, new_store};

fn mean(total: Duration, n: u32) -> f64 {
    total.as_secs_f64() * 1e6 / n as f64
}

/// Bare wasmtime: pre-instantiated component, fresh store, instantiate, call `run`, drop.
async fn bare_calls(engine: &Engine, component: &Component, n: u32) -> Duration {
    let pre = bare_pre(engine, component);
    let started = Instant::now();
    for _ in 0..n {
        let mut store = new_store(engine);
        let instance = pre.instantiate_async(&mut store).await.unwrap();
        let run = instance.get_func(&mut store, "run").expect("probe exports run");
        call_echo(&mut store, &run).await;
    }
    started.elapsed()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let refiner = examples().join("components/report-refiner.wasm");
    let probe = examples().join("components/probe.wasm");
    assert!(refiner.is_file() && probe.is_file(), "build the guests first: ./x setup");

    // 1. Compile vs cached load.
    let compile_rounds = 3;
    let load_rounds = 50;
    let mut compile = Duration::ZERO;
    for round in 0..compile_rounds {
        let engine = CairnEngine::new(scratch.path().join(format!("artifacts-{round}"))).unwrap();
        let started = Instant::now();
        let loaded = engine.load(&refiner).unwrap();
        compile += started.elapsed();
        assert!(!loaded.from_cache);
    }
    let engine = CairnEngine::new(scratch.path().join("artifacts-0")).unwrap();
    let started = Instant::now();
    for _ in 0..load_rounds {
        assert!(engine.load(&refiner).unwrap().from_cache);
    }
    let load = started.elapsed();
    let compile_us = mean(compile, compile_rounds);
    let load_us = mean(load, load_rounds);

    // 2. Fresh instance per call.
    let project = scratch.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let manifest_path = project.join("cairn.toml");
    std::fs::write(&manifest_path, format!("[tasks.probe]\ncomponent = {:?}\n", probe.display().to_string())).unwrap();
    let host = Host::open(Manifest::load(&manifest_path).unwrap()).unwrap();
    let probe_component = host.engine().load(&probe).unwrap().component;
    let default_engine = Engine::default();
    let probe_default = Component::from_file(&default_engine, &probe).unwrap();
    let calls = 2000;
    let rounds = 5;
    let (mut cairn_t, mut cairn_warm_dir, mut bare_same, mut bare_default) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let bench_run = "0190bench-0000-7000-8000-000000000000";
    runtime.block_on(async {
        // Warm up every path once.
        host.invoke_once("probe", r#"{"mode":"echo"}"#, None).await.unwrap().unwrap();
        host.invoke_once("probe", r#"{"mode":"echo"}"#, Some(bench_run)).await.unwrap().unwrap();
        bare_calls(host.engine().engine(), &probe_component, 10).await;
        bare_calls(&default_engine, &probe_default, 10).await;
        for _ in 0..rounds {
            let started = Instant::now();
            for _ in 0..calls {
                host.invoke_once("probe", r#"{"mode":"echo"}"#, None).await.unwrap().unwrap();
            }
            cairn_t += started.elapsed();
            let started = Instant::now();
            for _ in 0..calls {
                host.invoke_once("probe", r#"{"mode":"echo"}"#, Some(bench_run)).await.unwrap().unwrap();
            }
            cairn_warm_dir += started.elapsed();
            bare_same += bare_calls(host.engine().engine(), &probe_component, calls).await;
            bare_default += bare_calls(&default_engine, &probe_default, calls).await;
        }
    });
    let n = calls * rounds;
    let (cairn_us, same_us, default_us) = (mean(cairn_t, n), mean(bare_same, n), mean(bare_default, n));
    let cairn_dir_us = mean(cairn_warm_dir, n);

    println!("startup benchmark (one run; ratios are the figures to compare)");
    println!("allocator: {:?}", host.engine().allocator());
    println!("refiner component: {} KiB", std::fs::metadata(&refiner).unwrap().len() / 1024);
    println!("  compile (Component::new + write artifact)  {compile_us:>10.1} µs  (mean of {compile_rounds})");
    println!("  load from artifact cache (mmap)             {load_us:>10.1} µs  (mean of {load_rounds})");
    println!("  compile / cached load                       {:>10.1} x", compile_us / load_us);
    println!("trivial guest (probe echo), fresh instance per call, mean of {n}:");
    println!("  bare wasmtime, default engine               {default_us:>10.1} µs");
    println!("  bare wasmtime, Cairn's engine (pooling)     {same_us:>10.1} µs");
    println!("  Cairn attempt, existing run directory       {cairn_dir_us:>10.1} µs");
    println!("  Cairn attempt, new run directory (mkdir)    {cairn_us:>10.1} µs");
    println!("  Cairn (existing dir) / bare (same engine)   {:>10.2} x", cairn_dir_us / same_us);
    println!("  Cairn (existing dir) / bare (default)       {:>10.2} x", cairn_dir_us / default_us);
    println!("  Cairn (new dir) / bare (same engine)        {:>10.2} x", cairn_us / same_us);
}
