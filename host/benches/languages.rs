//! Languages benchmark: what a guest's language costs the host, one table from
//! one run, with ratios (of medians) against the Rust guest. Every timed figure
//! is the median of several timed rounds after a warm-up round, with its
//! spread (these machines are shared and noisy).
//!
//! For each fixture guest (`probe` in Rust, `py-probe` built by componentize-py,
//! `js-probe` built by componentize-js), with Cairn's engine (pooling allocator):
//!
//! - size of the component file;
//! - first compile: `CairnEngine::load` on an empty artifacts dir
//!   (`Component::new`, then the artifact is written), one per round;
//! - cached load: `CairnEngine::load` again on that dir (read and sha256 the
//!   file, then mmap the precompiled artifact; the hashing share is printed too);
//! - fresh instantiate + call: new store, instantiate (from an `InstancePre`,
//!   `run` resolved once and called typed), drop; what each attempt pays
//!   without reuse;
//! - warm call: `run` called again and again on one instance; what a reused
//!   instance pays (Cairn's pool adds little to it: see `--bench reuse`).
//!
//! Run with `cargo bench -p cairn --bench languages` after `./x setup` (which builds the guests).

use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn::engine::CairnEngine;
use sha2::{Digest, Sha256};

#[path = "support/bare.rs"]
mod bare;
#[path = "support/measure.rs"]
mod measure;
use bare::{BarePre, call_echo, fresh_call, new_store};
use measure::{Plan, Series, num, repeat, us_per};

/// Loads of the component per cached-load round.
const LOADS: u64 = 20;

/// Rounds of each figure.
struct Plans {
    compile: Plan,
    load: Plan,
    calls: Plan,
}

/// Calls per round.
#[derive(Clone, Copy)]
struct Calls {
    fresh: u64,
    warm: u64,
}

/// One guest's figures (µs).
struct Row {
    guest: &'static str,
    size_bytes: u64,
    compile: Series,
    cached_load: Series,
    read_and_hash: Series,
    fresh_call: Series,
    warm_call: Series,
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples")
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    scratch: &Path,
    plans: &Plans,
    (guest, path, calls): (&'static str, &Path, Calls),
) -> Row {
    let size_bytes = std::fs::metadata(path).unwrap().len();

    let mut dirs = 0;
    let compile = repeat(plans.compile, || {
        dirs += 1;
        let engine = CairnEngine::new(scratch.join(format!("{guest}-artifacts-{dirs}"))).unwrap();
        let started = Instant::now();
        let loaded = engine.load(path).unwrap();
        let took = us_per(started.elapsed(), 1);
        assert!(!loaded.from_cache);
        took
    });

    let engine = CairnEngine::new(scratch.join(format!("{guest}-artifacts-1"))).unwrap();
    let component = engine.load(path).unwrap().component;
    let (mut cached_load, mut read_and_hash) = (Series::new(), Series::new());
    for round in plans.load.rounds() {
        let started = Instant::now();
        for _ in 0..LOADS {
            assert!(engine.load(path).unwrap().from_cache);
        }
        cached_load.add(round, us_per(started.elapsed(), LOADS));
        // What of the cached load is reading and hashing the file (the artifact's key).
        let started = Instant::now();
        for _ in 0..LOADS {
            std::hint::black_box(Sha256::digest(std::fs::read(path).unwrap()));
        }
        read_and_hash.add(round, us_per(started.elapsed(), LOADS));
    }

    let pre = BarePre::new(engine.engine(), &component);
    let (fresh_call, warm_call) = runtime.block_on(async {
        let (mut fresh, mut warm) = (Series::new(), Series::new());
        for round in plans.calls.rounds() {
            let started = Instant::now();
            for _ in 0..calls.fresh {
                fresh_call(&pre).await;
            }
            fresh.add(round, us_per(started.elapsed(), calls.fresh));

            let mut store = new_store(pre.engine());
            let run = pre.instantiate(&mut store).await;
            call_echo(&mut store, &run).await; // the first call pays the guest's lazy set-up
            let started = Instant::now();
            for _ in 0..calls.warm {
                call_echo(&mut store, &run).await;
            }
            warm.add(round, us_per(started.elapsed(), calls.warm));
        }
        (fresh, warm)
    });

    Row { guest, size_bytes, compile, cached_load, read_and_hash, fresh_call, warm_call }
}

/// A figure of µs in a readable unit.
fn human(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", num(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", num(us / 1e3))
    } else {
        format!("{} µs", num(us))
    }
}

