//! The CLI as a client of `cairn serve`: with a live server for the project
//! every command goes through its API (same flags, same output), several at
//! once; `cairn run` follows its run's events and Ctrl-C detaches; warm
//! instances last from one `cairn run` to the next; a stale `serve.json` is
//! ignored.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::guests::cairn_bin;
use crate::support::project::Project;
use crate::support::serve::{Served, state_dir};

/// A fresh-instance parent, pooled children, and a second fresh child task.
const TASKS: &str = r#"
[environments.workers]
resources = { memory = "64MiB", timeout = "60s" }
reuse = { replicas = 2, concurrency = 4 }

[tasks.parent]
component = "{probe}"

[tasks.child]
component = "{probe}"
environment = "workers"

[tasks.solo]
component = "{probe}"
"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the CLI, asserts that it exited 0, and returns its stdout and stderr.
fn cli_ok(project: &Project, args: &[&str]) -> (String, String) {
    let out = project.cli(args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "cairn {args:?} exited with {}:\n{stdout}\n{stderr}", out.status);
    (stdout, stderr)
}

/// Starts `cairn ARGS` on `project` with its output piped.
fn spawn(project: &Project, args: &[&str]) -> Child {
    Command::new(cairn_bin())
        .arg("--manifest")
        .arg(&project.manifest)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts")
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The one run of `task` the server knows, once there is one.
fn run_of(project: &Project, task: &str) -> Option<Value> {
    let (listed, _) = cli_ok(project, &["runs", "list", "--task", task, "--json"]);
    listed.lines().next().map(|line| serde_json::from_str(line).unwrap())
}

/// What the API answers for `GET path`.
fn api_get(server: &Served, path: &str) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, body) = runtime.block_on(server.get(path));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn stop(mut server: Served) {
    let status = server.stop(Duration::from_secs(60));
    assert!(status.success(), "cairn serve exits 0 after SIGTERM: {status}");
}

#[test]
fn while_a_long_fan_out_runs_through_the_server_other_commands_work() {
    let project = Project::new(TASKS);
    let server = Served::start(&project, &[]);
    // 800 children of 100 ms on 8 pooled instances: ten seconds or more.
    let fan_out =
        json!({"mode": "fanout", "task": "child", "count": 800, "child": {"mode": "sleep", "ms": 100, "i": null}});
    let long = spawn(&project, &["run", "parent", "--input", &fan_out.to_string()]);
    let mut parent = Value::Null;
    wait_until("the fan-out's children to start", Duration::from_secs(60), || {
        parent = run_of(&project, "parent").unwrap_or_default();
        let id = parent["run_id"].as_str().unwrap_or_default();
        !id.is_empty() && !cli_ok(&project, &["runs", "list", "--parent", id, "--limit", "1"]).0.trim().is_empty()
    });
    let parent_id = parent["run_id"].as_str().unwrap().to_owned();
    assert_eq!(parent["status"], "running", "{parent}");

    // Each command works through the server while it runs the fan-out (the
    // store is the server's: a command that opened it here would fail).
    let (listed, _) = cli_ok(&project, &["runs", "list"]);
    let row = listed.lines().find(|line| line.starts_with(&parent_id)).unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains("parent") && row.contains("running"), "{row}");
    let (shown, _) = cli_ok(&project, &["runs", "show", &parent_id]);
    assert!(shown.contains("status    running") && shown.contains("\"count\":800"), "{shown}");
    let small = json!({"mode": "fanout", "task": "solo", "count": 5, "child": {"mode": "echo", "i": null}});
    let (second, second_err) = cli_ok(&project, &["run", "parent", "--input", &small.to_string()]);
    assert!(second.contains("children: 5") && second.contains("failed: 0"), "{second}");
    // Its progress counts its own children, not the fan-out's.
    assert!(second_err.contains("children: 5 succeeded, 0 failed"), "{second_err}");
    let echoed = project.cli_json(&["run", "solo", "--json", "--input", r#"{"mode": "echo", "k": 7}"#]);
    assert_eq!((&echoed["status"], &echoed["output"]["k"]), (&json!("succeeded"), &json!(7)), "{echoed}");
    let (_, stored) = cli_ok(&project, &["secret", "create", "api-key", "sk-never-printed"]);
    assert!(stored.contains("stored secret api-key"), "{stored}");
    let (keys, _) = cli_ok(&project, &["secret", "list"]);
    assert_eq!(keys.trim(), "api-key");
    let (status, _) = cli_ok(&project, &["status"]);
    assert!(status.contains("workers") && status.contains("running"), "{status}");
    let status = project.cli_json(&["status", "--json"]);
    assert_eq!(status["pools"]["environments"][0]["environment"], "workers", "{status}");
    let now = project.cli_json(&["runs", "show", &parent_id, "--json"]);
    assert_eq!(now["status"], "running", "the fan-out was still under way through all of that: {now}");

    // `--json` prints what the API answers, to the byte.
    let echoed_id = echoed["run_id"].as_str().unwrap();
    let shown = project.cli_json(&["runs", "show", echoed_id, "--json"]);
    assert_eq!(shown, api_get(&server, &format!("/api/v1/runs/{echoed_id}")));
    assert_eq!(shown["input"], json!({"mode": "echo", "k": 7}));

    let out = long.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "the fan-out's `cairn run` exits 0:\n{stdout}\n{stderr}");
    assert!(stdout.contains("children: 800") && stdout.contains("failed: 0"), "{stdout}");
    assert!(stderr.contains("children 800/800 done · 0 running · 0 failed · 0 retrying"), "{stderr}");
    assert!(stderr.contains(&format!("run {parent_id} of parent succeeded")), "{stderr}");
    assert!(stderr.contains("children: 800 succeeded, 0 failed"), "{stderr}");
    stop(server);
}

