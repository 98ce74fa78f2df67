//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (`support/browser.rs`).
//!
//! Two kinds of tests. `page_*` serve the dashboard's embedded files
//! (`cairn::server::dashboard::asset`) beside a canned API (fixed runs,
//! journal, report, dead letter), so the page's own logic is checked with no
//! host.
//! `served_*` start a real `cairn serve` on a project and do what a user
//! would: submit the refiner and watch it finish, read its timeline and
//! report, retry and purge dead letters, cancel a running run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::browser::Browser;
use crate::support::guests::cairn_bin;
use crate::support::llm_server::{Fault, LlmServer, Script};
use crate::support::project::{API_KEY, Project, refiner_script};

const WAIT: Duration = Duration::from_secs(15);

// ------------------------------------------------------- the canned API

/// The token the canned API accepts.
const TOKEN: &str = "test-token";
/// A finished refiner run: one attempt, five LLM calls, two traced steps, a child.
const REFINER_RUN: &str = "01990000-0000-7000-8000-000000000001";
/// Its child run.
const CHILD_RUN: &str = "01990000-0000-7000-8000-000000000002";
/// A dead-lettered probe run.
const DEAD_RUN: &str = "01990000-0000-7000-8000-000000000003";
/// A run whose task name and error carry markup, which must stay text.
const HOSTILE_RUN: &str = "01990000-0000-7000-8000-000000000004";
/// The run a submission creates.
const NEW_RUN: &str = "01990000-0000-7000-8000-000000000005";
const HOSTILE_TEXT: &str = "<img src=x onerror=\"window.pwned=1\">";

/// One request the canned API received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    target: String,
    authorization: Option<String>,
    body: String,
}

/// The dashboard's embedded files and a canned `/api/v1`, on 127.0.0.1.
struct CannedServer {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CannedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CannedServer {
    async fn start() -> CannedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let data = Arc::new(CannedData::new());
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_one(stream, data.clone(), log.clone()));
            }
        });
        CannedServer { url, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn requests_to(&self, method: &str, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.method == method && s.target.split('?').next() == Some(path)).collect()
    }
}

