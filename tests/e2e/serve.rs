//! `cairn serve` as a client sees it: a real server process on an ephemeral
//! port, its API over HTTP, cancel, a graceful stop and restart, and a load.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cairn::store::prelude::*;
use reqwest::Method;
use serde_json::json;

use crate::support::llm_server::{Fault, LlmServer, Script};
use crate::support::project::{Project, refiner_script};
use crate::support::serve::{Served, answer};

const TASKS: &str = r#"
[tasks.probe]
component = "{probe}"

[tasks.report-refiner]
component = "{refiner}"
"#;

/// Every `METHOD /path` docs/api.md lists.
fn documented_routes() -> BTreeSet<(String, String)> {
    let doc = std::fs::read_to_string(crate::support::guests::repo_root().join("docs/api.md")).unwrap();
    doc.lines()
        .filter_map(|line| {
            let cell = line.strip_prefix("| `")?.split('`').next()?;
            let (method, path) = cell.split_once(' ')?;
            let path = path.split('?').next()?.to_owned();
            // The document itself is not in the document.
            (path != "/openapi.json").then(|| (method.to_lowercase(), path))
        })
        .collect()
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_with_the_token_and_bad_input_gets_a_clear_4xx() {
    let llm = LlmServer::start(refiner_script());
    let project = Project::http(&llm, TASKS);
    let mut server = Served::start(&project, &[]);

    // The document lists every route, and docs/api.md documents exactly those.
    let (status, doc) = answer(server.http.get(format!("{}/openapi.json", server.url)).send().await.unwrap()).await;
    assert_eq!(status, 200, "the OpenAPI document needs no token");
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(routes, documented_routes(), "docs/api.md and /openapi.json list the same routes");
    assert!(routes.len() >= 24, "{routes:?}");

    // No route answers without the token, or with a wrong one.
    for (method, path) in &routes {
        let path = path.replace("{id}", "some-run").replace("{key}", "some-key");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let url = format!("{}{path}", server.url);
        let (status, body) = answer(server.http.request(method.clone(), &url).send().await.unwrap()).await;
        assert_eq!((status, body["error"]["kind"].as_str()), (401, Some("unauthorized")), "{method} {path}");
        let wrong = server.http.request(method.clone(), &url).bearer_auth("not-the-token").send().await.unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{method} {path} with a wrong token");
    }

    // Runs.
    let (status, run) =
        server.post("/api/v1/runs", json!({"task": "report-refiner", "input": {"topic": "Tides"}, "wait": true})).await;
    assert_eq!((status, run["status"].as_str()), (200, Some("succeeded")), "{run}");
    let id = run["run_id"].as_str().unwrap().to_owned();
    let (status, queued) = server.post("/api/v1/runs", json!({"task": "probe", "input": {"mode": "echo"}})).await;
    assert_eq!((status, queued["status"].as_str()), (202, Some("running")), "{queued}");
    let (_, listed) = server.get("/api/v1/runs?limit=1").await;
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1);
    assert!(listed["next"].is_string(), "a full page names the next: {listed}");
    let (_, shown) = server.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(shown["output"], run["output"]);
    let (_, journal) = server.get(&format!("/api/v1/runs/{id}/journal?limit=3")).await;
    let entries = journal["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let next = journal["next"].as_u64().expect("a full page has a next");
    let (_, rest) = server.get(&format!("/api/v1/runs/{id}/journal?after={next}")).await;
    assert_eq!(rest["entries"].as_array().unwrap().len() + 3, run["journal_entries"].as_u64().unwrap() as usize);
    let llm_calls = entries.iter().chain(rest["entries"].as_array().unwrap()).filter(|e| e["kind"] == "llm").count();
    assert_eq!(llm_calls, 5, "the refiner's five LLM calls are in its journal");
    assert_eq!(server.get(&format!("/api/v1/runs/{id}/logs")).await.0, 200);
    let (status, report) = server.get(&format!("/api/v1/runs/{id}/report")).await;
    assert_eq!(status, 200, "{report}");
    assert!(!report["tabs"].as_array().unwrap().is_empty());
    let (status, conflict) = server.post(&format!("/api/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!((status, conflict["error"]["kind"].as_str()), (409, Some("conflict")), "{conflict}");
    assert_eq!(server.post(&format!("/api/v1/runs/{id}/resume"), json!({})).await.0, 409);
    let (status, missing) = server.get("/api/v1/runs/no-such-run").await;
    assert_eq!((status, missing["error"]["kind"].as_str()), (404, Some("not-found")));
    assert!(missing["error"]["message"].as_str().unwrap().contains("no run with id no-such-run"), "{missing}");

    // A cassette moves a run between servers: exported through this one, imported through another.
    let cassette = project.path().join("run.json");
    let exported = project.cli(&["runs", "export", &id, "-o", cassette.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(&cassette).unwrap()).unwrap();
    let (status, again) = server.post("/api/v1/runs/import", body).await;
    assert_eq!((status, again["error"]["kind"].as_str()), (409, Some("conflict")), "{again}");
    let (status, bad) = server.post("/api/v1/runs/import", json!({"format": "nope"})).await;
    assert_eq!(status, 400, "{bad}");
    let elsewhere = Project::http(&llm, TASKS);
    let other = Served::start(&elsewhere, &[]);
    let imported = elsewhere.cli(&["runs", "import", cassette.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    assert_eq!(
        other.get(&format!("/api/v1/runs/{id}")).await.1["output"],
        run["output"],
        "imported through the other server"
    );
    drop(other);

    // One run's event stream starts with a hello.
    let events =
        server.http.get(format!("{}/api/v1/runs/{id}/events?token={}", server.url, server.token)).send().await.unwrap();
    assert_eq!(events.status().as_u16(), 200);
    let mut events = events;
    let first = events.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: hello"), "{first:?}");

    // Everything else.
    let (_, tasks) = server.get("/api/v1/tasks").await;
    let names: Vec<&str> = tasks["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["probe", "report-refiner"]);
    let (_, status_json) = server.get("/api/v1/status").await;
    assert_eq!(status_json["dlq"], 0);
    assert!(server.get("/api/v1/breakers").await.1["breakers"].is_array());
    assert!(server.get("/api/v1/pools").await.1["pools"].is_array());
    assert_eq!(server.get("/api/v1/dlq").await.1["letters"], json!([]));
    assert_eq!(server.get("/api/v1/dlq/some-run").await.0, 404);
    assert_eq!(server.post("/api/v1/dlq/some-run/retry", json!({})).await.0, 404);
    let (status, purged) = answer(server.request(Method::DELETE, "/api/v1/dlq").send().await.unwrap()).await;
    assert_eq!((status, purged["removed"].as_u64()), (200, Some(0)));
    assert_eq!(server.post("/api/v1/cache/clear", json!({})).await.0, 200);
    let (status, unknown) = server.post("/api/v1/cache/clear", json!({"task": "nope"})).await;
    assert_eq!(status, 400, "{unknown}");
    let (status, dry) = server.post("/api/v1/gc", json!({"older_than": "1h", "dry_run": true})).await;
    assert_eq!((status, dry["removed"].as_array().map(Vec::len)), (200, Some(0)), "{dry}");
    let (status, bad_age) = server.post("/api/v1/gc", json!({"older_than": "soon"})).await;
    assert_eq!(status, 400, "{bad_age}");

    // Secrets: the value goes in and never comes out.
    let put = server
        .request(Method::PUT, "/api/v1/secrets/api-key")
        .json(&json!({"value": "s3cr3t-value"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 204);
    let listing = server.request(Method::GET, "/api/v1/secrets").send().await.unwrap().text().await.unwrap();
    assert!(listing.contains("api-key") && !listing.contains("s3cr3t-value"), "{listing}");
    let (status, _) = answer(server.request(Method::DELETE, "/api/v1/secrets/api-key").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(answer(server.request(Method::DELETE, "/api/v1/secrets/api-key").send().await.unwrap()).await.0, 404);

    // Bad input: a clear 4xx in the API's error form, never a 500.
    let not_json = server
        .request(Method::POST, "/api/v1/runs")
        .header("content-type", "application/json")
        .body("{\"task\":")
        .send()
        .await
        .unwrap();
    let (status, body) = answer(not_json).await;
    assert_eq!((status, body["error"]["kind"].as_str()), (400, Some("bad-request")), "{body}");
    let (status, body) = server.post("/api/v1/runs", json!({"task": "probe", "input": {}, "colour": "red"})).await;
    assert!(
        (400..500).contains(&status) && body["error"]["message"].as_str().unwrap().contains("colour"),
        "{status} {body}"
    );
    let (status, body) = server.post("/api/v1/runs", json!({"task": "no-such-task", "input": {}})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("no-such-task"), "{body}");
    let no_type = server.request(Method::POST, "/api/v1/runs").body("{}").send().await.unwrap();
    let (status, body) = answer(no_type).await;
    assert_eq!((status, body["error"]["kind"].as_str()), (415, Some("bad-request")), "{body}");
    let (status, body) = server.get("/api/v1/runs?status=sideways").await;
    assert!(status == 400 && body["error"]["message"].as_str().unwrap().contains("sideways"), "{body}");
    let (status, body) = server.get("/api/v1/runs?limit=many").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.get("/api/v1/no-such-route").await;
    assert_eq!((status, body["error"]["kind"].as_str()), (404, Some("not-found")));
    let huge = json!({"task": "probe", "input": {"pad": "x".repeat(9 << 20)}});
    // On a connection of its own: the server closes one whose body it refused unread.
    let alone = reqwest::Client::new().post(format!("{}/api/v1/runs", server.url)).bearer_auth(&server.token);
    let (status, _) = answer(alone.json(&huge).send().await.unwrap()).await;
    assert_eq!(status, 413, "a body over 8 MiB is refused");

    // Metrics.
    let metrics = server.request(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    for needle in [
        "cairn_runs{task=\"report-refiner\",status=\"succeeded\"} 1",
        "cairn_attempt_duration_seconds_count",
        "cairn_llm_calls_total{source=\"live\"} 5",
        "cairn_dlq_size 0",
        "cairn_store_commit_seconds_count",
        "cairn_store_commit_batch_writes_bucket{le=\"1\"}",
    ] {
        assert!(metrics.contains(needle), "/metrics has {needle}:\n{metrics}");
    }
    assert!(server.stop(Duration::from_secs(30)).success());
    assert!(!project.path().join(".cairn/serve.json").exists(), "a stopped server removes its serve.json");
}

/// The status of a run, polled.
async fn status_of(server: &Served, id: &str) -> String {
    server.get(&format!("/api/v1/runs/{id}")).await.1["status"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_spinning_run_and_a_fan_out_with_its_children() {
    let project = Project::new(&format!("{TASKS}\n[llm]\ndefault = \"mock\"\n[llm.providers.mock]\nkind = \"mock\"\n"));
    let mut server = Served::start(&project, &[]);
    for (what, input, children) in [
        ("a spinning guest", json!({"mode": "loop"}), 0usize),
        ("a fan-out parent", json!({"mode": "fanout", "count": 4, "child": {"mode": "loop", "i": null}}), 4),
    ] {
        let (_, run) = server.post("/api/v1/runs", json!({"task": "probe", "input": input})).await;
        let id = run["run_id"].as_str().unwrap().to_owned();
        let children_path = format!("/api/v1/runs?parent={id}");
        wait_for(&format!("{what} to be under way"), Duration::from_secs(30), async || {
            let (_, listed) = server.get(&children_path).await;
            listed["runs"].as_array().unwrap().len() == children
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = Instant::now();
        let (status, cancel) = server.post(&format!("/api/v1/runs/{id}/cancel"), json!({})).await;
        assert_eq!(status, 200, "{cancel}");
        // The run and each child being driven now (one still starting is stopped as it starts).
        let stopping = cancel["stopping"].as_u64().unwrap();
        assert!((1..=1 + children as u64).contains(&stopping), "{what}: {cancel}");
        wait_for(&format!("{what} to end cancelled"), Duration::from_secs(10), async || {
            status_of(&server, &id).await == "cancelled"
        })
        .await;
        let took = asked.elapsed();
        let (_, listed) = server.get(&children_path).await;
        for child in listed["runs"].as_array().unwrap() {
            let child_id = child["run_id"].as_str().unwrap();
            wait_for("a child to end cancelled", Duration::from_secs(10), async || {
                status_of(&server, child_id).await == "cancelled"
            })
            .await;
        }
        let (_, shown) = server.get(&format!("/api/v1/runs/{id}")).await;
        assert_eq!(shown["error"]["kind"], "cancelled", "{shown}");
        assert_eq!(shown["attempts"].as_array().unwrap().len(), 1, "no retry: {shown}");
        eprintln!("{what}: cancelled {took:?} after the request (epoch tick 10 ms)");
        assert!(took < Duration::from_secs(1), "{what} took {took:?} to cancel");
    }
    assert_eq!(server.get("/api/v1/dlq").await.1["letters"], json!([]), "nothing cancelled goes to the DLQ");
    assert!(server.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_wide_fan_out_into_a_pool_frees_the_pool() {
    let manifest = format!(
        "{TASKS}\n[environments.pooled]\nreuse = {{ replicas = 2, concurrency = 4 }}\n\n[tasks.pooled-probe]\ncomponent = \"{{probe}}\"\nenvironment = \"pooled\"\n"
    );
    let project = Project::new(&manifest);
    let mut server = Served::start(&project, &[]);
    let child = json!({"mode": "sleep", "ms": 200, "i": null});
    let input = json!({"mode": "fanout", "task": "pooled-probe", "count": 400, "child": child});
    let (_, run) = server.post("/api/v1/runs", json!({"task": "probe", "input": input})).await;
    let id = run["run_id"].as_str().unwrap().to_owned();
    let children = format!("/api/v1/runs?parent={id}&limit=1000");
    wait_for("the fan-out to be well under way", Duration::from_secs(60), async || {
        let (_, listed) = server.get(&format!("{children}&status=succeeded")).await;
        listed["runs"].as_array().unwrap().len() >= 16
    })
    .await;
    let (status, cancel) = server.post(&format!("/api/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{cancel}");
    wait_for("every child to end", Duration::from_secs(60), async || {
        let (_, listed) = server.get(&children).await;
        listed["runs"].as_array().unwrap().iter().all(|c| c["status"] != "running" && c["status"] != "pending")
    })
    .await;
    let (_, listed) = server.get(&children).await;
    let statuses: BTreeSet<String> =
        listed["runs"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap().to_owned()).collect();
    assert_eq!(status_of(&server, &id).await, "cancelled");
    assert!(statuses.contains("cancelled"), "some children were cancelled: {statuses:?}");
    wait_for("the pool to have no busy instance and no queue", Duration::from_secs(10), async || {
        let (_, pools) = server.get("/api/v1/pools").await;
        let pool = &pools["pools"][0];
        pool["busy"] == 0 && pool["queued"] == 0
    })
    .await;
    let (status, after) =
        server.post("/api/v1/runs", json!({"task": "pooled-probe", "input": {"mode": "echo"}, "wait": true})).await;
    assert_eq!((status, after["status"].as_str()), (200, Some("succeeded")), "the pool serves the next run: {after}");
    assert_eq!(server.get("/api/v1/dlq").await.1["letters"], json!([]));
    assert!(server.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_saves_runs_and_a_restarted_server_finishes_them_without_repeating_calls() {
    const RUNS: usize = 20;
    const CALLS: u64 = 10;
    let llm = LlmServer::start(
        Script::new()
            .expect_api_key(crate::support::project::API_KEY)
            .faults((0..1000).map(|_| Fault::Delay(Duration::from_millis(60))))
            .rule(None, None, "an answer"),
    );
    let project = Project::http(&llm, TASKS);
    let mut server = Served::start(&project, &["--grace", "300ms"]);
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        let (status, run) =
            server.post("/api/v1/runs", json!({"task": "probe", "input": {"mode": "llm-calls", "calls": CALLS}})).await;
        assert_eq!(status, 202, "{run}");
        ids.push(run["run_id"].as_str().unwrap().to_owned());
    }
    wait_for("some calls to be made", Duration::from_secs(30), async || llm.requests() >= RUNS).await;
    let asked = Instant::now();
    let status = server.stop(Duration::from_secs(15));
    let took = asked.elapsed();
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    let at_stop = llm.requests();
    eprintln!("SIGTERM: the server exited {took:?} after it (grace 300 ms) with {at_stop} LLM requests made");

    let store = project.store();
    let tenant = cairn::model::Tenant::default();
    let (mut saved, mut journaled) = (0, 0);
    for id in &ids {
        let run = store.get_run(&tenant, id).unwrap();
        journaled += store.journal_of(id).unwrap().iter().filter(|e| e.key.kind == cairn::model::CallKind::Llm).count();
        if !run.status.is_finished() {
            saved += 1;
            assert!(run.lease.is_none(), "a saved run's lease is released");
            let last = run.attempts.last().expect("the stopped attempt is recorded");
            assert_eq!(last.error.as_ref().map(|e| e.kind.to_string()).as_deref(), Some("interrupted"));
            assert!(last.not_counted, "an interrupted attempt is not counted as a retry");
        }
    }
    drop(store);
    assert!(saved > 0, "the grace was short enough to stop some runs");

    let server = Served::start(&project, &[]);
    for id in &ids {
        wait_for("every run to finish after the restart", Duration::from_secs(60), async || {
            status_of(&server, id).await == "succeeded"
        })
        .await;
    }
    let total = llm.requests();
    let calls = RUNS * CALLS as usize;
    eprintln!(
        "{saved} run(s) saved at the stop with {journaled} of {calls} calls journaled; {at_stop} LLM requests before the stop, {total} in all"
    );
    assert_eq!(
        total - at_stop,
        calls - journaled,
        "after the restart, exactly the calls not journaled are made: none is repeated"
    );
    assert!(total <= calls + saved, "at most one repeated request (the one in flight) per stopped run: {total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_runs_submitted_at_once_all_finish() {
    let project = Project::new(TASKS);
    let server = std::sync::Arc::new(Served::start(&project, &[]));
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    };
    let before = rss(server.pid());
    let started = Instant::now();
    let mut submits = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let server = server.clone();
        submits.spawn(async move {
            server.post("/api/v1/runs", json!({"task": "probe", "input": {"mode": "echo", "i": i}})).await
        });
    }
    while let Some(done) = submits.join_next().await {
        let (status, body) = done.unwrap();
        assert_eq!(status, 202, "{body}");
    }
    wait_for("1,000 runs to succeed", Duration::from_secs(300), async || {
        let (_, tasks) = server.get("/api/v1/tasks").await;
        tasks["tasks"][0]["stats"]["succeeded"].as_u64() == Some(1000)
    })
    .await;
    let took = started.elapsed();
    let after = rss(server.pid());
    eprintln!(
        "1,000 runs over HTTP: all succeeded in {took:?} ({:.0} runs/s); server RSS {} MiB before, {} MiB after",
        1000.0 / took.as_secs_f64(),
        before / 1024,
        after / 1024
    );
}

/// A minimal OTLP/HTTP collector: answers 200 to each POST and keeps the span names.
fn collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = spans.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut request = Vec::new();
            let mut buf = [0u8; 65536];
            let body = loop {
                let Ok(n) = stream.read(&mut buf) else { break None };
                if n == 0 {
                    break None;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Some(body.to_owned());
                    }
                }
            };
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            if let Some(body) = body.and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok()) {
                let found = body["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().cloned().unwrap_or_default();
                kept.lock().unwrap().extend(found);
            }
        }
    });
    (url, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_otlp_the_spans_of_runs_attempts_and_imports_reach_a_collector() {
    let (url, spans) = collector();
    let llm = LlmServer::start(refiner_script());
    let project = Project::http(&llm, TASKS);
    let mut server = Served::start(&project, &["--otlp", &url]);
    let (_, run) =
        server.post("/api/v1/runs", json!({"task": "report-refiner", "input": {"topic": "Tides"}, "wait": true})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(server.stop(Duration::from_secs(30)).success());
    let id = run["run_id"].as_str().unwrap();
    wait_for("the spans to arrive", Duration::from_secs(10), async || {
        spans.lock().unwrap().iter().any(|s| s["name"] == "run")
    })
    .await;
    let spans = spans.lock().unwrap().clone();
    let named = |name: &str| spans.iter().filter(|s| s["name"] == name).cloned().collect::<Vec<_>>();
    let runs = named("run");
    let run_span = runs
        .iter()
        .find(|s| s["attributes"].as_array().unwrap().iter().any(|a| a["value"]["stringValue"] == id))
        .expect("the run's span");
    let attempts = named("attempt");
    assert!(attempts.iter().any(|a| a["parentSpanId"] == run_span["spanId"]), "the attempt is inside the run");
    let calls =
        spans.iter().filter(|s| s["name"].as_str().unwrap().starts_with("llm.") && s["traceId"] == run_span["traceId"]);
    assert_eq!(calls.count(), 5, "five LLM imports in the run's trace");
    assert!(!named("trace.record").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waited_for_run_whose_retry_is_released_is_answered_when_it_finishes() {
    let llm = LlmServer::start(Script::new().expect_api_key(crate::support::project::API_KEY));
    let project = Project::http(
        &llm,
        r#"
        [tasks.flaky]
        component = "{probe}"
        retries = { count = 2, strategy = "linear", base_delay = "1s" }
        "#,
    );
    // The server works on the store's runs, so the retry's backoff is spent released.
    let mut server = Served::start(&project, &[]);
    let input = json!({"mode": "llm-calls", "calls": 4, "fail_after": 2});
    let (status, run) = server.post("/api/v1/runs", json!({"task": "flaky", "input": input, "wait": true})).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "answered when the retry finished, not when it was released: {run}");
    assert_eq!(run["attempts"].as_array().unwrap().len(), 2, "{run}");
    assert_eq!(llm.requests(), 4, "the retry replays the first two calls");
    assert!(server.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_takes_up_at_once_the_runs_of_a_killed_cairn_run() {
    let project = Project::new(TASKS);
    let mut cli = std::process::Command::new(crate::support::guests::cairn_bin())
        .arg("--manifest")
        .arg(&project.manifest)
        .args(["run", "probe", "--quiet", "--input", r#"{"mode": "sleep", "ms": 1500}"#])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    cli.kill().unwrap();
    cli.wait().unwrap();
    let runs = project.store().list_runs(&cairn::model::Tenant::default(), &Default::default()).unwrap();
    let [run] = runs.as_slice() else { panic!("one run: {runs:?}") };
    assert!(run.lease.is_some() && !run.status.is_finished(), "left running under the killed process's lease");
    // Its lease has most of a minute to go; the server frees it, its process being gone.
    let server = Served::start(&project, &[]);
    wait_for("the killed run to finish", Duration::from_secs(20), async || {
        status_of(&server, &run.id).await == "succeeded"
    })
    .await;
}
