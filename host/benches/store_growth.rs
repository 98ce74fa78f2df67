//! Store growth: how the cost of everyday commands changes as the store fills.
//!
//! Fills one project's store through the store API (parents of 1,000 finished
//! children each, every child with two journaled LLM calls) to each size in
//! turn, and at each size times whole `cairn` processes, as a user pays them:
//! `status`, `runs list`, `runs show`, a 10-call `run` of the probe on the
//! mock, and a fan-out of 10,000 children; with each process's peak RSS
//! (from `wait4`). Prints every figure as a ratio to the smallest size's, and
//! the store's bytes per run. The target is flat: every ratio near 1.
//!
//! Run with `cargo bench -p cairn --bench store_growth [-- SIZE ...]` after
//! `./x setup`; the default sizes are 1,000, 100,000 and 1,000,000 runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::model::{AttemptRecord, CallKind, JournalEntry, ReplayKey, RunRecord, RunStatus, Tenant, Usage, now_ms};
use cairn::store::prelude::*;
use cairn::store::redb::RedbStore;

/// Children per filled parent.
const FAMILY: usize = 1000;
/// Writes in flight while filling: enough for group commit to batch them.
const IN_FLIGHT: usize = 512;
/// Timings per command and size (the median is reported).
const ROUNDS: usize = 15;

/// One whole process: wall time and peak RSS.
#[derive(Clone, Copy)]
struct Cost {
    wall: Duration,
    peak_kib: u64,
}

/// Runs `cairn --manifest M args…` to its end and measures it.
fn measure(cairn: &Path, manifest: &Path, args: &[&str]) -> Cost {
    let started = Instant::now();
    let child = Command::new(cairn)
        .arg("--manifest")
        .arg(manifest)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cairn starts");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for; both pointers are valid.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let wall = started.elapsed();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "cairn {args:?} failed");
    std::mem::forget(child);
    Cost { wall, peak_kib: usage.ru_maxrss as u64 }
}

fn median(mut costs: Vec<Cost>) -> Cost {
    costs.sort_by_key(|c| c.wall);
    let wall = costs[costs.len() / 2].wall;
    let peak_kib = costs.iter().map(|c| c.peak_kib).max().unwrap_or(0);
    Cost { wall, peak_kib }
}