/// Reads one HTTP/1.1 request, answers it and closes the connection.
async fn serve_one(mut stream: TcpStream, data: Arc<CannedData>, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let (method, target) = (request_line.next().unwrap_or_default(), request_line.next().unwrap_or_default());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    let seen = Seen {
        method: method.to_owned(),
        target: target.to_owned(),
        authorization: headers.get("authorization").cloned(),
        body,
    };
    log.lock().unwrap().push(seen.clone());
    let (status, content_type, body) = data.answer(&seen);
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

/// The canned answers.
struct CannedData {
    runs: Vec<Value>,
    journals: HashMap<&'static str, Vec<Value>>,
}

fn run_view(id: &str, task: &str, status: &str, started: u64, attempts: Value, extra: Value) -> Value {
    let finished = attempts.as_array().and_then(|a| a.last()).map(|a| a["finished_at_ms"].clone());
    let mut view = json!({
        "run_id": id, "task": task, "tenant": "default/development", "status": status,
        "output": null, "error": null, "attempts": attempts,
        "timings": { "created_at_ms": started, "finished_at_ms": finished, "duration_ms": 2100 },
        "llm": { "calls_live": 5, "calls_replayed": 0, "prompt_tokens": 400, "completion_tokens": 250 },
        "journal_entries": 7, "cached_from": null, "produced_by": null, "degraded": false,
        "replay_of": null, "parent": null, "group": null, "component_digest": "abc",
    });
    for (k, v) in extra.as_object().unwrap() {
        view[k] = v.clone();
    }
    view
}

fn attempt(number: u32, start: u64, end: u64, error: Value) -> Value {
    json!({
        "number": number, "started_at_ms": start, "finished_at_ms": end, "duration_ms": end - start,
        "error": error, "llm_calls_live": 5, "llm_calls_replayed": 0, "traces_replayed": 0, "task": null,
    })
}

fn entry(seq: u64, kind: &str, name: &str, at: u64, ms: u64, output: &str) -> Value {
    let usage = (kind == "llm").then(|| json!({ "prompt_tokens": 80, "completion_tokens": 50 }));
    json!({
        "seq": seq, "attempt": 1, "kind": kind, "name": name, "occurrence": 1, "input_hash": "00",
        "output": output, "summary": format!("{name} #{seq}"), "recorded_at_ms": at, "duration_ms": ms, "usage": usage,
    })
}

impl CannedData {
    fn new() -> CannedData {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 - 60_000;
        let llm = r#"{"content":"A first draft.","model":"test-model","usage":{"prompt_tokens":80,"completion_tokens":50},"provider":"local"}"#;
        let refiner = run_view(
            REFINER_RUN,
            "report-refiner",
            "succeeded",
            t,
            json!([attempt(1, t + 20, t + 2020, Value::Null)]),
            json!({ "output": { "final_score": 8, "summary": "Printing spread knowledge fast." } }),
        );
        let child = run_view(
            CHILD_RUN,
            "probe",
            "succeeded",
            t + 500,
            json!([attempt(1, t + 520, t + 900, Value::Null)]),
            json!({ "parent": REFINER_RUN }),
        );
        let unavailable =
            json!({ "kind": "llm-unavailable", "message": "provider local answered 503", "retryable": true });
        let dead = run_view(
            DEAD_RUN,
            "probe",
            "failed",
            t + 3000,
            json!([attempt(1, t + 3010, t + 3300, unavailable.clone())]),
            json!({ "error": unavailable }),
        );
        let hostile = run_view(
            HOSTILE_RUN,
            HOSTILE_TEXT,
            "failed",
            t + 4000,
            json!([]),
            json!({ "error": { "kind": "trap", "message": HOSTILE_TEXT, "retryable": false } }),
        );
        let mut journal = Vec::new();
        for i in 0..5u64 {
            let at = t + 300 + i * 350;
            journal.push(entry(i * 2, "llm", "complete", at, 200, llm));
            if i < 2 {
                journal.push(entry(i * 2 + 1, "trace", "critique", at + 20, 5, "{}"));
            }
        }
        let journals = HashMap::from([
            (REFINER_RUN, journal),
            (CHILD_RUN, vec![entry(0, "trace", "echo", t + 800, 10, "{}")]),
            (DEAD_RUN, vec![]),
            (HOSTILE_RUN, vec![]),
        ]);
        CannedData { runs: vec![hostile, dead, refiner, child], journals }
    }

    fn run(&self, id: &str) -> Option<&Value> {
        self.runs.iter().find(|r| r["run_id"] == id)
    }

    fn answer(&self, seen: &Seen) -> (u16, &'static str, Vec<u8>) {
        let (path, query) = seen.target.split_once('?').unwrap_or((&seen.target, ""));
        if let Some((content_type, bytes)) = cairn::server::dashboard::asset(path) {
            return (200, content_type, bytes.to_vec());
        }
        let json = |status: u16, value: Value| (status, "application/json", value.to_string().into_bytes());
        let not_found = || json(404, json!({ "error": { "kind": "not-found", "message": "no such thing" } }));
        if path.ends_with("/events") {
            if !query.split('&').any(|p| p == format!("token={TOKEN}")) {
                return json(401, json!({ "error": { "kind": "unauthorized", "message": "bad token" } }));
            }
            return (200, "text/event-stream", b"retry: 60000\nevent: hello\ndata: {}\n\n".to_vec());
        }
        if seen.authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            return json(401, json!({ "error": { "kind": "unauthorized", "message": "bad token" } }));
        }
        let parts: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
        match (seen.method.as_str(), parts.as_slice()) {
            ("GET", ["tasks"]) => json(
                200,
                json!({ "tasks": [
                    { "name": "probe", "environment": "default", "stats": { "runs": 2 } },
                    { "name": "report-refiner", "environment": "default", "stats": { "runs": 1 }, "interface": {
                        "hash": "0123456789abcdef",
                        "output": true,
                        "input": {
                            "type": "object",
                            "required": ["topic"],
                            "properties": {
                                "topic": { "$ref": "#/$defs/Topic" },
                                "rounds": { "type": "integer", "minimum": 1 },
                                "style": { "enum": ["brief", "full"] },
                                "draft": { "type": "boolean" },
                                "tags": { "type": "array", "items": { "type": "string" } },
                                "options": { "type": "object" },
                            },
                            "$defs": { "Topic": { "type": "string", "description": "What to write about." } },
                        },
                    } },
                ]}),
            ),
            ("GET", ["runs"]) => {
                let runs: Vec<&Value> = if query.contains(&format!("parent={REFINER_RUN}")) {
                    self.runs.iter().filter(|r| r["parent"] == REFINER_RUN).collect()
                } else {
                    self.runs.iter().filter(|r| r["parent"].is_null()).collect()
                };
                json(200, json!({ "runs": runs, "next": null }))
            }
            ("POST", ["runs"]) => json(202, run_view(NEW_RUN, "probe", "running", 0, json!([]), json!({}))),
            ("GET", ["runs", id]) => self.run(id).map_or_else(not_found, |r| json(200, r.clone())),
            ("GET", ["runs", id, "journal"]) => {
                self.journals.get(id).map_or_else(not_found, |j| json(200, json!({ "entries": j, "next": null })))
            }
            ("GET", ["runs", _, "logs"]) => {
                json(200, json!({ "attempts": [{ "attempt": 1, "stdout": "round 1: revising\ndone", "stderr": "" }] }))
            }
            ("GET", ["runs", id, "report"]) if *id == REFINER_RUN => json(
                200,
                json!({ "tabs": [
                    { "name": "Round 1", "markdown": "<h2>Round 1</h2><p>Score 4/10.</p>" },
                    { "name": "Summary", "markdown": "<h2>Printing</h2><p>Final score 8/10.</p><script>window.parent.pwned = 1</script>" },
                ]}),
            ),
            ("GET", ["dlq"]) => {
                let dead = self.run(DEAD_RUN).unwrap();
                json(200, json!({ "letters": [letter(dead)] }))
            }
            ("GET", ["dlq", id]) if *id == DEAD_RUN => json(200, letter(self.run(DEAD_RUN).unwrap())),
            ("POST", ["dlq", id, "retry"]) if *id == DEAD_RUN => {
                let mut view = self.run(DEAD_RUN).unwrap().clone();
                view["status"] = json!("running");
                json(202, view)
            }
            ("DELETE", ["dlq", id]) if *id == DEAD_RUN => json(200, json!({ "removed": 1 })),
            ("GET", ["breakers"]) => json(
                200,
                json!({ "breakers": [{ "name": "llm:local", "state": "open", "failures": 5, "retry_at_ms": 4_102_444_800_000u64 }] }),
            ),
            ("GET", ["pools"]) => json(
                200,
                json!({ "pools": [{ "environment": "llm", "replicas": 2, "live": 2, "idle": 1, "busy": 1, "queued": 0, "instantiations": 2, "reuses": 7 }] }),
            ),
            _ => not_found(),
        }
    }
}

