//! A provider for any OpenAI-compatible chat-completions endpoint (OpenAI,
//! vLLM, Ollama, llama.cpp's server, …).
//!
//! One call is one `POST {base_url}/chat/completions`; this provider never
//! retries (wrap it in [`super::reliable::Reliable`]). The API key is sent as a
//! bearer token and never appears in an error, a log line or `Debug` output:
//! any echo of it in a provider's error message is replaced by `[redacted]`.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};

use super::{ChatMessage, ChatRequest, ChatResponse, LlmError, LlmProvider, Usage};

/// The longest provider error message kept in an [`LlmError`], in characters.
const MAX_ERROR_CHARS: usize = 500;

const REDACTED: &str = "[redacted]";

/// Where and how to reach an endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    /// The provider's name as the manifest gives it.
    pub name: String,
    /// Base URL up to and including the version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The model used when the request names none.
    pub model: String,
    /// Bound on one whole call (connect, send, answer); zero means none.
    pub timeout: Duration,
    /// Bearer token, if the endpoint needs one.
    pub api_key: Option<String>,
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("api_key", &self.api_key.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// Why an [`OpenAiProvider`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenAiSetupError {
    /// The base URL is not an absolute http(s) URL.
    #[error("provider {name}: base_url {url:?} is not an absolute http:// or https:// URL")]
    InvalidBaseUrl {
        /// Provider name.
        name: String,
        /// The URL given.
        url: String,
    },
    /// The API key cannot be sent in an HTTP header.
    #[error("provider {name}: the API key contains characters that cannot be sent in an HTTP header")]
    InvalidApiKey {
        /// Provider name.
        name: String,
    },
    /// The HTTP client could not be created.
    #[error("provider {name}: cannot create the HTTP client: {reason}")]
    Client {
        /// Provider name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// A provider speaking the chat-completions protocol.
pub struct OpenAiProvider {
    config: OpenAiConfig,
    endpoint: String,
    auth: Option<HeaderValue>,
    client: reqwest::Client,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("config", &self.config)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    /// Checks the configuration and builds the HTTP client.
    pub fn new(config: OpenAiConfig) -> Result<Self, OpenAiSetupError> {
        let base = config.base_url.trim().trim_end_matches('/');
        let valid_url = ["http://", "https://"]
            .iter()
            .any(|scheme| base.len() > scheme.len() && base[..scheme.len()].eq_ignore_ascii_case(scheme));
        if !valid_url {
            return Err(OpenAiSetupError::InvalidBaseUrl { name: config.name.clone(), url: config.base_url.clone() });
        }
        let endpoint = format!("{base}/chat/completions");
        let auth = match &config.api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| OpenAiSetupError::InvalidApiKey { name: config.name.clone() })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let mut builder = reqwest::Client::builder().user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")));
        if !config.timeout.is_zero() {
            builder = builder.timeout(config.timeout);
        }
        let client = builder
            .build()
            .map_err(|e| OpenAiSetupError::Client { name: config.name.clone(), reason: e.to_string() })?;
        Ok(OpenAiProvider { config, endpoint, auth, client })
    }

    /// Its configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The URL calls go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Removes the API key from text that may echo it, and bounds its length.
    fn scrub(&self, text: &str) -> String {
        let mut text = text.trim().to_owned();
        if let Some(key) = self.config.api_key.as_deref().filter(|k| !k.is_empty()) {
            text = text.replace(key, REDACTED);
        }
        if text.chars().count() > MAX_ERROR_CHARS {
            text = text.chars().take(MAX_ERROR_CHARS).collect::<String>() + "…";
        }
        text
    }

    fn transport_error(&self, e: &reqwest::Error) -> LlmError {
        if e.is_timeout() {
            return LlmError::Timeout;
        }
        // reqwest's Display names the URL (never headers); walk the source
        // chain for the useful part (e.g. "connection refused").
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        LlmError::Unavailable(format!("{}: {}", self.config.name, self.scrub(&message)))
    }

    fn status_error(&self, status: StatusCode, headers: &HeaderMap, body: &str) -> LlmError {
        if status == StatusCode::TOO_MANY_REQUESTS {
            return LlmError::RateLimited { retry_after: retry_after(headers) };
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            return LlmError::Timeout;
        }
        let detail = provider_message(body);
        let message = if detail.is_empty() {
            format!("{}: HTTP {status}", self.config.name)
        } else {
            format!("{}: HTTP {status}: {}", self.config.name, self.scrub(&detail))
        };
        if status.is_server_error() { LlmError::Unavailable(message) } else { LlmError::InvalidRequest(message) }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let seconds: f64 = value.parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// The `error.message` of an OpenAI-style error body, else the body itself.
fn provider_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: ErrorField,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ErrorField {
        Object { message: String },
        Text(String),
    }
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody { error: ErrorField::Object { message } | ErrorField::Text(message) }) => message,
        Err(_) => body.to_owned(),
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat>,
}

#[derive(Serialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

fn tokens(n: Option<u64>) -> u32 {
    n.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

#[async_trait::async_trait]
impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let model = request.model.as_deref().unwrap_or(&self.config.model);
        let body = WireRequest {
            model,
            messages: &request.messages,
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            response_format: request.json.then_some(ResponseFormat { kind: "json_object" }),
        };
        let mut call = self.client.post(&self.endpoint).json(&body);
        if let Some(auth) = &self.auth {
            call = call.header(AUTHORIZATION, auth.clone());
        }
        tracing::debug!(provider = %self.config.name, model, json = request.json, "chat completion");
        let response = call.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            let error = self.status_error(status, &headers, &text);
            tracing::debug!(provider = %self.config.name, %status, kind = %error.kind(), "chat completion failed");
            return Err(error);
        }
        let wire: WireResponse = serde_json::from_str(&text).map_err(|e| {
            LlmError::InvalidResponse(format!(
                "{}: the body is not a chat completion ({e}): {}",
                self.config.name,
                self.scrub(&text).chars().take(200).collect::<String>()
            ))
        })?;
        let Some(choice) = wire.choices.into_iter().next() else {
            return Err(LlmError::InvalidResponse(format!("{}: the answer has no choices", self.config.name)));
        };
        let Some(content) = choice.message.content else {
            return Err(LlmError::InvalidResponse(format!("{}: the answer has no text content", self.config.name)));
        };
        let usage = wire.usage.map_or(Usage::default(), |u| Usage {
            prompt_tokens: tokens(u.prompt_tokens),
            completion_tokens: tokens(u.completion_tokens),
            cost_micros: 0,
        });
        Ok(ChatResponse { content, model: wire.model.unwrap_or_else(|| model.to_owned()), usage, provider: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: Option<&str>) -> OpenAiConfig {
        OpenAiConfig {
            name: "oa".into(),
            base_url: "http://127.0.0.1:9/v1/".into(),
            model: "gpt-test".into(),
            timeout: Duration::from_secs(5),
            api_key: key.map(str::to_owned),
        }
    }

    #[test]
    fn debug_redacts_the_key() {
        let provider = OpenAiProvider::new(config(Some("sk-secret-123"))).unwrap();
        let shown = format!("{provider:?} {:?}", provider.config());
        assert!(!shown.contains("sk-secret-123"), "{shown}");
        assert!(shown.contains(REDACTED));
        assert_eq!(provider.endpoint(), "http://127.0.0.1:9/v1/chat/completions");
    }

    #[test]
    fn bad_settings_are_rejected() {
        let mut c = config(None);
        c.base_url = "api.openai.com/v1".into();
        assert!(matches!(OpenAiProvider::new(c), Err(OpenAiSetupError::InvalidBaseUrl { .. })));
        let err = OpenAiProvider::new(config(Some("bad\nkey"))).unwrap_err();
        assert!(!err.to_string().contains("bad\nkey"));
    }

    #[test]
    fn status_mapping() {
        let provider = OpenAiProvider::new(config(Some("sk-secret-123"))).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(
            provider.status_error(StatusCode::TOO_MANY_REQUESTS, &headers, ""),
            LlmError::RateLimited { retry_after: Some(Duration::from_secs(3)) }
        );
        let none = HeaderMap::new();
        assert_eq!(
            provider.status_error(StatusCode::TOO_MANY_REQUESTS, &none, ""),
            LlmError::RateLimited { retry_after: None }
        );
        assert!(matches!(
            provider.status_error(StatusCode::BAD_GATEWAY, &none, "upstream down"),
            LlmError::Unavailable(m) if m.contains("upstream down")
        ));
        let err = provider.status_error(
            StatusCode::UNAUTHORIZED,
            &none,
            r#"{"error":{"message":"Incorrect API key provided: sk-secret-123","type":"invalid_request_error"}}"#,
        );
        match &err {
            LlmError::InvalidRequest(m) => {
                assert!(m.contains("Incorrect API key provided") && !m.contains("sk-secret-123"), "{m}")
            }
            other => panic!("unexpected {other:?}"),
        }
        let long = "x".repeat(5000);
        match provider.status_error(StatusCode::BAD_REQUEST, &none, &long) {
            LlmError::InvalidRequest(m) => assert!(m.len() < 700),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn request_body_shape() {
        let messages = ChatRequest::simple("p", "s", true).messages;
        let body = WireRequest {
            model: "m",
            messages: &messages,
            max_tokens: Some(10),
            temperature: None,
            response_format: Some(ResponseFormat { kind: "json_object" }),
        };
        let value = serde_json::to_value(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "model": "m",
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "p"}],
                "max_tokens": 10,
                "response_format": {"type": "json_object"}
            })
        );
    }
}
