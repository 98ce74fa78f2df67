//! Power loss, simulated. A `kill -9` leaves the page cache to finish the
//! host's writes; a power cut does not. These tests run the real store (redb
//! and the journal's write-ahead log) on a simulated disk that records every
//! write and sync, then rebuild the disk as a restart would find it after a
//! cut at thousands of points: every write no completed sync covered is
//! dropped, or torn sector by sector. After each cut the store must open,
//! hold every record it acknowledged before the cut, show no half record,
//! and let the interrupted runs finish with the output an uninterrupted run
//! gives. Failed syncs and a full disk are injected the same way, under a
//! real host running a real guest.
//!
//! The number of cut points is bounded for CI (seeded, reproducible);
//! `./x crash --points N` checks more (`CAIRN_CRASH_POINTS`, `CAIRN_CRASH_SEED`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use cairn::model::{AttemptRecord, CallKind, Failure, JournalEntry, ReplayKey, RunRecord, RunStatus, Tenant};
use cairn::store::prelude::*;
use cairn::store::redb::{Backing, RedbStore, SIM_WAL, Tuning};
use cairn::store::sim_disk::{CutPoints, Fault, FaultOn, Loss, SimDisk};
use cairn::store::{RunFilter, StoreError};
use sha2::{Digest, Sha256};

const RUNS: usize = 6;
const STEPS: u32 = 24;
const OWNER: &str = "power-test";

/// Small sizes, so that a short workload checkpoints (durable commit, then
/// an emptied log) several times.
fn tuning() -> Tuning {
    Tuning { checkpoint_bytes: 40 << 10, cache_bytes: 2 << 20 }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The answer of a step: deterministic, so an uninterrupted run's output is known.
fn answer(run: &str, step: u32) -> String {
    format!("\"{run} step {step} {}\"", "x".repeat(900 + (step as usize * 97) % 1200))
}

fn key(run: &str, step: u32) -> ReplayKey {
    ReplayKey {
        run_id: run.into(),
        kind: if step % 4 == 3 { CallKind::Trace } else { CallKind::Llm },
        name: "complete".into(),
        input_hash: format!("step-{step}"),
        occurrence: 0,
    }
}

fn expected_output(run: &str) -> String {
    let mut hash = Sha256::new();
    for step in 0..STEPS {
        hash.update(answer(run, step).as_bytes());
    }
    format!("\"{}\"", hex::encode(hash.finalize()))
}

/// What the workload wrote, and what the store acknowledged when.
#[derive(Default)]
struct Ledger {
    /// Acknowledged journal records: (key, operations done on the disk by then).
    journal: Vec<(ReplayKey, u64)>,
    /// Acknowledged run records: (run, attempts in it, finished, operations done by then).
    runs: Vec<(String, usize, bool, u64)>,
}

/// One run of the workload: its journal (LLM and trace records, enough to
/// checkpoint), a run-record update every few steps, and its finish. On a
/// store that already holds the run, it resumes: recorded steps are read
/// back, and only the others are "called" (returned as live).
async fn work(
    store: Arc<RedbStore>,
    disk: Arc<SimDisk>,
    id: String,
    ledger: Arc<Mutex<Ledger>>,
) -> Result<Vec<u32>, StoreError> {
    let tenant = Tenant::default();
    let mut run = match store.get_run(&tenant, &id) {
        Ok(run) => run,
        Err(StoreError::NoSuchRun(_)) => {
            let run = RunRecord::new(id.clone(), tenant.clone(), "t".into(), "{}".into());
            store.create_run(&run).await?;
            ledger.lock().unwrap().runs.push((id.clone(), 0, false, disk.ops()));
            run
        }
        Err(e) => return Err(e),
    };
    if run.status.is_finished() {
        return Ok(Vec::new());
    }
    let mut live = Vec::new();
    let mut hash = Sha256::new();
    for step in 0..STEPS {
        let key = key(&id, step);
        let output = match store.journal_get(&key)? {
            Some(entry) => entry.output,
            None => {
                let output = answer(&id, step);
                let entry = JournalEntry {
                    key: key.clone(),
                    seq: step as u64,
                    attempt: 1,
                    output: output.clone(),
                    summary: String::new(),
                    recorded_at_ms: 0,
                    duration_ms: 0,
                    usage: None,
                };
                store.journal_put(&entry, None).await?;
                ledger.lock().unwrap().journal.push((key, disk.ops()));
                live.push(step);
                output
            }
        };
        hash.update(output.as_bytes());
        if step % 6 == 5 {
            let number = run.attempts.len() as u32 + 1;
            run.attempts.push(AttemptRecord::not_attempted(number, None, Failure::host("a step of the test"), 0, 0));
            store.update_run(&run, &run.fence(OWNER)).await?;
            ledger.lock().unwrap().runs.push((id.clone(), run.attempts.len(), false, disk.ops()));
        }
    }
    run.status = RunStatus::Succeeded;
    run.output = Some(format!("\"{}\"", hex::encode(hash.finalize())));
    store.update_run(&run, &run.fence(OWNER)).await?;
    ledger.lock().unwrap().runs.push((id.clone(), run.attempts.len(), true, disk.ops()));
    Ok(live)
}

fn run_ids() -> Vec<String> {
    (0..RUNS).map(|i| format!("run-{i}")).collect()
}

/// Runs every run of the workload at once on `store`; returns the steps called live, by run.
fn work_all(
    store: &Arc<RedbStore>,
    disk: &Arc<SimDisk>,
    ledger: &Arc<Mutex<Ledger>>,
) -> Result<HashMap<String, Vec<u32>>, StoreError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for id in run_ids() {
            let (store, disk, ledger) = (store.clone(), disk.clone(), ledger.clone());
            tasks.spawn(async move { work(store, disk, id.clone(), ledger).await.map(|live| (id, live)) });
        }
        let mut live = HashMap::new();
        while let Some(done) = tasks.join_next().await {
            let (id, steps) = done.unwrap()?;
            live.insert(id, steps);
        }
        Ok(live)
    })
}

