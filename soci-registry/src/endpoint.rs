//! Endpoint overrides: send a reference's API requests to another host (a mirror), SOCI spec §5.12.

use crate::error::{Error, Result};

/// API path used when an endpoint does not give one.
pub const DEFAULT_API_PATH: &str = "/v2";

/// Where a [`Client`](crate::Client) built with [`ClientBuilder::endpoint`] sends the distribution
/// API requests of **every** reference, instead of the reference's own registry host: the scheme, the
/// `host[:port]` authority and the API path prefix (`/v2` unless given).
///
/// Repository names, tags and digests still come from the reference, so
/// `127.0.0.1:5000/demo/app` through the endpoint `http://mirror:5000/cache/v2` reads
/// `http://mirror:5000/cache/v2/demo/app/blobs/<digest>`. Credentials (Docker config lookups) and
/// Bearer tokens are keyed by the endpoint's host, so a token challenge is answered for the mirror,
/// with the reference's repository as the scope.
///
/// ```
/// use soci_registry::Endpoint;
/// let e = Endpoint::new("mirror.example:5000", true)
///     .unwrap()
///     .with_path("/cache/v2")
///     .unwrap();
/// assert_eq!(e.base_url(), "http://mirror.example:5000/cache/v2");
/// assert!(Endpoint::new("mirror.example/x", false).is_err());
/// ```
///
/// [`ClientBuilder::endpoint`]: crate::ClientBuilder::endpoint
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    plain_http: bool,
    host: String,
    path: String,
}

impl Endpoint {
    /// An endpoint on `host` (`name`, `name:port`, `[v6]:port`), over plain HTTP if `plain_http`,
    /// with the API path `/v2`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEndpoint`] for an empty host, or one containing `/`, whitespace, `?`, `#` or
    /// `@` (the spec's "invalid host").
    pub fn new(host: &str, plain_http: bool) -> Result<Endpoint> {
        let bad = |reason| Error::InvalidEndpoint {
            endpoint: host.to_owned(),
            reason,
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '@' | '\\'))
        {
            return Err(bad("a host is `name[:port]`, without a path or user info"));
        }
        Ok(Endpoint {
            plain_http,
            host: host.to_owned(),
            path: DEFAULT_API_PATH.to_owned(),
        })
    }

    /// Replaces the API path prefix. A leading `/` is added if missing and trailing `/`s are
    /// removed; an empty path (or `/`) means [`DEFAULT_API_PATH`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEndpoint`] when the path contains `?`, `#`, whitespace or `..` segments.
    pub fn with_path(mut self, path: &str) -> Result<Endpoint> {
        if path
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '?' | '#' | '\\'))
            || path.split('/').any(|s| s == "..")
        {
            return Err(Error::InvalidEndpoint {
                endpoint: format!("{}{path}", self.host),
                reason: "invalid API path",
            });
        }
        let trimmed = path.trim_matches('/');
        self.path = if trimmed.is_empty() {
            DEFAULT_API_PATH.to_owned()
        } else {
            format!("/{trimmed}")
        };
        Ok(self)
    }

    /// `host[:port]`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The API path prefix, `/v2` by default (no trailing `/`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether requests use `http` rather than `https`.
    pub fn plain_http(&self) -> bool {
        self.plain_http
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.plain_http {
            "http"
        } else {
            "https"
        }
    }

    /// `<scheme>://<host><path>`, e.g. `https://registry.example/v2`.
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.host, self.path)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base_url())
    }
}

/// Whether `host` (`name`, `name:port`, `[v6]:port`) is `localhost`, in `127.0.0.0/8` or `::1`: the
/// hosts the snapshotter talks plain HTTP to without configuration (spec §5.12).
pub fn is_loopback_host(host: &str) -> bool {
    crate::transport::is_loopback(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_validated() {
        for ok in [
            "r.example",
            "r.example:5000",
            "10.0.0.1:5000",
            "[::1]:5000",
            "localhost",
        ] {
            assert_eq!(Endpoint::new(ok, false).unwrap().host(), ok);
        }
        for bad in [
            "",
            "r.example/v2",
            "u@r.example",
            "r .example",
            "r?x",
            "r#x",
        ] {
            match Endpoint::new(bad, false) {
                Err(Error::InvalidEndpoint { endpoint, .. }) => assert_eq!(endpoint, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn paths_are_normalised() {
        let e = Endpoint::new("m:5000", true).unwrap();
        assert_eq!(e.path(), "/v2");
        assert_eq!(e.base_url(), "http://m:5000/v2");
        for (p, want) in [
            ("", "/v2"),
            ("/", "/v2"),
            ("/v2/", "/v2"),
            ("cache/v2", "/cache/v2"),
            ("/a/b/v2//", "/a/b/v2"),
        ] {
            assert_eq!(e.clone().with_path(p).unwrap().path(), want, "{p:?}");
        }
        for bad in ["/a/../v2", "/v2?x=1", "/v2#f", "/v 2"] {
            assert!(e.clone().with_path(bad).is_err(), "{bad:?}");
        }
        let s = Endpoint::new("r.example", false).unwrap();
        assert_eq!(s.scheme(), "https");
        assert_eq!(s.to_string(), "https://r.example/v2");
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("localhost:5000"));
        assert!(is_loopback_host("127.0.0.2"));
        assert!(is_loopback_host("[::1]:1"));
        assert!(!is_loopback_host("10.231.0.1:5000"));
        assert!(!is_loopback_host("registry-1.docker.io"));
    }
}
