//! HTTP transport: retries with backoff, manual redirects, and the registry auth handshake.
//!
//! Layers, innermost first:
//! 1. [`Transport::attempt`]: one logical request; follows redirects itself and attaches
//!    `Authorization` only while the URL is on the registry's own origin (scheme, host, port).
//! 2. [`Transport::send_raw`]: retries connect errors, resets, timeouts, 429 and 5xx (not 501) with
//!    exponential backoff plus jitter, honouring `Retry-After` seconds.
//! 3. [`Transport::send`]: adds the cached credential/token; on a 401 answers the `WWW-Authenticate`
//!    challenge once (fresh token, or Basic) and re-sends.
//!
//! Body reads are not retried here: the callers in `client.rs` read bodies and, on a mid-body failure,
//! re-issue (or resume with `Range`) while sharing the same [`Attempts`] budget.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;

use crate::auth::{self, Credential, Secret};
use crate::challenge;
use crate::config::{Config, PlainHttp};
use crate::error::{BoxError, Error, RegistryError, Result};
use crate::http_log::{HttpEvent, REDACTED};
use crate::source::Body;

/// Tokens without `expires_in` live 60 s (Docker token spec default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Renew a token this long before it expires.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(5);
/// Body of ECR's 403 for an expired credential (spec §5.13).
const ECR_EXPIRED_MESSAGE: &str =
    "Your authorization token has expired. Reauthenticate and try again.";
/// Bodies read for error reporting or token answers are capped at this.
const SMALL_BODY_LIMIT: u64 = 1 << 20;

/// `scheme://host:port`, the unit `Authorization` is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    pub(crate) fn of(url: &Url) -> Origin {
        Origin {
            scheme: url.scheme().to_owned(),
            host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
            port: url.port_or_known_default(),
        }
    }
}

/// Token scopes, e.g. `repository:library/ubuntu:pull`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope(Vec<String>);

impl Scope {
    pub(crate) fn pull(repo: &str) -> Scope {
        Scope(vec![format!("repository:{repo}:pull")])
    }

    pub(crate) fn push(repo: &str) -> Scope {
        Scope(vec![format!("repository:{repo}:pull,push")])
    }

    /// Adds pull access to another repository (cross-repository mount source).
    pub(crate) fn and_pull(mut self, repo: &str) -> Scope {
        let s = format!("repository:{repo}:pull");
        if !self.0.contains(&s) {
            self.0.push(s);
        }
        self
    }

    fn key(&self) -> String {
        self.0.join(" ")
    }
}

/// One request as the operations describe it. The body is bytes or a re-openable source, so
/// retries can re-send it.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Body>,
    /// `host[:port]` of the registry, the key for credentials and tokens.
    pub(crate) registry: String,
    /// The registry's API origin; `Authorization` is never sent anywhere else.
    pub(crate) auth_origin: Origin,
    pub(crate) scope: Scope,
}

impl Req {
    pub(crate) fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// Replaces every query value with `redacted` and drops user info: pre-signed URLs carry credentials in
/// the query (spec §5.12, "URLs are redacted in all logs/errors").
pub(crate) fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        let pairs: Vec<String> = url
            .query_pairs()
            .map(|(k, _)| format!("{k}=redacted"))
            .collect();
        u.set_query(Some(&pairs.join("&")));
    }
    u.to_string()
}

/// Retry budget and counters for one operation (shared by status retries and body retries).
#[derive(Debug)]
pub(crate) struct Attempts {
    /// HTTP attempts made so far (including 401 re-sends).
    pub(crate) made: u32,
    retries: u32,
    max_retries: u32,
    min_wait: Duration,
    max_wait: Duration,
}

impl Attempts {
    pub(crate) fn new(cfg: &Config) -> Attempts {
        Attempts {
            made: 0,
            retries: 0,
            max_retries: cfg.max_retries,
            min_wait: cfg.min_wait,
            max_wait: cfg.max_wait,
        }
    }

    pub(crate) fn has_budget(&self) -> bool {
        self.retries < self.max_retries
    }

