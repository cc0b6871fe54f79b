//! Registry hosts of an image (spec §5.12, `[resolver]` of §5.16): the mirrors configured under
//! `[resolver.host."<registry>"]`, in order, then the registry itself, each with a soci-registry
//! client per tuning (`[http]` for indexes, zTOCs, manifests and whole-layer downloads, `[blob]` for
//! lazy range reads), and "first host that works" over them.

use std::future::Future;
use std::time::Duration;

use soci_registry::{is_loopback_host, Client, Endpoint};
use tracing::warn;

use crate::config::{MirrorConfig, ResolverConfig};

/// Docker Hub's API host (`docker.io` is mapped to it, spec §5.12).
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// A host's own client timeout (`request_timeout_sec` of a mirror).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostTimeout {
    /// The `[http]` request timeout (`request_timeout_sec = 0`, and the registry itself).
    Default,
    /// This many seconds per request.
    After(Duration),
    /// No request timeout (negative `request_timeout_sec`).
    Never,
}

/// One registry host to try for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// Scheme, `host[:port]` and API path.
    pub endpoint: Endpoint,
    /// The host's request timeout for the `[http]` client.
    pub timeout: HostTimeout,
    /// Whether this is a configured mirror (else the image's own registry).
    pub mirror: bool,
}

/// Retry and timeout settings of one registry client (§5.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTuning {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff.
    pub min_wait: Duration,
    /// Backoff cap.
    pub max_wait: Duration,
    /// Timeout of one attempt.
    pub request_timeout: Duration,
    /// TCP connect timeout.
    pub dial_timeout: Duration,
}

fn api_host(host: &str) -> &str {
    if host.eq_ignore_ascii_case("docker.io") || host.eq_ignore_ascii_case("index.docker.io") {
        DOCKER_HUB_API_HOST
    } else {
        host
    }
}

/// Parses one `[[resolver.host."<registry>".mirrors]]` entry: `host` is a URL of which only the
/// authority and the path are used (`http://name:5000`, `https://name/prefix/v2`); a bare
/// `name:5000` is not a URL with an authority and is an invalid host, as upstream. The scheme is
/// `http` when `insecure` or the host is loopback, else `https`, whatever the URL says.
///
/// # Errors
///
/// Why the mirror is unusable.
pub fn mirror_host(m: &MirrorConfig) -> Result<RegistryHost, String> {
    let u = url::Url::parse(m.host.trim()).map_err(|e| format!("invalid host: {e}"))?;
    let Some(name) = u.host_str().filter(|h| !h.is_empty()) else {
        return Err(
            "invalid host: no authority (write the mirror as a URL, e.g. http://name:5000)".into(),
        );
    };
    let authority = match u.port() {
        Some(p) => format!("{name}:{p}"),
        None => name.to_owned(),
    };
    let authority = api_host(&authority);
    let plain = m.insecure || is_loopback_host(authority);
    let endpoint = Endpoint::new(authority, plain)
        .and_then(|e| e.with_path(u.path()))
        .map_err(|e| e.to_string())?;
    let timeout = match m.request_timeout_sec {
        0 => HostTimeout::Default,
        s if s < 0 => HostTimeout::Never,
        s => HostTimeout::After(Duration::from_secs(s as u64)),
    };
    Ok(RegistryHost {
        endpoint,
        timeout,
        mirror: true,
    })
}

/// The hosts to try for images of `registry` (the reference's registry as written, e.g.
/// `docker.io` or `10.0.0.1:5000`, which is also the `[resolver.host]` key), in order: valid
/// mirrors, then the registry itself. Invalid mirrors are skipped with a warning. The registry is
/// reached over plain HTTP when it is loopback, or when an `insecure` mirror names the same host
/// (spec §5.12); an entry identical to an earlier one is not repeated.
pub fn registry_hosts(resolver: &ResolverConfig, registry: &str) -> Vec<RegistryHost> {
    let mut out: Vec<RegistryHost> = Vec::new();
    let mut insecure_same_host = false;
    let own = api_host(registry);
    if let Some(cfg) = resolver.host.get(registry) {
        for m in &cfg.mirrors {
            match mirror_host(m) {
                Ok(h) => {
                    if m.insecure && h.endpoint.host().eq_ignore_ascii_case(own) {
                        insecure_same_host = true;
                    }
                    if !out.contains(&h) {
                        out.push(h);
                    }
                }
                Err(error) => {
                    warn!(registry, mirror = %m.host, error, "skipping mirror");
                }
            }
        }
    }
    match Endpoint::new(own, insecure_same_host || is_loopback_host(own)) {
        Ok(endpoint) => {
            let h = RegistryHost {
                endpoint,
                timeout: HostTimeout::Default,
                mirror: false,
            };
            if !out.iter().any(|o| o.endpoint == h.endpoint) {
                out.push(h);
            }
        }
        Err(e) => warn!(registry, error = %e, "skipping the registry's own host"),
    }
    out
}