/// What one cut left, checked: returns how many acknowledged records it checked.
fn check_cut(disk: Arc<SimDisk>, ops: u64, ledger: &Ledger, resume: bool, what: &str) -> usize {
    let store = Arc::new(
        RedbStore::open_on(Backing::Simulated(disk.clone()), tuning())
            .unwrap_or_else(|e| panic!("{what}: the store does not open after the cut: {e}")),
    );
    let tenant = Tenant::default();
    let mut checked = 0;
    // Every record found is whole and the one written; every acknowledged one is found.
    let acked: BTreeSet<String> = ledger.journal.iter().filter(|(_, at)| *at <= ops).map(|(k, _)| k.encode()).collect();
    for id in run_ids() {
        for step in 0..STEPS {
            let key = key(&id, step);
            match store.journal_get(&key) {
                Ok(Some(entry)) => {
                    assert_eq!(entry.output, answer(&id, step), "{what}: {} holds a wrong record", key.encode())
                }
                Ok(None) => {
                    assert!(!acked.contains(&key.encode()), "{what}: acknowledged record {} is lost", key.encode())
                }
                Err(e) => panic!("{what}: {} cannot be read: {e}", key.encode()),
            }
        }
    }
    checked += acked.len();
    let mut present = 0;
    for id in run_ids() {
        let found = match store.get_run(&tenant, &id) {
            Ok(run) => Some(run),
            Err(StoreError::NoSuchRun(_)) => None,
            Err(e) => panic!("{what}: run {id} cannot be read: {e}"),
        };
        for (_, attempts, finished, _) in ledger.runs.iter().filter(|(run, _, _, at)| *run == id && *at <= ops) {
            checked += 1;
            let run = found.as_ref().unwrap_or_else(|| panic!("{what}: acknowledged run {id} is lost"));
            assert!(run.attempts.len() >= *attempts, "{what}: run {id} lost an acknowledged update");
            if *finished {
                assert_eq!(run.status, RunStatus::Succeeded, "{what}: run {id} lost its acknowledged finish");
            }
        }
        if let Some(run) = &found {
            present += 1;
            if run.status == RunStatus::Succeeded {
                assert_eq!(run.output.as_deref(), Some(expected_output(&id).as_str()), "{what}: run {id}'s output");
            }
        }
    }
    // The indexes agree with the records.
    let listed: usize = [RunStatus::Running, RunStatus::Succeeded]
        .into_iter()
        .map(|status| {
            store.list_runs(&tenant, &RunFilter { status: Some(status), ..RunFilter::default() }).unwrap().len()
        })
        .sum();
    assert_eq!(listed, present, "{what}: the status index lists {listed} runs, the store holds {present}");
    let counted: u64 = store.task_stats(&tenant).unwrap().iter().map(|(_, stats)| stats.runs).sum();
    assert_eq!(counted as usize, present, "{what}: task counts say {counted} runs, the store holds {present}");

    if resume {
        // The interrupted runs finish, with the output an uninterrupted run gives,
        // and no acknowledged step is called again.
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let live = work_all(&store, &disk, &ledger).unwrap_or_else(|e| panic!("{what}: resuming failed: {e}"));
        for id in run_ids() {
            let run = store.get_run(&tenant, &id).unwrap();
            assert_eq!(run.status, RunStatus::Succeeded, "{what}: run {id} after resuming");
            assert_eq!(run.output.as_deref(), Some(expected_output(&id).as_str()), "{what}: run {id}'s output");
            for step in live.get(&id).into_iter().flatten() {
                assert!(
                    !acked.contains(&key(&id, *step).encode()),
                    "{what}: acknowledged step {step} of {id} was called again"
                );
            }
        }
    }
    checked
}