fn letter(run: &Value) -> Value {
    json!({
        "run_id": run["run_id"], "task": run["task"], "input": r#"{"mode": "llm-calls", "calls": 1}"#,
        "failed_at_ms": run["timings"]["finished_at_ms"], "error": run["error"], "attempts": run["attempts"],
    })
}

/// The errors the page caught (window errors and unhandled rejections).
async fn page_errors(browser: &Browser) -> Value {
    browser.script("return window.cairnErrors || null;", vec![]).await
}

// --------------------------------------------- tests on the canned API

#[tokio::test(flavor = "multi_thread")]
async fn page_asks_for_the_token_and_checks_it() {
    let server = CannedServer::start().await;
    let browser = Browser::start("page_asks_for_the_token_and_checks_it").await;
    browser.goto(&format!("{}/", server.url)).await;
    browser.wait_for("#login-form", WAIT).await;
    let text = browser.text("#login-form").await;
    assert!(text.contains(".cairn/serve.token"), "the form says where the token is: {text}");
    assert_eq!(browser.count("#runs-table").await, 0, "nothing shows before signing in");

    browser.type_into("#login-token", "wrong-token").await;
    browser.click("#login-go").await;
    browser.wait_text("#login-error", "The server refused that token.", WAIT).await;

    browser.type_into("#login-token", TOKEN).await;
    browser.click("#login-go").await;
    browser.wait_count("#runs-body tr.run-row", 3, WAIT).await;
    assert_eq!(
        browser.script("return sessionStorage.getItem('cairn.token');", vec![]).await,
        TOKEN,
        "the token is kept for the tab"
    );
    assert_eq!(page_errors(&browser).await, json!([]));

    browser.click("#logout").await;
    browser.wait_for("#login-form", WAIT).await;
    assert_eq!(browser.script("return sessionStorage.getItem('cairn.token');", vec![]).await, Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn page_takes_the_token_from_the_fragment_and_shows_text_as_text() {
    let server = CannedServer::start().await;
    let browser = Browser::start("page_takes_the_token_from_the_fragment_and_shows_text_as_text").await;
    browser.goto(&format!("{}/#token={TOKEN}", server.url)).await;
    browser.wait_count("#runs-body tr.run-row", 3, WAIT).await;
    let url = browser.url().await;
    assert!(url.ends_with("/#/runs") && !url.contains(TOKEN), "the token left the URL: {url}");

    // Markup in a task name and an error is shown as typed, never run.
    let row = format!("tr.run-row[data-run-id=\"{HOSTILE_RUN}\"]");
    let text = browser.text(&row).await;
    assert!(text.contains(HOSTILE_TEXT), "{text}");
    assert_eq!(browser.count(&format!("{row} img")).await, 0);
    assert_eq!(browser.script("return window.pwned === undefined;", vec![]).await, true);

    // Every API call carried the token as a bearer; the event stream in its query.
    let seen = server.seen();
    let api: Vec<&Seen> = seen.iter().filter(|s| s.target.starts_with("/api/v1/")).collect();
    assert!(api.iter().any(|s| s.target.starts_with("/api/v1/runs?")), "{api:?}");
    for s in &api {
        if s.target.starts_with("/api/v1/events") {
            assert!(s.target.contains(&format!("token={TOKEN}")), "{s:?}");
        } else {
            assert_eq!(s.authorization.as_deref(), Some(&*format!("Bearer {TOKEN}")), "{s:?}");
        }
    }

    // Filters: status and text narrow the table, and stay in the URL.
    browser.select("#filter-status", "failed").await;
    browser
        .wait_until("a status=failed query", WAIT, async || {
            server.seen().iter().any(|s| s.target.contains("status=failed")).then_some(())
        })
        .await;
    browser.select("#filter-status", "").await;
    browser.type_into("#filter-text", "refiner").await;
    browser.wait_count("#runs-body tr.run-row", 1, WAIT).await;
    assert!(browser.url().await.contains("q=refiner"));

    // Breakers and pools render their tables.
    browser.click("#nav-breakers").await;
    browser.wait_text("tr.breaker-row[data-name=\"llm:local\"] .status", "open", WAIT).await;
    browser.click("#nav-pools").await;
    browser.wait_for("tr.pool-row[data-environment=\"llm\"]", WAIT).await;
    let pool = browser.text("tr.pool-row").await;
    assert!(pool.contains('7'), "reuses shown: {pool}");
    assert_eq!(page_errors(&browser).await, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn page_shows_a_run_its_timeline_logs_and_sandboxed_report() {
    let server = CannedServer::start().await;
    let browser = Browser::start("page_shows_a_run_its_timeline_logs_and_sandboxed_report").await;
    browser.goto(&format!("{}/#token={TOKEN}", server.url)).await;
    browser.wait_for("#runs-table", WAIT).await;
    browser.click(&format!("tr.run-row[data-run-id=\"{REFINER_RUN}\"] a.run-link")).await;
    browser.wait_text("#run-status", "succeeded", WAIT).await;
    assert!(browser.text("#run-output").await.contains("Printing spread knowledge fast."));
    assert_eq!(browser.count("#cancel-run").await, 0, "no cancel for a finished run");

    browser.click("#tab-timeline").await;
    browser.wait_count("[data-call-kind=llm]", 5, WAIT).await;
    assert_eq!(browser.count("[data-call-kind=trace]").await, 3, "two in the run, one in its child");
    assert_eq!(browser.count(".attempt-bar").await, 2, "one row for the run, one for its child");
    assert_eq!(browser.count(&format!(".tl-row[data-run-id=\"{CHILD_RUN}\"] .attempt-bar[data-outcome=ok]")).await, 1);
    assert!(browser.url().await.ends_with(&format!("#/runs/{REFINER_RUN}/timeline")));
    browser.click("[data-call-kind=llm]").await;
    browser.wait_for("#call-detail:not([hidden])", WAIT).await;
    let detail = browser.text("#call-detail").await;
    for part in ["LLM call", "local", "test-model", "80 prompt, 50 completion", "200 ms", "live in attempt 1"] {
        assert!(detail.contains(part), "{part:?} missing from the call's detail: {detail}");
    }

    browser.click("#tab-logs").await;
    browser.wait_for(".attempt-log[data-attempt=\"1\"]", WAIT).await;
    assert!(browser.text(".attempt-log").await.contains("round 1: revising"));

    browser.click("#tab-report").await;
    browser.wait_count("#report-tabs .report-tab", 2, WAIT).await;
    browser.click("#report-tabs .report-tab[data-tab=Summary]").await;
    let frame = browser
        .script("const f = document.querySelector('#report-body iframe'); return f && [f.getAttribute('sandbox'), f.srcdoc];", vec![])
        .await;
    assert_eq!(frame[0], "", "the report frame is sandboxed with nothing allowed: {frame}");
    assert!(frame[1].as_str().unwrap().contains("Final score 8/10"), "{frame}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(browser.script("return window.pwned === undefined;", vec![]).await, true, "the report's script ran");
    assert_eq!(page_errors(&browser).await, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn page_retries_a_dead_letter_and_submits_a_run() {
    let server = CannedServer::start().await;
    let browser = Browser::start("page_retries_a_dead_letter_and_submits_a_run").await;
    browser.goto(&format!("{}/#token={TOKEN}", server.url)).await;
    browser.click("#nav-dlq").await;
    browser.click(&format!("tr.letter-row[data-run-id=\"{DEAD_RUN}\"] a.letter-link")).await;
    browser.wait_for("#retry-letter", WAIT).await;
    assert!(browser.text("#letter-input").await.contains("llm-calls"));
    browser.type_into("#stub-output", "stubbed answer").await;
    browser.click("#retry-letter").await;
    browser
        .wait_until("the retried run's page", WAIT, async || {
            browser.url().await.ends_with(&format!("#/runs/{DEAD_RUN}")).then_some(())
        })
        .await;
    let retries = server.requests_to("POST", &format!("/api/v1/dlq/{DEAD_RUN}/retry"));
    assert_eq!(retries.len(), 1);
    assert_eq!(serde_json::from_str::<Value>(&retries[0].body).unwrap(), json!({ "stub_output": "stubbed answer" }));

    browser.goto(&format!("{}/#/dlq/{DEAD_RUN}", server.url)).await;
    browser.click("#purge-letter").await;
    browser
        .wait_until("the purge", WAIT, async || {
            (!server.requests_to("DELETE", &format!("/api/v1/dlq/{DEAD_RUN}")).is_empty()).then_some(())
        })
        .await;

    browser.click("#nav-submit").await;
    browser.wait_for("#submit-form[data-ready=true]", WAIT).await;
    browser.select("#submit-task", "probe").await;
    browser.type_into("#submit-input", "{not json").await;
    browser.click("#submit-go").await;
    browser.wait_for("#submit-error", WAIT).await;
    assert!(server.requests_to("POST", "/api/v1/runs").is_empty(), "bad JSON is not sent");
    browser.type_into("#submit-input", r#"{"mode": "echo", "n": 1}"#).await;
    browser.click("#submit-go").await;
    browser
        .wait_until("the new run's page", WAIT, async || {
            browser.url().await.ends_with(&format!("#/runs/{NEW_RUN}")).then_some(())
        })
        .await;
    let submitted = server.requests_to("POST", "/api/v1/runs");
    assert_eq!(
        serde_json::from_str::<Value>(&submitted[0].body).unwrap(),
        json!({ "task": "probe", "input": { "mode": "echo", "n": 1 }, "wait": false })
    );
    assert_eq!(page_errors(&browser).await, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn page_makes_the_submit_form_from_the_tasks_input_schema() {
    let server = CannedServer::start().await;
    let browser = Browser::start("page_makes_the_submit_form_from_the_tasks_input_schema").await;
    browser.goto(&format!("{}/#token={TOKEN}", server.url)).await;
    browser.click("#nav-submit").await;
    browser.wait_for("#submit-form[data-ready=true]", WAIT).await;
    browser.select("#submit-task", "probe").await;
    assert_eq!(browser.count("#submit-fields").await, 0, "a task without an interface gets the JSON text only");
    browser.select("#submit-task", "report-refiner").await;
    browser.wait_for("#field-topic", WAIT).await;
    assert!(browser.text("#submit-fields").await.contains("What to write about. · required"));
    assert_eq!(browser.count("#field-options").await, 0, "an object property is edited in the JSON text");
    browser.type_into("#field-topic", "Tides").await;
    browser.type_into("#field-rounds", "3").await;
    browser.select("#field-style", "1").await;
    browser.click("#field-draft").await;
    browser.type_into("#field-tags", "sea\nmoon").await;
    let written = browser.script("return document.querySelector('#submit-input').value", vec![]).await;
    let text: Value = serde_json::from_str(written.as_str().unwrap()).unwrap();
    let expected = json!({ "topic": "Tides", "rounds": 3, "style": "full", "draft": true, "tags": ["sea", "moon"] });
    assert_eq!(text, expected, "the fields write the JSON that is sent");
    browser.click("#submit-go").await;
    browser
        .wait_until("the new run's page", WAIT, async || {
            browser.url().await.ends_with(&format!("#/runs/{NEW_RUN}")).then_some(())
        })
        .await;
    let submitted = server.requests_to("POST", "/api/v1/runs");
    assert_eq!(serde_json::from_str::<Value>(&submitted[0].body).unwrap()["input"], expected);
    assert_eq!(page_errors(&browser).await, json!([]));
}

// --------------------------------------------------- a real cairn serve

/// A `cairn serve` process on a project: its URL and token; stopped with
/// SIGTERM on drop.
struct Served {
    child: Child,
    url: String,
    token: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Served {
    /// Starts `cairn serve --listen 127.0.0.1:0` and waits for `.cairn/serve.json`.
    fn start(project: &Project) -> Served {
        let log = project.path().join("serve.log");
        let child = Command::new(cairn_bin())
            .arg("--manifest")
            .arg(&project.manifest)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(project.path().join("serve.err")).unwrap())
            .spawn()
            .expect("cairn serve starts");
        let pid = child.id();
        let info_path = project.path().join(".cairn/serve.json");
        let started = Instant::now();
        let info: Value = loop {
            let info = std::fs::read(&info_path).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            if let Some(info) = info.filter(|i| i["pid"] == pid && i["url"].is_string()) {
                break info;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "cairn serve wrote no {}; its stderr:\n{}",
                info_path.display(),
                std::fs::read_to_string(project.path().join("serve.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let token_file = Path::new(info["token_file"].as_str().expect("token_file"));
        let token_file = if token_file.is_absolute() { token_file.to_owned() } else { project.path().join(token_file) };
        let token = std::fs::read_to_string(&token_file).expect("the token file").trim().to_owned();
        let url = info["url"].as_str().unwrap().trim_end_matches('/').to_owned();
        Served { child, url, token, log, http: reqwest::Client::new() }
    }

    /// Calls the API with the token; the JSON answer, which must be a success.
    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Signs the browser in the way `cairn serve` tells a user to: the URL with the token in its fragment.
    async fn open(&self, browser: &Browser) {
        browser.goto(&format!("{}/#token={}", self.url, self.token)).await;
        browser.wait_for("#runs-table", WAIT).await;
    }

    /// Opens a page of the dashboard (`#/...`) in a signed-in browser.
    async fn page(&self, browser: &Browser, route: &str) {
        browser.goto(&format!("{}/{route}", self.url)).await;
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SIGTERM: the server stops taking work and shuts down in order.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                if !std::thread::panicking() {
                    assert!(
                        status.success(),
                        "cairn serve exited with {status} after SIGTERM; log in {}",
                        self.log.display()
                    );
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            panic!("cairn serve did not stop within 30s of SIGTERM");
        }
    }
}

const REFINER: &str = r#"
[tasks.report-refiner]
component = "{refiner}"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn served_refiner_submitted_from_the_form_finishes_live_with_its_timeline_and_report() {
    // Each answer takes a while, so the page is seen running before it finishes.
    let server = LlmServer::start(refiner_script().faults((0..5).map(|_| Fault::Delay(Duration::from_millis(400)))));
    let project = Project::http(&server, REFINER);
    let served = Served::start(&project);
    let browser = Browser::start("served_refiner_submitted_from_the_form").await;
    served.open(&browser).await;

    browser.click("#nav-submit").await;
    browser.wait_for("#submit-form[data-ready=true]", WAIT).await;
    browser.select("#submit-task", "report-refiner").await;
    browser.type_into("#submit-input", r#"{"topic": "The printing press", "max_rounds": 3}"#).await;
    browser.click("#submit-go").await;
    browser.wait_for("#run-status", WAIT).await;
    let run_id = browser.text("#run-id").await;
    // A mark that a reload would wipe: the status must change in this page.
    browser.script("window.cairnTestMark = 'same page';", vec![]).await;
    let mut seen = Vec::new();
    browser
        .wait_until("the run to succeed", Duration::from_secs(60), async || {
            let status = browser.try_text("#run-status").await?;
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            (status == "succeeded").then_some(())
        })
        .await;
    assert!(seen.iter().any(|s| s == "running"), "the page showed the run running first: {seen:?}");
    assert_eq!(browser.script("return window.cairnTestMark;", vec![]).await, "same page", "the page was reloaded");
    let events = browser.script("return Number(document.querySelector('#live').dataset.events);", vec![]).await;
    assert!(events.as_u64() >= Some(3), "the page heard the run's events over its stream: {events}");
    assert!(browser.text("#run-output").await.contains("Printing spread knowledge fast."));
    assert_eq!(server.requests(), 5);

    browser.click("#tab-timeline").await;
    browser.wait_count("[data-call-kind=llm]", 5, WAIT).await;
    assert_eq!(browser.count(".attempt-bar").await, 1);
    assert_eq!(browser.count(".attempt-bar[data-outcome=ok]").await, 1);

    browser.click("#tab-report").await;
    browser
        .wait_until("report tabs", WAIT, async || (browser.count("#report-tabs .report-tab").await >= 2).then_some(()))
        .await;
    browser.click("#report-tabs .report-tab[data-tab=Summary]").await;
    let srcdoc = browser.script("return document.querySelector('#report-body iframe').srcdoc;", vec![]).await;
    assert!(srcdoc.as_str().unwrap().contains("Final score 8/10"), "{srcdoc}");

    let view = served.api(reqwest::Method::GET, &format!("/api/v1/runs/{run_id}"), None).await;
    assert_eq!(view["status"], "succeeded");
    assert_eq!(page_errors(&browser).await, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn served_dead_letters_are_retried_and_purged_from_the_dashboard() {
    // Each run's one call fails for good: three 503s (one call and the provider's two retries).
    let server = LlmServer::start(Script::new().expect_api_key(API_KEY).faults((0..6).map(|_| Fault::Status(503))));
    let project = Project::http(
        &server,
        r#"
        [tasks.flaky]
        component = "{probe}"
        retries = 0
        "#,
    );
    let served = Served::start(&project);
    let mut dead = Vec::new();
    for tag in 1..=2 {
        let input = json!({ "mode": "llm-calls", "calls": 1, "tag": tag });
        let run = served
            .api(reqwest::Method::POST, "/api/v1/runs", Some(json!({ "task": "flaky", "input": input, "wait": true })))
            .await;
        assert_eq!(run["status"], "failed", "{run}");
        dead.push(run["run_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(server.pending_faults(), 0);

    let browser = Browser::start("served_dead_letters_are_retried_and_purged").await;
    served.open(&browser).await;
    browser.click("#nav-dlq").await;
    browser.wait_count("tr.letter-row", 2, WAIT).await;

    // The provider is back: the retry succeeds.
    browser.click(&format!("tr.letter-row[data-run-id=\"{}\"] a.letter-link", dead[0])).await;
    browser.click("#retry-letter").await;
    browser
        .wait_until("the retried run's page", WAIT, async || {
            browser.url().await.ends_with(&format!("#/runs/{}", dead[0])).then_some(())
        })
        .await;
    browser.wait_text("#run-status", "succeeded", Duration::from_secs(30)).await;

    browser.click("#nav-dlq").await;
    browser.wait_count("tr.letter-row", 1, WAIT).await;
    browser.click(&format!("tr.letter-row[data-run-id=\"{}\"] a.letter-link", dead[1])).await;
    browser.click("#purge-letter").await;
    browser.wait_for("#dlq-empty", WAIT).await;

    let letters = served.api(reqwest::Method::GET, "/api/v1/dlq", None).await;
    assert_eq!(letters["letters"], json!([]));
    let purged = served.api(reqwest::Method::GET, &format!("/api/v1/runs/{}", dead[1]), None).await;
    assert_eq!(purged["status"], "failed", "a purged letter's run stays in the runs");
    assert_eq!(page_errors(&browser).await, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn served_running_run_is_cancelled_from_the_dashboard() {
    let project = Project::new(
        r#"
        [environments.slow]
        resources = { timeout = "10m" }

        [tasks.sleeper]
        component = "{probe}"
        environment = "slow"
        "#,
    );
    let served = Served::start(&project);
    let run = served
        .api(
            reqwest::Method::POST,
            "/api/v1/runs",
            Some(json!({ "task": "sleeper", "input": { "mode": "sleep", "ms": 600_000 }, "wait": false })),
        )
        .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();

    let browser = Browser::start("served_running_run_is_cancelled").await;
    served.open(&browser).await;
    served.page(&browser, &format!("#/runs/{run_id}")).await;
    browser.wait_text("#run-status", "running", Duration::from_secs(30)).await;
    browser.click("#cancel-run").await;
    browser.wait_text("#run-status", "cancelled", Duration::from_secs(30)).await;
    browser.wait_gone("#cancel-run", WAIT).await;

    let view = served.api(reqwest::Method::GET, &format!("/api/v1/runs/{run_id}"), None).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    assert_eq!(page_errors(&browser).await, json!([]));
}