    /// Sleeps before the next retry, or returns false when the budget is spent.
    pub(crate) async fn wait_retry(&mut self, retry_after: Option<Duration>) -> bool {
        if self.retries >= self.max_retries {
            return false;
        }
        let base = match retry_after {
            Some(d) => d.min(self.max_wait),
            None => {
                let factor = 1u32.checked_shl(self.retries.min(31)).unwrap_or(u32::MAX);
                self.min_wait.saturating_mul(factor).min(self.max_wait)
            }
        };
        let delay = base + jitter(base);
        self.retries += 1;
        tokio::time::sleep(delay).await;
        true
    }
}

/// Random duration in `[0, d/8)`.
fn jitter(d: Duration) -> Duration {
    let eighth = d.as_nanos() / 8;
    if eighth == 0 {
        return Duration::ZERO;
    }
    // RandomState is randomly keyed per instance: enough entropy for jitter without a rand dependency.
    let r = std::collections::hash_map::RandomState::new().hash_one(Instant::now()) as u128;
    Duration::from_nanos((r % eighth) as u64)
}

/// Whether a transport error is worth retrying. Certificate and other TLS-level errors, and request
/// construction errors, are not (retryablehttp semantics, spec §5.12).
pub(crate) fn retryable_error(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() {
        return false;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return false;
        }
        // `io::Error::source` skips the error an io::Error wraps, and hyper-rustls nests the TLS
        // error (e.g. a plain-HTTP server answering the handshake) in two of them: look inside.
        src = match s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() || e.is_decode()
}

fn retryable_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || (s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED)
}

