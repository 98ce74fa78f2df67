//! The HTTP API's request decoding (`cairn::server`): a request's body,
//! query string and headers, decoded by the extractors the handlers use and
//! handed to the pure functions the handlers call with what they decoded.
//!
//! Driven for real: axum's `Json` (what `server::extract::Body` wraps, with
//! its content-type check) and `Query` (`extract::Args`), the `Bytes` read of
//! `extract::Optional` and its empty-body rule, and then the handlers' own
//! decoders: `RunStatus::parse`, `Role::from_str`, `access::expires_at`,
//! `access::split` and `access::check`, `views::set_quota`,
//! `views::usage_window`, `config::units::parse_duration` (gc),
//! `Tenant::from_str` (the `X-Cairn-Tenant` header), `cassette`'s
//! `Cassette::check` (import), `server::dashboard::asset` (the fallback
//! route) and `server::ApiError`'s response.
//!
//! Mirrored: the request bodies and query types (`Submit`, `ListArgs`,
//! `JournalArgs`, `Resume`, `NewToken`, `SetQuota`, `UsageArgs`, `Retry`,
//! `CacheClear`, `Gc`, `SecretValue`) keep their fields private to the
//! handlers; they are copied below with the same fields and serde
//! attributes, and every input is decoded as the real type too
//! (`cairn::server::requests`), which must accept and refuse exactly what
//! the copy does. So are the few lines of `server::auth` that pick the token
//! and tenant out of a request (private functions).

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::IntoResponse;
use cairn::model::{ApiToken, Quotas, Role, RunStatus, Tenant, now_ms};
use cairn::server::{ApiError, requests};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

// `server::runs`.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submit {
    task: String,
    input: Value,
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    replay: Option<String>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    status: Option<String>,
    task: Option<String>,
    parent: Option<String>,
    #[serde(default)]
    children: bool,
    before: Option<String>,
    limit: Option<usize>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalArgs {
    after: Option<u64>,
    limit: Option<usize>,
}

#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resume {
    #[serde(default)]
    force: bool,
}

// `server::tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    role: String,
    #[serde(default)]
    expires: Option<String>,
}

// `server::usage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageArgs {
    since: Option<String>,
    by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetQuota {
    key: String,
    value: String,
}

// `server::admin`.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Retry {
    #[serde(default)]
    stub_output: Option<String>,
}

