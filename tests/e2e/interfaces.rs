//! Typed task interfaces (`cairn:task` 0.1.3): each SDK derives the JSON
//! Schemas of a task's input and output from its types and exports them
//! through `describe`; the host checks a run's input before any attempt,
//! keys its cache by the interface, and shows it in `cairn tasks`. A
//! component without `describe` keeps working.

use serde_json::{Value, json};

use cairn::model::RunStatus;

use crate::support::guests::{components, repo_root};
use crate::support::project::{Project, output_json};

/// A component built against `task` alone (before 0.1.3): `run` answers
/// `"old"`, and there is no `describe`.
fn component_without_describe(dir: &std::path::Path) -> std::path::PathBuf {
    let bytes = wat::parse_str(
        r#"(component
            (core module $m
                (memory (export "memory") 1)
                (global $next (mut i32) (i32.const 4096))
                (func (export "realloc") (param i32 i32 i32 i32) (result i32)
                    (local $at i32)
                    (local.set $at (global.get $next))
                    (global.set $next (i32.add (global.get $next) (local.get 3)))
                    (local.get $at))
                (data (i32.const 16) "\22old\22")
                (func (export "run") (param i32 i32) (result i32)
                    (i32.store (i32.const 100) (i32.const 0))
                    (i32.store (i32.const 104) (i32.const 16))
                    (i32.store (i32.const 108) (i32.const 5))
                    (i32.const 100)))
            (core instance $i (instantiate $m))
            (type $error' (record (field "kind" string) (field "message" string) (field "retryable" bool)))
            (export $error "task-error" (type $error'))
            (func (export "run") (param "input" string) (result (result string (error $error)))
                (canon lift (core func $i "run") (memory (core memory $i "memory"))
                    (realloc (core func $i "realloc")))))"#,
    )
    .unwrap();
    let path = dir.join("old.wasm");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sdk_describes_its_task_and_a_bad_input_is_refused_before_any_attempt() {
    components();
    let examples = repo_root().join("guest-examples/components");
    let project = Project::new(&format!(
        "[tasks.rust]\ncomponent = {:?}\n[tasks.python]\ncomponent = {:?}\n[tasks.js]\ncomponent = {:?}\n",
        examples.join("minimal-writer.wasm").display().to_string(),
        examples.join("py-table-report.wasm").display().to_string(),
        examples.join("js-table-summary.wasm").display().to_string(),
    ));
    let host = project.host();
    for (task, bad, path, problem) in [
        ("rust", json!({"topic": 3}), "topic", "expected string, got integer 3"),
        ("python", json!({"topics": ["Tides", 2]}), "topics[1]", "expected string, got integer 2"),
        ("js", json!({"table": {"name": "t.csv"}}), "table.$file", "field required"),
        ("python", json!({}), "topics", "field required"),
    ] {
        let run = host.run(task, &bad.to_string()).await.unwrap();
        assert_eq!(run.status, RunStatus::Failed, "{task}");
        assert!(run.attempts.is_empty(), "{task}: refused before any attempt: {:?}", run.attempts);
        let error = run.error.unwrap();
        assert_eq!((error.kind.as_str(), error.retryable), ("invalid-input", false), "{task}: {error:?}");
        assert!(error.message.contains(&format!("{path}: {problem}")), "{task}: {}", error.message);
    }
    // A good input goes through.
    let good = host.run("rust", r#"{"topic": "Tides"}"#).await.unwrap();
    assert_eq!(output_json(&good)["writer"], "minimal-writer");

    // The schemas each SDK derived.
    let rust = host.describe_task("rust").await.unwrap().unwrap();
    assert_eq!(rust.input["properties"]["topic"]["type"], "string", "{}", rust.input);
    assert_eq!(rust.output["required"], json!(["topic", "report", "writer"]));
    let python = host.describe_task("python").await.unwrap().unwrap();
    assert_eq!(python.input["properties"]["topics"], json!({"type": "array", "items": {"type": "string"}}));
    let js = host.describe_task("js").await.unwrap().unwrap();
    assert_eq!(js.input["properties"]["table"]["required"], json!(["$file"]));
    assert_ne!(rust.hash, python.hash);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_without_describe_keeps_working_unchecked() {
    let dir = tempfile::tempdir().unwrap();
    let old = component_without_describe(dir.path());
    let project = Project::new(&format!("[tasks.old]\ncomponent = {:?}\n", old.display().to_string()));
    let host = project.host();
    assert!(host.describe_task("old").await.unwrap().is_none());
    // Anything goes in: the host checks nothing of an undescribed task's input.
    for input in [r#"{"anything": [1, 2]}"#, "7"] {
        let run = host.run("old", input).await.unwrap();
        assert_eq!(run.output.as_deref(), Some("\"old\""), "{:?}", run.error);
    }
    // The CLI (another process) lists it, in a project of its own.
    let listing = Project::new(&format!("[tasks.old]\ncomponent = {:?}\n", old.display().to_string()));
    let listed = listing.cli_json(&["tasks", "list", "--json"]);
    assert_eq!((&listed[0]["interface"], &listed[0]["interface_error"]), (&Value::Null, &Value::Null), "{listed}");
}

#[test]
fn cairn_tasks_lists_and_describes_interfaces_and_the_cache_keys_by_them() {
    components();
    let examples = repo_root().join("guest-examples/components");
    let component = examples.join("minimal-writer.wasm").display().to_string();
    let project = Project::new(&format!("[tasks.writer]\ncomponent = {component:?}\ncache = {{ version = \"1\" }}\n"));
    let listed = project.cli_json(&["tasks", "list", "--json"]);
    let hash = listed[0]["interface"]["hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64, "{listed}");
    let (text, _) = project.cli_ok(&["tasks", "list"]);
    assert!(text.contains(&hash[..12]), "{text}");
    let described = project.cli_json(&["tasks", "describe", "writer"]);
    assert_eq!(described["input"]["required"], json!(["topic"]));
    let unknown = project.cli(&["tasks", "describe", "nope"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no task named \"nope\""));

    // Under a version policy the component may change and results are
    // reused, unless the interface changed: flaky-writer says nothing of its
    // input, minimal-writer describes it, so the same version and input do
    // not reuse flaky-writer's result.
    let flaky = examples.join("flaky-writer.wasm").display().to_string();
    let manifest =
        |component: &str| format!("[tasks.writer]\ncomponent = {component:?}\ncache = {{ version = \"1\" }}\n");
    std::fs::write(&project.manifest, manifest(&flaky)).unwrap();
    let input = r#"{"topic": "Tides"}"#;
    let first = project.cli_json(&["run", "writer", "--input", input, "--json"]);
    let again = project.cli_json(&["run", "writer", "--input", input, "--json"]);
    assert_eq!(again["cached_from"], first["run_id"], "{again}");
    std::fs::write(&project.manifest, manifest(&component)).unwrap();
    let changed = project.cli_json(&["run", "writer", "--input", input, "--json"]);
    assert_eq!(changed["cached_from"], Value::Null, "{changed}");
    assert_eq!(changed["output"]["writer"], "minimal-writer", "{changed}");
}
