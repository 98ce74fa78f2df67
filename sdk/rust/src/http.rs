//! Outbound HTTP through the host's `cairn:task/http`, journaled: a request that
//! got its response is answered from the run's journal on a retry or resume
//! (and from a cassette on replay), never sent twice. Responses with status
//! 429 or 5xx are not journaled, so the next attempt asks again.
//!
//! Off by default: the task's environment must list the destination in
//! `allowed_outbound_hosts`. Secrets go into headers as placeholders
//! ([`secret`]), which the host fills in on the way out; the task never
//! holds the value.
//!
//! ```ignore
//! use cairn_sdk::http::{self, Request};
//! let weather = http::send(
//!     Request::get("https://api.example.com/v1/weather?city=Oslo")
//!         .header("authorization", format!("Bearer {}", http::secret("WEATHER_KEY"))),
//! )?
//! .json::<serde_json::Value>()?;
//! ```

use crate::TaskError;

/// An outbound request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
}

impl Request {
    /// A request of `method` to `url`, without headers or body.
    #[must_use]
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Request { method: method.to_ascii_uppercase(), url: url.into(), headers: Vec::new(), body: Vec::new() }
    }

    /// `GET url`.
    #[must_use]
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// `POST url` with `body`.
    #[must_use]
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", url).body(body)
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its `content-type`.
    #[must_use]
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.header("content-type", "application/json").body(value.to_string())
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; kind `http-invalid-response` if it is not.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError::new("invalid-response", format!("the response body is not the JSON expected: {e}")))
    }

    /// `Err` (kind `http-status`) unless the status is 2xx.
    pub fn error_for_status(self) -> Result<Response, HttpError> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            let start: String = self.text().chars().take(200).collect();
            Err(HttpError::new("status", format!("the server answered {}: {start}", self.status)))
        }
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// Short kind: `denied`, `prohibited`, `too-large`, `timeout`, `failed`
    /// (the host's cases), `status` or `invalid-response`.
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
}

impl HttpError {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        HttpError { kind, message: message.into() }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http-{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for HttpError {}

/// Kind `http-<kind>`. A denied or prohibited destination and a body past its
/// limit are not retryable; the rest are.
impl From<HttpError> for TaskError {
    fn from(e: HttpError) -> Self {
        let retryable = !matches!(e.kind, "denied" | "prohibited" | "too-large");
        TaskError::new(format!("http-{}", e.kind), e.message).retryable(retryable)
    }
}

/// The placeholder the host replaces with secret `name`'s value in a header
/// of a request to an allowed destination. The environment must declare the
/// secret.
pub fn secret(name: &str) -> String {
    format!("{{{{secret:{name}}}}}")
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    send(Request::get(url))
}

/// Sends `request` (or gets its journaled response back) and returns the whole response.
pub fn send(request: Request) -> Result<Response, HttpError> {
    use crate::bindings::cairn::task::http as wit;
    let answer = wit::send(&wit::Request {
        method: request.method,
        url: request.url,
        headers: request.headers,
        body: request.body,
    });
    match answer {
        Ok(r) => Ok(Response { status: r.status, headers: r.headers, body: r.body }),
        Err(wit::HttpError::Denied(m)) => Err(HttpError::new("denied", m)),
        Err(wit::HttpError::Prohibited(m)) => Err(HttpError::new("prohibited", m)),
        Err(wit::HttpError::TooLarge(m)) => Err(HttpError::new("too-large", m)),
        Err(wit::HttpError::Timeout(m)) => Err(HttpError::new("timeout", m)),
        Err(wit::HttpError::Failed(m)) => Err(HttpError::new("failed", m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_what_the_host_looks_for() {
        assert_eq!(secret("API_KEY"), "{{secret:API_KEY}}");
    }
}
