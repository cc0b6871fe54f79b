//! CRI keychain (`[cri_keychain]`, spec §5.13 item 3): the daemon serves the Kubernetes CRI
//! `runtime.v1.ImageService` on its own socket and forwards every call to `image_service_path`
//! (containerd's CRI plugin). `PullImage` stores the request's `AuthConfig` under the normalized
//! image reference before forwarding; `RemoveImage` forgets it. The registry clients of the remote
//! snapshotter ask [`Keychain::lookup`] after the Docker config and before going anonymous.
//! Credentials live in memory only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use soci_registry::{Auth, Reference, Secret};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::{debug, info};

/// Generated CRI v1 ImageService server and client, and its messages (see build.rs and
/// proto/README.md).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    rustdoc::all
)]
pub mod generated {
    tonic::include_proto!("runtime.v1");
}

use generated::image_service_client::ImageServiceClient;
pub use generated::image_service_server::ImageServiceServer;
use generated::AuthConfig;

/// The key Docker Hub images are stored under (`docker.io` ⇒ `index.docker.io`).
const DOCKER_HUB_KEY_HOST: &str = "index.docker.io";

fn is_docker_hub(host: &str) -> bool {
    ["docker.io", "index.docker.io", "registry-1.docker.io"]
        .iter()
        .any(|h| host.eq_ignore_ascii_case(h))
}

/// Normalized registry host: Docker Hub's names become `index.docker.io`, others are lowercased.
fn normalize_host(host: &str) -> String {
    if is_docker_hub(host) {
        DOCKER_HUB_KEY_HOST.to_string()
    } else {
        host.to_ascii_lowercase()
    }
}

/// The normalized form of an image reference (Docker Hub short names expanded, `latest` added
/// when there is neither tag nor digest, Docker Hub's registry written `index.docker.io`), and
/// its normalized registry host. `None` when `image` is not a reference (e.g. an image ID).
pub fn normalize_reference(image: &str) -> Option<(String, String)> {
    let r: Reference = image.parse().ok()?;
    let host = normalize_host(r.registry());
    let mut key = format!("{host}/{}", r.repository());
    if let Some(t) = r.tag() {
        key.push(':');
        key.push_str(t);
    }
    if let Some(d) = r.digest() {
        key.push('@');
        key.push_str(&d.to_string());
    }
    Some((key, host))
}

/// The host (`host[:port]`) of a `server_address`: the authority of a URL
/// (`https://index.docker.io/v1/`), or what precedes the first `/` of a bare address
/// (`registry.example:5000/v2`).
fn server_host(address: &str) -> Option<String> {
    let a = address.trim();
    if a.contains("://") {
        let u = url::Url::parse(a).ok()?;
        let h = u.host_str()?;
        return Some(match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_string(),
        });
    }
    a.split('/')
        .next()
        .filter(|h| !h.is_empty())
        .map(String::from)
}

/// What a stored `AuthConfig` yields.
#[derive(Clone, PartialEq, Eq)]
enum Cred {
    Basic { username: String, password: String },
    IdentityToken(String),
}

impl std::fmt::Debug for Cred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cred::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Cred::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// The credential of an `AuthConfig`: `username`/`password`, else `identity_token` (a secret with
/// an empty user name: the OAuth2 refresh-token flow), else the base64 `auth` field split at the
/// first `:`. `None` when it carries none of these (or `auth` is not base64 `user:secret`).
fn credential_of(a: &AuthConfig) -> Option<Cred> {
    if !a.username.is_empty() || !a.password.is_empty() {
        return Some(Cred::Basic {
            username: a.username.clone(),
            password: a.password.clone(),
        });
    }
    if !a.identity_token.is_empty() {
        return Some(Cred::IdentityToken(a.identity_token.clone()));
    }
    if !a.auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        return Some(Cred::Basic {
            username: u.to_string(),
            password: p.to_string(),
        });
    }
    None
}

/// A credential found for an image.
#[derive(Debug, Clone)]
pub struct KeychainCredential {
    /// The credential as a registry-client provider.
    pub auth: Auth,
    /// A digest of the credential (not the secret itself), to key client caches.
    pub fingerprint: String,
}

#[derive(Clone)]
struct Entry {
    server_address: String,
    cred: Cred,
}

/// The in-memory store of credentials seen in `PullImage` requests, by normalized image reference.
#[derive(Default)]
pub struct Keychain {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Keychain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.entries.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Keychain").field("entries", &n).finish()
    }
}

impl Keychain {
    /// An empty keychain.
    pub fn new() -> Keychain {
        Keychain::default()
    }