/// A finished child run with two journaled LLM calls, as the fan-out would leave it.
fn child(parent: &str, i: usize) -> (RunRecord, Vec<JournalEntry>) {
    let id = uuid::Uuid::now_v7().to_string();
    let mut run =
        RunRecord::new(id.clone(), Tenant::default(), "probe".into(), format!(r#"{{"mode":"echo","i":{i}}}"#));
    run.status = RunStatus::Succeeded;
    run.parent = Some(parent.to_owned());
    run.finished_at_ms = Some(now_ms());
    run.output = Some(format!(r#"{{"answers":["an answer to question {i}","and another"]}}"#));
    run.usage = Usage { prompt_tokens: 24, completion_tokens: 48, cost_micros: 0 };
    run.attempts.push(AttemptRecord {
        number: 1,
        started_at_ms: run.created_at_ms,
        finished_at_ms: now_ms(),
        error: None,
        llm_live: 2,
        llm_replayed: 0,
        trace_replayed: 0,
        http_live: 0,
        http_replayed: 0,
        task: Some("probe".into()),
        not_counted: false,
        host: None,
    });
    let entries = (1..=2u32)
        .map(|n| JournalEntry {
            key: ReplayKey {
                run_id: id.clone(),
                kind: CallKind::Llm,
                name: "complete".into(),
                input_hash: format!("{:064x}", n),
                occurrence: 1,
            },
            seq: u64::from(n - 1),
            attempt: 1,
            output: r#"{"content":"a mock answer of a few words","model":"mock","usage":{"prompt_tokens":12,"completion_tokens":24}}"#.into(),
            summary: format!("mock: question {n}"),
            recorded_at_ms: now_ms(),
            duration_ms: 20,
            usage: Some(Usage { prompt_tokens: 12, completion_tokens: 24, cost_micros: 0 }),
        })
        .collect();
    (run, entries)
}

/// Adds `count` runs (parents of up to [`FAMILY`] children) to `store`.
async fn fill(store: Arc<RedbStore>, count: usize) {
    let mut left = count;
    while left > 0 {
        let mut parent = RunRecord::new(
            uuid::Uuid::now_v7().to_string(),
            Tenant::default(),
            "probe".into(),
            r#"{"mode":"fanout"}"#.into(),
        );
        parent.status = RunStatus::Succeeded;
        parent.finished_at_ms = Some(now_ms());
        parent.output = Some("{}".into());
        store.create_run(&parent).await.unwrap();
        left -= 1;
        let family = left.min(FAMILY);
        let mut writers = tokio::task::JoinSet::new();
        for i in 0..family {
            if writers.len() >= IN_FLIGHT {
                writers.join_next().await.unwrap().unwrap();
            }
            let store = store.clone();
            let parent = parent.id.clone();
            writers.spawn(async move {
                let (run, entries) = child(&parent, i);
                store.create_run(&run).await.unwrap();
                store.journal_put_all(&entries).await.unwrap();
            });
        }
        while let Some(done) = writers.join_next().await {
            done.unwrap();
        }
        left -= family;
    }
}

/// `store_growth --fill COUNT STORE`: the filling, in a process of its own,
/// so the measuring process stays small (a child's peak RSS as `wait4`
/// reports it starts from its parent's RSS at the fork).
fn fill_mode(args: &[String]) -> bool {
    let [flag, count, path] = args else { return false };
    if flag != "--fill" {
        return false;
    }
    let count: usize = count.parse().expect("a run count");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let store = Arc::new(RedbStore::open(Path::new(path)).unwrap());
    runtime.block_on(fill(store.clone(), count));
    let runs: u64 = store.task_stats(&Tenant::default()).unwrap().iter().map(|(_, s)| s.runs).sum();
    let filter = cairn::store::RunFilter { limit: Some(1), ..Default::default() };
    let last = store.list_runs(&Tenant::default(), &filter).unwrap()[0].id.clone();
    println!("{runs} {last}");
    true
}

/// Adds `count` runs to the store at `path` in a child process; returns
/// how many runs it holds then, and the newest one's id.
fn fill_in_child(path: &Path, count: usize) -> (usize, String) {
    let me = std::env::current_exe().expect("the benchmark's own path");
    let out = Command::new(me).arg("--fill").arg(count.to_string()).arg(path).output().expect("the filler starts");
    assert!(out.status.success(), "filling the store failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let (runs, last) = text.trim().split_once(' ').expect("runs and the last id");
    (runs.parse().expect("a run count"), last.to_owned())
}

/// This process's resident set, KiB.
fn own_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if fill_mode(&args) {
        return;
    }
    let sizes: Vec<usize> = {
        let given: Vec<usize> = args.iter().filter_map(|a| a.replace('_', "").parse().ok()).collect();
        if given.is_empty() { vec![1_000, 100_000, 1_000_000] } else { given }
    };
    let cairn = PathBuf::from(env!("CARGO_BIN_EXE_cairn"));
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/components/probe.wasm");
    assert!(probe.is_file(), "build the guests first: ./x setup");
    let scratch = tempfile::tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")).unwrap();
    let manifest = scratch.path().join("cairn.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
            [llm.providers.mock]
            kind = "mock"
            latency = "0ms"

            [environments.workers]
            reuse = {{ replicas = 2, concurrency = 16, queue_timeout = "30m" }}

            [tasks.probe]
            component = {probe:?}
            [tasks.child]
            component = {probe:?}
            environment = "workers"
            "#,
            probe = probe.display().to_string()
        ),
    )
    .unwrap();
    let store_path = scratch.path().join(".cairn/cairn.redb");
    let commands: Vec<(&str, Vec<String>)> = vec![
        ("status", vec!["status".into()]),
        ("runs list", vec!["runs".into(), "list".into()]),
        ("runs show", vec!["runs".into(), "show".into(), "{last}".into()]),
        (
            "run (10 LLM calls)",
            vec!["run".into(), "probe".into(), "--input".into(), r#"{"mode":"llm-calls","calls":10}"#.into()],
        ),
        (
            "fan-out of 10,000",
            vec![
                "run".into(),
                "probe".into(),
                "--quiet".into(),
                "--input".into(),
                r#"{"mode":"fanout","task":"child","count":10000}"#.into(),
            ],
        ),
    ];
    let mut table: Vec<(usize, u64, Vec<Cost>)> = Vec::new();
    let mut filled = 0;
    for &size in &sizes {
        let started = Instant::now();
        let (runs_now, last) = fill_in_child(&store_path, size.saturating_sub(filled));
        let fill_took = started.elapsed();
        let bytes = std::fs::metadata(&store_path).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "filled to {runs_now} runs in {:.1}s; store {:.1} MiB, {} bytes per run",
            fill_took.as_secs_f64(),
            bytes as f64 / (1 << 20) as f64,
            bytes / runs_now.max(1) as u64
        );
        let mut costs = Vec::new();
        for (_, args) in &commands {
            let args: Vec<String> = args.iter().map(|a| a.replace("{last}", &last)).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let rounds = if args.contains(&"--quiet") { 1 } else { ROUNDS };
            costs.push(median((0..rounds).map(|_| measure(&cairn, &manifest, &args)).collect()));
        }
        // The runs the commands made count from here on.
        filled = fill_in_child(&store_path, 0).0;
        table.push((runs_now, bytes / runs_now.max(1) as u64, costs));
    }
    let base = &table[0].2;
    println!("\nstore growth: each command as a whole process; ratios against the first size (target: flat)");
    println!("(the measuring process's own RSS, a floor under every peak: {:.1} MiB)", own_rss_kib() as f64 / 1024.0);
    for (i, (name, _)) in commands.iter().enumerate() {
        println!("\n{name}");
        println!("  {:>10}  {:>10}  {:>7}  {:>10}  {:>7}", "runs", "wall ms", "ratio", "peak MiB", "ratio");
        for (runs, _, costs) in &table {
            let c = costs[i];
            println!(
                "  {:>10}  {:>10.1}  {:>6.2}x  {:>10.1}  {:>6.2}x",
                runs,
                c.wall.as_secs_f64() * 1e3,
                c.wall.as_secs_f64() / base[i].wall.as_secs_f64(),
                c.peak_kib as f64 / 1024.0,
                c.peak_kib as f64 / base[i].peak_kib.max(1) as f64
            );
        }
    }
    println!("\nbytes per run:");
    for (runs, per_run, _) in &table {
        println!("  {runs:>10}  {per_run}");
    }
}
