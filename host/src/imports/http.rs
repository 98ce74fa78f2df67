//! `cairn:task/http`, and `wasi:http/outgoing-handler` and `wasi:http/types`
//! through wasmtime-wasi-http with Cairn's hooks: a request goes out only to a
//! destination its environment's `allowed_outbound_hosts` allows (and the
//! operator's `CAIRN_OUTBOUND_HOSTS`, when set), and is answered by
//! [`crate::services::http`], which journals it. Off by default: with no
//! patterns, every request is denied.
//!
//! The work of a request runs in the background, as wasi:http has it: the
//! guest may write the body after `handle` returns, and polls the response.
//! At most [`IN_FLIGHT`] requests of an instance hold host memory at once
//! (their bodies, and their responses until the guest drops them); more
//! wait their turn.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi_http::{
    Error as WasiHttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};
use zeroize::Zeroizing;

use super::bindings::cairn::task::http as wit;
use super::{CallReport, CallSetup, Capability, HostServices, HostState};
use crate::access::vault::Vault;
use crate::journal::SharedJournal;
use crate::manifest::SecretDecl;
use crate::model::Tenant;
use crate::sandbox::outbound::{AllowList, Destination, Scheme};
use crate::services::http::{
    Answered, FRAMING_HEADERS, HttpCall, HttpError, OutboundRequest, OutboundResponse, SecretValues,
};

/// Requests of one instance holding host memory at once.
pub const IN_FLIGHT: usize = 8;

/// The `wasi:http` context of an instance.
pub struct HttpCtx {
    wasi: WasiHttpCtx,
    hooks: HttpHooks,
}

/// What the hooks need to send one call's requests.
struct HttpHooks {
    vault: Arc<Vault>,
    operator: Option<Arc<AllowList>>,
    /// Set once, by [`HttpCtx::share_journal`].
    journal: Option<SharedJournal>,
    tenant: Tenant,
    run_id: String,
    declared: Arc<[SecretDecl]>,
    allowed: Arc<AllowList>,
    max_request: u64,
    max_response: u64,
    timeout: std::time::Duration,
    in_flight: Arc<tokio::sync::Semaphore>,
    counts: Arc<Counts>,
    /// Dropped (replaced) when the current call ends: the requests the call
    /// left running see it ([`HttpCall::call_end`]), stop, and record nothing.
    stop: tokio::sync::watch::Sender<()>,
    /// The first journal error a `wasi:http` request of the call met: it
    /// ends the attempt (as it does on `cairn:task/http`), whatever the guest
    /// made of the error it got.
    fatal: Arc<std::sync::Mutex<Option<crate::journal::JournalError>>>,
}

/// The call's requests by how they were answered.
#[derive(Default)]
struct Counts {
    live: std::sync::atomic::AtomicU32,
    replayed: std::sync::atomic::AtomicU32,
}

impl Counts {
    fn add(&self, answered: Answered) {
        match answered {
            Answered::Replayed => self.replayed.fetch_add(1, Ordering::Relaxed),
            Answered::Live | Answered::Transient => self.live.fetch_add(1, Ordering::Relaxed),
        };
    }
}

impl Capability for HttpCtx {
    fn new(services: &HostServices) -> Self {
        HttpCtx {
            wasi: WasiHttpCtx::new(),
            hooks: HttpHooks {
                vault: services.secrets.clone(),
                operator: services.outbound.clone(),
                journal: None,
                tenant: Tenant::default(),
                run_id: String::new(),
                declared: Arc::new([]),
                allowed: Arc::default(),
                max_request: 0,
                max_response: 0,
                timeout: std::time::Duration::ZERO,
                in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
                counts: Arc::default(),
                stop: tokio::sync::watch::channel(()).0,
                fatal: Arc::default(),
            },
        }
    }

    fn reset(&mut self, call: &CallSetup<'_>) {
        let hooks = &mut self.hooks;
        if hooks.tenant != *call.tenant {
            hooks.tenant = call.tenant.clone();
        }
        hooks.run_id.clear();
        hooks.run_id.push_str(call.run_id);
        hooks.declared = call.env.secrets.clone();
        hooks.allowed = call.env.outbound.clone();
        hooks.max_request = call.env.resources.max_http_request;
        hooks.max_response = call.env.resources.max_http_response;
        hooks.timeout = call.env.resources.http_timeout;
        hooks.counts = Arc::default();
        hooks.fatal = Arc::default();
    }

    fn drain(&mut self, report: &mut CallReport) {
        // Requests the guest left running stop, and record nothing, once their call ended.
        self.hooks.stop = tokio::sync::watch::channel(()).0;
        let fatal = self.hooks.fatal.lock().map(|mut f| f.take()).unwrap_or_default();
        if let Some(error) = fatal {
            report.fatal = Some(wasmtime::Error::new(error));
        }
        report.stats.http_live = self.hooks.counts.live.load(Ordering::Relaxed);
        report.stats.http_replayed = self.hooks.counts.replayed.load(Ordering::Relaxed);
    }
}

