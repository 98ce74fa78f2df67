//! A real OpenAI-compatible HTTP server for tests, on 127.0.0.1 and a random
//! port, with scripted replies and fault injection.
//!
//! ```ignore
//! let server = LlmServer::start(
//!     Script::new()
//!         .reply_when_system("critic", r#"{"score": 9}"#)
//!         .reply("hello", "hi there")
//!         .fault(Fault::Status(500))
//!         .expect_api_key("k"),
//! );
//! // point an OpenAI client at server.base_url() ("http://127.0.0.1:PORT/v1")
//! assert_eq!(server.requests(), 2);
//! assert_eq!(server.count_for("hello"), 2);
//! ```
//!
//! Every request is counted and its body kept, faulted or not. Faults apply to
//! the next requests in order, one each, after the API-key check (a rejected
//! key gives 401 and consumes no fault). Without a fault, the first reply rule
//! whose conditions hold answers (case-insensitive substrings of the joined
//! system / user messages); the default reply is `answer to: <user prompt>`,
//! wrapped as `{"answer": "answer to: <user prompt>"}` when the request asks
//! for a JSON object.
//!
//! [`LlmServer::after_answer`] runs a hook right after the answer to the n-th
//! request has been written to its socket (the connection stays open), e.g. to
//! `kill -9` the client in the window between an answer's arrival and its use;
//! [`LlmServer::answers`] tells what each request was answered.
//!
//! The server speaks HTTP/1.1 with keep-alive and `Content-Length` bodies
//! (chunked request bodies get 411). It stops when the [`LlmServer`] is
//! dropped.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A failure injected into one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and an OpenAI-style error body.
    Status(u16),
    /// Answer 429 with `Retry-After: retry_after_secs`.
    RateLimit {
        /// The `Retry-After` header's value in seconds.
        retry_after_secs: u64,
    },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer 200 with a well-formed completion whose content is not JSON.
    MalformedContent,
    /// Answer 200 with a body that is not JSON at all.
    GarbageBody,
    /// Close the connection without answering.
    Disconnect,
}

/// A reply rule: every given condition must hold.
#[derive(Debug, Clone)]
struct Rule {
    system_contains: Option<String>,
    prompt_contains: Option<String>,
    reply: String,
}

/// How the server reports token usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UsageMode {
    /// Words of the request's messages and of the reply.
    Words,
    /// Fixed numbers.
    Fixed(u32, u32),
    /// No `usage` field at all.
    Omit,
}

/// What the server answers: faults, reply rules and the expected API key.
#[derive(Debug, Clone)]
pub struct Script {
    faults: VecDeque<Fault>,
    rules: Vec<Rule>,
    api_key: Option<String>,
    usage: UsageMode,
    numbered: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script { faults: VecDeque::new(), rules: Vec::new(), api_key: None, usage: UsageMode::Words, numbered: false }
    }
}

impl Script {
    /// No faults, no rules, no key, usage counted in words.
    pub fn new() -> Self {
        Script::default()
    }

    /// Queues a fault for the next request not yet faulted.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.faults.push_back(fault);
        self
    }

    /// Queues several faults, in order.
    pub fn faults(mut self, faults: impl IntoIterator<Item = Fault>) -> Self {
        self.faults.extend(faults);
        self
    }

    /// Replies `reply` when the user messages contain `prompt_contains`.
    pub fn reply(self, prompt_contains: &str, reply: &str) -> Self {
        self.rule(None, Some(prompt_contains), reply)
    }

    /// Replies `reply` when the system messages contain `system_contains`.
    pub fn reply_when_system(self, system_contains: &str, reply: &str) -> Self {
        self.rule(Some(system_contains), None, reply)
    }

    /// Replies `reply` when every given condition holds.
    pub fn rule(mut self, system_contains: Option<&str>, prompt_contains: Option<&str>, reply: &str) -> Self {
        self.rules.push(Rule {
            system_contains: system_contains.map(str::to_lowercase),
            prompt_contains: prompt_contains.map(str::to_lowercase),
            reply: reply.to_owned(),
        });
        self
    }

    /// Requires `Authorization: Bearer <key>`; other requests get 401.
    pub fn expect_api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.to_owned());
        self
    }

    /// Reports these token counts in every answer.
    pub fn usage(mut self, prompt_tokens: u32, completion_tokens: u32) -> Self {
        self.usage = UsageMode::Fixed(prompt_tokens, completion_tokens);
        self
    }

    /// Numbers the default reply with the request's number
    /// (`answer #3 to: <user prompt>`), so every live ask gets a new answer.
    pub fn number_answers(mut self) -> Self {
        self.numbered = true;
        self
    }

    /// Leaves `usage` out of answers.
    pub fn without_usage(mut self) -> Self {
        self.usage = UsageMode::Omit;
        self
    }
}

