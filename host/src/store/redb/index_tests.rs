//! The run indexes and task counts against the truth: random operations on a
//! real store, then every kind of listing and the counts compared with what a
//! full scan of the same runs gives; and a file written by the schema-1
//! release, migrated on open.

use std::collections::BTreeMap;

use super::*;
use crate::model::{AttemptRecord, Failure, FailureKind, TaskStats};
use crate::store::prelude::*;
use crate::store::{Lineage, RunFilter};

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TASKS: [&str; 3] = ["alpha", "beta", "gamma"];
const STATUSES: [RunStatus; 4] = [RunStatus::Pending, RunStatus::Running, RunStatus::Succeeded, RunStatus::Failed];

/// What a full scan of `runs` answers for `filter`: newest first, after the cursor, up to the limit.
fn scanned(runs: &BTreeMap<String, RunRecord>, filter: &RunFilter) -> Vec<String> {
    runs.values()
        .rev()
        .filter(|r| filter.before.as_ref().is_none_or(|b| r.id < *b))
        .filter(|r| filter.task.as_ref().is_none_or(|t| *t == r.task))
        .filter(|r| filter.status.is_none_or(|s| s == r.status))
        .filter(|r| match &filter.lineage {
            Lineage::Any => true,
            Lineage::TopLevel => r.parent.is_none(),
            Lineage::ChildrenOf(p) => r.parent.as_ref() == Some(p),
        })
        .take(filter.limit.unwrap_or(usize::MAX))
        .map(|r| r.id.clone())
        .collect()
}

fn counted(runs: &BTreeMap<String, RunRecord>) -> BTreeMap<String, TaskStats> {
    let mut stats: BTreeMap<String, TaskStats> = BTreeMap::new();
    for run in runs.values() {
        let entry = stats.entry(run.task.clone()).or_default();
        *entry = entry.plus(TaskStats::of(run));
    }
    stats
}

fn attempt(number: u32, task: &str, failed: bool) -> AttemptRecord {
    AttemptRecord {
        number,
        started_at_ms: 0,
        finished_at_ms: 0,
        error: failed.then(|| Failure::new(FailureKind::Trap, "t", true)),
        llm_live: 0,
        llm_replayed: 0,
        trace_replayed: 0,
        http_live: 0,
        http_replayed: 0,
        task: Some(task.into()),
        not_counted: false,
        host: None,
    }
}

/// Every filter worth asking of `runs`.
fn filters(runs: &BTreeMap<String, RunRecord>, rng: &mut Rng) -> Vec<RunFilter> {
    let ids: Vec<&String> = runs.keys().collect();
    let mut lineages = vec![Lineage::Any, Lineage::TopLevel];
    if !ids.is_empty() {
        lineages.push(Lineage::ChildrenOf(ids[rng.below(ids.len())].clone()));
    }
    let mut out = Vec::new();
    for lineage in lineages {
        for status in [None].into_iter().chain(STATUSES.map(Some)) {
            for task in [None, Some(TASKS[rng.below(3)].to_owned())] {
                let before = (rng.below(2) == 0 && !ids.is_empty()).then(|| ids[rng.below(ids.len())].clone());
                let limit = [None, Some(1), Some(3)][rng.below(3)];
                out.push(RunFilter { task: task.clone(), status, lineage: lineage.clone(), before, limit });
            }
        }
    }
    out
}

async fn check(store: &RedbStore, runs: &BTreeMap<String, RunRecord>, rng: &mut Rng, seed: u64) {
    let tenant = Tenant::default();
    for filter in filters(runs, rng) {
        let listed: Vec<String> = store.list_runs(&tenant, &filter).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(listed, scanned(runs, &filter), "seed {seed}, filter {filter:?}");
    }
    let stats: BTreeMap<String, TaskStats> = store.task_stats(&tenant).unwrap().into_iter().collect();
    assert_eq!(stats, counted(runs), "seed {seed}: task counts");
    // Paging through everything with a cursor gives every run once, newest first.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let filter = RunFilter { before: before.take(), limit: Some(4), ..Default::default() };
        let page = store.list_runs(&tenant, &filter).unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id.clone());
        paged.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(paged, runs.keys().rev().cloned().collect::<Vec<_>>(), "seed {seed}: paging");
}

