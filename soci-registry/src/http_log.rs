//! Opt-in observation of every HTTP request and response the client exchanges (the CLI's
//! `--debug`), with credentials redacted before the observer sees them.

use std::fmt;
use std::sync::Arc;

use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Method, StatusCode, Url};

use crate::transport::redact_url;

/// What replaces a secret in an [`HttpEvent`].
pub const REDACTED: &str = "REDACTED";

/// Called with every [`HttpEvent`]; install with [`crate::ClientBuilder::http_hook`].
pub type HttpHook = Arc<dyn Fn(&HttpEvent) + Send + Sync>;

/// One HTTP request sent or response received (each redirect hop and each retry is its own
/// exchange). URLs have user info removed and every query value replaced (pre-signed URLs carry
/// credentials there); values of headers that can carry credentials (`Authorization`,
/// `Proxy-Authorization`, cookies, anything named like a token, secret, password or key) are
/// [`REDACTED`]. Bodies are never included.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpEvent {
    /// A request about to be sent.
    Request {
        /// `GET`, `PUT`, ...
        method: String,
        /// Redacted URL.
        url: String,
        /// Header names and (redacted) values, in sending order.
        headers: Vec<(String, String)>,
    },
    /// The response to it.
    Response {
        /// Method of the request.
        method: String,
        /// Redacted URL of the request.
        url: String,
        /// HTTP status code.
        status: u16,
        /// Header names and (redacted) values.
        headers: Vec<(String, String)>,
    },
}

impl HttpEvent {
    pub(crate) fn request(method: &Method, url: &Url, headers: &HeaderMap) -> HttpEvent {
        HttpEvent::Request {
            method: method.to_string(),
            url: redact_url(url),
            headers: redact_headers(headers),
        }
    }

    pub(crate) fn response(
        method: &Method,
        url: &Url,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> HttpEvent {
        HttpEvent::Response {
            method: method.to_string(),
            url: redact_url(url),
            status: status.as_u16(),
            headers: redact_headers(headers),
        }
    }
}

/// One line for the exchange, then one indented line per header:
///
/// ```text
/// > PUT http://127.0.0.1:5000/v2/app/blobs/uploads/1?digest=redacted
/// >   authorization: REDACTED
/// < 201 Created (PUT http://127.0.0.1:5000/v2/app/blobs/uploads/1?digest=redacted)
/// <   docker-content-digest: sha256:…
/// ```
impl fmt::Display for HttpEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (mark, headers) = match self {
            HttpEvent::Request {
                method,
                url,
                headers,
            } => {
                write!(f, "> {method} {url}")?;
                ('>', headers)
            }
            HttpEvent::Response {
                method,
                url,
                status,
                headers,
            } => {
                let reason = StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                write!(f, "< {status} {reason} ({method} {url})")?;
                ('<', headers)
            }
        };
        for (k, v) in headers {
            write!(f, "\n{mark}   {k}: {v}")?;
        }
        Ok(())
    }
}

/// Whether a header's value may carry a credential.
fn is_sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    // WWW-Authenticate only names the realm, service and scope.
    if n == "www-authenticate" {
        return false;
    }
    [
        "auth",
        "cookie",
        "token",
        "secret",
        "password",
        "key",
        "credential",
        "signature",
    ]
    .iter()
    .any(|s| n.contains(s))
}

fn redact_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let value = if is_sensitive(k.as_str()) {
                REDACTED.to_owned()
            } else if k == LOCATION {
                // Upload and storage locations can be pre-signed.
                let raw = String::from_utf8_lossy(v.as_bytes());
                Url::parse(&raw).map_or_else(|_| strip_query(&raw), |u| redact_url(&u))
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (k.as_str().to_owned(), value)
        })
        .collect()
}

/// A relative location: the query replaced wholesale.
fn strip_query(raw: &str) -> String {
    match raw.split_once('?') {
        Some((path, _)) => format!("{path}?{REDACTED}"),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn secrets_never_reach_the_event() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer s3cr3t"));
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic s3cr3t"),
        );
        h.insert("cookie", HeaderValue::from_static("session=s3cr3t"));
        h.insert("x-amz-security-token", HeaderValue::from_static("s3cr3t"));
        h.insert("x-api-key", HeaderValue::from_static("s3cr3t"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert(
            "www-authenticate",
            HeaderValue::from_static("Bearer realm=\"https://auth/token\",service=\"r\""),
        );
        let url = Url::parse("https://user:s3cr3t@reg/v2/a/blobs/sha256:1?X-Amz-Signature=s3cr3t")
            .unwrap();
        let e = HttpEvent::request(&Method::GET, &url, &h);
        let text = e.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.starts_with("> GET https://reg/v2/a/blobs/sha256:1?X-Amz-Signature=redacted"));
        assert!(text.contains("\n>   authorization: REDACTED"), "{text}");
        assert!(
            text.contains("\n>   content-type: application/json"),
            "{text}"
        );
        assert!(text.contains("realm=\"https://auth/token\""), "{text}");

        let mut h = HeaderMap::new();
        h.insert(
            "location",
            HeaderValue::from_static("https://s3/x?X-Amz-Credential=s3cr3t&X-Amz-Signature=s3cr3t"),
        );
        h.append(
            "location",
            HeaderValue::from_static("/v2/a/blobs/uploads/1?_state=s3cr3t"),
        );
        h.insert("set-cookie", HeaderValue::from_static("s=s3cr3t"));
        let e = HttpEvent::response(&Method::PUT, &url, StatusCode::CREATED, &h);
        let text = e.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(
            text.starts_with("< 201 Created (PUT https://reg/"),
            "{text}"
        );
        assert!(text.contains("/v2/a/blobs/uploads/1?REDACTED"), "{text}");
    }
}

/// The installed hook, if any (a newtype so the configuration stays `Debug`).
#[derive(Clone, Default)]
pub(crate) struct HookSlot(pub(crate) Option<HttpHook>);

impl fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(<hook>)"
        } else {
            "None"
        })
    }
}

impl HookSlot {
    /// Calls the hook with the event `make` builds; builds nothing without a hook.
    pub(crate) fn emit(&self, make: impl FnOnce() -> HttpEvent) {
        if let Some(h) = &self.0 {
            h(&make());
        }
    }
}