fn retry_after(resp: &Response) -> Option<Duration> {
    if !matches!(resp.status().as_u16(), 429 | 503) {
        return None;
    }
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    // HTTP-date values are not parsed; the computed backoff is used for them.
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Builds the final error for a transport failure.
pub(crate) fn transport_error(
    method: &Method,
    url: &str,
    attempts: &Attempts,
    timeout: Duration,
    e: reqwest::Error,
) -> Error {
    if e.is_timeout() {
        Error::Timeout {
            method: method.to_string(),
            url: url.to_owned(),
            attempts: attempts.made,
            timeout,
        }
    } else {
        Error::Transport {
            method: method.to_string(),
            url: url.to_owned(),
            attempts: attempts.made,
            // Strip the URL reqwest embeds: it may be a pre-signed URL.
            source: Box::new(e.without_url()) as BoxError,
        }
    }
}

enum AttemptError {
    Http(reqwest::Error),
    Source { url: String, source: std::io::Error },
    TooManyRedirects,
    InvalidLocation { url: String, location: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostScheme {
    Basic,
    Bearer,
}

#[derive(Clone)]
struct CachedToken {
    token: Secret,
    expires: Instant,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

pub(crate) struct Transport {
    http: reqwest::Client,
    pub(crate) cfg: Config,
    creds: Mutex<HashMap<String, Option<Credential>>>,
    schemes: Mutex<HashMap<String, HostScheme>>,
    tokens: Mutex<HashMap<(String, String), CachedToken>>,
    /// Serialises token fetches (see `answer_challenge`).
    fetch_lock: tokio::sync::Mutex<()>,
    /// Where a blob's `GET` was redirected to (pre-signed storage URL), per (registry, repository,
    /// digest), so range reads go there directly (spec §5.12, "real URL"). May hold credentials in its
    /// query string: never logged unredacted.
    blob_urls: Mutex<HashMap<BlobKey, Url>>,
}

/// (registry, repository, digest).
pub(crate) type BlobKey = (String, String, String);

/// Entries kept in the blob URL cache before it is cleared wholesale.
const BLOB_URL_CACHE_LIMIT: usize = 4096;

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("config", &self.cfg)
            .field("tokens", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these maps cannot leave it inconsistent (single inserts/removes).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Transport {
    pub(crate) fn new(cfg: Config) -> Result<Arc<Transport>> {
        let setup = |e: BoxError| Error::ClientSetup { source: e };
        // rustls with the ring provider, chosen explicitly (no process-wide default provider needed)
        // and the OS trust store through rustls-platform-verifier.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(Box::new(e)))?;
        let verifier =
            rustls_platform_verifier::Verifier::new(provider).map_err(|e| setup(Box::new(e)))?;
        let mut tls = tls
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.dial_timeout)
            .user_agent(cfg.user_agent.clone())
            .http1_only()
            .build()
            .map_err(|e| setup(Box::new(e)))?;
        Ok(Arc::new(Transport {
            http,
            cfg,
            creds: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            fetch_lock: tokio::sync::Mutex::new(()),
            blob_urls: Mutex::new(HashMap::new()),
        }))
    }

    pub(crate) fn cached_blob_url(&self, key: &BlobKey) -> Option<Url> {
        lock(&self.blob_urls).get(key).cloned()
    }

    pub(crate) fn set_blob_url(&self, key: BlobKey, url: Option<Url>) {
        let mut m = lock(&self.blob_urls);
        match url {
            Some(u) => {
                if m.len() >= BLOB_URL_CACHE_LIMIT {
                    m.clear();
                }
                m.insert(key, u);
            }
            None => {
                m.remove(&key);
            }
        }
    }

    /// `http` or `https` for a registry host per the plain-HTTP policy.
    pub(crate) fn scheme_for(&self, host: &str) -> &'static str {
        match self.cfg.plain_http {
            PlainHttp::Always => "http",
            PlainHttp::Loopback if is_loopback(host) => "http",
            _ => "https",
        }
    }

    /// One logical request: follows redirects manually.
    async fn attempt(
        &self,
        req: &Req,
        authz: Option<&HeaderValue>,
    ) -> std::result::Result<Response, AttemptError> {
        let mut url = req.url.clone();
        let mut method = req.method.clone();
        let mut body = req.body.clone();
        for _ in 0..=self.cfg.max_redirects {
            let mut rb = self
                .http
                .request(method.clone(), url.clone())
                .headers(req.headers.clone());
            if let Some(t) = self.cfg.request_timeout {
                rb = rb.timeout(t);
            }
            // Only the registry's own origin ever sees our credentials; a redirect to storage
            // (S3, CDN) carries its authorisation in the URL.
            let authz_here = authz.filter(|_| Origin::of(&url) == req.auth_origin);
            if let Some(a) = authz_here {
                rb = rb.header(AUTHORIZATION, a.clone());
            }
            if let Some(b) = &body {
                if matches!(b, Body::Source { .. }) {
                    // A streamed body has no size of its own: announce it (no chunked encoding).
                    rb = rb.header(CONTENT_LENGTH, b.len());
                }
                let payload = b.to_reqwest().map_err(|e| AttemptError::Source {
                    url: redact_url(&url),
                    source: e,
                })?;
                rb = rb.body(payload);
            }
            self.cfg.http_hook.emit(|| {
                let mut h = req.headers.clone();
                if authz_here.is_some() {
                    // The value is redacted by the event; never copy the credential.
                    h.insert(AUTHORIZATION, HeaderValue::from_static(REDACTED));
                }
                if let Some(b) = &body {
                    h.entry(CONTENT_LENGTH)
                        .or_insert_with(|| HeaderValue::from(b.len()));
                }
                HttpEvent::request(&method, &url, &h)
            });
            let resp = rb.send().await.map_err(AttemptError::Http)?;
            self.cfg
                .http_hook
                .emit(|| HttpEvent::response(&method, &url, resp.status(), resp.headers()));
            let status = resp.status();
            if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            let Some(loc) = resp.headers().get(LOCATION) else {
                return Ok(resp);
            };
            let next = loc
                .to_str()
                .ok()
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| AttemptError::InvalidLocation {
                    url: redact_url(&url),
                    location: String::from_utf8_lossy(loc.as_bytes()).into_owned(),
                })?;
            if status == StatusCode::SEE_OTHER
                || (matches!(status.as_u16(), 301 | 302) && method == Method::POST)
            {
                if method != Method::HEAD {
                    method = Method::GET;
                }
                body = None;
            }
            tracing::debug!(
                status = status.as_u16(),
                from = %redact_url(&url),
                to = %redact_url(&next),
                "following redirect"
            );
            url = next;
        }
        Err(AttemptError::TooManyRedirects)
    }

    /// Sends with retries for transport errors and retryable statuses. Returns the last response for
    /// any other status (and for a retryable one once the budget is spent).
    async fn send_raw(
        &self,
        req: &Req,
        authz: Option<&HeaderValue>,
        attempts: &mut Attempts,
    ) -> Result<Response> {
        loop {
            attempts.made += 1;
            match self.attempt(req, authz).await {
                Ok(resp) => {
                    let status = resp.status();
                    tracing::debug!(
                        method = %req.method,
                        url = %req.redacted_url(),
                        status = status.as_u16(),
                        attempt = attempts.made,
                        "registry response"
                    );
                    if retryable_status(status) && attempts.has_budget() {
                        let ra = retry_after(&resp);
                        drop(resp);
                        attempts.wait_retry(ra).await;
                        continue;
                    }
                    return Ok(resp);
                }
                Err(AttemptError::Http(e)) => {
                    if retryable_error(&e) {
                        tracing::debug!(
                            method = %req.method,
                            url = %req.redacted_url(),
                            attempt = attempts.made,
                            error = %e.without_url_ref(),
                            "request failed; retrying"
                        );
                        if attempts.wait_retry(None).await {
                            continue;
                        }
                    }
                    return Err(transport_error(
                        &req.method,
                        &req.redacted_url(),
                        attempts,
                        self.cfg.reported_timeout(),
                        e,
                    ));
                }
                Err(AttemptError::TooManyRedirects) => {
                    return Err(Error::TooManyRedirects {
                        method: req.method.to_string(),
                        url: req.redacted_url(),
                        limit: self.cfg.max_redirects,
                    })
                }
                Err(AttemptError::InvalidLocation { url, location }) => {
                    return Err(Error::InvalidLocation { url, location })
                }
                Err(AttemptError::Source { url, source }) => {
                    return Err(Error::ReadSource { url, source })
                }
            }
        }
    }

    /// Sends an authenticated request: cached token or Basic credentials first; one challenge round on
    /// 401 (which also renews an expired token).
    pub(crate) async fn send(&self, req: &Req, attempts: &mut Attempts) -> Result<Response> {
        let mut answered = false;
        loop {
            let authz = self.cached_authorization(req).await?;
            let resp = self.send_raw(req, authz.as_ref(), attempts).await?;
            let status = resp.status();
            let refused = || Error::Unauthorized {
                method: req.method.to_string(),
                url: req.redacted_url(),
                status: status.as_u16(),
            };
            let mut challenges: Vec<challenge::Challenge> = resp
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(challenge::parse)
                .collect();
            match status {
                StatusCode::UNAUTHORIZED => drop(resp),
                StatusCode::FORBIDDEN if !answered => {
                    // ECR answers an expired credential with 403 and this message (spec §5.13); it is
                    // handled like a 401 with a Basic challenge. Any other 403 is a plain refusal.
                    let body = read_limited(resp, SMALL_BODY_LIMIT)
                        .await
                        .unwrap_or_default();
                    if !String::from_utf8_lossy(&body).contains(ECR_EXPIRED_MESSAGE) {
                        return Err(refused());
                    }
                    if challenges.is_empty() {
                        challenges.push(challenge::Challenge {
                            scheme: "basic".to_owned(),
                            params: Vec::new(),
                        });
                    }
                }
                _ => return Ok(resp),
            }
            if answered {
                return Err(refused());
            }
            answered = true;
            self.answer_challenge(req, status, &challenges, authz.as_ref())
                .await?;
        }
    }

    async fn credential(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(c) = lock(&self.creds).get(registry) {
            return Ok(c.clone());
        }
        let c = auth::credential_for(&self.cfg.auth, registry).await?;
        lock(&self.creds).insert(registry.to_owned(), c.clone());
        Ok(c)
    }

    async fn cached_authorization(&self, req: &Req) -> Result<Option<HeaderValue>> {
        let scheme = lock(&self.schemes).get(&req.registry).copied();
        match scheme {
            Some(HostScheme::Bearer) => {
                let key = (req.registry.clone(), req.scope.key());
                let tok = lock(&self.tokens).get(&key).cloned();
                Ok(tok
                    .filter(|t| t.expires > Instant::now())
                    .and_then(|t| bearer_value(&t.token)))
            }
            Some(HostScheme::Basic) => Ok(self
                .credential(&req.registry)
                .await?
                .and_then(|c| c.basic_header())
                .and_then(|h| sensitive(&h))),
            None => Ok(None),
        }
    }

    /// Answers a 401. `sent` is the `Authorization` the refused request carried: if another task has
    /// meanwhile cached a different valid token, that one is used instead of fetching again, and token
    /// fetches are serialised, so concurrent 401s cause one fetch (spec §5.13, de-duplicated challenges).
    async fn answer_challenge(
        &self,
        req: &Req,
        status: StatusCode,
        challenges: &[challenge::Challenge],
        sent: Option<&HeaderValue>,
    ) -> Result<()> {
        let unauthorized = || Error::Unauthorized {
            method: req.method.to_string(),
            url: req.redacted_url(),
            status: status.as_u16(),
        };
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = bearer
                .param("realm")
                .and_then(|r| Url::parse(r).ok())
                .ok_or_else(|| Error::UnsupportedChallenge {
                    url: req.redacted_url(),
                    scheme: Some("bearer".to_owned()),
                })?;
            let mut scopes = req.scope.0.clone();
            if let Some(s) = bearer.param("scope") {
                for part in s.split(' ').filter(|p| !p.is_empty()) {
                    if !scopes.iter().any(|x| x == part) {
                        scopes.push(part.to_owned());
                    }
                }
            }
            let _serialised = self.fetch_lock.lock().await;
            let key = (req.registry.clone(), req.scope.key());
            let fresh = lock(&self.tokens)
                .get(&key)
                .filter(|t| t.expires > Instant::now())
                .and_then(|t| bearer_value(&t.token));
            if let Some(fresh) = fresh {
                if Some(&fresh) != sent {
                    lock(&self.schemes).insert(req.registry.clone(), HostScheme::Bearer);
                    return Ok(());
                }
            }
            let cred = self.credential(&req.registry).await?;
            let token = self
                .fetch_token(req, &realm, bearer.param("service"), &scopes, cred.as_ref())
                .await?;
            lock(&self.tokens).insert(key, token);
            lock(&self.schemes).insert(req.registry.clone(), HostScheme::Bearer);
            tracing::debug!(registry = %req.registry, scope = %req.scope.key(), "obtained bearer token");
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let previous = lock(&self.schemes).insert(req.registry.clone(), HostScheme::Basic);
            if previous == Some(HostScheme::Basic) {
                // Our Basic credentials were refused: they may have rotated (e.g. an ECR token from a
                // credential helper), so look them up again and resend only if they changed.
                lock(&self.creds).remove(&req.registry);
            }
            return match self.credential(&req.registry).await? {
                Some(c @ Credential::Basic { .. }) => {
                    let fresh = c.basic_header();
                    let sent = sent.and_then(|v| v.to_str().ok());
                    if fresh.as_deref() == sent {
                        Err(unauthorized())
                    } else {
                        Ok(())
                    }
                }
                _ => Err(unauthorized()),
            };
        }
        match challenges.first() {
            None => Err(unauthorized()),
            Some(c) => Err(Error::UnsupportedChallenge {
                url: req.redacted_url(),
                scheme: Some(c.scheme.clone()),
            }),
        }
    }

    async fn fetch_token(
        &self,
        req: &Req,
        realm: &Url,
        service: Option<&str>,
        scopes: &[String],
        cred: Option<&Credential>,
    ) -> Result<CachedToken> {
        let realm_redacted = redact_url(realm);
        if cred.is_some() && realm.scheme() == "http" && req.auth_origin.scheme == "https" {
            return Err(Error::InsecureRealm {
                realm: realm_redacted,
            });
        }
        let mut url = realm.clone();
        let mut headers = HeaderMap::new();
        let (method, body) = match cred {
            Some(Credential::IdentityToken(refresh)) => {
                // OAuth2 refresh-token grant (Docker token spec, "OAuth2 Token").
                let mut form = form::form_urlencoded_pairs();
                form.append_pair("grant_type", "refresh_token");
                if let Some(s) = service {
                    form.append_pair("service", s);
                }
                form.append_pair("scope", &scopes.join(" "));
                form.append_pair("client_id", "soci-registry");
                form.append_pair("refresh_token", refresh.expose());
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                (Method::POST, Some(Body::from(Bytes::from(form.finish()))))
            }
            _ => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scopes {
                        q.append_pair("scope", s);
                    }
                }
                if let Some(h) = cred
                    .and_then(Credential::basic_header)
                    .and_then(|h| sensitive(&h))
                {
                    headers.insert(AUTHORIZATION, h);
                }
                (Method::GET, None)
            }
        };
        // The realm gets the credential directly in the headers; redirects away from it drop it.
        let auth_header = headers.remove(AUTHORIZATION);
        let token_req = Req {
            method,
            auth_origin: Origin::of(&url),
            url,
            headers,
            body,
            registry: req.registry.clone(),
            scope: req.scope.clone(),
        };
        let mut attempts = Attempts::new(&self.cfg);
        let resp = self
            .send_raw(&token_req, auth_header.as_ref(), &mut attempts)
            .await?;
        let status = resp.status();
        if !status.is_success() {
            if matches!(status.as_u16(), 401 | 403) {
                // The stored credential was refused; look it up again next time (rotated secrets).
                lock(&self.creds).remove(&req.registry);
            }
            return Err(Error::Unauthorized {
                method: token_req.method.to_string(),
                url: realm_redacted,
                status: status.as_u16(),
            });
        }
        let started = Instant::now();
        let body = read_small(resp, &token_req, &mut attempts, self.cfg.reported_timeout()).await?;
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| Error::TokenResponse {
                realm: realm_redacted.clone(),
                source: Some(e),
            })?;
        let token = answer
            .token
            .filter(|t| !t.is_empty())
            .or(answer.access_token.filter(|t| !t.is_empty()))
            .ok_or(Error::TokenResponse {
                realm: realm_redacted,
                source: None,
            })?;
        // Docker token spec: omitted means 60 s, and tokens should never live less than 60 s. A token
        // that dies earlier is simply renewed on its first 401.
        let lifetime = answer
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME)
            .max(DEFAULT_TOKEN_LIFETIME);
        Ok(CachedToken {
            token: Secret::new(token),
            expires: started + lifetime - TOKEN_EXPIRY_MARGIN,
        })
    }

    /// Builds the error for an unexpected status, reading the registry's error body if small.
    pub(crate) async fn status_error(req: &Req, resp: Response, attempts: &Attempts) -> Error {
        let status = resp.status().as_u16();
        let registry_error = match read_limited(resp, SMALL_BODY_LIMIT).await {
            Ok(body) => serde_json::from_slice::<ErrorBody>(&body)
                .ok()
                .and_then(|b| b.errors.into_iter().next())
                .map(|e| RegistryError {
                    code: e.code,
                    message: e.message,
                }),
            Err(_) => None,
        };
        if status == 404 {
            Error::NotFound {
                method: req.method.to_string(),
                url: req.redacted_url(),
                registry_error,
            }
        } else if status == 401 || status == 403 {
            Error::Unauthorized {
                method: req.method.to_string(),
                url: req.redacted_url(),
                status,
            }
        } else {
            Error::Status {
                method: req.method.to_string(),
                url: req.redacted_url(),
                status,
                attempts: attempts.made,
                registry_error,
            }
        }
    }
}

