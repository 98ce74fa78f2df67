//! Durable runs under a real `kill -9`: resume from the journal without
//! repeating recorded calls, also when the kill lands between an answer's
//! arrival and its record; torn group commits; the cross-run cache;
//! cassettes; garbage collection.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cairn::model::{CallKind, RunStatus, Tenant};
use cairn::store::prelude::*;
use serde_json::Value;

use crate::support::guests::cairn_bin;
use crate::support::llm_server::{Fault, LlmServer};
use crate::support::project::{Project, REFINER, REFINER_CALLS, TOPIC, output_json, refiner_script};

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_killed_run_resumes_without_repeating_recorded_calls() {
    killed_runs_resume_without_repeating_recorded_calls(|| None);
}

#[test]
fn a_killed_run_resumes_without_repeating_recorded_calls_on_postgresql() {
    killed_runs_resume_without_repeating_recorded_calls(|| Some(cairn::store::postgres::testing::fresh_database()));
}

/// `cairn run` killed after each of the refiner's calls in turn, then resumed,
/// on the store `store` names (a fresh one each time; `None`: redb).
fn killed_runs_resume_without_repeating_recorded_calls(store: impl Fn() -> Option<String>) {
    // The reference: the same task, uninterrupted.
    let reference_server = LlmServer::start_blocking(refiner_script());
    let reference = Project::http(&reference_server, REFINER);
    let expected = reference.cli_json(&["run", "report-refiner", "--json", "--input", TOPIC]);
    assert_eq!(expected["status"], "succeeded", "{expected}");
    assert_eq!(reference_server.requests(), REFINER_CALLS);

    for k in 1..=REFINER_CALLS {
        // Every answer takes a while, so the kill lands with a call in flight.
        let server = LlmServer::start_blocking(
            refiner_script().faults((0..20).map(|_| Fault::Delay(Duration::from_millis(150)))),
        );
        let project = Project::http_on(&server, store().as_deref(), REFINER);
        let mut child = Command::new(cairn_bin())
            .arg("--manifest")
            .arg(&project.manifest)
            .args(["run", "report-refiner", "--json", "--input", TOPIC])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(&format!("{k} requests"), Duration::from_secs(30), || server.requests() >= k);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let seen_at_kill = server.requests();

        let running = project.cli(&["runs", "list", "--status", "running", "--json"]);
        let running = String::from_utf8_lossy(&running.stdout).into_owned();
        let run: Value =
            serde_json::from_str(running.lines().next().expect("the killed run is still running")).unwrap();
        let run_id = run["run_id"].as_str().unwrap();

        let resumed = project.cli_json(&["runs", "resume", run_id, "--json"]);
        assert_eq!(resumed["status"], "succeeded", "k={k}: {resumed}");
        assert_eq!(resumed["output"], expected["output"], "k={k}: the same output as an uninterrupted run");
        let attempts = resumed["attempts"].as_array().unwrap();
        assert_eq!(attempts[0]["error"]["kind"], "interrupted", "k={k}: {resumed}");
        let total = server.requests();
        assert!(
            (REFINER_CALLS..=REFINER_CALLS + 1).contains(&total),
            "k={k}: {total} requests; one per distinct call plus at most the one in flight at the kill ({seen_at_kill} seen then)"
        );
        let live = resumed["llm"]["calls_live"].as_u64().unwrap() as usize;
        eprintln!("k={k}: {seen_at_kill} requests at the kill, {total} in all, {live} live after resuming");
        assert_eq!(
            live,
            total - seen_at_kill,
            "k={k}: every request after the kill is one live call of the resumed run"
        );
    }
}

/// A call as the server sees it: its messages (system and user prompts).
fn call_of(body: &Value) -> String {
    body["messages"].to_string()
}

