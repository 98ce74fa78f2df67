//! Fan-out benchmark: one parent run (the `probe` fixture in `fanout` mode)
//! submits N trivial children (`probe` echo) through `tasks.submit`, then
//! waits for all. Each child is a run of its own: a record created and
//! finished in the redb store, a submission journaled durably in the
//! parent, an attempt on a warm instance of a pooled environment. Prints
//! wall time, children per second and the process's peak RSS during a run
//! (`VmHWM`, reset before each run), each the median of several timed runs
//! after a warm-up run, with its spread.
//!
//! Run with `cargo bench -p cairn --bench fanout [-- N]` (default 10,000) after `./x setup`.

use std::time::Instant;

use cairn::manifest::Manifest;
use cairn::model::{CallKind, RunStatus};
use cairn::runner::Host;
use serde_json::json;

#[path = "support/measure.rs"]
mod measure;
#[path = "support/probe.rs"]
mod probe;
use measure::{Plan, Series, per_second};
use probe::scratch_project;

/// A line of /proc/self/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?.trim_start_matches(':').trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .unwrap_or(0)
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS; false where
/// the kernel does not allow it (the peak is then the process's).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn main() {
    let children: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let (_scratch, manifest) = scratch_project(&format!(
        r#"
        [environments.driver]
        resources = {{ timeout = "30m", max_output = "64MiB", max_children = {children}, max_descendants = {children}, max_handles = {handles} }}
        [environments.workers]
        reuse = {{ replicas = 2, concurrency = 16, queue_timeout = "30m" }}

        [tasks.parent]
        component = {{probe}}
        environment = "driver"
        [tasks.child]
        component = {{probe}}
        environment = "workers"
        "#,
        // Every pending child is a handle of the parent's until it is gathered.
        handles = (children + 1024).max(16_384),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let input = json!({"mode": "fanout", "task": "child", "count": children, "child": {"mode": "echo", "i": null}});
    let plan = Plan::new(1, 5);
    let (mut wall, mut rate) = (Series::new(), Series::new());
    let (mut before, mut peak, mut growth) = (Series::new(), Series::new(), Series::new());
    let mut per_round_peak = true;
    let (host, rss_before) = runtime.block_on(async {
        let host = Host::open(Manifest::load(&manifest).unwrap()).unwrap();
        host.start_environment(host.tenant(), "driver").await;
        host.start_environment(host.tenant(), "workers").await;
        let rss_before = status_kib("VmRSS");
        for round in plan.rounds() {
            per_round_peak &= reset_peak_rss();
            let rss = status_kib("VmRSS") as f64 / 1024.0;
            let started = Instant::now();
            let run = host.run("parent", &input.to_string()).await.unwrap();
            let took = started.elapsed();
            assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
            let output: serde_json::Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
            assert_eq!(output["failed"], 0, "{output}");
            let journaled =
                host.store().journal_of(&run.id).unwrap().iter().filter(|e| e.key.kind == CallKind::Child).count();
            assert_eq!(journaled as u64, children, "every submission is in the parent's journal");
            wall.add(round, took.as_secs_f64());
            rate.add(round, per_second(children, took));
            let hwm = status_kib("VmHWM") as f64 / 1024.0;
            before.add(round, rss);
            peak.add(round, hwm);
            growth.add(round, hwm - rss);
        }
        (host, rss_before)
    });
    let pool = host.pools().into_iter().map(|p| p.stats()).find(|s| s.environment == "workers").unwrap();
    println!("fan-out benchmark: each figure the {}", plan.describe());
    println!("  children per run              {children}");
    println!("  wall time                     {}", wall.show("s"));
    println!("  children per second           {}", rate.show("/s"));
    println!("  RSS before the first run      {:.0} MiB", rss_before as f64 / 1024.0);
    println!("  RSS before a run              {}", before.show("MiB"));
    if per_round_peak {
        println!("  peak RSS during a run         {}", peak.show("MiB"));
        println!("  its growth during the run     {}", growth.show("MiB"));
    } else {
        println!("  peak RSS of the process       {}  (VmHWM cannot be reset here)", peak.show("MiB"));
    }
    println!(
        "  pool, all runs: {} instances made, {} reuses, at most {} busy at once",
        pool.instantiations, pool.reuses, pool.peak_busy
    );
}