/// Something to do right after an answer was written.
type Hook = Box<dyn FnOnce() + Send>;

struct State {
    script: Script,
    received: Vec<Value>,
    /// The content of each request's completion, by request number (1-based).
    answers: HashMap<usize, String>,
    /// Hooks to run after the answer to a request, by request number (1-based).
    after_answer: HashMap<usize, Hook>,
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running server; stops when dropped.
pub struct LlmServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LlmServer {
    /// Starts on the current tokio runtime, or on a runtime thread of its own
    /// when called outside one. In a single-threaded `#[tokio::test]` that
    /// blocks (e.g. waits for a child process), use [`LlmServer::start_blocking`].
    pub fn start(script: Script) -> LlmServer {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let (std_listener, addr) = bind();
                let (shared, tx, rx) = parts(script);
                let listener = {
                    let _guard = handle.enter();
                    TcpListener::from_std(std_listener).expect("register the test LLM server's listener")
                };
                handle.spawn(serve(listener, Arc::clone(&shared), rx));
                LlmServer { addr, shared, shutdown: Some(tx), thread: None }
            }
            Err(_) => LlmServer::start_blocking(script),
        }
    }

    /// Starts on a thread with its own runtime; usable from any test.
    pub fn start_blocking(script: Script) -> LlmServer {
        let (std_listener, addr) = bind();
        let (shared, tx, rx) = parts(script);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("llm-server-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the test LLM server's runtime");
                runtime.block_on(async move {
                    let listener =
                        TcpListener::from_std(std_listener).expect("register the test LLM server's listener");
                    serve(listener, thread_shared, rx).await;
                });
            })
            .expect("spawn the test LLM server's thread");
        LlmServer { addr, shared, shutdown: Some(tx), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT/v1`: the base URL an OpenAI client wants.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests arrived (any path, faulted or not).
    pub fn requests(&self) -> usize {
        self.shared.lock().received.len()
    }

    /// How many requests had user messages containing `needle` (case-sensitive).
    pub fn count_for(&self, needle: &str) -> usize {
        self.shared.lock().received.iter().filter(|body| user_text(body).contains(needle)).count()
    }

    /// Every request body, oldest first; a body that is not JSON is kept as a
    /// JSON string, an empty one as null.
    pub fn received(&self) -> Vec<Value> {
        self.shared.lock().received.clone()
    }

    /// The completion content each request was answered with, in arrival
    /// order; `None` for a request answered with an error or something that
    /// is not a completion, or not answered yet.
    pub fn answers(&self) -> Vec<Option<String>> {
        let state = self.shared.lock();
        (1..=state.received.len()).map(|n| state.answers.get(&n).cloned()).collect()
    }

    /// Runs `hook` on the server's thread right after the response to the
    /// `request`-th request (1-based, in arrival order, as [`LlmServer::requests`]
    /// counts) has been written and flushed to its socket, before the server
    /// reads anything more from that connection, which stays open (or after
    /// closing it, for [`Fault::Disconnect`]). Register it before that request
    /// can arrive.
    pub fn after_answer(&self, request: usize, hook: impl FnOnce() + Send + 'static) {
        self.shared.lock().after_answer.insert(request, Box::new(hook));
    }

    /// Queues another fault.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().script.faults.push_back(fault);
    }

    /// Faults not yet applied.
    pub fn pending_faults(&self) -> usize {
        self.shared.lock().script.faults.len()
    }

    /// Requires `Authorization: Bearer <key>` from now on.
    pub fn expect_api_key(&self, key: &str) {
        self.shared.lock().script.api_key = Some(key.to_owned());
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bind() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the test LLM server");
    listener.set_nonblocking(true).expect("make the test LLM server's listener non-blocking");
    let addr = listener.local_addr().expect("test LLM server address");
    (listener, addr)
}

fn parts(script: Script) -> (Arc<Shared>, watch::Sender<bool>, watch::Receiver<bool>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            script,
            received: Vec::new(),
            answers: HashMap::new(),
            after_answer: HashMap::new(),
        }),
    });
    let (tx, rx) = watch::channel(false);
    (shared, tx, rx)
}

/// Resolves once the server is told to stop (or its handle is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, rx: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopped(rx.clone()) => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                let rx = rx.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stopped(rx) => {}
                        _ = connection(stream, shared) => {}
                    }
                });
            }
        }
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    keep_alive: bool,
    body: Vec<u8>,
}

/// What to send back.
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// The completion's content, for a chat completion.
    content: Option<String>,
}

impl Response {
    fn json(status: u16, body: Value) -> Response {
        Response { status, headers: Vec::new(), body: body.to_string(), content: None }
    }

    fn error(status: u16, message: &str, kind: &str) -> Response {
        Response::json(status, json!({ "error": { "message": message, "type": kind, "code": Value::Null } }))
    }
}

const MAX_HEAD: usize = 64 * 1024;

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let request = match read_request(&mut stream, &mut buffer).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(response) => {
                let _ = write_response(&mut stream, &response, false).await;
                return;
            }
        };
        let keep_alive = request.keep_alive;
        let (number, response) = handle(request, &shared).await;
        let hook = shared.lock().after_answer.remove(&number);
        let Some(response) = response else {
            drop(stream);
            if let Some(hook) = hook {
                hook();
            }
            return; // Fault::Disconnect
        };
        let written = write_response(&mut stream, &response, keep_alive).await;
        if let Some(hook) = hook {
            hook();
        }
        if written.is_err() || !keep_alive {
            return;
        }
    }
}

/// Reads one request; `Ok(None)` when the peer closed between requests.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<Option<Request>, Response> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(buffer, b"\r\n\r\n") {
            break i;
        }
        if buffer.len() > MAX_HEAD {
            return Err(Response::error(431, "request head too large", "invalid_request_error"));
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Response::error(400, "malformed request line", "invalid_request_error"));
    };
    let mut content_length = 0usize;
    let mut authorization = None;
    let mut connection_header = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                content_length =
                    value.parse().map_err(|_| Response::error(400, "bad Content-Length", "invalid_request_error"))?;
            }
            "transfer-encoding" => {
                return Err(Response::error(411, "send a Content-Length body", "invalid_request_error"));
            }
            "authorization" => authorization = Some(value.to_owned()),
            "connection" => connection_header = Some(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    let keep_alive = match connection_header.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => version.eq_ignore_ascii_case("HTTP/1.1"),
    };
    let body_start = head_end + 4;
    while buffer.len() < body_start + content_length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buffer[body_start..body_start + content_length].to_vec();
    buffer.drain(..body_start + content_length);
    Ok(Some(Request { method: method.to_owned(), path: path.to_owned(), authorization, keep_alive, body }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn write_response(stream: &mut TcpStream, response: &Response, keep_alive: bool) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n",
        response.status,
        reason(response.status),
        response.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(response.body.as_bytes()).await?;
    stream.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        411 => "Length Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Joined text of the messages with `role` in a request body.
fn text_of(body: &Value, role: &str) -> String {
    let parts: Vec<&str> = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|messages| {
            messages
                .iter()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some(role))
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    parts.join("\n\n")
}

fn user_text(body: &Value) -> String {
    text_of(body, "user")
}

fn words(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// Words of every message of a request body.
fn all_words(body: &Value) -> u32 {
    ["system", "user", "assistant"].iter().map(|role| words(&text_of(body, role))).sum()
}

/// Counts one request and answers it: its number (1-based) and the response,
/// `None` meaning close the connection without answering.
async fn handle(request: Request, shared: &Shared) -> (usize, Option<Response>) {
    let mut number = 0;
    let response = respond(request, shared, &mut number).await;
    if let Some(content) = response.as_ref().and_then(|r| r.content.clone()) {
        shared.lock().answers.insert(number, content);
    }
    (number, response)
}

/// The response to one request, whose number is put in `number`.
async fn respond(request: Request, shared: &Shared, number: &mut usize) -> Option<Response> {
    let body: Value = if request.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&request.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&request.body).into_owned()))
    };

    // Count, check the key, take a fault: all under one lock.
    let (fault, rules, usage, numbered) = {
        let mut state = shared.lock();
        state.received.push(body.clone());
        *number = state.received.len();
        if !(request.method == "POST" && request.path.trim_end_matches('/').ends_with("/chat/completions")) {
            return Some(Response::error(
                404,
                &format!("no route for {} {}", request.method, request.path),
                "not_found",
            ));
        }
        if let Some(expected) = &state.script.api_key {
            let presented = request.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
            if presented != expected {
                // Like OpenAI, the message echoes the key presented: clients
                // must keep it out of their errors.
                return Some(Response::error(
                    401,
                    &format!("Incorrect API key provided: {presented}"),
                    "invalid_request_error",
                ));
            }
        }
        let fault = state.script.faults.pop_front();
        (fault, state.script.rules.clone(), state.script.usage, state.script.numbered)
    };

    let id = *number;
    let mut malformed = false;
    match fault {
        Some(Fault::Status(status)) => {
            return Some(Response::error(status, &format!("injected fault: status {status}"), "server_error"));
        }
        Some(Fault::RateLimit { retry_after_secs }) => {
            let mut response = Response::error(429, "injected fault: rate limit reached", "rate_limit_error");
            response.headers.push(("Retry-After", retry_after_secs.to_string()));
            return Some(response);
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::MalformedContent) => malformed = true,
        Some(Fault::GarbageBody) => {
            return Some(Response {
                status: 200,
                headers: Vec::new(),
                body: "<html>definitely not a chat completion</html>".to_owned(),
                content: None,
            });
        }
        Some(Fault::Disconnect) => return None,
        None => {}
    }

    if body.get("messages").and_then(Value::as_array).is_none() {
        return Some(Response::error(400, "the body needs a \"messages\" array", "invalid_request_error"));
    }
    let system = text_of(&body, "system");
    let prompt = user_text(&body);
    let json_mode = body.pointer("/response_format/type").and_then(Value::as_str) == Some("json_object");
    let content = if malformed {
        "this is not JSON {".to_owned()
    } else {
        let (system_lower, prompt_lower) = (system.to_lowercase(), prompt.to_lowercase());
        let matched = rules.iter().find(|rule| {
            rule.system_contains.as_ref().is_none_or(|s| system_lower.contains(s))
                && rule.prompt_contains.as_ref().is_none_or(|p| prompt_lower.contains(p))
        });
        match matched {
            Some(rule) => rule.reply.clone(),
            None => {
                let answer =
                    if numbered { format!("answer #{id} to: {prompt}") } else { format!("answer to: {prompt}") };
                if json_mode { json!({ "answer": answer }).to_string() } else { answer }
            }
        }
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or("test-model").to_owned();
    let mut answer = json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "finish_reason": "stop"
        }]
    });
    let counts = match usage {
        UsageMode::Words => Some((all_words(&body), words(&content))),
        UsageMode::Fixed(p, c) => Some((p, c)),
        UsageMode::Omit => None,
    };
    if let Some((p, c)) = counts {
        answer["usage"] = json!({ "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c });
    }
    let mut response = Response::json(200, answer);
    response.content = Some(content);
    Some(response)
}