#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheClear {
    #[serde(default)]
    task: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gc {
    older_than: String,
    #[serde(default)]
    #[allow(dead_code)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretValue {
    #[allow(dead_code)]
    value: String,
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let content_type = match pick >> 4 {
        0 => None,
        1 => Some("text/plain"),
        2 => Some("application/json; charset=utf-8"),
        3 => Some("application/vnd.api+json"),
        _ => Some("application/json"),
    };
    let now = now_ms();
    match pick % 16 {
        0 => {
            if let Some(body) = json_both::<requests::Submit, Submit>(rest, content_type) {
                let input = body.input.to_string();
                assert!(serde_json::from_str::<Value>(&input).is_ok(), "a submitted input reads back as JSON");
                let _ = (body.task, body.wait, body.replay);
            }
        }
        1 => {
            if let Some(body) = json::<Value>(rest, content_type) {
                match serde_json::from_value::<cairn::cassette::Cassette>(body) {
                    Ok(cassette) => {
                        let _ = cassette.check("the request body").map_err(|e| e.to_string());
                    }
                    Err(e) => answer(ApiError::bad_request(format!("not a cassette: {e}"))),
                }
            }
        }
        2 => drop(optional_both::<requests::Resume, Resume>(rest)),
        3 => drop(optional_both::<requests::Retry, Retry>(rest)),
        4 => drop(optional_both::<requests::CacheClear, CacheClear>(rest)),
        5 => {
            if let Some(body) = json_both::<requests::Gc, Gc>(rest, content_type)
                && let Err(e) = cairn::config::units::parse_duration(&body.older_than)
            {
                answer(ApiError::bad_request(e));
            }
        }
        6 => {
            if json_both::<requests::SecretValue, SecretValue>(rest, content_type).is_some() {
                // The key is the path's last segment.
                let key = String::from_utf8_lossy(rest);
                let _ = key.is_empty() || key.chars().any(|c| c.is_control());
            }
        }
        7 => {
            if let Some(body) = json_both::<requests::NewToken, NewToken>(rest, content_type) {
                let role = body.role.parse::<Role>();
                let expires = cairn::access::expires_at(now, body.expires.as_deref());
                if let Ok(Some(at)) = expires {
                    assert!(at >= now);
                }
                if let (Ok(role), Ok(expires)) = (role, expires) {
                    let minted = cairn::access::mint(&Tenant::default(), role, now, expires);
                    let (id, secret) = cairn::access::split(&minted.token).expect("a minted token splits");
                    assert_eq!(id, minted.record.id);
                    assert!(cairn::access::check(Some(&minted.record), secret, now).is_ok());
                }
            }
        }
        8 => {
            if let Some(body) = json_both::<requests::SetQuota, SetQuota>(rest, content_type) {
                let mut quotas = Quotas::default();
                match cairn::views::set_quota(&mut quotas, &body.key, &body.value) {
                    Ok(()) => {
                        let _ = quotas.overridden_by(&Quotas::default());
                    }
                    Err(e) => answer(ApiError::bad_request(e)),
                }
            }
        }
        9 => {
            if let Some(args) = query_both::<requests::ListArgs, ListArgs>(rest) {
                if let Some(name) = &args.status
                    && RunStatus::parse(name).is_none()
                {
                    answer(ApiError::bad_request(format!("unknown status {name:?}")));
                }
                let _ = args.limit.unwrap_or(50).clamp(1, 1000);
            }
        }
        10 => {
            if let Some(args) = query_both::<requests::JournalArgs, JournalArgs>(rest) {
                let _ = args.limit.unwrap_or(200).clamp(1, 5000);
            }
        }
        11 => {
            if let Some(args) = query_both::<requests::UsageArgs, UsageArgs>(rest) {
                match cairn::views::usage_window(now, args.since.as_deref().unwrap_or("7d"), args.by.as_deref()) {
                    Ok((since, _)) => assert!(since <= now),
                    Err(e) => answer(ApiError::bad_request(e)),
                }
            }
        }
        12 => headers(rest, now),
        13 => {
            if let Ok(uri) = Uri::try_from(rest) {
                let _ = cairn::server::dashboard::asset(uri.path());
            }
        }
        _ => {
            // Any bytes as a token and as a tenant.
            let text = String::from_utf8_lossy(rest);
            let _ = text.parse::<Tenant>();
            if let Ok((_, secret)) = cairn::access::split(&text) {
                let _ = cairn::access::check(Some(&token_record()), secret, now);
            }
        }
    }
});

/// Polls a future that never waits (the whole body is in memory).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

fn request(body: &[u8], content_type: Option<&str>) -> Request {
    let mut request = Request::builder().method(Method::POST).uri("/api/v1/runs");
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    request.body(Body::from(body.to_vec())).expect("a request")
}

/// `extract::Body<T>`: axum's JSON extractor, its rejection made an API error.
fn json<T: DeserializeOwned>(body: &[u8], content_type: Option<&str>) -> Option<T> {
    match ready(axum::Json::<T>::from_request(request(body, content_type), &())) {
        Ok(axum::Json(value)) => Some(value),
        Err(rejection) => {
            answer(ApiError {
                status: rejection.status(),
                kind: "bad-request",
                message: format!("bad request body: {}", rejection.body_text()),
            });
            None
        }
    }
}

/// `extract::Optional<T>`: an empty (or blank) body is the default.
fn optional<T: DeserializeOwned + Default>(body: &[u8]) -> Option<T> {
    let bytes = ready(Bytes::from_request(request(body, None), &())).expect("an in-memory body");
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Some(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| answer(ApiError::bad_request(format!("bad request body: {e}")))).ok()
}