impl HttpCtx {
    /// Gives the hooks the instance's journal, which they record into.
    pub fn share_journal(&mut self, journal: &SharedJournal) {
        self.hooks.journal = Some(journal.clone());
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.caps.http.wasi, table: &mut self.table, hooks: &mut self.caps.http.hooks }
    }
}

struct HttpImports;

impl HasData for HttpImports {
    type Data<'a> = &'a mut HttpCtx;
}

/// Links `cairn:task/http`, `wasi:http/outgoing-handler` and `wasi:http/types`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    wit::add_to_linker::<HostState, HttpImports>(linker, |state| &mut state.caps.http)
}

/// `cairn:task/http`: the same path as `wasi:http`, in one call. A journal
/// error (a replay miss, the journal's limit) ends the attempt, as it does
/// for an LLM call.
impl wit::Host for &mut HttpCtx {
    #[tracing::instrument(name = "http.send", skip_all)]
    async fn send(&mut self, request: wit::Request) -> wasmtime::Result<Result<wit::Response, wit::HttpError>> {
        let hooks = &self.hooks;
        let (url, destination) = match hooks.destination(&request.url) {
            Ok(allowed) => allowed,
            Err(why) => return Ok(Err(wit::HttpError::Denied(why))),
        };
        if request.body.len() as u64 > hooks.max_request {
            return Ok(Err(wit::HttpError::TooLarge(
                HttpError::RequestTooLarge { limit: hooks.max_request }.to_string(),
            )));
        }
        let mut headers = Vec::with_capacity(request.headers.len());
        for (name, value) in request.headers {
            let name = name.to_ascii_lowercase();
            let forbidden = http::HeaderName::from_bytes(name.as_bytes()).map_or(true, |n| {
                wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(&n) || FRAMING_HEADERS.contains(&name.as_str())
            });
            if forbidden {
                return Ok(Err(wit::HttpError::Denied(format!(
                    "header {name:?} is not one a task may set (the host sets host, content-length, connection and the like itself)"
                ))));
            }
            headers.push((name, value.into_bytes()));
        }
        let Some(call) = hooks.call(false) else { return Err(wasmtime::Error::msg("the instance has no journal")) };
        let outbound = OutboundRequest {
            method: request.method.to_ascii_uppercase(),
            url,
            destination,
            headers,
            body: Bytes::from(request.body),
        };
        let answer = call.send(outbound, &hooks.secrets()).await;
        let (response, answered) = match answer {
            Ok(answer) => answer,
            Err(HttpError::Journal(e)) => return Err(wasmtime::Error::new(e)),
            Err(e) => {
                tracing::warn!(run = %hooks.run_id, "outbound request failed: {e}");
                return Ok(Err(to_wit(e)));
            }
        };
        hooks.counts.add(answered);
        Ok(Ok(wit::Response { status: response.status, headers: response.headers, body: response.body.to_vec() }))
    }
}

fn to_wit(error: HttpError) -> wit::HttpError {
    let message = error.to_string();
    match error {
        HttpError::Prohibited { .. } => wit::HttpError::Prohibited(message),
        HttpError::RequestTooLarge { .. } | HttpError::ResponseTooLarge { .. } => wit::HttpError::TooLarge(message),
        HttpError::Timeout { .. } => wit::HttpError::Timeout(message),
        _ => wit::HttpError::Failed(message),
    }
}

/// Secret values for placeholders: declared secrets of the run's tenant only.
struct Declared {
    vault: Arc<Vault>,
    tenant: Tenant,
    declared: Arc<[SecretDecl]>,
}

#[async_trait::async_trait]
impl SecretValues for Declared {
    async fn value(&self, name: &str, to: &Destination) -> Result<Zeroizing<String>, String> {
        let declared = super::secrets::declaration(&self.declared, name)?;
        if let Some(hosts) = &declared.hosts
            && !hosts.allows(to)
        {
            return Err(format!("secret {name:?} goes only to {}, and {to} is not among them", hosts.describe()));
        }
        let stored = super::secrets::stored(&self.vault, &self.tenant, name).await;
        stored.map_err(|e| format!("secret {name:?} cannot be read: {e:#}"))?
    }
}

/// A body that holds a place among the instance's [`IN_FLIGHT`] requests
/// until the guest drops it.
struct Held {
    body: http_body_util::Full<Bytes>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = WasiHttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, WasiHttpError>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx).map_err(|never| match never {})
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The wasi:http error code the guest gets for `error`.
fn to_wasi(error: &HttpError) -> WasiHttpError {
    match error {
        HttpError::Prohibited { .. } => WasiHttpError::DestinationIpProhibited,
        HttpError::NotFound { message, .. } => {
            WasiHttpError::DnsError { rcode: Some(message.clone()), info_code: None }
        }
        HttpError::RequestTooLarge { limit } => WasiHttpError::HttpRequestBodySize(Some(*limit)),
        HttpError::ResponseTooLarge { limit, .. } => WasiHttpError::HttpResponseBodySize(Some(*limit)),
        HttpError::Timeout { .. } => WasiHttpError::HttpResponseTimeout,
        other => WasiHttpError::InternalError(Some(other.to_string())),
    }
}

