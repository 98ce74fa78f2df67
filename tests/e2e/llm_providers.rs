//! `OpenAiProvider` and `Reliable` against a real HTTP server.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use cairn::llm::openai::{OpenAiConfig, OpenAiProvider};
use cairn::llm::reliable::{Reliable, RetryConfig};
use cairn::llm::{ChatMessage, ChatRequest, LlmError, LlmProvider, Role, Usage};
use serde_json::{Value, json};

use crate::support::llm_server::{Fault, LlmServer, Script};

const KEY: &str = "sk-test-5ecret-k3y";

fn provider(server: &LlmServer, key: Option<&str>, timeout: Duration) -> Arc<OpenAiProvider> {
    provider_at(&server.base_url(), key, timeout)
}

fn provider_at(base_url: &str, key: Option<&str>, timeout: Duration) -> Arc<OpenAiProvider> {
    let config = OpenAiConfig {
        name: "test-openai".into(),
        base_url: base_url.into(),
        model: "gpt-test".into(),
        timeout,
        api_key: key.map(str::to_owned),
    };
    Arc::new(OpenAiProvider::new(config).expect("valid provider config"))
}

fn quick_retries(max_retries: u32) -> RetryConfig {
    RetryConfig { max_retries, base_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) }
}

const SECONDS_5: Duration = Duration::from_secs(5);

#[tokio::test]
async fn completes_and_parses_usage() {
    let server = LlmServer::start(Script::new().reply("capital of France", "Paris"));
    let p = provider(&server, None, SECONDS_5);
    let request = ChatRequest {
        model: None,
        messages: vec![
            ChatMessage { role: Role::System, content: "Answer briefly.".into() },
            ChatMessage { role: Role::User, content: "What is the capital of France?".into() },
        ],
        json: false,
        max_tokens: Some(64),
        temperature: Some(0.5),
    };
    let response = p.complete(&request).await.unwrap();
    assert_eq!(response.content, "Paris");
    assert_eq!(response.model, "gpt-test");
    // The server counts words: 2 + 6 in the request, 1 in the answer.
    assert_eq!(response.usage, Usage { prompt_tokens: 8, completion_tokens: 1, cost_micros: 0 });
    assert_eq!(p.name(), "test-openai");

    let default = p.complete(&ChatRequest::simple("hello there", "sys", false)).await.unwrap();
    assert_eq!(default.content, "answer to: hello there");

    let body = &server.received()[0];
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["messages"][0], json!({"role": "system", "content": "Answer briefly."}));
    assert_eq!(body["messages"][1]["role"], "user");
    assert!(body.get("response_format").is_none());
    assert_eq!(server.requests(), 2);
    assert_eq!(server.count_for("capital"), 1);
    assert_eq!(server.count_for("hello"), 1);
}

#[tokio::test]
async fn request_model_overrides_the_default() {
    let server = LlmServer::start(Script::new());
    let p = provider(&server, None, SECONDS_5);
    let request = ChatRequest { model: Some("other-model".into()), ..ChatRequest::simple("q", "s", false) };
    let response = p.complete(&request).await.unwrap();
    assert_eq!(response.model, "other-model");
    assert_eq!(server.received()[0]["model"], "other-model");
}

#[tokio::test]
async fn fixed_and_missing_usage() {
    let server = LlmServer::start(Script::new().usage(123, 45));
    let p = provider(&server, None, SECONDS_5);
    let response = p.complete(&ChatRequest::simple("q", "s", false)).await.unwrap();
    assert_eq!(response.usage, Usage { prompt_tokens: 123, completion_tokens: 45, cost_micros: 0 });

    let server = LlmServer::start(Script::new().without_usage());
    let p = provider(&server, None, SECONDS_5);
    let response = p.complete(&ChatRequest::simple("q", "s", false)).await.unwrap();
    assert_eq!(response.usage, Usage::default());
    assert_eq!(response.content, "answer to: q");
}