/// `extract::Args<T>`: axum's query extractor.
fn query<T: DeserializeOwned>(query: &[u8]) -> Option<T> {
    let mut uri = b"/api/v1/runs?".to_vec();
    uri.extend_from_slice(query);
    let uri = Uri::try_from(uri).ok()?;
    let (mut parts, ()) = Request::builder().uri(uri).body(()).expect("a request").into_parts();
    match ready(Query::<T>::from_request_parts(&mut parts, &())) {
        Ok(Query(value)) => Some(value),
        Err(rejection) => {
            answer(ApiError::bad_request(format!("bad query parameters: {}", rejection.body_text())));
            None
        }
    }
}

/// [`json`] of the copy `C`, checked against the real type `R`.
fn json_both<R: DeserializeOwned, C: DeserializeOwned>(body: &[u8], content_type: Option<&str>) -> Option<C> {
    let real = json::<R>(body, content_type).is_some();
    let copy = json::<C>(body, content_type);
    assert_eq!(real, copy.is_some(), "the copy decodes as the real type does");
    copy
}

/// [`optional`] of the copy `C`, checked against the real type `R`.
fn optional_both<R: DeserializeOwned + Default, C: DeserializeOwned + Default>(body: &[u8]) -> Option<C> {
    let real = optional::<R>(body).is_some();
    let copy = optional::<C>(body);
    assert_eq!(real, copy.is_some(), "the copy decodes as the real type does");
    copy
}

/// [`query`] of the copy `C`, checked against the real type `R`.
fn query_both<R: DeserializeOwned, C: DeserializeOwned>(text: &[u8]) -> Option<C> {
    let real = query::<R>(text).is_some();
    let copy = query::<C>(text);
    assert_eq!(real, copy.is_some(), "the copy decodes as the real type does");
    copy
}

/// `auth::presented` and `auth::named_tenant`: the token and tenant of a
/// request, from its headers (or an event stream's query), then checked.
fn headers(bytes: &[u8], now: u64) {
    let (authorization, tenant) = bytes.split_at(bytes.iter().position(|b| *b == b'\n').unwrap_or(bytes.len()));
    let tenant = tenant.get(1..).unwrap_or_default();
    if let Ok(value) = HeaderValue::from_bytes(authorization)
        && let Ok(text) = value.to_str()
        && let Some(token) = text.strip_prefix("Bearer ")
    {
        match cairn::access::split(token) {
            Ok((_, secret)) => {
                let _ = cairn::access::check(Some(&token_record()), secret, now);
            }
            Err(e) => answer(ApiError::unauthorized_because(e.to_string())),
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(tenant) {
        match value.to_str() {
            Ok(text) => {
                if let Err(e) = text.parse::<Tenant>() {
                    answer(ApiError::bad_request(format!("X-Cairn-Tenant: {e}")));
                }
            }
            Err(_) => answer(ApiError::bad_request("the X-Cairn-Tenant header is not text")),
        }
    }
    // An event stream's `?token=…&tenant=…`.
    let mut uri = b"/api/v1/events?".to_vec();
    uri.extend_from_slice(bytes);
    if let Ok(uri) = Uri::try_from(uri)
        && let Some(query) = uri.query()
    {
        let _ = query.split('&').find_map(|pair| pair.strip_prefix("token=")).map(cairn::access::split);
        let named = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("tenant="))
            .map(|t| t.replace("%2F", "/").replace("%2f", "/"));
        let _ = named.map(|t| t.parse::<Tenant>());
    }
}

fn token_record() -> ApiToken {
    ApiToken {
        id: "0123456789abcdef".into(),
        tenant: Tenant::default(),
        role: Role::Viewer,
        secret_sha256: "0".repeat(64),
        created_at_ms: 0,
        expires_at_ms: Some(1),
    }
}

/// What the API answers with an error: its JSON response.
fn answer(error: ApiError) {
    let _ = error.into_response();
}