/// A host with its two clients.
#[derive(Debug, Clone)]
pub struct HostClients {
    /// The host.
    pub host: RegistryHost,
    /// `[http]` client (with the host's own timeout).
    pub http: Client,
    /// `[blob]` client for range reads.
    pub blob: Client,
}

/// The hosts of one registry with their clients.
#[derive(Debug, Clone)]
pub struct Hosts {
    entries: Vec<HostClients>,
}

fn client(
    t: &ClientTuning,
    endpoint: &Endpoint,
    timeout: HostTimeout,
    auth: &soci_registry::Auth,
) -> Result<Client, soci_registry::Error> {
    let mut b = Client::builder();
    b.endpoint(endpoint.clone());
    b.auth(auth.clone());
    b.max_retries(t.max_retries);
    b.retry_wait(t.min_wait, t.max_wait);
    match timeout {
        HostTimeout::Default => b.request_timeout(t.request_timeout),
        HostTimeout::After(d) => b.request_timeout(d),
        HostTimeout::Never => b.no_request_timeout(),
    };
    b.dial_timeout(t.dial_timeout);
    b.user_agent(format!("soci-snapshotter/{}", env!("CARGO_PKG_VERSION")));
    b.build()
}

impl Hosts {
    /// Clients for `hosts`: `[http]` ones with each host's timeout, `[blob]` ones with the `[blob]`
    /// fetching timeout (spec §5.12: range reads use a clone with the `[blob]` values).
    ///
    /// # Errors
    ///
    /// When a client cannot be built (TLS setup).
    pub fn new(
        hosts: Vec<RegistryHost>,
        http: &ClientTuning,
        blob: &ClientTuning,
    ) -> Result<Hosts, soci_registry::Error> {
        Hosts::with_auth(hosts, http, blob, None)
    }

    /// Like [`Hosts::new`], with `extra` as a credential provider tried after the Docker config
    /// (spec §5.13: the CRI keychain's credential for the image), before going anonymous.
    ///
    /// # Errors
    ///
    /// When a client cannot be built (TLS setup).
    pub fn with_auth(
        hosts: Vec<RegistryHost>,
        http: &ClientTuning,
        blob: &ClientTuning,
        extra: Option<soci_registry::Auth>,
    ) -> Result<Hosts, soci_registry::Error> {
        let auth = match extra {
            None => soci_registry::Auth::docker_config(),
            Some(a) => soci_registry::Auth::Chain(vec![soci_registry::Auth::docker_config(), a]),
        };
        let entries = hosts
            .into_iter()
            .map(|host| {
                Ok(HostClients {
                    http: client(http, &host.endpoint, host.timeout, &auth)?,
                    blob: client(blob, &host.endpoint, HostTimeout::Default, &auth)?,
                    host,
                })
            })
            .collect::<Result<Vec<_>, soci_registry::Error>>()?;
        Ok(Hosts { entries })
    }

    /// The hosts in order.
    pub fn entries(&self) -> &[HostClients] {
        &self.entries
    }