    /// Stores `auth` for `image` (a PullImage request). Returns whether anything was stored: an
    /// image that is not a reference, or an `AuthConfig` with no usable credential, stores nothing.
    pub fn store(&self, image: &str, auth: &AuthConfig) -> bool {
        let (Some((key, _)), Some(cred)) = (normalize_reference(image), credential_of(auth)) else {
            return false;
        };
        let e = Entry {
            server_address: auth.server_address.clone(),
            cred,
        };
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, e);
        true
    }

    /// Forgets the credential of `image` (a RemoveImage request). Returns whether one was stored.
    pub fn forget(&self, image: &str) -> bool {
        let Some((key, _)) = normalize_reference(image) else {
            return false;
        };
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
            .is_some()
    }

    /// The credential for `image` (the image reference of a layer being mounted), if one was
    /// stored for its normalized reference and, when the stored `server_address` is set, that
    /// address's host is the image's registry host.
    pub fn lookup(&self, image: &str) -> Option<KeychainCredential> {
        let (key, host) = normalize_reference(image)?;
        let e = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()?;
        if !e.server_address.trim().is_empty() {
            let sh = server_host(&e.server_address).map(|h| normalize_host(&h));
            if sh.as_deref() != Some(host.as_str()) {
                debug!(
                    image,
                    "CRI keychain: server_address does not match the registry host"
                );
                return None;
            }
        }
        let mut h = Sha256::new();
        let auth = match &e.cred {
            Cred::Basic { username, password } => {
                h.update(b"basic\0");
                h.update(username.as_bytes());
                h.update(b"\0");
                h.update(password.as_bytes());
                Auth::basic(username.clone(), password.clone())
            }
            Cred::IdentityToken(t) => {
                h.update(b"token\0");
                h.update(t.as_bytes());
                Auth::IdentityToken(Secret::new(t.clone()))
            }
        };
        Some(KeychainCredential {
            auth,
            fingerprint: hex::encode(&h.finalize()[..8]),
        })
    }

    /// Number of stored credentials.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The ImageService proxy.
#[derive(Debug, Clone)]
pub struct ImageProxy {
    keychain: Arc<Keychain>,
    backend: String,
    channel: Arc<tokio::sync::Mutex<Option<Channel>>>,
}

impl ImageProxy {
    /// A proxy forwarding to the CRI ImageService at the unix socket `backend`, storing
    /// credentials in `keychain`. The backend is connected on the first call.
    pub fn new(keychain: Arc<Keychain>, backend: &str) -> ImageProxy {
        let backend = backend
            .strip_prefix("unix://")
            .unwrap_or(backend)
            .to_string();
        ImageProxy {
            keychain,
            backend,
            channel: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    async fn client(&self) -> Result<ImageServiceClient<Channel>, Status> {
        let mut g = self.channel.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(ImageServiceClient::new(c.clone()));
        }
        let c = containerd_client::connect(&self.backend)
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "failed to connect to the CRI image service at {}: {e}",
                    self.backend
                ))
            })?;
        *g = Some(c.clone());
        Ok(ImageServiceClient::new(c))
    }
}

#[tonic::async_trait]
impl generated::image_service_server::ImageService for ImageProxy {
    async fn list_images(
        &self,
        request: Request<generated::ListImagesRequest>,
    ) -> Result<Response<generated::ListImagesResponse>, Status> {
        self.client().await?.list_images(request.into_inner()).await
    }

    async fn image_status(
        &self,
        request: Request<generated::ImageStatusRequest>,
    ) -> Result<Response<generated::ImageStatusResponse>, Status> {
        self.client()
            .await?
            .image_status(request.into_inner())
            .await
    }

    async fn pull_image(
        &self,
        request: Request<generated::PullImageRequest>,
    ) -> Result<Response<generated::PullImageResponse>, Status> {
        let req = request.into_inner();
        let image = req
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if let Some(auth) = &req.auth {
            if self.keychain.store(&image, auth) {
                info!(image = %image, "CRI keychain: stored credential for image");
            }
        }
        self.client().await?.pull_image(req).await
    }

    async fn remove_image(
        &self,
        request: Request<generated::RemoveImageRequest>,
    ) -> Result<Response<generated::RemoveImageResponse>, Status> {
        let req = request.into_inner();
        let image = req
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if self.keychain.forget(&image) {
            info!(image = %image, "CRI keychain: forgot credential for image");
        }
        self.client().await?.remove_image(req).await
    }

