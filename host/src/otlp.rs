//! Export of the host's `tracing` spans (a span per run, attempt and host
//! import) to an OpenTelemetry collector, over OTLP/HTTP with JSON
//! (`POST {url}/v1/traces`). Off unless `cairn serve --otlp URL` turns it on.
//!
//! The layer never blocks a run: closed spans go into a bounded queue that a
//! thread of its own sends in batches; when the collector is slow or gone,
//! spans are dropped and counted, never waited for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::span::{Attributes, Id, Record};
use tracing::{Subscriber, field};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Spans waiting to be sent, at most.
const QUEUE: usize = 8192;
/// Spans per request, at most.
const BATCH: usize = 512;
/// How long a span waits for its batch to fill.
const FLUSH: Duration = Duration::from_secs(1);

/// Errors setting the exporter up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The collector's address is not `http://HOST:PORT[/PATH]`.
    #[error("--otlp {0:?}: give the collector's OTLP/HTTP address as http://HOST:PORT (https is not supported)")]
    BadUrl(String),
}

/// A span being recorded.
struct Open {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start_ns: u128,
    attributes: Vec<(String, String)>,
}

/// A finished span, as sent.
struct Closed {
    name: &'static str,
    open: Open,
    end_ns: u128,
}

/// What the sender thread is given.
enum Message {
    /// A span to send.
    Span(Closed),
    /// Send what is waiting now, then say so.
    Flush(mpsc::Sender<()>),
}

/// The layer: add it to the subscriber with [`layer`].
pub struct OtlpLayer {
    queue: mpsc::SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

/// Asks the sender thread to send what is waiting (at exit).
#[derive(Clone)]
pub struct Flusher {
    queue: mpsc::SyncSender<Message>,
}

impl Flusher {
    /// Sends every span closed so far, waiting up to `limit`.
    pub fn flush(&self, limit: Duration) {
        let (done, wait) = mpsc::channel();
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(limit);
        }
    }
}

impl OtlpLayer {
    /// A handle to flush this layer's spans.
    pub fn flusher(&self) -> Flusher {
        Flusher { queue: self.queue.clone() }
    }
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default()
}

fn random<const N: usize>() -> [u8; N] {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// Collects a span's fields as text attributes.
struct Fields<'a>(&'a mut Vec<(String, String)>);

impl field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
    fn record_debug(&mut self, field: &field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for OtlpLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent().and_then(|p| p.extensions().get::<Open>().map(|o| (o.trace_id, o.span_id)));
        let mut attributes = Vec::new();
        attrs.record(&mut Fields(&mut attributes));
        let open = Open {
            trace_id: parent.map(|p| p.0).unwrap_or_else(random),
            span_id: random(),
            parent: parent.map(|p| p.1),
            start_ns: now_ns(),
            attributes,
        };
        span.extensions_mut().insert(open);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(open) = span.extensions_mut().get_mut::<Open>()
        {
            values.record(&mut Fields(&mut open.attributes));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<Open>() else { return };
        let closed = Closed { name: span.metadata().name(), open, end_ns: now_ns() };
        if self.queue.try_send(Message::Span(closed)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where spans go: host, port and path of the collector's traces endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collector {
    /// `HOST:PORT`.
    pub authority: String,
    /// `/v1/traces` under the given path.
    pub path: String,
}

impl Collector {
    /// Parses `http://HOST:PORT[/PATH]`.
    pub fn parse(url: &str) -> Result<Self, OtlpError> {
        let rest = url.strip_prefix("http://").ok_or_else(|| OtlpError::BadUrl(url.into()))?;
        let (authority, path) =
            rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, String::new()));
        if authority.is_empty() || !authority.contains(':') {
            return Err(OtlpError::BadUrl(url.into()));
        }
        Ok(Collector { authority: authority.to_owned(), path: format!("{}/v1/traces", path.trim_end_matches('/')) })
    }
}

