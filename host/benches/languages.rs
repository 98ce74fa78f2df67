//! Languages benchmark: what a guest's language costs the host, one table from
//! one run, with ratios against the Rust guest (these machines are noisy).
//!
//! For each fixture guest (`probe` in Rust, `py-probe` built by componentize-py,
//! `js-probe` built by componentize-js), with Cairn's engine (pooling allocator):
//!
//! - size of the component file;
//! - first compile: `CairnEngine::load` on an empty artifacts dir
//!   (`Component::new`, then the artifact is written);
//! - cached load: `CairnEngine::load` again on that dir (read and sha256 the
//!   file, then mmap the precompiled artifact; the hashing share is printed too);
//! - fresh instantiate + call: new store, instantiate (from an `InstancePre`),
//!   call `run` with the echo input, drop; what each attempt pays without reuse;
//! - warm call: `run` called again and again on one instance; what a reused
//!   instance pays (Cairn's pool adds little to it: see `--bench reuse`).
//!
//! Run with `cargo bench -p cairn --bench languages` after `./x setup` (which builds the guests).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn::engine::CairnEngine;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre};

#[path = "support/bare.rs"]
mod bare;
use bare::{Bare, bare_pre, call_echo, new_store};

const COMPILE_ROUNDS: u32 = 2;
const LOAD_ROUNDS: u32 = 20;
const FRESH_CALLS: u32 = 500;
const WARM_CALLS: u32 = 5000;

/// One guest's figures.
struct Row {
    guest: &'static str,
    size_bytes: u64,
    compile: Duration,
    cached_load: Duration,
    read_and_hash: Duration,
    fresh_call: Duration,
    warm_call: Duration,
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples")
}

fn mean(total: Duration, n: u32) -> Duration {
    total / n
}

/// A new store and instance, one echo call, then both dropped: an attempt without reuse.
async fn fresh_instance_call(pre: &InstancePre<Bare>) {
    let mut store = new_store(pre.engine());
    let instance = pre.instantiate_async(&mut store).await.unwrap();
    let run = instance.get_func(&mut store, "run").expect("the guest exports run");
    call_echo(&mut store, &run).await;
}

fn measure(runtime: &tokio::runtime::Runtime, scratch: &Path, guest: &'static str, path: &Path) -> Row {
    let size_bytes = std::fs::metadata(path).unwrap().len();

    let mut compile = Duration::ZERO;
    for round in 0..COMPILE_ROUNDS {
        let engine = CairnEngine::new(scratch.join(format!("{guest}-artifacts-{round}"))).unwrap();
        let started = Instant::now();
        let loaded = engine.load(path).unwrap();
        compile += started.elapsed();
        assert!(!loaded.from_cache);
    }

    let engine = CairnEngine::new(scratch.join(format!("{guest}-artifacts-0"))).unwrap();
    let mut cached_load = Duration::ZERO;
    let mut component: Option<Component> = None;
    for _ in 0..LOAD_ROUNDS {
        let started = Instant::now();
        let loaded = engine.load(path).unwrap();
        cached_load += started.elapsed();
        assert!(loaded.from_cache);
        component = Some(loaded.component);
    }
    let component = component.unwrap();
    // What of the cached load is reading and hashing the file (the artifact's key).
    let started = Instant::now();
    for _ in 0..LOAD_ROUNDS {
        std::hint::black_box(Sha256::digest(std::fs::read(path).unwrap()));
    }
    let read_and_hash = mean(started.elapsed(), LOAD_ROUNDS);

    let wasm = engine.engine();
    let pre = bare_pre(wasm, &component);

    let (fresh_call, warm_call) = runtime.block_on(async {
        fresh_instance_call(&pre).await; // warm-up
        let started = Instant::now();
        for _ in 0..FRESH_CALLS {
            fresh_instance_call(&pre).await;
        }
        let fresh_total = started.elapsed();

        let mut store = new_store(wasm);
        let instance = pre.instantiate_async(&mut store).await.unwrap();
        let run = instance.get_func(&mut store, "run").expect("the guest exports run");
        call_echo(&mut store, &run).await; // the first call pays the guest's lazy set-up
        let started = Instant::now();
        for _ in 0..WARM_CALLS {
            call_echo(&mut store, &run).await;
        }
        (mean(fresh_total, FRESH_CALLS), mean(started.elapsed(), WARM_CALLS))
    });

    Row {
        guest,
        size_bytes,
        compile: mean(compile, COMPILE_ROUNDS),
        cached_load: mean(cached_load, LOAD_ROUNDS),
        read_and_hash,
        fresh_call,
        warm_call,
    }
}

/// `d` in a readable unit.
fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

fn cell(value: String, ratio: f64) -> String {
    if ratio < 10.0 { format!("{value} ({ratio:.1}x)") } else { format!("{value} ({ratio:.0}x)") }
}

fn main() {
    let guests = [
        ("Rust (probe)", examples().join("components/probe.wasm")),
        ("Python (py-probe)", examples().join("components/py-probe.wasm")),
        ("JavaScript (js-probe)", examples().join("components/js-probe.wasm")),
    ];
    for (_, path) in &guests {
        assert!(path.is_file(), "{} is missing: build the guests first (./x setup)", path.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let rows: Vec<Row> = guests.iter().map(|(guest, path)| measure(&runtime, scratch.path(), guest, path)).collect();

    let base = &rows[0];
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "languages benchmark (one run; Cairn's engine, {:?} allocator; ratio against the Rust row in parentheses)",
        CairnEngine::new(scratch.path().join("allocator-probe")).unwrap().allocator()
    );
    println!(
        "first compile: mean of {COMPILE_ROUNDS}; cached load: mean of {LOAD_ROUNDS}; fresh: mean of {FRESH_CALLS}; warm: mean of {WARM_CALLS} calls"
    );
    let header = ["guest", "size", "first compile", "cached load", "fresh instantiate + call", "warm call"];
    let mut table: Vec<[String; 6]> = vec![header.map(str::to_owned)];
    for row in &rows {
        table.push([
            row.guest.to_owned(),
            cell(format!("{} KiB", row.size_bytes / 1024), row.size_bytes as f64 / base.size_bytes as f64),
            cell(human(row.compile), ratio(row.compile, base.compile)),
            cell(human(row.cached_load), ratio(row.cached_load, base.cached_load)),
            cell(human(row.fresh_call), ratio(row.fresh_call, base.fresh_call)),
            cell(human(row.warm_call), ratio(row.warm_call, base.warm_call)),
        ]);
    }
    let widths: Vec<usize> = (0..6).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for (i, row) in table.iter().enumerate() {
        let line: Vec<String> = row.iter().zip(&widths).map(|(text, width)| format!("{text:<width$}")).collect();
        println!("| {} |", line.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("|-{}-|", rule.join("-|-"));
        }
    }
    for row in &rows {
        println!(
            "{}: reading and hashing the file is {} of its {} cached load",
            row.guest,
            human(row.read_and_hash),
            human(row.cached_load),
        );
    }
    for row in &rows[1..] {
        println!(
            "{}: a warm call costs {:.1}% of a fresh instantiate + call ({} saved per call by reusing an instance)",
            row.guest,
            100.0 * ratio(row.warm_call, row.fresh_call),
            human(row.fresh_call.saturating_sub(row.warm_call)),
        );
    }
}