#[test]
fn power_cuts_at_thousands_of_points_lose_no_acknowledged_record() {
    let points = env_u64("CAIRN_CRASH_POINTS", 2400);
    let seed = env_u64("CAIRN_CRASH_SEED", 17);
    let started = std::time::Instant::now();
    let (mut cuts, mut torn, mut checked, mut resumed, mut rounds) = (0u64, 0u64, 0usize, 0usize, 0u64);
    while cuts < points {
        // One workload, recorded; its threads interleave differently each round.
        let disk = SimDisk::recording();
        let store = Arc::new(RedbStore::open_on(Backing::Simulated(disk.clone()), tuning()).unwrap());
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let live = work_all(&store, &disk, &ledger).unwrap();
        assert_eq!(live.values().map(Vec::len).sum::<usize>(), RUNS * STEPS as usize, "a fresh store calls every step");
        drop(store);
        let trace = disk.take_trace();
        let ledger = Arc::into_inner(ledger).unwrap().into_inner().unwrap();
        eprintln!(
            "round {rounds}: {RUNS} runs, {} journal records, {} run-record writes; {} disk operations, {} syncs, the log emptied {} times",
            ledger.journal.len(),
            ledger.runs.len(),
            trace.len(),
            trace.syncs().len(),
            trace.emptied(SIM_WAL)
        );
        // A cut after every operation of the workload, each both ways: writes no
        // sync covered dropped, and torn sector by sector (seeded).
        let mut replay = CutPoints::new(&trace);
        for ops in 0..=trace.len() {
            for loss in [Loss::Dropped, Loss::Torn] {
                if cuts >= points {
                    break;
                }
                let cut_seed = seed ^ (rounds << 48) ^ (ops << 8);
                let what = format!(
                    "round {rounds}, cut after {ops} of {} operations ({loss:?}, seed {cut_seed})",
                    trace.len()
                );
                let resume = cuts % 20 == 0;
                checked += check_cut(replay.disk_at(ops, loss, cut_seed), ops, &ledger, resume, &what);
                cuts += 1;
                torn += u64::from(loss == Loss::Torn);
                resumed += usize::from(resume);
            }
        }
        rounds += 1;
    }
    eprintln!(
        "power loss: {cuts} cut points in {rounds} workloads ({} dropped, {torn} torn; seed {seed}), {resumed} of them resumed to the end, checked in {:.1?}: {checked} acknowledged records verified, 0 lost",
        cuts - torn,
        started.elapsed()
    );
}

