//! Task-level retries replay the journal: an LLM call that succeeded is never
//! sent to the provider again, counted at a real HTTP server.

use std::time::Duration;

use cairn::model::{CallKind, RunStatus};
use cairn::store::prelude::*;

use crate::support::llm_server::{Fault, LlmServer, Script};
use crate::support::project::{API_KEY, Project, output_json, refiner_script};

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_run_sends_each_llm_call_exactly_once() {
    let server = LlmServer::start(Script::new().expect_api_key(API_KEY));
    let project = Project::http(
        &server,
        r#"
        [tasks.flaky]
        component = "{probe}"
        retries = 2
        "#,
    );
    let run = project.run("flaky", r#"{"mode": "llm-calls", "calls": 5, "fail_after": 3}"#).await;
    let out = output_json(&run);
    assert_eq!(out["answers"].as_array().unwrap().len(), 5, "{out}");
    assert_eq!(run.attempts.len(), 2);
    assert_eq!(run.attempts[0].error.as_ref().unwrap().kind, "flaky");
    assert_eq!((run.attempts[0].llm_live, run.attempts[0].llm_replayed), (3, 0));
    assert_eq!((run.attempts[1].llm_live, run.attempts[1].llm_replayed), (2, 3), "attempt 2 replays the first three");
    assert_eq!(server.requests(), 5, "five distinct calls, five requests, across both attempts");
    for i in 1..=5 {
        assert_eq!(server.count_for(&format!("question {i}")), 1, "question {i} was asked once");
    }
    // The API key went in the Authorization header only: never into the store.
    let store = project.store();
    let journal = serde_json::to_string(&store.journal_of(&run.id).unwrap()).unwrap();
    assert!(!journal.contains(API_KEY));
    assert!(!format!("{run:?}").contains(API_KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn refiner_runs_on_an_openai_compatible_server() {
    let server = LlmServer::start(refiner_script());
    let project = Project::http(
        &server,
        r#"
        [tasks.report-refiner]
        component = "{refiner}"
        "#,
    );
    // Inject one answer that is not JSON for the first critique: it must be
    // refused before it reaches the journal and asked again.
    server.push_fault(Fault::Delay(Duration::ZERO));
    server.push_fault(Fault::MalformedContent);
    let run = project.run("report-refiner", r#"{"topic": "The printing press", "max_rounds": 3}"#).await;
    let out = output_json(&run);
    assert_eq!(out["final_score"], 8, "{out}");
    assert_eq!(out["rounds"], 2, "{out}");
    assert_eq!(out["summary"], "Printing spread knowledge fast.");
    assert!(out["report"].as_str().unwrap().contains("1440"));
    // draft, critique (+1 malformed answer re-asked), revision, critique, summary
    assert_eq!(server.requests(), 6);
    let bodies = server.received();
    assert!(bodies.iter().all(|b| b["model"] == "test-model"));
    assert!(bodies.iter().any(|b| b["response_format"]["type"] == "json_object"), "critiques ask for JSON mode");
    let store = project.store();
    let journal = store.journal_of(&run.id).unwrap();
    let llm_outputs: Vec<&str> =
        journal.iter().filter(|e| e.key.kind == CallKind::Llm).map(|e| e.output.as_str()).collect();
    assert_eq!(llm_outputs.len(), 5, "only usable answers are journaled");
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_outage_fails_the_run_with_an_llm_kind_and_the_key_stays_hidden() {
    let server = LlmServer::start(Script::new().expect_api_key(API_KEY).faults((0..20).map(|_| Fault::Status(503))));
    let project = Project::http(
        &server,
        r#"
        [tasks.flaky]
        component = "{probe}"
        retries = 1
        "#,
    );
    let run = project.run("flaky", r#"{"mode": "llm-calls", "calls": 2}"#).await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.as_ref().unwrap();
    assert_eq!(error.kind, "llm-unavailable", "{error:?}");
    // 2 attempts x (1 call + 2 provider retries)
    assert_eq!(server.requests(), 6);
    assert!(!format!("{run:?}").contains(API_KEY));
    let status = project.cli_json(&["status", "--json"]);
    assert_eq!(status["providers"][0]["provider"], "local");
    assert_eq!(status["providers"][0]["retries"], 4, "{status}");
    assert_eq!(status["dlq"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_answer_is_asked_again_on_retry_not_replayed() {
    // JSON, but never the shape the task wants.
    let script = Script::new().expect_api_key(API_KEY).reply("List three colours", r#"{"shades": []}"#);
    let server = LlmServer::start(script);
    let project = Project::http(
        &server,
        r#"
        [tasks.picky]
        component = "{probe}"
        retries = 1
        "#,
    );
    let run = project.run("picky", r#"{"mode": "llm-json", "attempts": 2}"#).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.attempts.len(), 2);
    for attempt in &run.attempts {
        assert_eq!(attempt.error.as_ref().unwrap().kind, "invalid-output", "{attempt:?}");
        assert_eq!((attempt.llm_live, attempt.llm_replayed), (2, 0), "both asks live, none of the rejected replayed");
    }
    assert_eq!(server.requests(), 4, "each attempt asked both questions");
    let journal = project.store().journal_of(&run.id).unwrap();
    let rejects: Vec<_> = journal.iter().filter(|e| e.key.kind == CallKind::Reject).collect();
    assert_eq!(rejects.len(), 4, "every answer is marked rejected");
    assert!(rejects[0].output.contains("missing field `colours`"), "{:?}", rejects[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_after_a_recalled_step_gets_its_own_answer_not_the_one_inside_the_step() {
    // Every live ask gets a new answer, so a replay of the wrong recording shows.
    let server = LlmServer::start(Script::new().expect_api_key(API_KEY).number_answers());
    let project = Project::http(
        &server,
        r#"
        [tasks.steps]
        component = "{probe}"
        retries = 1
        "#,
    );
    // Attempt 1 asks inside the step, then fails before asking again after it.
    let input = r#"{"mode": "traced-llm", "question": "q", "ask_after": true, "fail_on_first_attempt": true}"#;
    let run = project.run("steps", input).await;
    let out = output_json(&run);
    assert_eq!(out["answer"], "answer #1 to: q", "{out}");
    assert_eq!(out["after"], "answer #2 to: q", "the ask after the recalled step is its own, asked live: {out}");
    assert_eq!(out["step_executions"], 1, "{out}");
    assert_eq!((run.attempts[1].llm_live, run.attempts[1].trace_replayed), (1, 1), "{:?}", run.attempts[1]);
    assert_eq!(server.requests(), 2);

    // Attempt 1 asks both, then fails: attempt 2 replays each where it belongs.
    let input = r#"{"mode": "traced-llm", "question": "r", "ask_after": true, "fail_after_asking": true}"#;
    let run = project.run("steps", input).await;
    let out = output_json(&run);
    assert_eq!((out["answer"].as_str(), out["after"].as_str()), (Some("answer #3 to: r"), Some("answer #4 to: r")));
    assert_eq!((run.attempts[1].llm_live, run.attempts[1].llm_replayed), (0, 1), "{:?}", run.attempts[1]);
    assert_eq!(server.requests(), 4, "nothing asked twice");
}
