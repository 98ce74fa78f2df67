//! Several `cairn worker` processes sharing one PostgreSQL store (a private
//! cluster the test run starts): runs spread over them, survive `kill -9` of
//! a worker without repeating a completed LLM call, and a worker that stalls
//! past its lease (SIGSTOP) writes nothing to the runs others took over.
//! Children, retries and cancels go through the store too: a parent's
//! children run on other workers, a retry waits released, a cancel reaches
//! every worker; and the workers ride out a restart of the server.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::model::{RunRecord, RunStatus, Tenant};
use cairn::runner::RunOptions;
use cairn::store::RunFilter;
use cairn::store::prelude::*;

use crate::support::guests::cairn_bin;
use crate::support::llm_server::{Fault, LlmServer, Script};
use crate::support::postgres::PrivateCluster;
use crate::support::project::{API_KEY, Project, REFINER, REFINER_CALLS, TOPIC, refiner_script};

fn runs_wanted() -> usize {
    std::env::var("CAIRN_WORKER_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(1000)
}

/// A worker process, killed when dropped (a failed test leaves none behind).
struct Worker(Child);

impl std::ops::Deref for Worker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Worker {
    /// SIGTERM, then its exit status (a worker drains and exits 0).
    fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait().unwrap()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `cairn worker` of `project`, its stderr kept in a file beside it.
fn worker(project: &Project, name: &str, concurrency: usize, lease: &str) -> Worker {
    let log = std::fs::File::create(project.path().join(format!("{name}.log"))).unwrap();
    Worker(
        Command::new(cairn_bin())
            .arg("--manifest")
            .arg(&project.manifest)
            .args(["worker", "--concurrency", &concurrency.to_string(), "--lease", lease, "-v"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// The project's store (the one its manifest names).
fn store_of(project: &Project) -> std::sync::Arc<dyn Store> {
    cairn::runner::open_store(&cairn::manifest::Manifest::load(&project.manifest).unwrap()).unwrap()
}

fn worker_log(project: &Project, name: &str) -> String {
    std::fs::read_to_string(project.path().join(format!("{name}.log"))).unwrap_or_default()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn llm_records(store: &dyn Store, run_id: &str) -> usize {
    store.journal_of(run_id).unwrap().iter().filter(|e| e.key.kind == cairn::model::CallKind::Llm).count()
}

fn runs(store: &dyn Store, status: RunStatus) -> Vec<RunRecord> {
    store.list_runs(&Tenant::default(), &RunFilter { status: Some(status), ..Default::default() }).unwrap()
}

/// Queues `n` runs of `task` through a host of the project (as `cairn serve
/// --no-work` does for API submissions).
fn enqueue(project: &Project, task: &str, input: &str, n: usize) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let host = project.host();
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(host.enqueue(task, input, &RunOptions::default()).await.unwrap().id);
        }
        ids
    })
}

/// Whether `worker` holds `run`'s lease.
fn held_by(run: &RunRecord, worker: &Worker) -> bool {
    run.lease.as_ref().is_some_and(|l| l.owner.ends_with(&format!("-{}", worker.id())))
}

#[test]
fn three_workers_share_the_runs_and_survive_two_kills() {
    let n = runs_wanted();
    // The reference output: one uninterrupted run on the embedded store.
    let reference_server = LlmServer::start_blocking(refiner_script());
    let reference = Project::http(&reference_server, REFINER);
    let expected = reference.cli_json(&["run", "report-refiner", "--json", "--input", TOPIC]);
    assert_eq!(expected["status"], "succeeded", "{expected}");

    let url = cairn::store::postgres::testing::fresh_database();
    // Answers take a little while, so kills land with calls in flight.
    let server = LlmServer::start_blocking(
        refiner_script().faults((0..n * REFINER_CALLS).map(|_| Fault::Delay(Duration::from_millis(5)))),
    );
    let project = Project::http_on(&server, Some(&url), REFINER);
    let ids = enqueue(&project, "report-refiner", TOPIC, n);
    let store = store_of(&project);

    let mut workers: Vec<Worker> = (0..3).map(|i| worker(&project, &format!("w{i}"), 32, "3s")).collect();
    wait_until("a fifth of the calls", Duration::from_secs(300), || server.requests() >= n);
    workers[0].kill().unwrap(); // SIGKILL
    workers[0].wait().unwrap();
    let at_first_kill = server.requests();
    wait_until("three fifths of the calls", Duration::from_secs(300), || server.requests() >= 3 * n);
    workers[1].kill().unwrap();
    workers[1].wait().unwrap();
    let at_second_kill = server.requests();
    wait_until("every run to finish", Duration::from_secs(600), || {
        runs(store.as_ref(), RunStatus::Running).is_empty() && runs(store.as_ref(), RunStatus::Pending).is_empty()
    });

    let succeeded = runs(store.as_ref(), RunStatus::Succeeded);
    assert_eq!(succeeded.len(), n, "every run succeeded (failed: {:?})", runs(store.as_ref(), RunStatus::Failed));
    for run in &succeeded {
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(run.output.as_deref().unwrap()).unwrap(),
            expected["output"],
            "run {}: the output of an uninterrupted run",
            run.id
        );
        assert!(ids.contains(&run.id));
    }
    let resumed = succeeded
        .iter()
        .filter(|r| r.attempts.iter().any(|a| a.error.as_ref().is_some_and(|e| e.kind.as_str() == "interrupted")))
        .count();
    assert!(resumed > 0, "some runs were taken over from the killed workers");
    // Only calls in flight at a kill may be sent twice: at most a worker's concurrency per kill.
    let total = server.requests();
    assert!(
        (n * REFINER_CALLS..=n * REFINER_CALLS + 2 * 32).contains(&total),
        "{total} LLM requests for {n} runs of {REFINER_CALLS} calls (kills at {at_first_kill} and {at_second_kill})"
    );
    // Every worker did some of the work, and the survivor is listed as working.
    let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
    for run in &succeeded {
        assert_eq!(llm_records(store.as_ref(), &run.id), REFINER_CALLS, "run {}: one record per call", run.id);
    }
    for executor in store.executors().unwrap() {
        by_worker.insert(executor.id.clone(), usize::from(executor.stopped_at_ms.is_none()));
    }
    assert_eq!(by_worker.len(), 3, "three workers registered: {by_worker:?}");
    let status = project.cli_json(&["status", "--json"]);
    let listed = status["workers"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{status}");
    assert_eq!(
        listed.iter().filter(|w| w["state"] == "working").count(),
        1,
        "the two killed ones are marked: {status}"
    );
    let mut survivor = workers.pop().unwrap();
    assert!(survivor.terminate().success(), "{}", worker_log(&project, "w2"));
    assert!(store.executors().unwrap().iter().all(|e| e.stopped_at_ms.is_some()), "a clean stop is recorded");
}

#[test]
fn a_stalled_worker_writes_nothing_to_runs_taken_over_and_stops_its_attempts() {
    let url = cairn::store::postgres::testing::fresh_database();
    // Slow answers: the runs are mid-attempt when the worker stalls.
    let server =
        LlmServer::start_blocking(refiner_script().faults((0..400).map(|_| Fault::Delay(Duration::from_millis(300)))));
    let project = Project::http_on(&server, Some(&url), REFINER);
    let store = store_of(&project);
    enqueue(&project, "report-refiner", TOPIC, 4);
    let mut stalled = worker(&project, "stalled", 8, "2s");
    let stalled_id =
        |run: &RunRecord| run.lease.as_ref().is_some_and(|l| l.owner.ends_with(&format!("-{}", stalled.id())));
    wait_until("the first worker to hold the runs and make calls", Duration::from_secs(60), || {
        runs(store.as_ref(), RunStatus::Running).iter().filter(|r| stalled_id(r)).count() == 4 && server.requests() >= 4
    });
    unsafe { libc::kill(stalled.id() as i32, libc::SIGSTOP) };
    let held: Vec<RunRecord> = runs(store.as_ref(), RunStatus::Running);
    let mut other = worker(&project, "other", 8, "2s");
    wait_until("the other worker to take every run over", Duration::from_secs(60), || {
        held.iter().all(|r| {
            let now = store.get_run(&Tenant::default(), &r.id).unwrap();
            now.epoch > r.epoch && !stalled_id(&now)
        })
    });
    let woke_at = cairn::model::now_ms();
    unsafe { libc::kill(stalled.id() as i32, libc::SIGCONT) };
    wait_until("every run to finish", Duration::from_secs(120), || {
        held.iter().all(|r| store.get_run(&Tenant::default(), &r.id).unwrap().status.is_finished())
    });
    for run in &held {
        let now = store.get_run(&Tenant::default(), &run.id).unwrap();
        assert_eq!(now.status, RunStatus::Succeeded, "{now:?}");
        // The stalled worker's attempt is the one it held; nothing of that attempt was recorded after it woke.
        let stalled_attempt = run.attempts.len() as u32 + 1;
        let late: Vec<_> = store
            .journal_of(&run.id)
            .unwrap()
            .into_iter()
            .filter(|e| e.attempt == stalled_attempt && e.recorded_at_ms >= woke_at)
            .collect();
        assert!(late.is_empty(), "run {}: the stalled worker recorded {late:?} after losing its lease", run.id);
        assert_eq!(llm_records(store.as_ref(), &run.id), REFINER_CALLS);
    }
    let log = worker_log(&project, "stalled");
    assert!(
        log.contains("lost the run's lease") || log.contains("is now held by"),
        "the stalled worker noticed it lost its runs:\n{log}"
    );
    for child in [&mut stalled, &mut other] {
        assert!(child.terminate().success());
    }
}

/// A parent fanning out to children (pooled instances), each child a run of its own.
const FAN_OUT: &str = r#"
[environments.parents]
resources = { memory = "256MiB", timeout = "900s" }

[environments.children]
resources = { memory = "64MiB", timeout = "30s" }
reuse = { replicas = 2, concurrency = 8 }

[tasks.parent]
component = "{probe}"
environment = "parents"

[tasks.child]
component = "{probe}"
environment = "children"
"#;

fn children_wanted() -> usize {
    std::env::var("CAIRN_FANOUT_CHILDREN").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000)
}

#[test]
fn a_parent_on_one_worker_fans_out_to_children_on_the_others() {
    let n = children_wanted();
    let url = cairn::store::postgres::testing::fresh_database();
    let project = Project::new(&format!("store = \"{url}\"\n{FAN_OUT}"));
    let store = store_of(&project);
    let input = serde_json::json!({"mode": "fanout", "task": "child", "count": n, "child": {"mode": "sleep", "ms": 1, "i": null}});
    let parent = enqueue(&project, "parent", &input.to_string(), 1).remove(0);
    // Worker A has one slot: the parent takes it, and lends it to its children while it waits.
    let mut a = worker(&project, "a", 1, "5s");
    wait_until("worker A to claim the parent", Duration::from_secs(60), || {
        held_by(&store.get_run(&Tenant::default(), &parent).unwrap(), &a)
    });
    let mut b = worker(&project, "b", 32, "5s");
    let mut c = worker(&project, "c", 32, "5s");
    wait_until("the parent to finish", Duration::from_secs(900), || {
        store.get_run(&Tenant::default(), &parent).unwrap().status.is_finished()
    });
    let finished = store.get_run(&Tenant::default(), &parent).unwrap();
    assert_eq!(finished.status, RunStatus::Succeeded, "{finished:?}\n{}", worker_log(&project, "a"));
    let output: serde_json::Value = serde_json::from_str(finished.output.as_deref().unwrap()).unwrap();
    assert_eq!(
        (output["children"].as_u64(), output["failed"].as_u64()),
        (Some(n as u64), Some(0)),
        "{}",
        output["first_error"]
    );
    assert_eq!(finished.attempts.len(), 1, "the parent ran once: {:?}", finished.attempts);

    let filter = RunFilter { lineage: cairn::store::Lineage::ChildrenOf(parent.clone()), ..Default::default() };
    let children = store.list_runs(&Tenant::default(), &filter).unwrap();
    assert_eq!(children.len(), n, "one run per child, none twice");
    let mut ran_on: BTreeMap<String, usize> = BTreeMap::new();
    for child in &children {
        assert_eq!(child.status, RunStatus::Succeeded, "{child:?}");
        let hosts: Vec<&str> = child.attempts.iter().filter_map(|a| a.host.as_deref()).collect();
        assert_eq!(hosts.len(), 1, "child {} ran once: {:?}", child.id, child.attempts);
        *ran_on.entry(hosts[0].to_owned()).or_default() += 1;
    }
    let on = |worker: &Worker| {
        ran_on.iter().find(|(host, _)| host.ends_with(&format!("-{}", worker.id()))).map_or(0, |(_, n)| *n)
    };
    assert!(on(&b) > 0 && on(&c) > 0, "both other workers ran children: {ran_on:?}");
    assert!(on(&a) <= n / 3, "the parent's worker ran at most its share, in its one lent slot: {ran_on:?}");
    assert_eq!(on(&a) + on(&b) + on(&c), n, "{ran_on:?}");
    assert_eq!(finished.attempts[0].host.as_deref().map(|h| h.ends_with(&format!("-{}", a.id()))), Some(true));
    for worker in [&mut a, &mut b, &mut c] {
        assert!(worker.terminate().success());
    }
}

#[test]
fn a_retry_waits_released_and_any_worker_takes_it_up_when_due() {
    let url = cairn::store::postgres::testing::fresh_database();
    let server = LlmServer::start_blocking(Script::new().expect_api_key(API_KEY));
    let project = Project::http_on(
        &server,
        Some(&url),
        r#"
        [tasks.flaky]
        component = "{probe}"
        retries = { count = 2, strategy = "linear", base_delay = "4s" }
        "#,
    );
    let store = store_of(&project);
    let id = enqueue(&project, "flaky", r#"{"mode": "llm-calls", "calls": 5, "fail_after": 3}"#, 1).remove(0);
    let get = || store.get_run(&Tenant::default(), &id).unwrap();
    // Leases far longer than the test: only a released run can move to another worker in time.
    let mut a = worker(&project, "a", 4, "10m");
    wait_until("the first attempt to fail", Duration::from_secs(60), || get().attempts.len() == 1);
    let released = get();
    assert_eq!(released.status, RunStatus::Running);
    assert!(released.lease.is_none(), "no lease is held while the backoff runs: {released:?}");
    assert!(released.not_before_ms > cairn::model::now_ms(), "not runnable before its backoff ends: {released:?}");
    // The worker that ran the first attempt is stopped for good during the backoff: its
    // process stays (SIGSTOP), so nothing marks its row stopped or its leases stale.
    unsafe { libc::kill(a.id() as i32, libc::SIGSTOP) };
    let mut b = worker(&project, "b", 4, "10m");
    wait_until("the retry to finish on the other worker", Duration::from_secs(60), || get().status.is_finished());
    let done = get();
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}\n{}", worker_log(&project, "b"));
    assert_eq!(done.attempts.len(), 2, "{:?}", done.attempts);
    assert!(done.attempts[0].host.as_deref().is_some_and(|h| h.ends_with(&format!("-{}", a.id()))));
    assert!(done.attempts[1].host.as_deref().is_some_and(|h| h.ends_with(&format!("-{}", b.id()))));
    assert!(done.attempts[1].started_at_ms >= released.not_before_ms, "the retry waited out its backoff");
    assert_eq!((done.attempts[1].llm_live, done.attempts[1].llm_replayed), (2, 3), "the retry replays the first three");
    assert_eq!(server.requests(), 5, "no call was sent twice");
    unsafe { libc::kill(a.id() as i32, libc::SIGKILL) };
    a.wait().unwrap();
    assert!(b.terminate().success());
}

#[test]
fn workers_ride_out_a_postgresql_restart_and_finish_every_run() {
    let n = 100;
    let cluster = PrivateCluster::start();
    // Answers take a little while, so the restart lands with runs mid-attempt.
    let server = LlmServer::start_blocking(
        refiner_script().faults((0..n * REFINER_CALLS).map(|_| Fault::Delay(Duration::from_millis(20)))),
    );
    let project = Project::http_on(&server, Some(&cluster.url()), REFINER);
    let store = store_of(&project);
    enqueue(&project, "report-refiner", TOPIC, n);
    let mut workers: Vec<Worker> = (0..2).map(|i| worker(&project, &format!("w{i}"), 16, "20s")).collect();
    wait_until("a fifth of the calls", Duration::from_secs(120), || server.requests() >= n);
    cluster.down();
    let at_stop = server.requests();
    std::thread::sleep(Duration::from_secs(3));
    let while_down = server.requests();
    cluster.up();
    wait_until("every run to finish", Duration::from_secs(300), || {
        runs(store.as_ref(), RunStatus::Succeeded).len() + runs(store.as_ref(), RunStatus::Failed).len() == n
    });
    let succeeded = runs(store.as_ref(), RunStatus::Succeeded);
    assert_eq!(succeeded.len(), n, "every run succeeded: {:?}", runs(store.as_ref(), RunStatus::Failed));
    assert!(at_stop < n * REFINER_CALLS, "the server went down mid-run ({at_stop} calls made)");
    // A call answered while the store was away waits for its record, so the run stalls there.
    assert!(while_down <= at_stop + 2 * 16, "runs stall while their records cannot be stored");
    for run in &succeeded {
        assert_eq!(llm_records(store.as_ref(), &run.id), REFINER_CALLS, "run {}: one record per call", run.id);
    }
    assert_eq!(server.requests(), n * REFINER_CALLS, "no call was sent twice");
    let logs: String = (0..2).map(|i| worker_log(&project, &format!("w{i}"))).collect();
    assert!(logs.contains("retrying in"), "the workers saw the server go and waited for it:\n{logs}");
    for worker in &mut workers {
        assert!(worker.terminate().success());
    }
}

#[test]
fn a_cancel_reaches_children_on_other_workers_and_ends_the_queued_ones() {
    let url = cairn::store::postgres::testing::fresh_database();
    let project = Project::new(&format!("store = \"{url}\"\n{FAN_OUT}"));
    let store = store_of(&project);
    let input = serde_json::json!({"mode": "fanout", "task": "child", "count": 40, "child": {"mode": "sleep", "ms": 600_000, "i": null}});
    let parent = enqueue(&project, "parent", &input.to_string(), 1).remove(0);
    let mut a = worker(&project, "a", 1, "30s");
    wait_until("worker A to claim the parent", Duration::from_secs(60), || {
        held_by(&store.get_run(&Tenant::default(), &parent).unwrap(), &a)
    });
    let mut b = worker(&project, "b", 8, "30s");
    let mut c = worker(&project, "c", 8, "30s");
    let filter = RunFilter { lineage: cairn::store::Lineage::ChildrenOf(parent.clone()), ..Default::default() };
    let children = || store.list_runs(&Tenant::default(), &filter).unwrap();
    wait_until("B and C to be busy with children", Duration::from_secs(60), || {
        let all = children();
        let held = |w: &Worker| all.iter().filter(|r| held_by(r, w)).count();
        all.len() == 40 && held(&b) == 8 && held(&c) == 8
    });
    // Long leases: only the notice (or a heartbeat 10 s on) can reach the holders in time.
    let cancelled = project.cli_json(&["runs", "cancel", &parent, "--json"]);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    wait_until("every child to end", Duration::from_secs(8), || children().iter().all(|r| r.status.is_finished()));
    for child in children() {
        assert_eq!(child.status, RunStatus::Cancelled, "{child:?}");
    }
    let ran = children().iter().filter(|r| !r.attempts.is_empty()).count();
    // The 16 running were stopped where they ran; of the queued ones, only a few that a
    // freed slot took up before their own request arrived can have started.
    assert!((16..40).contains(&ran), "{ran} of 40 children started");
    for worker in [&mut a, &mut b, &mut c] {
        assert!(worker.terminate().success());
    }
}

#[test]
fn failures_seen_by_two_workers_open_one_shared_breaker() {
    let url = cairn::store::postgres::testing::fresh_database();
    let server = LlmServer::start_blocking(
        Script::new().expect_api_key(API_KEY).faults((0..10).map(|_| Fault::Delay(Duration::from_millis(300)))),
    );
    let project = Project::http_on(
        &server,
        Some(&url),
        r#"
        [tasks.fragile]
        component = "{probe}"
        retries = 0
        circuit_breaker = { failure_threshold = 4, success_threshold = 1, timeout = "10m" }
        "#,
    );
    let store = store_of(&project);
    let failing = r#"{"mode": "llm-calls", "calls": 1, "fail_after": 1}"#;
    let (mut a, mut b) = (worker(&project, "a", 1, "30s"), worker(&project, "b", 1, "30s"));
    // One slot each and a slow call: the first two runs go one to each worker.
    let first = enqueue(&project, "fragile", failing, 2);
    wait_until("each worker to hold one run", Duration::from_secs(60), || {
        let held: Vec<RunRecord> = first.iter().map(|id| store.get_run(&Tenant::default(), id).unwrap()).collect();
        held.iter().any(|r| held_by(r, &a)) && held.iter().any(|r| held_by(r, &b))
    });
    let second = enqueue(&project, "fragile", failing, 2);
    let all: Vec<String> = first.into_iter().chain(second).collect();
    let finished = || all.iter().map(|id| store.get_run(&Tenant::default(), id).unwrap()).collect::<Vec<_>>();
    wait_until("four failures", Duration::from_secs(60), || finished().iter().all(|r| r.status.is_finished()));
    let hosts: std::collections::BTreeSet<String> =
        finished().iter().flat_map(|r| r.attempts.iter().filter_map(|a| a.host.clone())).collect();
    assert_eq!(hosts.len(), 2, "the failures were seen by both workers: {hosts:?}");
    let breakers = store.breakers(&Tenant::default()).unwrap();
    assert_eq!(breakers.len(), 1, "{breakers:?}");
    let breaker: serde_json::Value = serde_json::from_slice(&breakers[0].1).unwrap();
    assert_eq!((breaker["state"]["state"].as_str(), breaker["opened"].as_u64()), (Some("open"), Some(1)), "{breaker}");
    // Whichever worker takes the next run fails it fast, without calling the model.
    std::thread::sleep(Duration::from_millis(1500));
    let next = enqueue(&project, "fragile", failing, 1).remove(0);
    wait_until("the next run to end", Duration::from_secs(60), || {
        store.get_run(&Tenant::default(), &next).unwrap().status.is_finished()
    });
    let next = store.get_run(&Tenant::default(), &next).unwrap();
    let kind = next.attempts[0].error.as_ref().map(|e| e.kind.as_str().to_owned());
    assert_eq!(kind.as_deref(), Some("circuit-open"), "{next:?}");
    assert_eq!(server.requests(), 4, "the run after the breaker opened asked nothing");
    for worker in [&mut a, &mut b] {
        assert!(worker.terminate().success());
    }
}

#[test]
fn a_lone_one_slot_worker_runs_a_parent_and_its_children() {
    let url = cairn::store::postgres::testing::fresh_database();
    let project = Project::new(&format!("store = \"{url}\"\n{FAN_OUT}"));
    let store = store_of(&project);
    let input = serde_json::json!({"mode": "fanout", "task": "child", "count": 5, "child": {"mode": "sleep", "ms": 1, "i": null}});
    let parents = enqueue(&project, "parent", &input.to_string(), 2);
    // One slot and two parents: each waiting parent lends its slot to its children.
    let mut only = worker(&project, "only", 1, "30s");
    wait_until("both parents to finish", Duration::from_secs(60), || {
        parents.iter().all(|p| store.get_run(&Tenant::default(), p).unwrap().status.is_finished())
    });
    for parent in &parents {
        let run = store.get_run(&Tenant::default(), parent).unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}\n{}", worker_log(&project, "only"));
    }
    assert!(only.terminate().success());
}
