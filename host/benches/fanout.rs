//! Fan-out benchmark: one parent run (the `probe` fixture in `fanout` mode)
//! submits N trivial children (`probe` echo) through `tasks.submit`, then
//! waits for all. Each child is a run of its own: a record created and
//! finished in the redb store, a submission journaled durably in the
//! parent, an attempt on a warm instance of a pooled environment. Prints
//! wall time, children per second and the process's peak RSS.
//!
//! Run with `cargo bench -p cairn --bench fanout [-- N]` (default 10,000) after `./x setup`.

use std::path::Path;
use std::time::Instant;

use cairn::manifest::Manifest;
use cairn::model::{CallKind, RunStatus};
use cairn::runner::Host;
use serde_json::json;

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

fn main() {
    let children: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/components/probe.wasm");
    assert!(probe.is_file(), "build the guests first: ./x setup");
    let scratch = tempfile::tempdir().unwrap();
    let manifest = scratch.path().join("cairn.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
            [environments.driver]
            resources = {{ timeout = "30m", max_output = "64MiB" }}
            [environments.workers]
            reuse = {{ replicas = 2, concurrency = 16, queue_timeout = "30m" }}

            [tasks.parent]
            component = {probe:?}
            environment = "driver"
            [tasks.child]
            component = {probe:?}
            environment = "workers"
            "#,
            probe = probe.display().to_string()
        ),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let input = json!({"mode": "fanout", "task": "child", "count": children, "child": {"mode": "echo", "i": null}});
    let (host, rss_before, took, run) = runtime.block_on(async {
        let host = Host::open(Manifest::load(&manifest).unwrap()).unwrap();
        host.start_environment("driver").await;
        host.start_environment("workers").await;
        let rss_before = status_kib("VmRSS");
        let started = Instant::now();
        let run = host.run("parent", &input.to_string()).await.unwrap();
        (host, rss_before, started.elapsed(), run)
    });
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let output: serde_json::Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    assert_eq!(output["failed"], 0, "{output}");
    let journaled = host.store().journal_of(&run.id).unwrap().iter().filter(|e| e.key.kind == CallKind::Child).count();
    assert_eq!(journaled as u64, children, "every submission is in the parent's journal");
    let pool = host.pools().into_iter().map(|p| p.stats()).find(|s| s.environment == "workers").unwrap();
    let peak_mib = status_kib("VmHWM") as f64 / 1024.0;
    println!("fan-out benchmark (one run)");
    println!("  children                      {children}");
    println!("  wall time                     {:.2} s", took.as_secs_f64());
    println!("  children per second           {:.0}", children as f64 / took.as_secs_f64());
    println!(
        "  peak RSS (VmHWM)              {peak_mib:.0} MiB (RSS before the run: {:.0} MiB)",
        rss_before as f64 / 1024.0
    );
    println!(
        "  pool: {} instances made, {} reuses, at most {} busy at once",
        pool.instantiations, pool.reuses, pool.peak_busy
    );
}