#[test]
fn a_failed_sync_or_full_disk_halts_the_store_and_a_restart_recovers() {
    for (on, nth, no_space) in [(FaultOn::Sync, 5, false), (FaultOn::Write, 9, true), (FaultOn::Sync, 40, false)] {
        let disk = SimDisk::new();
        let store = Arc::new(RedbStore::open_on(Backing::Simulated(disk.clone()), tuning()).unwrap());
        disk.inject(Fault { file: SIM_WAL.into(), on, nth, no_space });
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let error = work_all(&store, &disk, &ledger).expect_err("the injected fault stops the workload");
        let what = format!("{on:?} #{nth} of the log fails (no space: {no_space})");
        assert!(matches!(&error, StoreError::Halted { full, .. } if *full == no_space), "{what}: {error}");
        assert!(error.to_string().contains(SIM_WAL), "{what}: the error names the file: {error}");
        // Nothing more is taken, reads still work.
        let later = RunRecord::new("later".into(), Tenant::default(), "t".into(), "{}".into());
        let refused = tokio::runtime::Runtime::new().unwrap().block_on(store.create_run(&later)).unwrap_err();
        assert!(refused.is_halted(), "{what}: {refused}");
        assert!(store.halted().is_some());
        store.get_run(&Tenant::default(), "run-0").unwrap();
        let log = disk.contents(SIM_WAL);
        drop(store);
        // (redb may still close its own file cleanly; nothing it holds is unacknowledged.)
        assert_eq!(disk.contents(SIM_WAL), log, "{what}: the failed log is not touched again, not even at close");
        let ledger = Arc::into_inner(ledger).unwrap().into_inner().unwrap();
        let acked = ledger.journal.len() + ledger.runs.len();
        for loss in [Loss::Dropped, Loss::Torn] {
            check_cut(
                disk.after_power_loss(loss, nth),
                u64::MAX,
                &ledger,
                true,
                &format!("{what}, restart after {loss:?}"),
            );
        }
        eprintln!(
            "{what}: halted after {acked} acknowledged writes; a restart recovered them all and finished every run"
        );
    }
}

