//! Outbound HTTP for guests, journaled like an LLM call: a request that got
//! its response is answered from the journal on every later attempt (and
//! from a cassette offline), so a retried or resumed run never sends it
//! again.
//!
//! A request's replay key is kind `http`, name `METHOD URL`, the sha256 of
//! its canonical form (method, URL, headers as the guest wrote them, secret
//! placeholders unexpanded, and the body's sha256) and its occurrence. A
//! response with status 429 or 5xx is handed to the guest but not recorded,
//! like an LLM provider's error: the next attempt asks again.
//!
//! Live requests go through one client whose resolver refuses every name
//! that resolves to a non-public address ([`is_public`]), checked on the
//! addresses it connects to, so DNS rebinding gains nothing. Redirects are
//! never followed (the guest sees the 3xx, and a request it makes to the
//! new location is checked like any other), no proxy is used, and the body
//! read stops at the environment's limit.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::journal::{JournalError, SharedJournal, canonical_input};
use crate::model::{CallKind, ReplayKey, cut_with_note};
use crate::sandbox::outbound::Destination;

mod live;

/// Why an outbound request got no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A DNS name resolved to an address guests may not reach through a name.
    #[error(
        "outbound request to {host}: the name resolves to {address}, a private, loopback or link-local address, which a guest reaches only through a pattern naming the address itself in `allowed_outbound_hosts`"
    )]
    Prohibited {
        /// The name.
        host: String,
        /// The address it resolved to.
        address: IpAddr,
    },
    /// The name did not resolve.
    #[error("outbound request to {host}: the name does not resolve ({message})")]
    NotFound {
        /// The name.
        host: String,
        /// The resolver's error.
        message: String,
    },
    /// The request's body passed `resources.max_http_request`.
    #[error(
        "outbound request body is larger than the environment's `resources.max_http_request` of {limit} bytes; send less, or raise it"
    )]
    RequestTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The response's body passed `resources.max_http_response`.
    #[error(
        "response of {url} is larger than the environment's `resources.max_http_response` of {limit} bytes; ask for less, or raise it"
    )]
    ResponseTooLarge {
        /// The request's URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The request took longer than `resources.http_timeout`.
    #[error(
        "outbound request to {url} took longer than the environment's `resources.http_timeout` of {} ms",
        limit.as_millis()
    )]
    Timeout {
        /// The request's URL.
        url: String,
        /// The limit.
        limit: Duration,
    },
    /// Connecting or talking to the server failed.
    #[error("outbound request to {url} failed: {message}")]
    Transport {
        /// The request's URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// A secret placeholder could not be filled.
    #[error("outbound request to {url}: header {header}: {message}")]
    Secret {
        /// The request's URL.
        url: String,
        /// The header holding the placeholder.
        header: String,
        /// Why.
        message: String,
    },
    /// The journal could not answer or record; in replay, a request the
    /// cassette does not hold.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The guest's call ended before its request completed; nothing was recorded.
    #[error("the task's call ended before its outbound request to {0} completed")]
    CallEnded(String),
    /// A journal error kept for the end of the call (see [`HttpCall::fatal`]).
    #[error("{0}")]
    JournalFailed(String),
}

/// An outbound request as the guest made it: header values may hold secret
/// placeholders ([`placeholders`]), filled in only when it is sent live.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The absolute URL.
    pub url: String,
    /// Where it goes (already allowed).
    pub destination: Destination,
    /// Headers in the guest's order (names lowercase).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Bytes,
}

/// A response, live or recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundResponse {
    /// The status code.
    pub status: u16,
    /// Headers in the server's order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    #[serde(with = "body_text")]
    pub body: Bytes,
}