/// A layer exporting to `url`, and its sender thread.
pub fn layer(url: &str) -> Result<OtlpLayer, OtlpError> {
    let collector = Collector::parse(url)?;
    let (queue, spans) = mpsc::sync_channel::<Message>(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let counted = dropped.clone();
    std::thread::Builder::new()
        .name("cairn-otlp".into())
        .spawn(move || send_loop(&collector, &spans, &counted))
        .map_err(|_| OtlpError::BadUrl(url.into()))?;
    Ok(OtlpLayer { queue, dropped })
}

fn send_loop(collector: &Collector, messages: &mpsc::Receiver<Message>, dropped: &AtomicU64) {
    let mut batch = Vec::new();
    let mut flushed = Vec::new();
    loop {
        let message = if batch.is_empty() {
            match messages.recv() {
                Ok(message) => Some(message),
                Err(_) => return,
            }
        } else {
            match messages.recv_timeout(FLUSH) {
                Ok(message) => Some(message),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    send(collector, &batch, dropped);
                    return;
                }
            }
        };
        match message {
            Some(Message::Span(span)) => {
                batch.push(span);
                if batch.len() < BATCH {
                    continue;
                }
            }
            Some(Message::Flush(done)) => flushed.push(done),
            None => {}
        }
        send(collector, &batch, dropped);
        batch.clear();
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

fn send(collector: &Collector, batch: &[Closed], dropped: &AtomicU64) {
    if batch.is_empty() {
        return;
    }
    let body = encode(batch).to_string();
    if let Err(e) = post(collector, &body) {
        dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
        // Not through `tracing`: that would make spans about sending spans.
        eprintln!("otlp: cannot send {} span(s) to {}: {e}", batch.len(), collector.authority);
    }
}

/// The OTLP/JSON request body for `spans`.
fn encode(spans: &[Closed]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            json!({
                "traceId": hex::encode(s.open.trace_id),
                "spanId": hex::encode(s.open.span_id),
                "parentSpanId": s.open.parent.map(hex::encode).unwrap_or_default(),
                "name": s.name,
                "kind": 1,
                "startTimeUnixNano": s.open.start_ns.to_string(),
                "endTimeUnixNano": s.end_ns.to_string(),
                "attributes": s.open.attributes.iter().map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cairn"}}]},
        "scopeSpans": [{"scope": {"name": "cairn"}, "spans": spans}],
    }]})
}

/// One HTTP/1.1 POST; succeeds on a 2xx answer.
fn post(collector: &Collector, body: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(&collector.authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        collector.path,
        collector.authority,
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.split_whitespace().nth(1).unwrap_or_default();
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("the collector answered {status:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            Collector::parse("http://127.0.0.1:4318").unwrap(),
            Collector { authority: "127.0.0.1:4318".into(), path: "/v1/traces".into() }
        );
        assert_eq!(Collector::parse("http://otel:4318/base/").unwrap().path, "/base/v1/traces");
        assert!(Collector::parse("https://otel:4318").is_err());
        assert!(Collector::parse("otel:4318").is_err());
    }

    #[test]
    fn spans_reach_a_collector_with_their_parents_and_fields() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                let n = stream.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
                        return (head.to_owned(), serde_json::from_str::<Value>(body).unwrap());
                    }
                }
            }
        });
        let subscriber = tracing_subscriber::registry().with(layer(&url).unwrap());
        tracing::subscriber::with_default(subscriber, || {
            let run = tracing::info_span!("run", run_id = "r1", task = "probe");
            let _in_run = run.enter();
            tracing::info_span!("attempt", attempt = 1).in_scope(|| {});
        });
        let (head, body) = received.join().unwrap();
        assert!(head.starts_with("POST /v1/traces HTTP/1.1"), "{head}");
        let spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().unwrap().clone();
        let named = |name: &str| spans.iter().find(|s| s["name"] == name).cloned().unwrap();
        let (run, attempt) = (named("run"), named("attempt"));
        assert_eq!(attempt["traceId"], run["traceId"], "an attempt is in its run's trace");
        assert_eq!(attempt["parentSpanId"], run["spanId"]);
        assert!(
            run["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["key"] == "run_id" && a["value"]["stringValue"] == "r1")
        );
    }
}