#[test]
fn damage_inside_the_log_refuses_to_open_and_store_repair_keeps_every_intact_record() {
    use cairn::store::wal::{self, Wal};
    let project = crate::support::project::Project::new("[tasks.probe]\ncomponent = \"{probe}\"\n");
    let store_path = project.path().join(".cairn/cairn.redb");
    drop(project.store()); // create it
    // A host that logged three groups of records and lost power before applying them.
    let log_path = store_path.with_extension("wal");
    let entries: Vec<JournalEntry> = (0..3)
        .map(|step| JournalEntry {
            key: key("damaged", step),
            seq: step as u64,
            attempt: 1,
            output: answer("damaged", step),
            summary: String::new(),
            recorded_at_ms: 0,
            duration_ms: 0,
            usage: None,
        })
        .collect();
    let (mut log, _) = Wal::open(Box::new(wal::open_file(&log_path).unwrap()), "log").unwrap();
    for entry in &entries {
        log.append(&[&Wal::payload(std::slice::from_ref(entry)).unwrap()]).unwrap();
    }
    drop(log);
    // A bit flips inside the second frame.
    let mut bytes = std::fs::read(&log_path).unwrap();
    let second = bytes.len() / 3 + 40;
    bytes[second] ^= 0x04;
    std::fs::write(&log_path, &bytes).unwrap();

    let refused = project.cli(&["runs", "list"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a damaged log must not open: {stderr}");
    assert!(
        stderr.contains("is damaged at byte") && stderr.contains("cairn store repair") && stderr.contains("cairn.wal"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&log_path).unwrap(), bytes, "refusing to open changes nothing");

    let repaired = project.cli(&["store", "repair"]);
    let said = String::from_utf8_lossy(&repaired.stderr);
    assert!(repaired.status.success(), "{said}");
    assert!(said.contains("kept 2 record(s), 1 intact frame(s) of them after the damage"), "{said}");
    let saved: Vec<_> = std::fs::read_dir(project.path().join(".cairn"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("cairn.wal.damaged-"))
        .collect();
    assert_eq!(saved.len(), 1, "the damaged log is kept");
    assert_eq!(std::fs::read(saved[0].path()).unwrap(), bytes);

    let store = project.store();
    let found: Vec<Option<JournalEntry>> = entries.iter().map(|e| store.journal_get(&e.key).unwrap()).collect();
    assert_eq!(
        found,
        vec![Some(entries[0].clone()), None, Some(entries[2].clone())],
        "the intact records, before and after the damage"
    );
    drop(store);
    let again = project.cli(&["store", "repair"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("needs no repair"));
}

/// The refiner under a real host on a simulated disk, with the project's
/// LLM key stored in it.
async fn refiner_host(
    project: &crate::support::project::Project,
    disk: &Arc<SimDisk>,
) -> (Arc<RedbStore>, Arc<cairn::runner::Host>) {
    let store = Arc::new(RedbStore::open_on(Backing::Simulated(disk.clone()), tuning()).unwrap());
    store.put_secret(&Tenant::default(), "local-key", crate::support::project::API_KEY).await.unwrap();
    let manifest = cairn::manifest::Manifest::load(&project.manifest).unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    (store, cairn::runner::Host::with_store(manifest, dyn_store).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_disk_fails_ends_the_attempt_interrupted_and_a_restart_finishes_the_run() {
    use crate::support::llm_server::LlmServer;
    use crate::support::project::{Project, REFINER, TOPIC, refiner_script};
    // The reference: an uninterrupted run on a healthy simulated disk.
    let reference_server = LlmServer::start(refiner_script());
    let project = Project::http(&reference_server, REFINER);
    let (_, host) = refiner_host(&project, &SimDisk::new()).await;
    let expected = host.run("report-refiner", TOPIC).await.unwrap();
    assert_eq!(expected.status, RunStatus::Succeeded);
    let calls = reference_server.requests();

    // A failed sync of the k-th log write, a full disk, and power cuts at several points.
    enum Trouble {
        Fault(u64, bool),
        PowerCut(u64, Loss),
    }
    for trouble in [
        Trouble::Fault(1, false),
        Trouble::Fault(3, false),
        Trouble::Fault(4, true),
        Trouble::PowerCut(30, Loss::Torn),
        Trouble::PowerCut(60, Loss::Dropped),
        Trouble::PowerCut(90, Loss::Torn),
    ] {
        let server = LlmServer::start(refiner_script());
        let project = Project::http(&server, REFINER);
        let disk = SimDisk::new();
        let (store, host) = refiner_host(&project, &disk).await;
        let what = match trouble {
            Trouble::Fault(k, full) => {
                let nth = disk.syncs(SIM_WAL) + k;
                let on = if full { FaultOn::Write } else { FaultOn::Sync };
                disk.inject(Fault { file: SIM_WAL.into(), on, nth: if full { k } else { nth }, no_space: full });
                format!("log {on:?} #{k} fails (disk full: {full})")
            }
            Trouble::PowerCut(after, loss) => {
                disk.power_off_after(disk.ops() + after);
                format!("power cut after {after} more disk operations ({loss:?})")
            }
        };
        let error = match host.run("report-refiner", TOPIC).await {
            Err(cairn::runner::RunnerError::Store(error)) => error,
            other => panic!("{what}: the run must stop on the store's error, not end: {other:?}"),
        };
        assert!(error.is_halted(), "{what}: {error}");
        if let Trouble::Fault(_, full) = trouble {
            assert_eq!(error.to_string().contains("the disk is full"), full, "{what}: {error}");
            assert!(error.to_string().contains(SIM_WAL), "{what}: names the file: {error}");
        }
        // Nothing more is taken, and nothing says the run failed.
        let refused = host.run("report-refiner", TOPIC).await.unwrap_err();
        assert!(refused.to_string().contains("stopped taking writes"), "{what}: {refused}");
        let seen = server.requests();
        let runs = store.list_runs(&Tenant::default(), &RunFilter::default()).unwrap();
        assert_eq!(runs.len(), 1, "{what}");
        assert_eq!(runs[0].status, RunStatus::Running, "{what}: the run is not ended");
        assert!(runs[0].attempts.iter().all(|a| a.error.is_none()), "{what}: no failed attempt is recorded");
        let run_id = runs[0].id.clone();
        drop(host);
        drop(store);

        // The restart: the disk as the cut left it, a new host, the run resumed.
        let loss = match trouble {
            Trouble::PowerCut(_, loss) => loss,
            Trouble::Fault(..) => Loss::Dropped,
        };
        let (store, host) = refiner_host(&project, &disk.after_power_loss(loss, 7)).await;
        let resumed = host.resume(host.tenant(), &run_id, true).await.unwrap();
        assert_eq!(resumed.status, RunStatus::Succeeded, "{what}: {:?}", resumed.error);
        assert_eq!(resumed.output, expected.output, "{what}: the output of an uninterrupted run");
        assert_eq!(
            resumed.attempts[0].error.as_ref().map(|e| e.kind.to_string()).as_deref(),
            Some("interrupted"),
            "{what}"
        );
        let received = server.received();
        let total = received.len();
        let repeated: Vec<usize> = (0..total).filter(|i| received[..*i].contains(&received[*i])).collect();
        eprintln!(
            "{what}: {seen} LLM requests before it, {total} in all ({calls} distinct), asked again: {repeated:?}"
        );
        assert!(
            (calls..=calls + 1).contains(&total),
            "{what}: {total} requests: every call once, plus at most the one whose record was not yet durable"
        );
        for i in repeated {
            assert_eq!(
                received[i],
                received[seen - 1],
                "{what}: only the call in flight at the failure is asked again"
            );
        }
        drop(store);
    }
}