#[tokio::test]
async fn json_mode_sends_response_format() {
    let server = LlmServer::start(Script::new().reply_when_system("critic", r#"{"score": 7}"#));
    let p = provider(&server, None, SECONDS_5);
    let response = p.complete(&ChatRequest::simple("draft", "You are a CRITIC", true)).await.unwrap();
    assert_eq!(response.content, r#"{"score": 7}"#);
    let unmatched = p.complete(&ChatRequest::simple("list colours", "helper", true)).await.unwrap();
    let value: Value = serde_json::from_str(&unmatched.content).unwrap();
    assert_eq!(value["answer"], "answer to: list colours");
    for body in server.received() {
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
    }
}

#[tokio::test]
async fn server_error_then_success_through_reliable() {
    let server = LlmServer::start(Script::new().fault(Fault::Status(500)).reply("ping", "pong"));
    let reliable = Reliable::new(provider(&server, None, SECONDS_5), quick_retries(2));
    let response = reliable.complete(&ChatRequest::simple("ping", "s", false)).await.unwrap();
    assert_eq!(response.content, "pong");
    assert_eq!(server.requests(), 2);
    assert_eq!(server.count_for("ping"), 2);
    assert_eq!(server.pending_faults(), 0);
}

#[tokio::test]
async fn status_mapping_without_retries() {
    let server = LlmServer::start(Script::new().faults([Fault::Status(503), Fault::Status(400), Fault::Status(404)]));
    let p = provider(&server, None, SECONDS_5);
    let request = ChatRequest::simple("q", "s", false);
    match p.complete(&request).await {
        Err(LlmError::Unavailable(m)) => assert!(m.contains("503") && m.contains("injected fault"), "{m}"),
        other => panic!("unexpected {other:?}"),
    }
    // 4xx is not retried by Reliable.
    let reliable = Reliable::new(p.clone(), quick_retries(3));
    match reliable.complete(&request).await {
        Err(LlmError::InvalidRequest(m)) => assert!(m.contains("400") && m.contains("injected fault"), "{m}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.requests(), 2);
    assert!(matches!(p.complete(&request).await, Err(LlmError::InvalidRequest(_))));
}

#[tokio::test]
async fn rate_limit_reports_retry_after() {
    let server = LlmServer::start(Script::new().fault(Fault::RateLimit { retry_after_secs: 2 }));
    let p = provider(&server, None, SECONDS_5);
    let err = p.complete(&ChatRequest::simple("q", "s", false)).await.unwrap_err();
    assert_eq!(err, LlmError::RateLimited { retry_after: Some(Duration::from_secs(2)) });
    assert_eq!(err.kind(), "llm-rate-limited");

    // Through Reliable the 2 s wait is capped by max_delay (50 ms).
    server.push_fault(Fault::RateLimit { retry_after_secs: 2 });
    let reliable = Reliable::new(p, quick_retries(1));
    let start = std::time::Instant::now();
    let response = reliable.complete(&ChatRequest::simple("q", "s", false)).await.unwrap();
    assert_eq!(response.content, "answer to: q");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn slow_answer_times_out() {
    let server = LlmServer::start(Script::new().fault(Fault::Delay(Duration::from_secs(10))));
    let p = provider(&server, None, Duration::from_millis(500));
    let start = std::time::Instant::now();
    let err = p.complete(&ChatRequest::simple("q", "s", false)).await.unwrap_err();
    assert_eq!(err, LlmError::Timeout);
    assert!(start.elapsed() < Duration::from_secs(10));
    // The next call is not delayed.
    assert!(p.complete(&ChatRequest::simple("q", "s", false)).await.is_ok());
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn short_delay_still_answers() {
    let server = LlmServer::start(Script::new().fault(Fault::Delay(Duration::from_millis(100))));
    let p = provider(&server, None, SECONDS_5);
    let start = std::time::Instant::now();
    assert!(p.complete(&ChatRequest::simple("q", "s", false)).await.is_ok());
    assert!(start.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn garbage_body_is_an_invalid_response() {
    let server = LlmServer::start(Script::new().fault(Fault::GarbageBody));
    let p = provider(&server, None, SECONDS_5);
    let err = p.complete(&ChatRequest::simple("q", "s", false)).await.unwrap_err();
    assert!(matches!(&err, LlmError::InvalidResponse(m) if m.contains("not a chat completion")), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn malformed_json_content_is_retried() {
    let server = LlmServer::start(Script::new().fault(Fault::MalformedContent).reply("score", r#"{"score": 8}"#));
    let p = provider(&server, None, SECONDS_5);
    // The bare provider does not validate.
    let raw = p.complete(&ChatRequest::simple("score it", "s", true)).await.unwrap();
    assert!(serde_json::from_str::<Value>(&raw.content).is_err());

    server.push_fault(Fault::MalformedContent);
    let reliable = Reliable::new(p.clone(), quick_retries(2));
    let response = reliable.complete(&ChatRequest::simple("score it", "s", true)).await.unwrap();
    assert_eq!(response.content, r#"{"score": 8}"#);
    assert_eq!(server.requests(), 3);

    // Malformed every time: the error surfaces once retries are spent.
    server.push_fault(Fault::MalformedContent);
    server.push_fault(Fault::MalformedContent);
    let reliable = Reliable::new(p, quick_retries(1));
    let err = reliable.complete(&ChatRequest::simple("score it", "s", true)).await.unwrap_err();
    assert!(matches!(err, LlmError::InvalidResponse(_)), "{err:?}");
    assert_eq!(server.requests(), 5);
}

#[tokio::test]
async fn connection_failures_are_unavailable() {
    let server = LlmServer::start(Script::new().fault(Fault::Disconnect));
    let p = provider(&server, None, SECONDS_5);
    let err = p.complete(&ChatRequest::simple("q", "s", false)).await.unwrap_err();
    assert!(matches!(err, LlmError::Unavailable(_)), "{err:?}");

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let p = provider_at(&format!("http://{closed}/v1"), Some(KEY), SECONDS_5);
    let err = p.complete(&ChatRequest::simple("q", "s", false)).await.unwrap_err();
    assert!(matches!(err, LlmError::Unavailable(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(KEY));
}

#[tokio::test]
async fn api_key_is_sent_and_never_shown() {
    let server = LlmServer::start(Script::new().expect_api_key(KEY).reply("hi", "hello"));
    let good = provider(&server, Some(KEY), Duration::from_secs(1));
    assert_eq!(good.complete(&ChatRequest::simple("hi", "s", false)).await.unwrap().content, "hello");

    // No key, and a wrong key the server echoes back: both rejected, neither shown.
    let none = provider(&server, None, SECONDS_5);
    let err = none.complete(&ChatRequest::simple("hi", "s", false)).await.unwrap_err();
    assert!(matches!(&err, LlmError::InvalidRequest(m) if m.contains("401")), "{err:?}");
    let wrong_key = "sk-wrong-but-still-secret";
    let wrong = provider(&server, Some(wrong_key), SECONDS_5);
    let err = wrong.complete(&ChatRequest::simple("hi", "s", false)).await.unwrap_err();
    let shown = format!("{err} {err:?} {wrong:?}");
    assert!(shown.contains("Incorrect API key provided"), "{shown}");
    assert!(!shown.contains(wrong_key), "{shown}");

    // Errors of every other kind with the right key.
    server.push_fault(Fault::Status(500));
    server.push_fault(Fault::Status(422));
    server.push_fault(Fault::RateLimit { retry_after_secs: 1 });
    server.push_fault(Fault::Delay(Duration::from_secs(10)));
    server.push_fault(Fault::GarbageBody);
    server.push_fault(Fault::Disconnect);
    let mut errors = Vec::new();
    for _ in 0..6 {
        errors.push(good.complete(&ChatRequest::simple("hi", "s", false)).await.unwrap_err());
    }
    let kinds: Vec<String> = errors.iter().map(|e| e.kind().to_string()).collect();
    assert_eq!(
        kinds,
        [
            "llm-unavailable",
            "llm-invalid-request",
            "llm-rate-limited",
            "llm-timeout",
            "llm-invalid-response",
            "llm-unavailable"
        ]
    );
    for err in &errors {
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(KEY) && !shown.contains("Bearer"), "{shown}");
    }
    let shown = format!("{good:?} {:?}", good.config());
    assert!(!shown.contains(KEY), "{shown}");
    assert_eq!(server.requests(), 9);
}

#[tokio::test]
async fn keep_alive_connections_serve_many_requests() {
    let server = LlmServer::start(Script::new());
    let p = provider(&server, None, SECONDS_5);
    for i in 0..20 {
        let prompt = format!("question {i}");
        let response = p.complete(&ChatRequest::simple(&prompt, "s", false)).await.unwrap();
        assert_eq!(response.content, format!("answer to: {prompt}"));
    }
    assert_eq!(server.requests(), 20);
    assert_eq!(server.count_for("question 1"), 11); // 1 and 10..=19
}

/// One raw HTTP exchange over a new connection, `Connection: close`.
fn raw_post(server: &LlmServer, body: &str) -> String {
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(SECONDS_5)).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn usable_from_sync_tests() {
    let server = LlmServer::start_blocking(Script::new().fault(Fault::Status(502)));
    let body = r#"{"model":"m","messages":[{"role":"user","content":"sync hello"}]}"#;
    let first = raw_post(&server, body);
    assert!(first.starts_with("HTTP/1.1 502"), "{first}");
    let second = raw_post(&server, body);
    assert!(second.starts_with("HTTP/1.1 200") && second.contains("answer to: sync hello"), "{second}");
    assert!(second.contains("Connection: close"));
    let bad = raw_post(&server, "{not json");
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    assert_eq!(server.requests(), 3);
    assert_eq!(server.count_for("sync hello"), 2);
    assert_eq!(server.received()[2], Value::String("{not json".into()));

    // `start` outside a runtime falls back to a thread of its own.
    let other = LlmServer::start(Script::new());
    assert!(raw_post(&other, body).contains("answer to: sync hello"));

    let addr = server.addr();
    drop(server);
    assert!(std::net::TcpStream::connect(addr).is_err(), "the server still listens after drop");
}

#[test]
fn two_requests_on_one_raw_connection() {
    let server = LlmServer::start_blocking(Script::new().usage(1, 2));
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(SECONDS_5)).unwrap();
    let body = r#"{"messages":[{"role":"user","content":"again"}]}"#;
    let request =
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    // Both requests in one write: the server must split them by Content-Length.
    stream.write_all(format!("{request}{request}").as_bytes()).unwrap();
    let mut seen = String::new();
    let mut chunk = [0u8; 4096];
    while seen.matches("answer to: again").count() < 2 {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert_eq!(seen.matches("HTTP/1.1 200 OK").count(), 2);
    assert!(seen.contains("Connection: keep-alive"));
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn unknown_paths_get_404_without_using_a_fault() {
    let server = LlmServer::start(Script::new().fault(Fault::Status(500)));
    let client_addr = server.addr();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(client_addr).unwrap();
        stream.set_read_timeout(Some(SECONDS_5)).unwrap();
        stream.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert_eq!(server.pending_faults(), 1);
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let server = LlmServer::start(Script::new());
    let addr = server.addr();
    let p = provider(&server, None, SECONDS_5);
    assert!(p.complete(&ChatRequest::simple("q", "s", false)).await.is_ok());
    drop(server);
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the server still listens after drop");
    let fresh = provider_at(&format!("http://{addr}/v1"), None, SECONDS_5);
    assert!(matches!(fresh.complete(&ChatRequest::simple("q", "s", false)).await, Err(LlmError::Unavailable(_))));
}
