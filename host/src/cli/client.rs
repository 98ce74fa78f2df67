//! The CLI as a client of `cairn serve`: finds the server (`--server URL`,
//! `CAIRN_SERVER`, or the project's live `.cairn/serve.json`), sends requests
//! with its bearer token (`CAIRN_TOKEN`, or the server's token file) and
//! reads its server-sent event streams. Async over `reqwest`, driven on the
//! CLI's own runtime, so the commands stay plain blocking code.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::{Method, Url};
use serde_json::Value;

use cairn::model::Tenant;
use cairn::server::{ServeInfo, TOKEN_FILE, read_info};

/// The environment variable naming a server (as `--server` does).
pub const SERVER_ENV: &str = "CAIRN_SERVER";
/// The environment variable holding the server's token.
pub const TOKEN_ENV: &str = "CAIRN_TOKEN";

/// An error answer of the API, or a server that could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error (`{"error": {"kind", "message"}}`).
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error's kind (`not-found`, `conflict`, …).
        kind: String,
        /// What went wrong, as the server says it.
        message: String,
    },
    /// Nothing answered at the server's address, or the answer was cut short.
    #[error("cannot reach the cairn server at {url}: {cause}; is `cairn serve` running there?")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// Why.
        cause: String,
    },
    /// Something answered that does not speak the API.
    #[error("the cairn server at {url} {what}")]
    Protocol {
        /// The server's URL.
        url: String,
        /// What was wrong with its answer.
        what: String,
    },
}

impl ClientError {
    /// Whether the API said there is no such thing (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }
}

/// A server to send commands to, and the runtime that drives its requests.
pub struct Client {
    url: Url,
    token: Option<String>,
    /// The tenant named on the command line or in the manifest, sent with
    /// every request (`X-Cairn-Tenant`); `None`: the token's own.
    tenant: Option<Tenant>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// The server the CLI should use: `explicit` (`--server URL` or
    /// `CAIRN_SERVER`), else the one `.cairn/serve.json` in `state_dir` names
    /// if its process is alive; `None` when there is none (a stale file of a
    /// server that crashed is ignored).
    pub fn find(explicit: Option<&str>, state_dir: Option<&Path>, tenant: Option<Tenant>) -> Result<Option<Client>> {
        let info = state_dir.and_then(read_info);
        let (url, token_file) = match (explicit, info) {
            (Some(url), info) => {
                let url = Url::parse(url.trim_end_matches('/'))
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                    .with_context(|| {
                        format!("--server {url:?} (or {SERVER_ENV}) is not a server URL; give one like http://127.0.0.1:7070")
                    })?;
                // The project's own token serves a server of this project named by hand.
                let token_file = info
                    .map(|info| info.token_file)
                    .or_else(|| state_dir.map(|dir| dir.join(TOKEN_FILE)))
                    .filter(|file| file.is_file());
                (url, token_file)
            }
            (None, Some(info)) if serving(&info) => {
                let url = Url::parse(&info.url)
                    .with_context(|| format!("the server's file names a bad URL {:?}; stop that server", info.url))?;
                (url, Some(info.token_file))
            }
            (None, _) => return Ok(None),
        };
        let token = match std::env::var(TOKEN_ENV).ok().filter(|t| !t.trim().is_empty()) {
            Some(token) => Some(token.trim().to_owned()),
            None => match token_file {
                Some(file) => Some(
                    std::fs::read_to_string(&file)
                        .with_context(|| {
                            format!("cannot read the server's token in {}; set {TOKEN_ENV} instead", file.display())
                        })?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            },
        };
        Client::new(url, token, tenant).map(Some)
    }

    fn new(url: Url, token: Option<String>, tenant: Option<Tenant>) -> Result<Client> {
        let loopback = match url.host_str() {
            Some("localhost") => true,
            Some(host) => host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
            None => false,
        };
        let mut http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if loopback {
            // A server on this machine is never reached through a proxy.
            http = http.no_proxy();
        }
        let http = http.build().context("cannot make an HTTP client")?;
        Ok(Client { url, token, tenant, http, runtime: super::runtime()? })
    }

    /// The tenant requests name, if any.
    pub fn tenant(&self) -> Option<&Tenant> {
        self.tenant.as_ref()
    }

    /// The server's URL, as the user would type it.
    pub fn url(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }

    /// Runs `future` to its end on the client's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The URL of an API path given as segments (each escaped), with a query.
    fn endpoint(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self.http.request(method, self.endpoint(segments, query));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(tenant) = &self.tenant {
            request = request.header("x-cairn-tenant", tenant.to_string());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable_from(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let error = serde_json::from_str::<Value>(&text).ok().map(|body| body["error"].clone());
        if status == reqwest::StatusCode::UNAUTHORIZED {
            let given = if self.token.is_some() { "refused the token given" } else { "needs a token" };
            return Err(ClientError::Api {
                status: status.as_u16(),
                kind: "unauthorized".into(),
                message: format!(
                    "the cairn server at {} {given}; set {TOKEN_ENV} to the token in its .cairn/{TOKEN_FILE}",
                    self.url()
                ),
            });
        }
        Err(match error {
            Some(error) if error["message"].is_string() => ClientError::Api {
                status: status.as_u16(),
                kind: error["kind"].as_str().unwrap_or_default().to_owned(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
            },
            _ => ClientError::Api {
                status: status.as_u16(),
                kind: String::new(),
                message: format!("the server at {} answered {status}: {}", self.url(), text.trim()),
            },
        })
    }

    fn unreachable_from(&self, error: reqwest::Error) -> ClientError {
        // The innermost cause says it best ("Connection refused (os error 111)").
        let mut cause: &dyn std::error::Error = &error;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        ClientError::Unreachable { url: self.url().to_owned(), cause: cause.to_string() }
    }

    /// Sends a request to `/api/v1/SEGMENTS…` and returns its JSON answer
    /// (`null` for an empty one).
    pub async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let path: Vec<&str> = ["api", "v1"].into_iter().chain(segments.iter().copied()).collect();
        let response = self.send(method, &path, query, body.as_ref()).await?;
        let text = response.text().await.map_err(|e| self.unreachable_from(e))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol {
            url: self.url().to_owned(),
            what: format!("answered with something that is not JSON ({e})"),
        })
    }

    /// [`Client::request`], waited for.
    pub fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        self.block_on(self.request(method, segments, query, body))
    }

    /// `GET /api/v1/…`.
    pub fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.call(Method::GET, segments, query, None)
    }

