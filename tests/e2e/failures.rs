//! Bad input of every kind gives a clear error and, where a run was asked
//! for, a recorded failed run; the host keeps serving.

use cairn::model::{RunStatus, Tenant};
use cairn::store::prelude::*;

use crate::support::project::{Project, output_json};

const PROBE: &str = r#"
[environments.tight]
resources = { memory = "32MiB", timeout = "2s", max_output = "64KiB" }

[tasks.probe]
component = "{probe}"

[tasks.tight]
component = "{probe}"
environment = "tight"
retries = 1
"#;

fn assert_failed(run: &cairn::model::RunRecord, kind: &str, message_part: &str) {
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.as_ref().expect("a failed run has an error");
    assert_eq!(error.kind, kind, "{error:?}");
    assert!(error.message.contains(message_part), "{:?} should mention {message_part:?}", error.message);
}

fn recorded(project: &Project, run: &cairn::model::RunRecord) -> cairn::model::RunRecord {
    project.store().get_run(&Tenant::default(), &run.id).unwrap()
}

#[tokio::test]
async fn guest_trap_is_a_failed_run_with_the_trap() {
    let project = Project::new(PROBE);
    let host = project.host();
    let run = host.run("tight", r#"{"mode": "trap"}"#).await.unwrap();
    assert_failed(&run, "trap", "trapped");
    assert_eq!(run.attempts.len(), 2, "a trap is retryable: 1 retry");
    drop(host);
    assert_eq!(recorded(&project, &run), run, "the failure is durable");
}

#[tokio::test]
async fn infinite_loop_memory_bomb_and_huge_output_hit_their_limits() {
    let project = Project::new(PROBE);
    let host = project.host();
    // While one run spins until its deadline, the same host serves another.
    let (looped, meanwhile) =
        tokio::join!(host.run("tight", r#"{"mode": "loop"}"#), host.run("probe", r#"{"mode": "echo", "m": 2}"#));
    let (looped, meanwhile) = (looped.unwrap(), meanwhile.unwrap());
    assert_failed(&looped, "timeout", "time limit");
    assert_eq!(output_json(&meanwhile)["m"], 2);
    assert!(meanwhile.finished_at_ms < looped.finished_at_ms, "the healthy run did not wait for the spinning one");
    let bomb = host.run("tight", r#"{"mode": "alloc", "mb": 512}"#).await.unwrap();
    assert_failed(&bomb, "out-of-memory", "resources.memory");
    let huge = host.run("tight", r#"{"mode": "big-output", "bytes": 1000000}"#).await.unwrap();
    assert_failed(&huge, "output-too-large", "max_output");
    assert_eq!(huge.attempts.len(), 1, "too large an output is not retried");
    // The same host still runs healthy tasks.
    let ok = host.run("tight", r#"{"mode": "echo", "n": 1}"#).await.unwrap();
    assert_eq!(output_json(&ok)["n"], 1);
}

#[tokio::test]
async fn non_json_input_is_a_recorded_failed_run() {
    let project = Project::new(PROBE);
    let run = project.run("probe", "this is not json").await;
    assert_failed(&run, "invalid-input", "not valid JSON");
    assert!(run.attempts.is_empty(), "the guest never ran");
    assert_eq!(recorded(&project, &run).status, RunStatus::Failed);
}

#[tokio::test]
async fn guest_error_keeps_its_kind_and_non_retryable_stops_retries() {
    let project = Project::new(PROBE);
    let run = project
        .run("tight", r#"{"mode": "error", "kind": "bad-topic", "message": "no such topic", "retryable": false}"#)
        .await;
    assert_failed(&run, "bad-topic", "no such topic");
    assert_eq!(run.attempts.len(), 1);
}

#[tokio::test]
async fn missing_component_is_a_recorded_failed_run_naming_the_fix() {
    let project = Project::new(
        r#"
        [tasks.ghost]
        component = "nowhere/ghost.wasm"
        "#,
    );
    let run = project.run("ghost", "{}").await;
    assert_failed(&run, "missing-component", "cairn build");
    assert!(run.error.as_ref().unwrap().message.contains("line 3"), "{:?}", run.error);
}

#[tokio::test]
async fn core_module_is_rejected_as_not_a_component() {
    let project = Project::new(
        r#"
        [tasks.core]
        component = "core.wasm"
        "#,
    );
    let core = wat::parse_str("(module (func (export \"run\")))").unwrap();
    std::fs::write(project.path().join("core.wasm"), core).unwrap();
    std::fs::write(project.path().join("junk.wasm"), b"definitely not wasm").unwrap();
    let run = project.run("core", "{}").await;
    assert_failed(&run, "invalid-component", "core WebAssembly module, not a component");
}

#[tokio::test]
async fn invalid_manifests_name_file_line_and_key() {
    let cases = [
        ("[tasks.a]\ncomponent = \"a.wasm\"\ncolour = \"red\"\n", 3, "unknown field `colour`"),
        ("[environments.e]\nresources = { timeout = \"5 parsecs\" }\n", 2, "unknown unit"),
        ("[environments.e]\nresources = { memory = \"12 bananas\" }\n", 2, "unknown unit"),
        (
            "[tasks.a]\ncomponent = \"a.wasm\"\nenvironment = \"nope\"\n",
            3,
            "environment \"nope\", which is not defined",
        ),
        ("[environments.e]\nreuse = { replicas = 2, scaledown_ttl = \"10s\" }\n", 2, "at least 30s"),
        ("[environments.e]\ndepends_on = [\"e\"]\n", 2, "lists itself"),
        ("[tasks.a]\ncomponent = \"a.wasm\"\nretries = { count = 3, strategy = \"sideways\" }\n", 3, "sideways"),
        ("[tasks.a]\ncomponent = \"a.wasm\"\nfallback = [\"ghost\"]\n", 3, "fallback \"ghost\" must be another task"),
    ];
    for (text, line, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(crate::support::guests::cairn_bin())
            .arg("--manifest")
            .arg(&path)
            .args(["run", "a", "--input", "{}"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let location = format!("{}:{line}:", path.display());
        assert!(stderr.contains(&location), "{stderr} should name {location}");
        assert!(stderr.contains(message), "{stderr} should say {message:?}");
    }
}