/// `kill -9 pid`.
fn sigkill(pid: u32) {
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    // SAFETY: kill(2) takes plain integers; the pid is a child of this test
    // that nobody has waited for yet, so it cannot have been reused.
    let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(killed, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
}

/// Starts `cairn ARGS` on `project`, its stdout piped.
fn spawn_cairn(project: &Project, args: &[&str]) -> Child {
    Command::new(cairn_bin())
        .arg("--manifest")
        .arg(&project.manifest)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cairn starts")
}

/// The id of the one run a killed host left running.
fn running_run(project: &Project) -> String {
    let listed = project.cli(&["runs", "list", "--status", "running", "--json"]);
    let running = String::from_utf8_lossy(&listed.stdout).into_owned();
    let Some(line) = running.lines().next() else {
        panic!("the killed run is not left running: {}", String::from_utf8_lossy(&listed.stderr));
    };
    let run: Value = serde_json::from_str(line).unwrap();
    run["run_id"].as_str().unwrap().to_owned()
}

/// The LLM calls `run_id`'s journal holds, as calls the server saw: each
/// record's answer leads back to the one call the server gave that answer.
fn journaled_calls(project: &Project, server: &LlmServer, run_id: &str) -> BTreeSet<String> {
    let mut call_answered_with: HashMap<String, String> = HashMap::new();
    for (body, answer) in server.received().iter().zip(server.answers()) {
        let answer = answer.expect("every request got a completion");
        let call = call_of(body);
        let earlier = call_answered_with.insert(answer.clone(), call.clone());
        assert!(earlier.is_none_or(|c| c == call), "two calls answered {answer:?}: the script must tell calls apart");
    }
    let store = project.store();
    let journal = store.journal_of(run_id).expect("the journal decodes after a kill");
    let mut calls = BTreeSet::new();
    for entry in journal.iter().filter(|e| e.key.kind == CallKind::Llm) {
        let response: Value = serde_json::from_str(&entry.output).unwrap();
        let content = response["content"].as_str().expect("a recorded completion has content");
        let call = call_answered_with.get(content).unwrap_or_else(|| panic!("recorded {content:?}, never answered"));
        assert!(calls.insert(call.clone()), "{call} recorded twice");
    }
    calls
}

/// What the journal held when one `kill -9` landed.
struct Kill {
    /// The run the killed host left running.
    run_id: String,
    /// Requests the server had answered.
    requests: usize,
    /// The LLM calls recorded in the journal.
    journaled: BTreeSet<String>,
    /// Whether the last answer sent was not recorded: the kill landed
    /// between the answer leaving the server and its record reaching the
    /// file (under SIGKILL a written record survives, fsynced or not).
    in_window: bool,
}

/// Takes stock after the host that `status` is the end of was killed by the
/// server right after it answered request `n`: every call asked before the
/// last one was recorded (the guest only asks its next call once it has the
/// previous answer, which it gets only once its record is written), and the
/// last one may or may not be.
fn killed_after_answer(project: &Project, server: &LlmServer, status: ExitStatus, n: usize, what: &str) -> Kill {
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}: the server killed it after answer {n}: {status:?}");
    assert_eq!(server.requests(), n, "{what}: nothing is asked after the answer that triggered the kill");
    let run_id = running_run(project);
    let journaled = journaled_calls(project, server, &run_id);
    let asked: Vec<String> = server.received().iter().map(call_of).collect();
    let last = &asked[n - 1];
    for call in &asked[..n - 1] {
        assert!(journaled.contains(call), "{what}: a call answered before the last one is not in the journal: {call}");
    }
    assert!(
        journaled.iter().all(|call| asked.contains(call)),
        "{what}: the journal records only calls the server answered"
    );
    Kill { run_id, requests: n, in_window: !journaled.contains(last), journaled }
}

/// After a kill, no call already recorded is asked again.
fn assert_no_journaled_call_asked_again(server: &LlmServer, kill: &Kill, what: &str) {
    for (i, body) in server.received().iter().enumerate().skip(kill.requests) {
        let call = call_of(body);
        assert!(
            !kill.journaled.contains(&call),
            "{what}: request {} asked again a call the journal already held at the kill: {call}",
            i + 1
        );
    }
}