    /// `POST /api/v1/…` with a JSON body.
    pub fn post(&self, segments: &[&str], body: Value) -> Result<Value, ClientError> {
        self.call(Method::POST, segments, &[], Some(body))
    }

    /// Subscribes to every run's events (`GET /api/v1/events`), and waits
    /// until the stream has begun, so nothing that happens after this returns
    /// is missed.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let response = self.send(Method::GET, &["api", "v1", "events"], &[], None).await?;
        let mut stream = EventStream { response, buffer: Vec::new(), kind: String::new(), data: String::new() };
        match stream.next().await {
            Ok(Some(event)) if event.kind == "hello" => Ok(stream),
            Ok(_) => Err(ClientError::Protocol {
                url: self.url().to_owned(),
                what: "sent an event stream that did not begin with `hello`".into(),
            }),
            Err(e) => Err(self.unreachable_from(e)),
        }
    }
}

/// Whether the server a `serve.json` names is still this project's live
/// server: its process exists and (where it can be read) is a `cairn serve`.
fn serving(info: &ServeInfo) -> bool {
    let proc = Path::new("/proc").join(info.pid.to_string());
    if !proc.exists() {
        return false;
    }
    match std::fs::read(proc.join("cmdline")) {
        // A process that took a dead server's pid is not it.
        Ok(cmdline) => cmdline.split(|b| *b == 0).any(|arg| arg == b"serve"),
        Err(_) => true,
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// Its `event:` name (`run-started`, `run-finished`, `lagged`, …).
    pub kind: String,
    /// Its `data:`, parsed (`null` if it was not JSON).
    pub data: Value,
}

/// A stream of server-sent events. Reading one is cancel-safe: what has
/// arrived of an event stays here until the event is whole.
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    kind: String,
    data: String,
}

impl EventStream {
    /// The next event, or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, reqwest::Error> {
        loop {
            let Some(end) = self.buffer.iter().position(|b| *b == b'\n') else {
                match self.response.chunk().await? {
                    Some(chunk) => {
                        self.buffer.extend_from_slice(&chunk);
                        continue;
                    }
                    None => return Ok(None),
                }
            };
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.kind.is_empty() && self.data.is_empty() {
                    continue;
                }
                let (kind, data) = (std::mem::take(&mut self.kind), std::mem::take(&mut self.data));
                let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                return Ok(Some(SseEvent { kind: if kind.is_empty() { "message".into() } else { kind }, data }));
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.kind = value.to_owned(),
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                // Comments (keep-alives), `id` and `retry` mean nothing here.
                _ => {}
            }
        }
    }
}
