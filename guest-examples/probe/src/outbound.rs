//! The `http` and `http-wasi` modes: outbound requests through the SDK's
//! `http` helpers (`cairn:task/http`), or through `wasi:http` called directly.

use cairn_sdk::TaskError;
use cairn_sdk::http::{self, Request, Response};
use serde_json::{Value, json};
use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

/// Sends `requests` in order, each `{"url", "method"?, "body"?, "headers"?:
/// {name: value}, "secret_header"?: [name, SECRET]}` (the header's value is
/// `Bearer ` and the secret's placeholder). With `"follow": true` a 3xx
/// answer's `location` is requested next. On attempt 1 with `"fail_after":
/// true`, fails (retryable, kind `flaky`) once every request is done.
///
/// Each result is `{"status", "body", "headers"}` or `{"error": "http-KIND: ..."}`.
/// With `"wasi": true`, requests go through `wasi:http` itself.
pub fn requests(args: &Value) -> Result<Value, TaskError> {
    let wasi = args.get("wasi").and_then(Value::as_bool).unwrap_or(false);
    let send = |request: Request| -> Result<Response, String> {
        if wasi { send_wasi(&request) } else { http::send(request).map_err(|e| e.to_string()) }
    };
    let list = args.get("requests").and_then(Value::as_array).cloned().unwrap_or_default();
    let follow = args.get("follow").and_then(Value::as_bool).unwrap_or(false);
    let mut results = Vec::new();
    for spec in &list {
        let url = spec.get("url").and_then(Value::as_str).unwrap_or_default();
        let method = spec.get("method").and_then(Value::as_str).unwrap_or("GET");
        let mut request = Request::new(method, url);
        if let Some(body) = spec.get("body").and_then(Value::as_str) {
            request = request.body(body);
        }
        if let Some(headers) = spec.get("headers").and_then(Value::as_object) {
            for (name, value) in headers {
                request = request.header(name, value.as_str().unwrap_or_default());
            }
        }
        if let Some([name, secret]) = spec.get("secret_header").and_then(Value::as_array).map(Vec::as_slice) {
            let (name, secret) = (name.as_str().unwrap_or_default(), secret.as_str().unwrap_or_default());
            request = request.header(name, format!("Bearer {}", http::secret(secret)));
        }
        let mut answer = send(request);
        if follow
            && let Ok(response) = &answer
            && (300..400).contains(&response.status)
            && let Some(location) = response.header("location")
        {
            answer = send(Request::get(location));
        }
        results.push(match answer {
            Ok(response) => json!({
                "status": response.status,
                "body": response.text(),
                "headers": response.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect::<Vec<_>>(),
            }),
            Err(e) => json!({ "error": e }),
        });
    }
    if args.get("fail_after").and_then(Value::as_bool) == Some(true) && cairn_sdk::env::attempt() == 1 {
        return Err(TaskError::new("flaky", format!("probe: failing on purpose after {} request(s)", list.len())));
    }
    Ok(json!({ "results": results }))
}

fn from_code(code: ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied => "http-denied: the host denied the request".into(),
        ErrorCode::DestinationIpProhibited => "http-prohibited: the name resolves to a private address".into(),
        ErrorCode::HttpRequestBodySize(_) | ErrorCode::HttpResponseBodySize(_) => {
            "http-too-large: a body is too large".into()
        }
        ErrorCode::HttpResponseTimeout => "http-timeout: the request took too long".into(),
        ErrorCode::HttpProtocolError | ErrorCode::HttpRequestUriInvalid => {
            "http-denied: not a URL the host sends".into()
        }
        other => format!("http-failed: {other:?}"),
    }
}

/// `request` through `wasi:http/outgoing-handler`, as any wasi:http client sends it.
fn send_wasi(request: &Request) -> Result<Response, String> {
    let (scheme, rest) = request.url.split_once("://").ok_or("http-denied: not an absolute URL")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    let fields: Vec<(String, Vec<u8>)> =
        request.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone().into_bytes())).collect();
    let headers = Fields::from_list(&fields).map_err(|e| format!("http-denied: headers: {e:?}"))?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        other => Method::Other(other.to_owned()),
    };
    let set = |ok: Result<(), ()>, what: &str| ok.map_err(|()| format!("http-denied: bad {what}"));
    set(outgoing.set_method(&method), "method")?;
    set(outgoing.set_scheme(Some(&scheme)), "scheme")?;
    set(outgoing.set_authority(Some(authority)), "authority")?;
    set(outgoing.set_path_with_query(Some(if path.is_empty() { "/" } else { path })), "path")?;
    let body = outgoing.body().map_err(|()| "http-failed: no body")?;
    let pending = outgoing_handler::handle(outgoing, None).map_err(from_code)?;
    {
        // The body goes after `handle`, as streaming clients send it.
        let stream = body.write().map_err(|()| "http-failed: no body stream")?;
        for chunk in request.body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| format!("http-failed: writing: {e:?}"))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(from_code)?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(from_code(code)),
        _ => return Err("http-failed: no response".into()),
    };
    let status = response.status();
    let headers =
        response.headers().entries().into_iter().map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned())).collect();
    let incoming = response.consume().map_err(|()| "http-failed: no response body")?;
    let mut bytes = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| "http-failed: no response stream")?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!("http-failed: {}", e.to_debug_string()));
                }
            }
        }
    }
    Ok(Response { status, headers, body: bytes })
}

/// The `http-flood` mode: `count` GET requests to `url` through `wasi:http`,
/// all started before any is read, then waits for every response without
/// consuming one (an attack on the host's memory: each ready response holds
/// its body in the host until the guest drops it).
pub fn flood(args: &Value) -> Result<Value, TaskError> {
    let url = args.get("url").and_then(Value::as_str).unwrap_or_default();
    let count = args.get("count").and_then(Value::as_u64).unwrap_or(1);
    let rest = url.strip_prefix("http://").ok_or_else(|| TaskError::invalid_input("`url` must be http://"))?;
    let cut = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    let mut pending = Vec::new();
    for _ in 0..count {
        let request = OutgoingRequest::new(Fields::new());
        let set = |ok: Result<(), ()>| ok.map_err(|()| TaskError::invalid_input("bad URL"));
        set(request.set_scheme(Some(&Scheme::Http)))?;
        set(request.set_authority(Some(authority)))?;
        set(request.set_path_with_query(Some(path)))?;
        pending.push(outgoing_handler::handle(request, None).map_err(|e| TaskError::new("http", from_code(e)))?);
    }
    for future in &pending {
        future.subscribe().block();
    }
    Ok(json!({ "sent": count }))
}