// These kills aim at the gap between an LLM answer's arrival and its record:
// the test server sends `kill -9` to the host the moment it has written an
// answer to the socket, keeping the connection open. The promise checked, at
// the server: a call whose answer was recorded (so the guest could see it) is
// never asked again after a restart, and a kill costs at most the one answer
// that was in flight. A SIGKILL leaves the page cache alone, so a record the
// host had written but not yet fsynced still reaches the file: these tests
// prove that the host never acknowledges an answer to the guest before its
// record is written, and never repeats a recorded call. Losing the page cache
// (power loss) is the subject of a separate simulation of the store.

#[test]
fn a_kill_right_after_an_answer_never_repeats_a_recorded_call() {
    let reference_server = LlmServer::start_blocking(refiner_script());
    let reference = Project::http(&reference_server, REFINER);
    let expected = reference.cli_json(&["run", "report-refiner", "--json", "--input", TOPIC]);
    assert_eq!(expected["status"], "succeeded", "{expected}");
    let distinct: BTreeSet<String> = reference_server.received().iter().map(call_of).collect();
    assert_eq!((reference_server.requests(), distinct.len()), (REFINER_CALLS, REFINER_CALLS));

    let mut in_window = 0;
    for k in 1..=REFINER_CALLS {
        let what = format!("kill after answer {k}");
        let server = LlmServer::start_blocking(refiner_script());
        let project = Project::http(&server, REFINER);
        let mut child = spawn_cairn(&project, &["run", "report-refiner", "--json", "--input", TOPIC]);
        let pid = child.id();
        // Registered long before the host, still starting, can ask anything.
        server.after_answer(k, move || sigkill(pid));
        let kill = killed_after_answer(&project, &server, child.wait().unwrap(), k, &what);
        in_window += usize::from(kill.in_window);

        let resumed = project.cli_json(&["runs", "resume", &kill.run_id, "--json"]);
        assert_eq!(resumed["status"], "succeeded", "{what}: {resumed}");
        assert_eq!(resumed["output"], expected["output"], "{what}: the same output as an uninterrupted run");
        assert_eq!(resumed["attempts"][0]["error"]["kind"], "interrupted", "{what}: {resumed}");

        assert_no_journaled_call_asked_again(&server, &kill, &what);
        let asked: BTreeSet<String> = server.received().iter().map(call_of).collect();
        assert_eq!(asked, distinct, "{what}: every call of the task was answered, and no other");
        let total = server.requests();
        assert!(total <= REFINER_CALLS + 1, "{what}: {total} requests; one kill may cost one answer, no more");
        assert_eq!(
            total,
            REFINER_CALLS + usize::from(kill.in_window),
            "{what}: exactly the answer lost in the window is asked again"
        );
        let live = resumed["llm"]["calls_live"].as_u64().unwrap() as usize;
        assert_eq!(live, total - k, "{what}: every request after the kill is a live call of the resumed run");
        eprintln!(
            "{what}: {} of {k} answers recorded at the kill ({}), {total} requests in all, {live} live after resuming",
            kill.journaled.len(),
            if kill.in_window { "inside the window" } else { "after the record" },
        );
    }
    eprintln!("{in_window} of {REFINER_CALLS} kills landed between an answer's arrival and its record");
}