#[test]
fn two_runs_one_after_the_other_share_a_warm_instance_through_the_server() {
    let project = Project::new(
        r#"
        [environments.warm]
        reuse = { replicas = 1, concurrency = 1 }

        [tasks.warm-probe]
        component = "{probe}"
        environment = "warm"
        "#,
    );
    let server = Served::start(&project, &[]);
    let mut counts = Vec::new();
    for _ in 0..2 {
        let run = project.cli_json(&["run", "warm-probe", "--json", "--input", r#"{"mode": "counter"}"#]);
        assert_eq!(run["status"], "succeeded", "{run}");
        counts.push(run["output"]["count"].as_u64().unwrap());
    }
    assert_eq!(counts, [1, 2], "the second run found the first one's instance, globals and all");
    let status = project.cli_json(&["status", "--json"]);
    let pool = &status["pools"]["environments"][0];
    assert_eq!(pool["environment"], "warm", "{status}");
    assert_eq!((pool["instantiations"].as_u64(), pool["reuses"].as_u64()), (Some(1), Some(1)), "{pool}");
    stop(server);
}

#[test]
fn ctrl_c_detaches_from_a_run_which_goes_on_until_cancelled() {
    let project = Project::new(TASKS);
    let server = Served::start(&project, &[]);
    let mut spinning = spawn(&project, &["run", "solo", "--input", r#"{"mode": "loop"}"#]);
    let mut run = Value::Null;
    wait_until("the run to start", Duration::from_secs(60), || {
        run = run_of(&project, "solo").unwrap_or_default();
        run["status"] == "running"
    });
    let id = run["run_id"].as_str().unwrap().to_owned();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(spinning.id() as i32, libc::SIGINT) };
    let status = spinning.wait().unwrap();
    let mut stderr = String::new();
    spinning.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains(&format!("detached from run {id}")), "{stderr}");
    assert!(stderr.contains(&format!("cairn runs cancel {id}")), "{stderr}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(project.cli_json(&["runs", "show", &id, "--json"])["status"], "running", "detaching cancels nothing");

    let follower = spawn(&project, &["runs", "follow", &id]);
    let (_, cancelled) = cli_ok(&project, &["runs", "cancel", &id]);
    assert!(cancelled.contains(&format!("run {id} of solo: cancelled")), "{cancelled}");
    let followed: Output = follower.wait_with_output().unwrap();
    assert_eq!(followed.status.code(), Some(1), "a run that did not succeed: {}", text(&followed.stderr));
    assert!(text(&followed.stderr).contains(&format!("run {id} of solo was cancelled")), "{}", text(&followed.stderr));
    let again = project.cli(&["runs", "cancel", &id]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("already cancelled"), "{}", text(&again.stderr));
    stop(server);
}

#[test]
fn without_a_live_server_the_cli_opens_the_store_itself() {
    let project = Project::new(TASKS);
    // A server that crashed: its file names a process that is gone and a port nobody listens on.
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dir = state_dir(&project);
    std::fs::create_dir_all(&dir).unwrap();
    let info = json!({"url": "http://127.0.0.1:9", "pid": gone.id(), "token_file": dir.join("serve.token")});
    std::fs::write(dir.join("serve.json"), info.to_string()).unwrap();

    let run = project.cli_json(&["run", "solo", "--json", "--input", r#"{"mode": "echo", "k": 3}"#]);
    assert_eq!(run["output"]["k"], 3, "{run}");
    let id = run["run_id"].as_str().unwrap();
    let (listed, _) = cli_ok(&project, &["runs", "list"]);
    assert!(listed.contains(id), "{listed}");
    cli_ok(&project, &["secret", "create", "k", "v"]);
    let cancel = project.cli(&["runs", "cancel", id]);
    assert_eq!(cancel.status.code(), Some(2));
    assert!(text(&cancel.stderr).contains("already succeeded"), "{}", text(&cancel.stderr));

    // A server asked for by name that is not there is an error naming it.
    for args in [&["--server", "http://127.0.0.1:9", "runs", "list"][..], &["runs", "list"]] {
        let out = Command::new(cairn_bin())
            .arg("--manifest")
            .arg(&project.manifest)
            .args(args)
            .env("CAIRN_SERVER", "http://127.0.0.1:9")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("cannot reach the cairn server at http://127.0.0.1:9"), "{stderr}");
    }
}