/// Bodies in the journal: the text itself when it is UTF-8 without control
/// characters (but tab and line breaks), else base64 (as `{"base64": …}`), so
/// `cairn runs show` prints a JSON API's answer as is and no body grows more
/// than a third when it is encoded.
mod body_text {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Text(String),
        Binary { base64: String },
    }

    pub fn serialize<S: serde::Serializer>(body: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(body) {
            Ok(text) if !text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) => {
                Stored::Text(text.to_owned())
            }
            _ => Stored::Binary { base64: base64::engine::general_purpose::STANDARD.encode(body) },
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        match Stored::deserialize(d)? {
            Stored::Text(text) => Ok(Bytes::from(text)),
            Stored::Binary { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map(Bytes::from)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Where secret values come from, for the placeholders of a live request.
#[async_trait::async_trait]
pub trait SecretValues: Send + Sync {
    /// The value of secret `name` for a request to `to`, or why there is none.
    async fn value(&self, name: &str, to: &Destination) -> Result<Zeroizing<String>, String>;
}

/// How the host answers a request: limits and the journal of its call.
#[derive(Clone)]
pub struct HttpCall {
    /// The instance's journal.
    pub journal: SharedJournal,
    /// Closed (its sender dropped) when the call that made the request
    /// ends: work it left behind stops, and records nothing.
    pub call_end: tokio::sync::watch::Receiver<()>,
    /// `resources.max_http_response`.
    pub max_response: u64,
    /// `resources.http_timeout`.
    pub timeout: Duration,
    /// Where a journal error goes when the caller cannot fail the attempt
    /// at once (a `wasi:http` request in the background): set while the
    /// journal is held, so the call's end finds it. `None`: the error is
    /// returned as [`HttpError::Journal`].
    pub fatal: Option<Arc<std::sync::Mutex<Option<JournalError>>>>,
}

/// An occurrence handed out and not yet recorded: given back if the request
/// is dropped before it ends (the guest dropped its response's future).
struct Unrecorded<'a> {
    call: &'a HttpCall,
    key: Option<ReplayKey>,
}

impl Drop for Unrecorded<'_> {
    fn drop(&mut self) {
        let (Some(key), Ok(runtime)) = (self.key.take(), tokio::runtime::Handle::try_current()) else { return };
        let call = self.call.clone();
        runtime.spawn(async move {
            let mut journal = call.journal.lock().await;
            if call.live() {
                journal.release(&key);
            }
        });
    }
}

/// What [`HttpCall::send`] did, for the call's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Sent, and its response recorded.
    Live,
    /// Sent, and its response (429 or 5xx) not recorded.
    Transient,
    /// Answered from the journal.
    Replayed,
}

/// Headers about a message's framing, which the client sets from the whole
/// body it sends: a task may not set them, and a `wasi:http` request's are
/// left out.
pub const FRAMING_HEADERS: [&str; 5] = ["content-length", "transfer-encoding", "te", "trailer", "expect"];

/// The prefix and suffix of a secret placeholder: `{{secret:NAME}}`.
const PLACEHOLDER: (&str, &str) = ("{{secret:", "}}");

/// The secret names of every placeholder in `value`, in order.
pub fn placeholders(value: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(value) else { return Vec::new() };
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(PLACEHOLDER.0) {
        let after = &rest[start + PLACEHOLDER.0.len()..];
        let Some(end) = after.find(PLACEHOLDER.1) else { break };
        names.push(after[..end].to_owned());
        rest = &after[end + PLACEHOLDER.1.len()..];
    }
    names
}

fn placeholder(name: &str) -> String {
    format!("{}{name}{}", PLACEHOLDER.0, PLACEHOLDER.1)
}

/// The request's replay name and canonical form.
fn identity(request: &OutboundRequest) -> (String, String) {
    // The name leaves out the query, which may hold a key the guest read from
    // its secrets; the hash covers the whole URL.
    let shown = request.url.split(['?', '#']).next().unwrap_or_default();
    let name = cut_with_note(format!("{} {shown}", request.method), 256);
    let mut headers: Vec<(&str, String)> =
        request.headers.iter().map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v).into_owned())).collect();
    headers.sort();
    let canonical = serde_json::json!({
        "method": request.method,
        "url": request.url,
        "headers": headers,
        "body_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&request.body)),
    });
    (name, canonical_input(&canonical.to_string()))
}

impl HttpCall {
    /// Answers `request` from the journal, or sends it and records its
    /// response. `secrets` fills placeholders, and only for a live request.
    pub async fn send(
        &self,
        request: OutboundRequest,
        secrets: &dyn SecretValues,
    ) -> Result<(OutboundResponse, Answered), HttpError> {
        let (name, canonical) = identity(&request);
        let key = {
            let mut journal = self.journal.lock().await;
            self.check_live(&request)?;
            let key = journal.next_key(CallKind::Http, &name, &canonical);
            let found = match journal.lookup(&key).await {
                Ok(found) => found,
                Err(e) => {
                    journal.release(&key);
                    return Err(self.journal_error(e));
                }
            };
            if let Some(entry) = found {
                let response = serde_json::from_str(&entry.output).map_err(|e| HttpError::Transport {
                    url: request.url.clone(),
                    message: format!("its recorded response cannot be read ({e}); the journal is damaged"),
                })?;
                return Ok((response, Answered::Replayed));
            }
            if let Some(miss) = journal.replay_miss(&key, format!(" ({name})")) {
                journal.release(&key);
                return Err(self.journal_error(miss));
            }
            key
        };
        let mut pending = Unrecorded { call: self, key: Some(key) };
        let started = Instant::now();
        let sent = tokio::time::timeout(self.timeout, self.send_live(&request, secrets)).await;
        let mut journal = self.journal.lock().await;
        let key = pending.key.take().expect("taken once");
        // The occurrence goes back when the request ends with nothing recorded,
        // unless its call ended meanwhile (the journal then serves another).
        let live = self.live();
        let response = match sent {
            Ok(Ok(response)) if live => response,
            Ok(Ok(_)) => return Err(HttpError::CallEnded(request.url)),
            Ok(Err(e)) => {
                if live {
                    journal.release(&key);
                }
                return Err(e);
            }
            Err(_) => {
                if live {
                    journal.release(&key);
                }
                return Err(HttpError::Timeout { url: request.url, limit: self.timeout });
            }
        };
        if response.status == 429 || response.status >= 500 {
            journal.release(&key);
            return Ok((response, Answered::Transient));
        }
        let output = serde_json::to_string(&response).unwrap_or_default();
        let summary = format!("{name} -> {} ({} bytes)", response.status, response.body.len());
        if let Err(e) = journal.record(key.clone(), output, summary, started.elapsed(), None).await {
            journal.release(&key);
            return Err(self.journal_error(e));
        }
        Ok((response, Answered::Live))
    }