    /// Runs `op` with each host's `[http]` client in order until one succeeds (`Ok(Some)`); `Ok(None)`
    /// ("nothing here", e.g. no referrers on a mirror) moves on and is the result when every host
    /// says so.
    ///
    /// # Errors
    ///
    /// When no host succeeds and at least one failed: the failures, one per host
    /// (`<base URL>: <error chain>`; just the chain when there is one host).
    pub async fn first_ok<T, F, Fut>(&self, mut op: F) -> Result<Option<T>, String>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<Option<T>, soci_registry::Error>>,
    {
        let mut errors = Vec::new();
        for h in &self.entries {
            match op(h.http.clone()).await {
                Ok(Some(v)) => return Ok(Some(v)),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(host = %h.host.endpoint, error = %crate::error::chain(&e), "registry host failed; trying the next one");
                    errors.push((h.host.endpoint.to_string(), crate::error::chain(&e)));
                }
            }
        }
        match errors.len() {
            0 => Ok(None),
            _ if self.entries.len() == 1 => Err(errors.remove(0).1),
            _ => Err(errors
                .iter()
                .map(|(h, e)| format!("{h}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }

    /// [`Hosts::first_ok`] for operations that always produce a value.
    ///
    /// # Errors
    ///
    /// As [`Hosts::first_ok`]; also when there are no hosts at all.
    pub async fn first<T, F, Fut>(&self, mut op: F) -> Result<T, String>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, soci_registry::Error>>,
    {
        let r = self
            .first_ok(|c| {
                let f = op(c);
                async move { f.await.map(Some) }
            })
            .await?;
        r.ok_or_else(|| "no usable registry host".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostConfig;

    fn mirror(host: &str, insecure: bool, timeout: i64) -> MirrorConfig {
        MirrorConfig {
            host: host.into(),
            insecure,
            request_timeout_sec: timeout,
        }
    }

    fn resolver(registry: &str, mirrors: Vec<MirrorConfig>) -> ResolverConfig {
        let h = HostConfig { mirrors };
        let mut r = ResolverConfig::default();
        r.host.insert(registry.into(), h);
        r
    }

    fn urls(hosts: &[RegistryHost]) -> Vec<String> {
        hosts.iter().map(|h| h.endpoint.base_url()).collect()
    }

    #[test]
    fn no_mirrors_means_the_registry_alone() {
        let r = ResolverConfig::default();
        assert_eq!(
            urls(&registry_hosts(&r, "127.0.0.1:5000")),
            ["http://127.0.0.1:5000/v2"]
        );
        assert_eq!(
            urls(&registry_hosts(&r, "localhost:5000")),
            ["http://localhost:5000/v2"]
        );
        assert_eq!(
            urls(&registry_hosts(&r, "10.0.0.1:5000")),
            ["https://10.0.0.1:5000/v2"]
        );
        assert_eq!(
            urls(&registry_hosts(&r, "docker.io")),
            ["https://registry-1.docker.io/v2"]
        );
        // Mirrors of another registry do not apply.
        let r = resolver("other:5000", vec![mirror("http://m:1", false, 0)]);
        assert_eq!(urls(&registry_hosts(&r, "ghcr.io")), ["https://ghcr.io/v2"]);
    }

    #[test]
    fn mirrors_in_order_then_the_registry() {
        let r = resolver(
            "docker.io",
            vec![
                mirror("https://mirror.example", false, 0),
                mirror("http://127.0.0.1:5001", false, 0),
                mirror("http://cache.example:8080/proxy/v2/", false, 0),
                mirror("https://docker.io", false, 0),
            ],
        );
        let h = registry_hosts(&r, "docker.io");
        assert_eq!(
            urls(&h),
            [
                "https://mirror.example/v2",
                // loopback: http
                "http://127.0.0.1:5001/v2",
                // not insecure: https although the URL says http; the path is kept
                "https://cache.example:8080/proxy/v2",
                // docker.io is mapped, and then equals the registry itself (not repeated)
                "https://registry-1.docker.io/v2",
            ]
        );
        assert!(h[..3].iter().all(|x| x.mirror));
        assert!(h[3].mirror, "the mirror entry came first");
    }

    #[test]
    fn invalid_mirrors_are_skipped() {
        let r = resolver(
            "r.example",
            vec![
                // Go parses `name:5000` as scheme `name` with an opaque part: no authority.
                mirror("mirror:5000", true, 0),
                mirror("10.0.0.2:5000", true, 0),
                mirror("", false, 0),
                mirror("http://", false, 0),
                mirror("http://good:5000", true, 0),
            ],
        );
        assert_eq!(
            urls(&registry_hosts(&r, "r.example")),
            ["http://good:5000/v2", "https://r.example/v2"]
        );
        assert!(mirror_host(&mirror("mirror:5000", false, 0))
            .unwrap_err()
            .contains("invalid host"));
    }

    #[test]
    fn insecure_same_host_mirror_makes_the_registry_plain_http() {
        let r = resolver(
            "10.231.0.1:5000",
            vec![mirror("http://10.231.0.1:5000", true, 0)],
        );
        let h = registry_hosts(&r, "10.231.0.1:5000");
        // The mirror entry and the registry itself coincide: one plain-HTTP host.
        assert_eq!(urls(&h), ["http://10.231.0.1:5000/v2"]);
        // An insecure mirror elsewhere leaves the registry on https.
        let r = resolver(
            "10.231.0.1:5000",
            vec![mirror("http://10.9.9.9:5000", true, 0)],
        );
        assert_eq!(
            urls(&registry_hosts(&r, "10.231.0.1:5000")),
            ["http://10.9.9.9:5000/v2", "https://10.231.0.1:5000/v2"]
        );
        // The same host with another path is a different entry, and still makes the registry http.
        let r = resolver(
            "10.231.0.1:5000",
            vec![mirror("http://10.231.0.1:5000/cache/v2", true, 0)],
        );
        assert_eq!(
            urls(&registry_hosts(&r, "10.231.0.1:5000")),
            [
                "http://10.231.0.1:5000/cache/v2",
                "http://10.231.0.1:5000/v2"
            ]
        );
    }

    #[test]
    fn mirror_url_details() {
        let h = mirror_host(&mirror("http://user:pw@m.example:5000/x/?q=1#f", true, 0)).unwrap();
        assert_eq!(h.endpoint.base_url(), "http://m.example:5000/x");
        assert_eq!(h.timeout, HostTimeout::Default);
        let h = mirror_host(&mirror("https://[::1]:5000", false, 7)).unwrap();
        assert_eq!(h.endpoint.base_url(), "http://[::1]:5000/v2");
        assert_eq!(h.timeout, HostTimeout::After(Duration::from_secs(7)));
        let h = mirror_host(&mirror("https://m.example:443", false, -1)).unwrap();
        assert_eq!(h.endpoint.base_url(), "https://m.example/v2");
        assert_eq!(h.timeout, HostTimeout::Never);
        let h = mirror_host(&mirror("https://docker.io", true, 0)).unwrap();
        assert_eq!(h.endpoint.base_url(), "http://registry-1.docker.io/v2");
    }

    #[tokio::test]
    async fn first_ok_tries_hosts_in_order_and_reports_every_failure() {
        let t = ClientTuning {
            max_retries: 0,
            min_wait: Duration::from_millis(1),
            max_wait: Duration::from_millis(1),
            request_timeout: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(1),
        };
        let r = resolver(
            "127.0.0.1:9",
            vec![
                mirror("http://127.0.0.1:7", false, 0),
                mirror("http://127.0.0.1:8", false, 0),
            ],
        );
        let hosts = Hosts::new(registry_hosts(&r, "127.0.0.1:9"), &t, &t).unwrap();
        assert_eq!(hosts.entries().len(), 3);
        let mut seen = Vec::new();
        let got = hosts
            .first_ok(|c| {
                let n = seen.len();
                seen.push(n);
                async move {
                    match n {
                        0 => Err(c
                            .get_manifest(&"127.0.0.1:9/a/b:t".parse().unwrap())
                            .await
                            .unwrap_err()),
                        1 => Ok(None),
                        _ => Ok(Some(n)),
                    }
                }
            })
            .await;
        assert_eq!(got, Ok(Some(2)));
        // Every host fails: one error per host, naming it.
        let err = hosts
            .first(|c| async move {
                c.blob_exists(
                    &"127.0.0.1:9/a/b:t".parse().unwrap(),
                    &soci_registry::Digest::sha256_of(b"x"),
                )
                .await
            })
            .await
            .unwrap_err();
        for port in [7, 8, 9] {
            assert!(
                err.contains(&format!("http://127.0.0.1:{port}/v2: ")),
                "{err}"
            );
        }
    }
}
