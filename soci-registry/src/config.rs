//! Client configuration and its builder.

use std::time::Duration;

use crate::auth::Auth;
use crate::client::Client;
use crate::endpoint::Endpoint;
use crate::error::Result;

/// Default number of retries after the first attempt (SOCI spec §5.12, `[http] max_retries`).
pub const DEFAULT_MAX_RETRIES: u32 = 8;
/// Default first backoff (`min_wait_msec` = 30).
pub const DEFAULT_MIN_WAIT: Duration = Duration::from_millis(30);
/// Default backoff cap. The spec's `max_wait_msec` default is 300 s; a library call that blocks five
/// minutes between attempts surprises callers, so the builder default is 30 s (set it explicitly to
/// follow the daemon configuration).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);
/// Default per-attempt timeout for one request including its body (`request_timeout_msec` = 300000).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Default TCP connect timeout (`dial_timeout_msec` = 3000).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Default redirect limit (the Go client follows up to 10).
pub const DEFAULT_MAX_REDIRECTS: usize = 10;

/// When to talk plain HTTP instead of HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PlainHttp {
    /// Always HTTPS.
    #[default]
    Never,
    /// HTTP only for `localhost`, `127.0.0.0/8` and `[::1]` (what the snapshotter does for its own host,
    /// spec §5.12); HTTPS elsewhere.
    Loopback,
    /// HTTP for every registry (`--plain-http`).
    Always,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) auth: Auth,
    pub(crate) plain_http: PlainHttp,
    pub(crate) max_retries: u32,
    pub(crate) min_wait: Duration,
    pub(crate) max_wait: Duration,
    /// `None`: no per-request timeout ([`ClientBuilder::no_request_timeout`]).
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) dial_timeout: Duration,
    pub(crate) user_agent: String,
    pub(crate) max_redirects: usize,
    pub(crate) referrers_gc: bool,
    pub(crate) http_hook: crate::http_log::HookSlot,
    /// Where every API request goes instead of the reference's registry host.
    pub(crate) endpoint: Option<Endpoint>,
}

impl Config {
    /// The timeout reported in [`crate::Error::Timeout`]: the request timeout, or the connect
    /// timeout (the only one left) when requests have none.
    pub(crate) fn reported_timeout(&self) -> Duration {
        self.request_timeout.unwrap_or(self.dial_timeout)
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            auth: Auth::Anonymous,
            plain_http: PlainHttp::Never,
            max_retries: DEFAULT_MAX_RETRIES,
            min_wait: DEFAULT_MIN_WAIT,
            max_wait: DEFAULT_MAX_WAIT,
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            user_agent: concat!("soci-registry/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
            referrers_gc: true,
            http_hook: crate::http_log::HookSlot::default(),
            endpoint: None,
        }
    }
}

/// Builds a [`Client`].
///
/// ```
/// use std::time::Duration;
/// use soci_registry::{Auth, ClientBuilder, PlainHttp};
/// let client = ClientBuilder::new()
///     .auth(Auth::docker_config())
///     .plain_http(PlainHttp::Loopback)
///     .max_retries(3)
///     .request_timeout(Duration::from_secs(60))
///     .build()
///     .unwrap();
/// # drop(client);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    config: Config,
}

impl ClientBuilder {
    /// A builder with the defaults documented on each setter.
    pub fn new() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Credentials. By default [`Auth::Anonymous`].
    pub fn auth(&mut self, auth: Auth) -> &mut ClientBuilder {
        self.config.auth = auth;
        self
    }

    /// Plain HTTP policy. By default [`PlainHttp::Never`] (HTTPS everywhere).
    pub fn plain_http(&mut self, plain: PlainHttp) -> &mut ClientBuilder {
        self.config.plain_http = plain;
        self
    }

    /// Retries after the first attempt for connect errors, resets, timeouts, 429 and 5xx (except 501).
    /// 4xx other than 429 are never retried (a 401 is answered once with fresh credentials instead).
    /// By default [`DEFAULT_MAX_RETRIES`] (8).
    pub fn max_retries(&mut self, n: u32) -> &mut ClientBuilder {
        self.config.max_retries = n;
        self
    }

    /// Exponential backoff bounds: the n-th retry waits `min × 2^n` capped at `max`, plus a random jitter
    /// of up to an eighth of that; `Retry-After` (seconds) on 429/503 replaces the computed wait.
    /// By default 30 ms and 30 s.
    pub fn retry_wait(&mut self, min: Duration, max: Duration) -> &mut ClientBuilder {
        self.config.min_wait = min;
        self.config.max_wait = max.max(min);
        self
    }

    /// Timeout of one attempt, from connecting until the whole body is read. By default 300 s.
    pub fn request_timeout(&mut self, t: Duration) -> &mut ClientBuilder {
        self.config.request_timeout = Some(t);
        self
    }

    /// No per-request timeout at all (a mirror's negative `request_timeout_sec`, spec §5.12); the
    /// connect timeout still applies.
    pub fn no_request_timeout(&mut self) -> &mut ClientBuilder {
        self.config.request_timeout = None;
        self
    }

    /// Sends the API requests of every reference to `endpoint` (a mirror) instead of the reference's
    /// registry host; the endpoint's scheme replaces the [`PlainHttp`] policy. Credentials and tokens
    /// are looked up for the endpoint's host. By default unset.
    pub fn endpoint(&mut self, endpoint: Endpoint) -> &mut ClientBuilder {
        self.config.endpoint = Some(endpoint);
        self
    }

    /// TCP connect timeout. By default 3 s.
    pub fn dial_timeout(&mut self, t: Duration) -> &mut ClientBuilder {
        self.config.dial_timeout = t;
        self
    }

    /// `User-Agent` header. By default `soci-registry/<version>`.
    pub fn user_agent(&mut self, ua: impl Into<String>) -> &mut ClientBuilder {
        self.config.user_agent = ua.into();
        self
    }

    /// Redirects followed per request (they are followed by this crate, not the HTTP stack, so that
    /// `Authorization` is only ever sent to the registry's own origin). By default 10.
    pub fn max_redirects(&mut self, n: usize) -> &mut ClientBuilder {
        self.config.max_redirects = n;
        self
    }

    /// Whether maintaining the referrers tag index deletes the index it replaced (as ORAS does), so
    /// superseded indexes do not pile up. Failures to delete are ignored. By default `true`.
    pub fn referrers_gc(&mut self, on: bool) -> &mut ClientBuilder {
        self.config.referrers_gc = on;
        self
    }

    /// Calls `hook` with every HTTP request and response (including token requests, redirect hops
    /// and retries), already redacted: see [`crate::HttpEvent`]. For debug output such as the CLI's
    /// `--debug`; nothing is reported without a hook.
    pub fn http_hook(&mut self, hook: crate::HttpHook) -> &mut ClientBuilder {
        self.config.http_hook = crate::http_log::HookSlot(Some(hook));
        self
    }

    /// Builds the client. Fails only if TLS cannot be set up (e.g. no usable root certificates).
    pub fn build(&self) -> Result<Client> {
        Client::from_config(self.config.clone())
    }
}
