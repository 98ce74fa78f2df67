//! Startup benchmark. Every figure is the median of several timed rounds after
//! a warm-up round, with its spread; ratios are ratios of medians from the same
//! run (these machines are shared and noisy):
//!
//! 1. compiling the report refiner vs loading it from the precompiled-artifact cache;
//! 2. a fresh instance + call of a trivial guest (`probe`, mode `echo`), per call:
//!    - bare wasmtime on its fastest path: the component pre-instantiated, `run`
//!      resolved once and called as a typed function; store + instantiate + call
//!      + drop, with Cairn's engine (pooling allocator) and with a default engine;
//!    - Cairn's attempt alone (`PreparedTask::call`: run directory, journal
//!      opened, captured stdio, limits, epoch deadline; no run record), in an
//!      existing run directory and in a new one;
//!    - Cairn's whole run as a user pays it (`Host::run`, what `cairn run` calls:
//!      the run record created durably with the host's lease, the lease's
//!      heartbeat, the journal, the attempt in a new run directory, the record
//!      finished durably, the directory removed), for `echo` and for a run that
//!      makes one journaled LLM call (the embedded mock, no latency).
//!
//! Run with `./x bench` (or `cargo bench -p cairn --bench startup` after `./x setup`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn::engine::CairnEngine;
use cairn::manifest::Manifest;
use cairn::model::RunStatus;
use cairn::runner::{Host, PreparedTask};
use wasmtime::Engine;
use wasmtime::component::Component;

#[path = "support/bare.rs"]
mod bare;
#[path = "support/measure.rs"]
mod measure;
use bare::{BarePre, ECHO, fresh_call};
use measure::{Plan, Series, repeat, us_per};

/// Bare wasmtime: `n` × (fresh store, instantiate, typed call, drop), µs per call.
async fn bare_calls(pre: &BarePre, n: u64) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        fresh_call(pre).await;
    }
    us_per(started.elapsed(), n)
}

/// Cairn's attempt alone: `n` calls of a prepared task (in run `run`'s
/// directory, or each in a new one), µs per call.
async fn attempts(task: &PreparedTask<'_>, run: Option<&str>, n: u64) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        task.call(ECHO, run).await.unwrap();
    }
    us_per(started.elapsed(), n)
}

/// Cairn's whole run: `n` × `Host::run`, µs per run.
async fn runs(host: &Host, task: &str, input: &str, n: u64) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        let run = host.run(task, input).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    }
    us_per(started.elapsed(), n)
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

    // 1. Compile vs cached load: each compile round on an empty artifacts directory.
    let compile_plan = Plan::new(1, 5);
    let mut dirs = 0;
    let compile = repeat(compile_plan, || {
        dirs += 1;
        let engine = CairnEngine::new(scratch.path().join(format!("artifacts-{dirs}"))).unwrap();
        let started = Instant::now();
        let loaded = engine.load(&refiner).unwrap();
        let took = us_per(started.elapsed(), 1);
        assert!(!loaded.from_cache);
        took
    });
    let engine = CairnEngine::new(scratch.path().join("artifacts-1")).unwrap();
    let loads = 20;
    let load_plan = Plan::new(1, 9);
    let load = repeat(load_plan, || {
        let started = Instant::now();
        for _ in 0..loads {
            assert!(engine.load(&refiner).unwrap().from_cache);
        }
        us_per(started.elapsed(), loads)
    });

    // 2. Fresh instance per call.
    let project = scratch.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let manifest_path = project.join("cairn.toml");
    std::fs::write(
        &manifest_path,
        format!(
            "[llm.providers.mock]\nkind = \"mock\"\nlatency = \"0ms\"\n\n[tasks.probe]\ncomponent = {:?}\n",
            probe.display().to_string()
        ),
    )
    .unwrap();
    let host = runtime.block_on(async { Host::open(Manifest::load(&manifest_path).unwrap()).unwrap() });
    let same = BarePre::new(host.engine().engine(), &host.engine().load(&probe).unwrap().component);
    let default_engine = Engine::default();
    let default = BarePre::new(&default_engine, &Component::from_file(&default_engine, &probe).unwrap());
    let one_llm_call = r#"{"mode":"llm-calls","calls":1}"#;
    // Calls per round: many of the cheap paths, fewer of those that mkdir and fsync.
    let (fast, new_dirs, whole_runs) = (2000, 200, 100);
    let plan = Plan::new(1, 11);
    let mut bare_default = Series::new();
    let mut bare_same = Series::new();
    let mut attempt_dir = Series::new();
    let mut attempt_new_dir = Series::new();
    let mut run_echo = Series::new();
    let mut run_llm = Series::new();
    let bench_run = "0190bench-0000-7000-8000-000000000000";
    runtime.block_on(async {
        let task = host.prepare_task("probe").await.unwrap().unwrap();
        for round in plan.rounds() {
            bare_default.add(round, bare_calls(&default, fast).await);
            bare_same.add(round, bare_calls(&same, fast).await);
            attempt_dir.add(round, attempts(&task, Some(bench_run), fast).await);
            attempt_new_dir.add(round, attempts(&task, None, new_dirs).await);
            run_echo.add(round, runs(&host, "probe", ECHO, whole_runs).await);
            run_llm.add(round, runs(&host, "probe", one_llm_call, whole_runs).await);
        }
    });

    println!("startup benchmark: each figure the {}", plan.describe());
    println!("allocator: {:?}", host.engine().allocator());
    println!("refiner component: {} KiB", std::fs::metadata(&refiner).unwrap().len() / 1024);
    println!("  compile (Component::new + write artifact)        {}  ({})", compile.show_us(), compile_plan.describe());
    println!("  load from artifact cache (mmap), mean of {loads}      {}  ({})", load.show_us(), load_plan.describe());
    println!("  compile / cached load                            {}", compile.ratio(&load));
    println!(
        "trivial guest (probe echo), fresh instance per call; µs per call, per round the mean of {fast} calls ({new_dirs} in new directories, {whole_runs} whole runs):"
    );
    println!("  bare wasmtime, default engine                    {}", bare_default.show("µs"));
    println!("  bare wasmtime, Cairn's engine (pooling)          {}", bare_same.show("µs"));
    println!("  Cairn attempt alone, existing run directory      {}", attempt_dir.show("µs"));
    println!("  Cairn attempt alone, new run directory           {}", attempt_new_dir.show("µs"));
    println!("  Cairn whole run (Host::run), echo                {}", run_echo.show("µs"));
    println!("  Cairn whole run (Host::run), 1 journaled call    {}", run_llm.show("µs"));
    println!("ratios of medians (per-round spread):");
    println!("  attempt, existing dir / bare (same engine)       {}", attempt_dir.ratio(&bare_same));
    println!("  attempt, new dir / bare (same engine)            {}", attempt_new_dir.ratio(&bare_same));
    println!("  whole run, echo / bare (same engine)             {}", run_echo.ratio(&bare_same));
    println!("  whole run, 1 journaled call / bare (same engine) {}", run_llm.ratio(&bare_same));
    println!("  whole run, echo / attempt, existing dir          {}", run_echo.ratio(&attempt_dir));
    println!("  bare (default engine) / bare (same engine)       {}", bare_default.ratio(&bare_same));
}