/// Small extension so log lines never include a (possibly pre-signed) URL from reqwest's error.
trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut s = String::new();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        let kind = if self.is_timeout() {
            "timeout"
        } else if self.is_connect() {
            "connect"
        } else if self.is_body() {
            "body"
        } else {
            "request"
        };
        s.push_str(kind);
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    }
}

mod form {
    /// Minimal `application/x-www-form-urlencoded` writer built on the URL parser's query serializer.
    pub(super) fn form_urlencoded_pairs() -> FormWriter {
        FormWriter(reqwest::Url::parse("http://form.invalid/").ok())
    }

    pub(super) struct FormWriter(Option<reqwest::Url>);

    impl FormWriter {
        pub(super) fn append_pair(&mut self, k: &str, v: &str) {
            if let Some(u) = self.0.as_mut() {
                u.query_pairs_mut().append_pair(k, v);
            }
        }

        pub(super) fn finish(self) -> Vec<u8> {
            self.0
                .as_ref()
                .and_then(|u| u.query())
                .unwrap_or_default()
                .as_bytes()
                .to_vec()
        }
    }
}

fn bearer_value(token: &Secret) -> Option<HeaderValue> {
    sensitive(&format!("Bearer {}", token.expose()))
}

/// A header value marked sensitive (hyper then never prints it in debug output).
fn sensitive(s: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(s).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// `localhost`, `127.0.0.0/8`, `[::1]`, with or without a port.
pub(crate) fn is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a whole body up to `limit` bytes.
pub(crate) async fn read_limited(
    mut resp: Response,
    limit: u64,
) -> std::result::Result<Bytes, ReadError> {
    if let Some(len) = resp.content_length() {
        if len > limit {
            return Err(ReadError::TooLarge);
        }
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

pub(crate) enum ReadError {
    Http(reqwest::Error),
    TooLarge,
}

/// Reads a small body (token answer), mapping failures (no retry: the token flow restarts on the next
/// request anyway).
async fn read_small(
    resp: Response,
    req: &Req,
    attempts: &mut Attempts,
    timeout: Duration,
) -> Result<Bytes> {
    match read_limited(resp, SMALL_BODY_LIMIT).await {
        Ok(b) => Ok(b),
        Err(ReadError::TooLarge) => Err(Error::TooLarge {
            url: req.redacted_url(),
            limit: SMALL_BODY_LIMIT,
        }),
        Err(ReadError::Http(e)) => Err(transport_error(
            &req.method,
            &req.redacted_url(),
            attempts,
            timeout,
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_query_values_and_userinfo() {
        let u = Url::parse(
            "https://u:p@s3.example/bucket/key?X-Amz-Signature=abc&X-Amz-Credential=def",
        )
        .unwrap();
        let r = redact_url(&u);
        assert!(
            !r.contains("abc") && !r.contains("def") && !r.contains("u:p"),
            "{r}"
        );
        assert!(r.contains("X-Amz-Signature=redacted"), "{r}");
        let plain = Url::parse("http://127.0.0.1:5000/v2/a/blobs/sha256:00").unwrap();
        assert_eq!(redact_url(&plain), plain.to_string());
    }

    #[test]
    fn loopback_detection() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:1",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn origin_compares_scheme_host_port() {
        let a = Origin::of(&Url::parse("http://127.0.0.1:5000/v2/").unwrap());
        assert_eq!(
            a,
            Origin::of(&Url::parse("http://127.0.0.1:5000/x?y").unwrap())
        );
        assert_ne!(
            a,
            Origin::of(&Url::parse("http://127.0.0.1:5001/v2/").unwrap())
        );
        assert_ne!(
            a,
            Origin::of(&Url::parse("https://127.0.0.1:5000/v2/").unwrap())
        );
        assert_ne!(
            a,
            Origin::of(&Url::parse("http://localhost:5000/v2/").unwrap())
        );
        let d = Origin::of(&Url::parse("https://r.example/").unwrap());
        assert_eq!(
            d,
            Origin::of(&Url::parse("https://R.example:443/v2").unwrap())
        );
    }

    #[tokio::test]
    async fn backoff_is_bounded_and_budget_is_respected() {
        let cfg = Config {
            max_retries: 2,
            min_wait: Duration::from_millis(1),
            max_wait: Duration::from_millis(3),
            ..Config::default()
        };
        let mut a = Attempts::new(&cfg);
        let t = Instant::now();
        assert!(a.wait_retry(None).await);
        assert!(a.wait_retry(Some(Duration::from_secs(100))).await); // capped at max_wait
        assert!(!a.wait_retry(None).await);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(jitter(Duration::from_millis(80)) < Duration::from_millis(10));
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn status_classification() {
        assert!(retryable_status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(retryable_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable_status(StatusCode::NOT_IMPLEMENTED));
        assert!(!retryable_status(StatusCode::NOT_FOUND));
        assert!(!retryable_status(StatusCode::UNAUTHORIZED));
        assert!(!retryable_status(StatusCode::FORBIDDEN));
    }
}