    async fn image_fs_info(
        &self,
        request: Request<generated::ImageFsInfoRequest>,
    ) -> Result<Response<generated::ImageFsInfoResponse>, Status> {
        self.client()
            .await?
            .image_fs_info(request.into_inner())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ac(f: impl FnOnce(&mut AuthConfig)) -> AuthConfig {
        let mut a = AuthConfig::default();
        f(&mut a);
        a
    }

    fn basic(k: &Keychain, image: &str) -> Option<(String, String)> {
        match k.lookup(image)?.auth {
            Auth::Basic { username, password } => Some((username, format!("{password:?}"))),
            other => panic!("not basic: {other:?}"),
        }
    }

    #[test]
    fn normalization() {
        let n = |s: &str| normalize_reference(s).map(|(k, _)| k);
        assert_eq!(
            n("busybox").as_deref(),
            Some("index.docker.io/library/busybox:latest")
        );
        assert_eq!(
            n("docker.io/library/busybox:1").as_deref(),
            Some("index.docker.io/library/busybox:1")
        );
        assert_eq!(
            n("index.docker.io/library/busybox:1"),
            n("docker.io/library/busybox:1")
        );
        assert_eq!(
            n("127.0.0.1:5000/a/b").as_deref(),
            Some("127.0.0.1:5000/a/b:latest")
        );
        assert_eq!(n("Not A Reference"), None);
        assert_eq!(
            normalize_reference("docker.io/x/y:1")
                .map(|(_, h)| h)
                .as_deref(),
            Some("index.docker.io")
        );
    }

    #[test]
    fn credential_forms() {
        let k = Keychain::new();
        // username/password first, even when the other fields are set.
        assert!(k.store(
            "r.example/a:1",
            &ac(|a| {
                a.username = "u".into();
                a.password = "p".into();
                a.identity_token = "t".into();
            })
        ));
        assert_eq!(
            basic(&k, "r.example/a:1"),
            Some(("u".into(), "<redacted>".into()))
        );
        // identity token next: a secret with an empty user.
        k.store("r.example/b:1", &ac(|a| a.identity_token = "tok".into()));
        assert!(matches!(
            k.lookup("r.example/b:1").map(|c| c.auth),
            Some(Auth::IdentityToken(s)) if s == Secret::new("tok")
        ));
        // base64 `auth`, split at the first ':'.
        let enc = base64::engine::general_purpose::STANDARD.encode("user:pa:ss");
        k.store("r.example/c:1", &ac(|a| a.auth = enc));
        match k.lookup("r.example/c:1").map(|c| c.auth) {
            Some(Auth::Basic { username, password }) => {
                assert_eq!(username, "user");
                assert!(password == Secret::new("pa:ss"));
            }
            other => panic!("{other:?}"),
        }
        // Nothing usable: nothing stored.
        assert!(!k.store("r.example/d:1", &ac(|a| a.auth = "%%%".into())));
        assert!(!k.store("r.example/d:1", &AuthConfig::default()));
        assert!(k.lookup("r.example/d:1").is_none());
        assert_eq!(k.len(), 3);
    }

    #[test]
    fn lookup_by_reference_and_forget() {
        let k = Keychain::new();
        let cfg = ac(|a| {
            a.username = "u".into();
            a.password = "p".into();
        });
        k.store("docker.io/library/busybox:latest", &cfg);
        // Same image, other spellings.
        assert!(k.lookup("busybox").is_some());
        assert!(k.lookup("index.docker.io/library/busybox:latest").is_some());
        // Other tag or repository: no credential.
        assert!(k.lookup("busybox:1").is_none());
        assert!(k.lookup("docker.io/library/alpine:latest").is_none());
        // The fingerprint follows the credential.
        let f1 = k.lookup("busybox").map(|c| c.fingerprint);
        k.store(
            "busybox",
            &ac(|a| {
                a.username = "u".into();
                a.password = "q".into();
            }),
        );
        assert_ne!(k.lookup("busybox").map(|c| c.fingerprint), f1);
        assert!(k.forget("docker.io/library/busybox"));
        assert!(k.lookup("busybox").is_none());
        assert!(!k.forget("busybox"));
        assert!(!k.forget("sha256:0123"));
    }

    #[test]
    fn server_address_must_name_the_registry_host() {
        let k = Keychain::new();
        let with = |addr: &str| {
            ac(|a| {
                a.username = "u".into();
                a.password = "p".into();
                a.server_address = addr.into();
            })
        };
        k.store("r.example:5000/a:1", &with("https://r.example:5000/v2/"));
        assert!(k.lookup("r.example:5000/a:1").is_some());
        k.store("r.example:5000/a:1", &with("r.example:5000"));
        assert!(k.lookup("r.example:5000/a:1").is_some());
        k.store("r.example:5000/a:1", &with("https://other.example/"));
        assert!(k.lookup("r.example:5000/a:1").is_none());
        // Port is part of the host.
        k.store("r.example:5000/a:1", &with("https://r.example/"));
        assert!(k.lookup("r.example:5000/a:1").is_none());
        // Docker Hub: the classic server address matches docker.io images.
        k.store("busybox", &with("https://index.docker.io/v1/"));
        assert!(k.lookup("docker.io/library/busybox:latest").is_some());
        k.store("busybox", &with("registry-1.docker.io"));
        assert!(k.lookup("busybox").is_some());
    }

    #[test]
    fn server_hosts() {
        assert_eq!(
            server_host("https://h.example:5000/v2/").as_deref(),
            Some("h.example:5000")
        );
        assert_eq!(server_host("h.example/v1").as_deref(), Some("h.example"));
        assert_eq!(
            server_host("http://[::1]:5000").as_deref(),
            Some("[::1]:5000")
        );
        assert_eq!(server_host("/x"), None);
    }
}
