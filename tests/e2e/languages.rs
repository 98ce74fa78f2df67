//! Python (componentize-py) and JavaScript (componentize-js) guests, built from
//! source by `cairn build` with the SDKs in `sdk/python` and `sdk/js`: the
//! examples run end to end on the mock, exceptions map to task-error kinds and
//! retries, and traced steps are not run again on retry, in these two and in
//! Rust (the step's body is counted in each attempt's log, its LLM call at a
//! real HTTP server).

use cairn::model::{CallKind, RunRecord, RunStatus};

use crate::support::guests::components;
use crate::support::llm_server::{LlmServer, Script};
use crate::support::project::{API_KEY, Project, output_json};

const TOPIC: &str = r#"{"topic": "The history of the printing press"}"#;

/// A manifest line `component = "<path>"` for a built example.
fn component(path: &std::path::Path) -> String {
    format!("component = {:?}", path.display().to_string())
}

/// The kinds of a run's failed attempts, in order.
fn attempt_kinds(run: &RunRecord) -> Vec<&str> {
    run.attempts.iter().filter_map(|a| a.error.as_ref()).map(|e| e.kind.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_refiner_gives_the_rust_refiners_output_on_the_embedded_mock() {
    let built = components();
    let project = Project::new(&format!(
        "[tasks.py-report-refiner]\n{}\nretries = 2\n\n[tasks.report-refiner]\n{}\n",
        component(&built.py_refiner),
        component(&built.refiner),
    ));
    let host = project.host();
    let python = host.run("py-report-refiner", TOPIC).await.unwrap();
    let out = output_json(&python);
    // Draft scores 6, the revision carries the marker and scores 9: two critiques, one revision.
    assert_eq!(out["rounds"], 2, "{out}");
    assert_eq!(out["final_score"], 9, "{out}");
    assert!(out["report"].as_str().unwrap().contains("[REVISED]"), "{out}");
    assert_eq!(out["critiques"].as_array().unwrap().len(), 2, "{out}");
    assert!(out["critiques"][0]["strengths"].is_array() && out["critiques"][0]["summary"].is_string(), "{out}");

    // Same prompts, same shape: the mock answers both the same way.
    let rust = host.run("report-refiner", TOPIC).await.unwrap();
    assert_eq!(out, output_json(&rust), "the Python and Rust refiners disagree");
    assert_eq!(python.usage, rust.usage, "same prompts make the same token counts");

    let journal = host.store().journal_of(&python.id).unwrap();
    let llm_calls = journal.iter().filter(|e| e.key.kind == CallKind::Llm).count();
    let traces = journal.iter().filter(|e| e.key.kind == CallKind::Trace).count();
    assert_eq!(llm_calls, 5, "draft + 2 critiques + 1 revision + summary: {journal:#?}");
    assert_eq!(traces, 5, "each step is traced: {journal:#?}");
    let logs = host.store().logs_of(&python.id).unwrap();
    assert!(logs[0].1.stdout.contains("Round 2: target reached"), "{:?}", logs[0].1);
    let report = host.store().get_report(&python.id).unwrap().expect("the refiner writes a report");
    assert!(!report.tabs.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn javascript_summarizer_runs_on_the_embedded_mock() {
    let built = components();
    let project = Project::new(&format!("[tasks.js-summarize]\n{}\n", component(&built.js_summarize)));
    let host = project.host();
    let run = host.run("js-summarize", r#"{"text": "Tides rise and fall twice a day."}"#).await.unwrap();
    let out = output_json(&run);
    assert!(!out["summary"].as_str().unwrap().is_empty(), "{out}");
    let journal = host.store().journal_of(&run.id).unwrap();
    assert_eq!(journal.iter().filter(|e| e.key.kind == CallKind::Llm).count(), 1, "{journal:#?}");
    assert_eq!(journal.iter().filter(|e| e.key.kind == CallKind::Trace).count(), 1, "{journal:#?}");
    assert!(host.store().get_report(&run.id).unwrap().is_some_and(|r| !r.tabs.is_empty()));

    // A bad input is the SDK's non-retryable invalid-input, not a trap.
    let bad = host.run("js-summarize", r#"{"txt": "typo"}"#).await.unwrap();
    assert_eq!(bad.status, RunStatus::Failed);
    let error = bad.error.as_ref().unwrap();
    assert_eq!((error.kind.as_str(), error.retryable), ("invalid-input", false), "{error:?}");
    assert!(error.message.contains("text: field required"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_exception_fails_the_attempt_with_its_type_as_kind_and_is_retried() {
    let built = components();
    let project = Project::new(&format!("[tasks.py-probe]\n{}\nretries = 2\n", component(&built.py_probe)));
    let host = project.host();

    let run = host
        .run("py-probe", r#"{"mode": "raise", "exception": "ZeroDivisionError", "message": "no rows"}"#)
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(attempt_kinds(&run), ["zero-division-error"; 3], "1 attempt + 2 retries");
    let error = run.error.as_ref().unwrap();
    assert_eq!(error.kind, "zero-division-error");
    assert_eq!(error.message, "ZeroDivisionError: no rows");
    assert!(error.retryable);
    let logs = host.store().logs_of(&run.id).unwrap();
    assert!(logs[0].1.stderr.contains("Traceback"), "the traceback goes to the run's log: {:?}", logs[0].1);

    // An exception that says it is not retryable stops at once.
    let run = host.run("py-probe", r#"{"mode": "raise", "exception": "QuotaExhausted"}"#).await.unwrap();
    assert_eq!(attempt_kinds(&run), ["quota-exhausted"]);
    assert!(!run.error.as_ref().unwrap().retryable);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_throw_fails_the_attempt_with_its_type_as_kind_and_is_retried() {
    let built = components();
    let project = Project::new(&format!("[tasks.js-probe]\n{}\nretries = 1\n", component(&built.js_probe)));
    let host = project.host();
    let run = host.run("js-probe", r#"{"mode": "throw", "message": "bad row"}"#).await.unwrap();
    assert_eq!(attempt_kinds(&run), ["type-error"; 2], "1 attempt + 1 retry");
    assert_eq!(run.error.as_ref().unwrap().message, "TypeError: bad row");
    let run = host.run("js-probe", r#"{"mode": "throw", "custom": true}"#).await.unwrap();
    assert_eq!(attempt_kinds(&run), ["quota-exhausted"]);
    assert!(!run.error.as_ref().unwrap().retryable);
    // An output that fails the task's output check fails once, naming the field.
    let run = host.run("js-probe", r#"{"mode": "echo", "misshapen": true}"#).await.unwrap();
    assert_eq!(attempt_kinds(&run), ["invalid-output"]);
    let error = run.error.as_ref().unwrap();
    assert!(!error.retryable && error.message.contains("misshapen: must not be true"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traced_step_is_not_run_again_on_retry_in_rust_python_or_javascript() {
    let server = LlmServer::start(Script::new().expect_api_key(API_KEY));
    let built = components();
    let project = Project::http(
        &server,
        &format!(
            "[tasks.probe]\n{}\nretries = 1\n\n[tasks.py-probe]\n{}\nretries = 1\n\n[tasks.js-probe]\n{}\nretries = 1\n",
            component(&built.probe),
            component(&built.py_probe),
            component(&built.js_probe),
        ),
    );
    let host = project.host();
    let tasks = [("probe", "rust question"), ("py-probe", "python question"), ("js-probe", "javascript question")];
    for (task, question) in tasks {
        let input = format!(r#"{{"mode": "traced-llm", "question": "{question}", "fail_on_first_attempt": true}}"#);
        let run = host.run(task, &input).await.unwrap();
        let out = output_json(&run);
        assert_eq!(out["answer"], format!("answer to: {question}"), "{out}");
        assert_eq!(out["attempt"], 2, "{out}");
        assert_eq!(attempt_kinds(&run), ["flaky"], "{task}");
        // The step's body prints a line each time it runs: on attempt 1 only
        // (an attempt that prints nothing keeps no log).
        let body_ran = format!("step body ran: {question}");
        let logs = host.store().logs_of(&run.id).unwrap();
        let body_runs: Vec<(u32, usize)> = logs
            .iter()
            .map(|(attempt, log)| (*attempt, log.stdout.matches(&body_ran).count()))
            .filter(|&(_, runs)| runs > 0)
            .collect();
        assert_eq!(body_runs, [(1, 1)], "{task}: the step's body ran once, on attempt 1: {logs:?}");
        if task != "js-probe" {
            // Rust and Python also count in a file of the run's directory, which
            // outlives the attempt (JavaScript has no file API).
            assert_eq!(out["step_executions"], 1, "{task}: the step's body ran once across both attempts: {out}");
        }
        let (first, second) = (&run.attempts[0], &run.attempts[1]);
        assert_eq!((first.llm_live, first.trace_replayed), (1, 0), "{task}: attempt 1 runs the step");
        assert_eq!(
            (second.llm_live, second.llm_replayed, second.trace_replayed),
            (0, 0, 1),
            "{task}: attempt 2 takes the step's recorded result and makes no LLM call at all"
        );
        assert_eq!(server.count_for(question), 1, "{task}: the question reached the server once");
    }
    assert_eq!(server.requests(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_three_sdks_share_one_file_api_over_the_run_directory() {
    let built = components();
    let project = Project::new(&format!(
        "[tasks.rs]\n{}\n\n[tasks.py]\n{}\n\n[tasks.js]\n{}\n",
        component(&built.probe),
        component(&built.py_probe),
        component(&built.js_probe)
    ));
    let host = project.host();
    let mut seen = Vec::new();
    for task in ["rs", "py", "js"] {
        let run = host.run(task, r#"{"mode": "files"}"#).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{task}: {:?}", run.error);
        seen.push(output_json(&run));
    }
    let rust = &seen[0];
    assert_eq!(rust["text"], "h\u{e9}llo");
    assert_eq!(rust["bytes"], serde_json::json!([0, 1, 2, 255]));
    assert_eq!(rust["listed"], serde_json::json!(["b.bin", "notes/"]), "sorted, folders marked");
    assert_eq!(rust["exists"], serde_json::json!([true, false]));
    assert_eq!(rust["size"], 6, "bytes of UTF-8");
    assert_eq!(rust["after"], serde_json::json!([false, ["y/"]]), "removed; folders made with their parents");
    for case in ["missing", "climb", "absolute"] {
        assert_eq!(rust["errors"][case], "file-error False True", "{case}: kind, not retryable, names the path");
    }
    assert_eq!(seen[1], *rust, "Python's file API differs from Rust's");
    assert_eq!(seen[2], *rust, "JavaScript's file API differs from Rust's");
}