#[tokio::test]
async fn indexes_answer_what_a_full_scan_answers_after_random_operations() {
    for seed in [1u64, 7, 42, 2026] {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        let mut rng = Rng(seed);
        let mut runs: BTreeMap<String, RunRecord> = BTreeMap::new();
        for step in 0..300u32 {
            let ids: Vec<String> = runs.keys().cloned().collect();
            match rng.below(10) {
                // Create, sometimes as a child of an existing run.
                0..=4 => {
                    let id = format!("0190{step:08}-{seed}");
                    let mut run =
                        RunRecord::new(id.clone(), Tenant::default(), TASKS[rng.below(3)].into(), "{}".into());
                    if !ids.is_empty() && rng.below(3) == 0 {
                        run.parent = Some(ids[rng.below(ids.len())].clone());
                    }
                    run.status = STATUSES[rng.below(2)];
                    store.create_run(&run).await.unwrap();
                    runs.insert(id, run);
                }
                // Finish or fail one, with retries, a fallback, a cache hit or a degraded answer.
                5..=7 if !ids.is_empty() => {
                    let mut run = runs[&ids[rng.below(ids.len())]].clone();
                    run.status = STATUSES[rng.below(4)];
                    let retries = rng.below(3) as u32;
                    run.attempts = (1..=retries + 1).map(|n| attempt(n, &run.task, n <= retries)).collect();
                    run.degraded = rng.below(4) == 0;
                    run.cached_from = (rng.below(5) == 0).then(|| "earlier".into());
                    run.lease = None;
                    store.update_run(&run, &run.fence("host")).await.unwrap();
                    runs.insert(run.id.clone(), run);
                }
                // Claim one (a resumed run turns running).
                8 if !ids.is_empty() => {
                    let id = &ids[rng.below(ids.len())];
                    if let Some(claimed) =
                        store.claim_run(&Tenant::default(), id, "host", u64::MAX, 0, true).await.unwrap()
                    {
                        runs.insert(id.clone(), claimed);
                    }
                }
                // Delete one.
                _ if !ids.is_empty() => {
                    let id = &ids[rng.below(ids.len())];
                    assert!(store.delete_run(&Tenant::default(), id).await.unwrap());
                    runs.remove(id);
                }
                _ => {}
            }
            if step % 50 == 49 {
                check(&store, &runs, &mut rng, seed).await;
            }
        }
        check(&store, &runs, &mut rng, seed).await;
    }
}

#[tokio::test]
async fn a_store_written_by_the_schema_1_release_is_migrated_on_open() {
    // Written by `cairn` before the indexes (schema 1): the report refiner, a
    // batch driver with two children, a writer that fell back after retries,
    // and two failed probes.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/store-v1.redb");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.redb");
    std::fs::copy(&fixture, &path).unwrap();
    let tenant = Tenant::default();
    let everything = {
        let store = RedbStore::open(&path).unwrap();
        let all = store.list_runs(&tenant, &RunFilter::default()).unwrap();
        assert_eq!(all.len(), 7);
        let runs: BTreeMap<String, RunRecord> = all.into_iter().map(|r| (r.id.clone(), r)).collect();
        let mut rng = Rng(3);
        check(&store, &runs, &mut rng, 0).await;
        let stats: BTreeMap<String, TaskStats> = store.task_stats(&tenant).unwrap().into_iter().collect();
        // What `cairn status` of the schema-1 release printed for this file.
        let expect = |runs, succeeded, failed, retries, degraded| TaskStats {
            runs,
            succeeded,
            failed,
            cancelled: 0,
            retries,
            degraded,
            cached: 0,
        };
        assert_eq!(stats["report-refiner"], expect(3, 3, 0, 0, 0));
        assert_eq!(stats["batch-driver"], expect(1, 1, 0, 0, 0));
        assert_eq!(stats["writer"], expect(1, 1, 0, 2, 1));
        assert_eq!(stats["probe"], expect(2, 0, 2, 0, 0));
        let parent = runs.values().find(|r| r.task == "batch-driver").unwrap();
        let children = RunFilter { lineage: Lineage::ChildrenOf(parent.id.clone()), ..Default::default() };
        assert_eq!(store.list_runs(&tenant, &children).unwrap().len(), 2);
        assert_eq!(store.journal_of(&parent.id).unwrap().len(), 3, "a group and two children");
        runs
    };
    // Reopened: already version 2, the same answers.
    let store = RedbStore::open(&path).unwrap();
    let again: BTreeMap<String, RunRecord> =
        store.list_runs(&tenant, &RunFilter::default()).unwrap().into_iter().map(|r| (r.id.clone(), r)).collect();
    assert_eq!(again, everything);
    let txn = store.db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let version: u64 = decode("meta", meta.get("schema_version").unwrap().unwrap().value()).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}