/// `median [low–high] (ratio x)`.
fn cell(figure: &Series, base: &Series) -> String {
    let (low, high) = figure.spread();
    format!(
        "{} [{}–{}] ({}x)",
        human(figure.median()),
        num_like(low, figure),
        num_like(high, figure),
        ratio(figure, base)
    )
}

/// `v` in the unit `human` picks for `figure`'s median, without the unit.
fn num_like(v: f64, figure: &Series) -> String {
    let m = figure.median();
    num(if m >= 1e6 {
        v / 1e6
    } else if m >= 1e3 {
        v / 1e3
    } else {
        v
    })
}

fn ratio(figure: &Series, base: &Series) -> String {
    let r = figure.median() / base.median();
    if r < 10.0 { format!("{r:.1}") } else { format!("{r:.0}") }
}

fn main() {
    let guests = [
        ("Rust (probe)", examples().join("components/probe.wasm"), Calls { fresh: 500, warm: 5000 }),
        ("Python (py-probe)", examples().join("components/py-probe.wasm"), Calls { fresh: 100, warm: 2000 }),
        ("JavaScript (js-probe)", examples().join("components/js-probe.wasm"), Calls { fresh: 200, warm: 2000 }),
    ];
    for (_, path, _) in &guests {
        assert!(path.is_file(), "{} is missing: build the guests first (./x setup)", path.display());
    }
    let plans = Plans { compile: Plan::new(1, 3), load: Plan::new(1, 7), calls: Plan::new(1, 7) };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let rows: Vec<Row> = guests
        .iter()
        .map(|(guest, path, calls)| measure(&runtime, scratch.path(), &plans, (guest, path, *calls)))
        .collect();

    let base = &rows[0];
    println!(
        "languages benchmark (Cairn's engine, {:?} allocator): median [spread] (ratio of medians against the Rust row)",
        CairnEngine::new(scratch.path().join("allocator-probe")).unwrap().allocator()
    );
    println!("first compile: {}, one compile per round", plans.compile.describe());
    println!("cached load: {}, mean of {LOADS} loads per round", plans.load.describe());
    let calls: Vec<String> =
        guests.iter().map(|(guest, _, c)| format!("{guest} {} fresh, {} warm", c.fresh, c.warm)).collect();
    println!("calls (bare wasmtime, typed): {}; per round: {}", plans.calls.describe(), calls.join("; "));
    let header = ["guest", "size", "first compile", "cached load", "fresh instantiate + call", "warm call"];
    let mut table: Vec<[String; 6]> = vec![header.map(str::to_owned)];
    for row in &rows {
        let size = row.size_bytes as f64 / base.size_bytes as f64;
        let size = if size < 10.0 { format!("{size:.1}") } else { format!("{size:.0}") };
        table.push([
            row.guest.to_owned(),
            format!("{} KiB ({size}x)", row.size_bytes / 1024),
            cell(&row.compile, &base.compile),
            cell(&row.cached_load, &base.cached_load),
            cell(&row.fresh_call, &base.fresh_call),
            cell(&row.warm_call, &base.warm_call),
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
            "{}: reading and hashing the file takes {} (median), its cached load {}",
            row.guest,
            human(row.read_and_hash.median()),
            human(row.cached_load.median()),
        );
    }
    for row in &rows[1..] {
        let (warm, fresh) = (row.warm_call.median(), row.fresh_call.median());
        println!(
            "{}: a warm call costs {:.1}% of a fresh instantiate + call ({} saved per call by reusing an instance)",
            row.guest,
            100.0 * warm / fresh,
            human((fresh - warm).max(0.0)),
        );
    }
}