#[test]
fn repeated_kills_right_after_answers_cost_at_most_one_answer_each() {
    let reference_server = LlmServer::start_blocking(refiner_script());
    let reference = Project::http(&reference_server, REFINER);
    let expected = reference.cli_json(&["run", "report-refiner", "--json", "--input", TOPIC]);
    let distinct: BTreeSet<String> = reference_server.received().iter().map(call_of).collect();

    // Every host is killed right after its second answer, so each one records
    // at least its first answer and the run moves on: one run, several kills.
    let server = LlmServer::start_blocking(refiner_script());
    let project = Project::http(&server, REFINER);
    let mut child = spawn_cairn(&project, &["run", "report-refiner", "--json", "--input", TOPIC]);
    let mut kills: Vec<Kill> = Vec::new();
    let finished = loop {
        let n = server.requests() + 2;
        let pid = child.id();
        server.after_answer(n, move || sigkill(pid));
        // Either the server kills it, or it finishes the run.
        let output = child.wait_with_output().unwrap();
        if output.status.success() {
            break serde_json::from_slice::<Value>(&output.stdout).expect("the last host prints the run");
        }
        let what = format!("kill {}", kills.len() + 1);
        let kill = killed_after_answer(&project, &server, output.status, n, &what);
        eprintln!(
            "{what}: after request {n}, {} calls recorded ({})",
            kill.journaled.len(),
            if kill.in_window { "inside the window" } else { "after the record" }
        );
        child = spawn_cairn(&project, &["runs", "resume", &kill.run_id, "--json"]);
        kills.push(kill);
        assert!(kills.len() < REFINER_CALLS, "each host records at least one new call");
    };
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["output"], expected["output"], "the same output as an uninterrupted run");
    for (i, kill) in kills.iter().enumerate() {
        assert_no_journaled_call_asked_again(&server, kill, &format!("kill {}", i + 1));
    }
    let asked: BTreeSet<String> = server.received().iter().map(call_of).collect();
    assert_eq!(asked, distinct, "every call of the task was answered, and no other");
    let total = server.requests();
    let lost = kills.iter().filter(|k| k.in_window).count();
    assert!(total <= REFINER_CALLS + kills.len(), "{total} requests after {} kills", kills.len());
    assert_eq!(total, REFINER_CALLS + lost, "exactly the answers lost in the window are asked again");
    eprintln!("{} kills, {lost} inside the window, {total} requests for {REFINER_CALLS} calls", kills.len());
}

