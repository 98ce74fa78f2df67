//! The live side of an outbound request: secret placeholders filled in, the
//! one client (its resolver refusing names with non-public addresses, no
//! redirects, no proxy), the response read up to its limit, and secret values
//! a server echoes hidden again.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use zeroize::Zeroizing;

use super::{
    FRAMING_HEADERS, HttpCall, HttpError, OutboundRequest, OutboundResponse, SecretValues, placeholder, placeholders,
};
use crate::access::scrub::MIN_SCRUBBED;
use crate::sandbox::outbound::is_public;

impl HttpCall {
    pub(super) async fn send_live(
        &self,
        request: &OutboundRequest,
        secrets: &dyn SecretValues,
    ) -> Result<OutboundResponse, HttpError> {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut filled: Vec<(String, Zeroizing<String>)> = Vec::new();
        for (header, value) in &request.headers {
            // The body is whole: the client frames it.
            if FRAMING_HEADERS.contains(&header.as_str()) {
                continue;
            }
            let mut value = Zeroizing::new(value.clone());
            for secret in placeholders(&value) {
                let fail =
                    |message: String| HttpError::Secret { url: request.url.clone(), header: header.clone(), message };
                let secret_value = secrets.value(&secret, &request.destination).await.map_err(fail)?;
                let text =
                    Zeroizing::new(String::from_utf8_lossy(&value).replace(&placeholder(&secret), &secret_value));
                value = Zeroizing::new(text.as_bytes().to_vec());
                filled.push((secret, secret_value));
            }
            let name = reqwest::header::HeaderName::from_bytes(header.as_bytes());
            let value = reqwest::header::HeaderValue::from_bytes(&value);
            match (name, value) {
                (Ok(name), Ok(mut value)) => {
                    value.set_sensitive(true);
                    headers.append(name, value);
                }
                _ => {
                    return Err(HttpError::Transport {
                        url: request.url.clone(),
                        message: format!("header {header:?} is not a valid header"),
                    });
                }
            }
        }
        if !filled.is_empty() {
            // Uncompressed, so a value the server echoes back can be found and hidden.
            headers.insert(reqwest::header::ACCEPT_ENCODING, reqwest::header::HeaderValue::from_static("identity"));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| HttpError::Transport {
            url: request.url.clone(),
            message: format!("method {:?} is not a valid method", request.method),
        })?;
        let sent = client().request(method, &request.url).headers(headers).body(request.body.clone()).send().await;
        let mut response = sent.map_err(|e| transport_error(&request.url, &e))?;
        let status = response.status().as_u16();
        let mut response_headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&request.url, &e))? {
            if (body.len() + chunk.len()) as u64 > self.max_response {
                return Err(HttpError::ResponseTooLarge { url: request.url.clone(), limit: self.max_response });
            }
            body.extend_from_slice(&chunk);
        }
        // A server that echoes a secret back hands the guest its placeholder,
        // never the value.
        let read = body.len();
        for (secret, value) in &filled {
            if value.len() < MIN_SCRUBBED {
                continue;
            }
            let mark = placeholder(secret);
            body = replace_bytes(body, value.as_bytes(), mark.as_bytes());
            for (_, header) in &mut response_headers {
                if header.contains(value.as_str()) {
                    *header = header.replace(value.as_str(), &mark);
                }
            }
        }
        // The body is whole: it has no transfer coding, and when hiding a value
        // changed its length, its length is what it holds now.
        response_headers.retain(|(name, _)| name != "transfer-encoding");
        if body.len() != read {
            for (name, value) in &mut response_headers {
                if name == "content-length" {
                    *value = body.len().to_string();
                }
            }
        }
        Ok(OutboundResponse { status, headers: response_headers, body: Bytes::from(body) })
    }
}

/// `haystack` with every `needle` replaced by `with`, in linear time.
fn replace_bytes(haystack: Vec<u8>, needle: &[u8], with: &[u8]) -> Vec<u8> {
    let finder = memchr::memmem::Finder::new(needle);
    let mut found = finder.find_iter(&haystack).peekable();
    if found.peek().is_none() {
        return haystack;
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut from = 0;
    for at in found {
        out.extend_from_slice(&haystack[from..at]);
        out.extend_from_slice(with);
        from = at + needle.len();
    }
    out.extend_from_slice(&haystack[from..]);
    out
}

/// The error of a failed live request, with a refused resolution told apart.
fn transport_error(url: &str, error: &reqwest::Error) -> HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return match refused {
                Refused::Private { host, address } => HttpError::Prohibited { host: host.clone(), address: *address },
                Refused::NotFound { host, message } => {
                    HttpError::NotFound { host: host.clone(), message: message.clone() }
                }
            };
        }
        source = e.source();
    }
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        message = format!("{message}: {e}");
        source = e.source();
    }
    HttpError::Transport { url: url.to_owned(), message }
}

/// A resolution the guarded resolver refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{host} resolves to {address}, which is not a public address")]
    Private { host: String, address: IpAddr },
    #[error("{host} does not resolve: {message}")]
    NotFound { host: String, message: String },
}

/// Resolves names for live requests, refusing any name with a non-public
/// address among its answers.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let looked_up =
                tokio::net::lookup_host((host.as_str(), 0)).await.map(|found| found.collect::<Vec<SocketAddr>>());
            let found = match looked_up {
                Ok(found) => found,
                Err(e) => return Err(Box::new(Refused::NotFound { host, message: e.to_string() }) as _),
            };
            if let Some(bad) = found.iter().find(|a| !is_public(a.ip())) {
                return Err(Box::new(Refused::Private { host, address: bad.ip() }) as _);
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The host's one client for guests' requests, made at the first.
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("the outbound HTTP client's settings are valid")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_secrets_are_replaced() {
        assert_eq!(replace_bytes(b"a-s3cr3t-b-s3cr3t".to_vec(), b"s3cr3t", b"X"), b"a-X-b-X");
        assert_eq!(replace_bytes(b"nothing here".to_vec(), b"s3cr3t", b"X"), b"nothing here");
        assert_eq!(replace_bytes(b"s3cr3ts3cr3t".to_vec(), b"s3cr3t", b"X"), b"XX");
    }
}