impl HttpHooks {
    /// Where a request to `url` goes, if its environment (and the operator)
    /// let it, and the URL as the client will read it. The URL is read by the
    /// client's own parser, so the host checked is the host connected to
    /// (`http://2130706433/` and `http://127.1/` are 127.0.0.1 to both).
    fn destination(&self, url: &str) -> Result<(String, Destination), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("URL {url:?} cannot be sent: {e}"))?;
        let scheme = Scheme::parse(parsed.scheme())
            .filter(|_| !parsed.cannot_be_a_base())
            .ok_or_else(|| format!("URL {url:?}: only absolute http:// and https:// URLs are sent"))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!(
                "URL {url:?}: credentials in a URL are not sent; put them in a header (with a {{{{secret:NAME}}}} placeholder)"
            ));
        }
        let host =
            parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("URL {url:?}: it names no host"))?;
        let to = Destination::new(scheme, host, parsed.port_or_known_default());
        if !self.allowed.allows(&to) {
            return Err(format!(
                "{to} is not in the environment's `allowed_outbound_hosts` ({}); add a pattern for it to cairn.toml",
                self.allowed.describe()
            ));
        }
        if let Some(operator) = &self.operator
            && !operator.allows(&to)
        {
            return Err(format!("{to} is not in the operator's CAIRN_OUTBOUND_HOSTS ({})", operator.describe()));
        }
        Ok((parsed.into(), to))
    }

    /// How the current call's requests are answered; `background` for
    /// `wasi:http`'s, whose journal errors fail the attempt when the call ends.
    fn call(&self, background: bool) -> Option<HttpCall> {
        Some(HttpCall {
            journal: self.journal.clone()?,
            call_end: self.stop.subscribe(),
            max_response: self.max_response,
            timeout: self.timeout,
            fatal: background.then(|| self.fatal.clone()),
        })
    }

    /// Secret values for the current call's placeholders.
    fn secrets(&self) -> Declared {
        Declared { vault: self.vault.clone(), tenant: self.tenant.clone(), declared: self.declared.clone() }
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), WasiHttpError>> + Send>),
                WasiHttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpHooks {
    /// The URL's authority names the host; the client sets `host` from it.
    fn set_host_header(&mut self) -> bool {
        false
    }

    /// A request without a scheme is refused rather than guessed.
    fn default_scheme(&mut self) -> Option<http::uri::Scheme> {
        None
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), WasiHttpError>> + Send>,
    ) -> SendFuture {
        let (url, destination) = match self.destination(&request.uri().to_string()) {
            Ok(allowed) => allowed,
            Err(why) => {
                tracing::warn!(run = %self.run_id, "outbound request denied: {why}");
                return Box::new(std::future::ready(Err(WasiHttpError::HttpRequestDenied)));
            }
        };
        let Some(call) = self.call(true) else {
            return Box::new(std::future::ready(Err(WasiHttpError::InternalError(Some(
                "the instance has no journal".into(),
            )))));
        };
        let secrets = self.secrets();
        let mut call_end = call.call_end.clone();
        let (in_flight, counts, max_request) = (self.in_flight.clone(), self.counts.clone(), self.max_request);
        let run_id = self.run_id.clone();
        let work = async move {
            let permit = in_flight.acquire_owned().await.map_err(|_| WasiHttpError::InternalError(None))?;
            let (parts, body) = request.into_parts();
            let body = match http_body_util::Limited::new(body, max_request as usize).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(to_wasi(&HttpError::RequestTooLarge { limit: max_request }));
                }
                Err(e) => match e.downcast::<WasiHttpError>() {
                    Ok(e) => return Err(*e),
                    Err(e) => return Err(WasiHttpError::InternalError(Some(e.to_string()))),
                },
            };
            let headers = parts.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
            let request = OutboundRequest { method: parts.method.to_string(), url, destination, headers, body };
            let (response, answered) = call.send(request, &secrets).await.map_err(|e| {
                tracing::warn!(run = %run_id, "outbound request failed: {e}");
                to_wasi(&e)
            })?;
            counts.add(answered);
            Ok((to_http(response, permit)?, Box::new(std::future::ready(Ok(()))) as Box<dyn Future<Output = _> + Send>))
        };
        Box::new(async move {
            tokio::select! {
                done = work => done,
                _ = call_end.changed() => {
                    Err(WasiHttpError::InternalError(Some("the task's call ended before its request completed".into())))
                }
            }
        })
    }
}

fn to_http(
    response: OutboundResponse,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<http::Response<WasiBody>, WasiHttpError> {
    let mut builder = http::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(name, value);
    }
    let body = Held { body: http_body_util::Full::new(response.body), _permit: permit };
    builder.body(body.boxed_unsync()).map_err(|e| WasiHttpError::InternalError(Some(e.to_string())))
}