#[test]
fn a_kill_during_group_commit_loses_no_acknowledged_record() {
    for threshold in [50, 400, 1500] {
        let dir = tempfile::tempdir().unwrap();
        let store_path = dir.path().join("load.redb");
        let mut child = Command::new(cairn_bin())
            .args(["debug", "journal-load", "--runs", "200", "--calls", "50", "--print-acks", "--db"])
            .arg(&store_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = Vec::new();
        while acked.len() < threshold {
            match lines.next() {
                Some(line) => acked.push(line.unwrap()),
                None => break,
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Lines already written before the kill were acknowledged too.
        acked.extend(lines.map_while(Result::ok));
        assert!(acked.len() >= threshold.min(10_000), "threshold {threshold}: only {} acks", acked.len());

        let store = cairn::store::redb::RedbStore::open(&store_path).expect("the file opens after a kill");
        let mut total = 0;
        for i in 0..200 {
            // Every stored entry decodes: no half record is visible.
            let entries = store.journal_of(&cairn::journal::load::load_run_id(i)).expect("entries decode");
            total += entries.len();
        }
        for line in &acked {
            let mut parts = line.split_whitespace().skip(1);
            let (run, hash) = (parts.next().unwrap(), parts.next().unwrap());
            let entries = store.journal_of(run).unwrap();
            assert!(entries.iter().any(|e| e.key.input_hash == hash), "acknowledged record {line} is missing");
        }
        assert!(total >= acked.len(), "{total} stored, {} acknowledged", acked.len());
    }
}

/// A component that differs from `source` only by a custom section, so its digest changes.
fn with_custom_section(source: &std::path::Path, target: &std::path::Path) {
    let mut bytes = std::fs::read(source).unwrap();
    let name = b"cairn-test";
    let payload = b"changed";
    bytes.push(0);
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    std::fs::write(target, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_hits_misses_and_invalidation() {
    let project = Project::new(
        r#"
        [environments.cached]
        cache = "auto"

        [tasks.auto]
        component = "probe.wasm"
        environment = "cached"

        [tasks.versioned]
        component = "probe.wasm"
        cache = { version = "1" }
        "#,
    );
    let probe = &crate::support::guests::components().probe;
    std::fs::copy(probe, project.path().join("probe.wasm")).unwrap();
    let input = r#"{"mode": "echo", "n": 1}"#;
    let host = project.host();
    let first = host.run("auto", input).await.unwrap();
    assert_eq!(first.cached_from, None);
    let second = host.run("auto", r#"{ "n": 1, "mode": "echo" }"#).await.unwrap();
    assert_eq!(second.cached_from.as_deref(), Some(first.id.as_str()), "same canonical input: a hit");
    assert!(second.attempts.is_empty(), "a hit runs nothing");
    assert_eq!(output_json(&second), output_json(&first));
    let other = host.run("auto", r#"{"mode": "echo", "n": 2}"#).await.unwrap();
    assert_eq!(other.cached_from, None, "another input misses");
    let versioned = host.run("versioned", input).await.unwrap();
    assert_eq!(versioned.cached_from, None, "each task has its own entries");
    drop(host);

    // The component changes: `auto` misses, a pinned version still hits.
    with_custom_section(probe, &project.path().join("probe.wasm"));
    let host = project.host();
    let changed = host.run("auto", input).await.unwrap();
    assert_eq!(changed.cached_from, None, "a new component digest invalidates auto");
    let pinned = host.run("versioned", input).await.unwrap();
    assert_eq!(pinned.cached_from.as_deref(), Some(versioned.id.as_str()));
    drop(host);

    let cleared = project.cli(&["cache", "clear", "versioned"]);
    assert!(String::from_utf8_lossy(&cleared.stderr).contains("removed 1 cached"), "{cleared:?}");
    let after = project.host().run("versioned", input).await.unwrap();
    assert_eq!(after.cached_from, None);
}

#[test]
fn a_cassette_replays_offline_and_a_miss_names_the_call() {
    let recorder = Project::new(REFINER);
    let recorded = recorder.cli_json(&["run", "report-refiner", "--json", "--input", TOPIC]);
    let run_id = recorded["run_id"].as_str().unwrap();
    let cassette = recorder.path().join("refiner.cassette.json");
    let exported = recorder.cli(&["runs", "export", run_id, "-o", cassette.to_str().unwrap()]);
    assert!(exported.status.success(), "{exported:?}");

    // Another project whose only provider is unreachable: any live call would fail.
    let offline = Project::new(
        r#"
        [llm]
        default = "nowhere"

        [llm.providers.nowhere]
        kind = "openai-compatible"
        base_url = "http://127.0.0.1:9/v1"
        model = "none"
        max_retries = 0

        [tasks.report-refiner]
        component = "{refiner}"
        "#,
    );
    let imported = offline.cli(&["runs", "import", cassette.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    // The command the import suggests works as printed: the cassette holds the input.
    let said = String::from_utf8_lossy(&imported.stderr).into_owned();
    let suggested = said.split('`').nth(1).unwrap_or_else(|| panic!("no command suggested: {said}"));
    let mut args: Vec<&str> = suggested.split_whitespace().skip(1).collect();
    assert_eq!(args, ["run", "report-refiner", "--replay", run_id], "{said}");
    args.push("--json");
    let replayed = offline.cli_json(&args);
    assert_eq!(replayed["status"], "succeeded", "{replayed}");
    assert_eq!(replayed["output"], recorded["output"]);
    assert_eq!(replayed["llm"]["calls_live"], 0);
    assert_eq!(replayed["replay_of"], run_id);

    let missed =
        offline.cli_json(&["run", "report-refiner", "--json", "--replay", run_id, "--input", r#"{"topic": "Tides"}"#]);
    assert_eq!(missed["status"], "failed");
    assert_eq!(missed["error"]["kind"], "replay-miss", "{missed}");
    let message = missed["error"]["message"].as_str().unwrap();
    assert!(message.contains("llm call \"complete\" #1") && message.contains("Tides"), "{message}");
    assert_eq!(missed["attempts"].as_array().unwrap().len(), 1, "a miss is not retried");
    // Said once, not once per log line, attempt and run.
    let shown = offline.cli(&["run", "report-refiner", "--replay", run_id, "--input", r#"{"topic": "Tides"}"#]);
    let said = String::from_utf8_lossy(&shown.stderr);
    assert_eq!(said.matches("the cassette has no answer").count(), 1, "{said}");

    let again = offline.cli(&["runs", "import", cassette.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already in the store"));
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_removes_old_finished_runs_with_their_files() {
    let project = Project::new(
        r#"
        [tasks.probe]
        component = "{probe}"
        "#,
    );
    let host = project.host();
    let a = host.run("probe", r#"{"mode": "fs"}"#).await.unwrap();
    let b = host.run("probe", r#"{"mode": "echo"}"#).await.unwrap();
    drop(host);
    let kept = project.cli(&["gc", "--older-than", "1h"]);
    assert!(String::from_utf8_lossy(&kept.stderr).contains("removed 0"), "{kept:?}");
    let dry = project.cli(&["gc", "--older-than", "0s", "--dry-run"]);
    assert!(String::from_utf8_lossy(&dry.stderr).contains("would remove 2"), "{dry:?}");
    let gone = project.cli(&["gc", "--older-than", "0s"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("removed 2"), "{gone:?}");
    let store = project.store();
    for run in [&a, &b] {
        match store.get_run(&Tenant::default(), &run.id) {
            Err(cairn::store::StoreError::NoSuchRun(id)) => assert_eq!(id, run.id),
            other => panic!("gc must delete run {}: {other:?}", run.id),
        }
        assert!(store.journal_of(&run.id).unwrap().is_empty());
        assert!(!project.path().join(".cairn/runs").join(&run.id).exists());
    }
}

#[test]
fn resume_refuses_finished_runs_and_live_leases() {
    let project = Project::new(
        r#"
        [tasks.probe]
        component = "{probe}"
        "#,
    );
    let done = project.cli_json(&["run", "probe", "--json", "--input", r#"{"mode": "echo"}"#]);
    let refused = project.cli(&["runs", "resume", done["run_id"].as_str().unwrap()]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already succeeded"), "{refused:?}");
    let nothing = project.cli(&["runs", "resume"]);
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("no interrupted runs"), "{nothing:?}");

    // A run leased by a live process elsewhere is left alone unless forced.
    let store = project.store();
    let mut run = store.get_run(&Tenant::default(), done["run_id"].as_str().unwrap()).unwrap();
    run.id = uuid_like("0000");
    run.status = RunStatus::Running;
    run.lease = Some(cairn::model::Lease { owner: "other-machine-1".into(), expires_at_ms: u64::MAX });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(store.create_run(&run)).unwrap();
    drop(store);
    // A crashed run of a task that no longer exists does not stop the host.
    let mut orphan = run.clone();
    orphan.id = uuid_like("1111");
    orphan.task = "renamed-away".into();
    orphan.lease = Some(cairn::model::Lease { owner: "gone-1".into(), expires_at_ms: 0 });
    let store = project.store();
    runtime.block_on(store.create_run(&orphan)).unwrap();
    drop(store);
    let still_runs = project.cli_json(&["run", "probe", "--json", "--input", r#"{"mode": "echo"}"#]);
    assert_eq!(still_runs["status"], "succeeded", "{still_runs}");
    let ended = project.cli_json(&["runs", "show", &orphan.id, "--json"]);
    assert_eq!(ended["status"], "failed", "the host ended it at start: {ended}");
    assert_eq!(ended["error"]["kind"], "unknown-task");

    let held = project.cli(&["runs", "resume", &run.id]);
    assert!(String::from_utf8_lossy(&held.stderr).contains("holds its lease"), "{held:?}");
    let forced = project.cli_json(&["runs", "resume", &run.id, "--force", "--json"]);
    assert_eq!(forced["status"], "succeeded", "{forced}");
}

fn uuid_like(prefix: &str) -> String {
    format!("{prefix}0000-0000-7000-8000-000000000000")
}