    /// A journal error as this call reports it (see [`HttpCall::fatal`]);
    /// called while the journal is held.
    fn journal_error(&self, error: JournalError) -> HttpError {
        match &self.fatal {
            None => HttpError::Journal(error),
            Some(slot) => {
                let message = error.to_string();
                if let Ok(mut first) = slot.lock() {
                    first.get_or_insert(error);
                }
                HttpError::JournalFailed(message)
            }
        }
    }

    /// Whether the call that made the request still runs.
    fn live(&self) -> bool {
        self.call_end.has_changed().is_ok()
    }

    fn check_live(&self, request: &OutboundRequest) -> Result<(), HttpError> {
        if self.live() { Ok(()) } else { Err(HttpError::CallEnded(request.url.clone())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_in_order() {
        assert_eq!(placeholders(b"Bearer {{secret:API_KEY}}"), ["API_KEY"]);
        assert_eq!(placeholders(b"{{secret:a}}-{{secret:b}}"), ["a", "b"]);
        assert!(placeholders(b"{{secret:unterminated").is_empty());
        assert!(placeholders(b"plain").is_empty());
    }

    #[test]
    fn bodies_are_stored_as_text_or_base64_and_read_back() {
        for body in [Bytes::from_static(b"{\"ok\":true}"), Bytes::from_static(&[0xff, 0x00, 0x80])] {
            let response = OutboundResponse { status: 200, headers: vec![("a".into(), "b".into())], body };
            let text = serde_json::to_string(&response).unwrap();
            assert_eq!(serde_json::from_str::<OutboundResponse>(&text).unwrap(), response);
        }
        let text = serde_json::to_string(&OutboundResponse {
            status: 200,
            headers: vec![],
            body: Bytes::from_static(b"hello"),
        })
        .unwrap();
        assert!(text.contains("\"body\":\"hello\""), "{text}");
        // Control characters would grow sixfold as JSON escapes: base64 instead.
        let text = serde_json::to_string(&OutboundResponse {
            status: 200,
            headers: vec![],
            body: Bytes::from_static(b"\x01\x02\x03"),
        })
        .unwrap();
        assert!(text.contains("base64"), "{text}");
    }

    #[test]
    fn the_identity_ignores_header_order_and_keeps_placeholders() {
        let request = |headers: Vec<(&str, &str)>| OutboundRequest {
            method: "POST".into(),
            url: "https://api.example.com/v1".into(),
            destination: Destination::new(crate::sandbox::outbound::Scheme::Https, "api.example.com", None),
            headers: headers.into_iter().map(|(n, v)| (n.to_owned(), v.as_bytes().to_vec())).collect(),
            body: Bytes::from_static(b"{}"),
        };
        let a = identity(&request(vec![("a", "1"), ("authorization", "{{secret:K}}")]));
        let b = identity(&request(vec![("authorization", "{{secret:K}}"), ("a", "1")]));
        assert_eq!(a, b);
        assert!(a.1.contains("{{secret:K}}"));
        assert_eq!(a.0, "POST https://api.example.com/v1");
        let mut keyed = request(vec![]);
        keyed.url.push_str("?key=abc");
        let (name, canonical) = identity(&keyed);
        assert_eq!(name, "POST https://api.example.com/v1", "the query stays out of the name");
        assert!(canonical.contains("key=abc") && canonical != identity(&request(vec![])).1);
        assert_ne!(a, identity(&request(vec![("a", "2")])));
    }
}
