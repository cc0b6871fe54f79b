//! Credentials: what the caller configures ([`Auth`]) and how credentials for one registry host are
//! found (Docker `config.json`, `docker-credential-*` helpers).
//!
//! Nothing in this module ever logs or formats a secret: [`Secret`]'s `Debug` prints `<redacted>` and
//! it has no `Display`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// Key under which Docker Hub credentials are stored in `config.json` and asked of helpers.
const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// Username a credential helper returns when the secret is an identity (refresh) token.
const IDENTITY_TOKEN_USERNAME: &str = "<token>";

/// A secret string (password, identity token, bearer token). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the client authenticates.
///
/// Whatever the choice, Bearer-token challenges (`WWW-Authenticate: Bearer realm=…`) are answered
/// automatically; the credentials below are what is presented to the token realm (or sent as HTTP Basic
/// when the registry asks for Basic).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No credentials; anonymous tokens are still fetched when a registry asks for them.
    #[default]
    Anonymous,
    /// Fixed username and password for every registry this client talks to (`--user user[:password]`).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// Look the registry host up in a Docker config file (`auths`, `credHelpers`, `credsStore`);
    /// no entry means anonymous.
    DockerConfig(DockerConfig),
    /// An identity (OAuth2 refresh) token, exchanged at the token realm like a Docker config
    /// `identitytoken` (a credential with an empty user name and the token as secret).
    IdentityToken(Secret),
    /// Providers tried in order: the first that has a credential for the host is used; an error
    /// stops the chain; none means anonymous.
    Chain(Vec<Auth>),
}

impl Auth {
    /// Basic credentials.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Auth {
        Auth::Basic {
            username: username.into(),
            password: Secret::new(password),
        }
    }

    /// Parses the CLI form `user[:password]` (split at the first `:`; no `:` means an empty password).
    pub fn from_user_arg(arg: &str) -> Auth {
        let (user, pass) = arg.split_once(':').unwrap_or((arg, ""));
        Auth::basic(user, pass)
    }

    /// The Docker config at the default location (see [`DockerConfig::from_env`]).
    pub fn docker_config() -> Auth {
        Auth::DockerConfig(DockerConfig::from_env())
    }
}

/// Where to find a Docker `config.json` and its credential helpers.
#[derive(Clone, Debug, Default)]
pub struct DockerConfig {
    path: Option<PathBuf>,
    helper_dir: Option<PathBuf>,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json` if `DOCKER_CONFIG` is set, else `~/.docker/config.json`; resolved when
    /// credentials are first needed. A missing file means anonymous.
    pub fn from_env() -> DockerConfig {
        DockerConfig::default()
    }

    /// An explicit config file.
    pub fn at(path: impl Into<PathBuf>) -> DockerConfig {
        DockerConfig {
            path: Some(path.into()),
            helper_dir: None,
        }
    }

    /// Run `docker-credential-<name>` from `dir` instead of searching `PATH`.
    pub fn with_helper_dir(mut self, dir: impl Into<PathBuf>) -> DockerConfig {
        self.helper_dir = Some(dir.into());
        self
    }

    fn resolve_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.path {
            return Some(p.clone());
        }
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(Path::new(&dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker").join("config.json"))
    }
}

/// A credential for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    Basic {
        username: String,
        password: Secret,
    },
    /// OAuth2 refresh token (`identitytoken`), exchanged at the token realm.
    IdentityToken(Secret),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// Finds the credential for `host` (`host[:port]` as used in URLs).
pub(crate) async fn credential_for(auth: &Auth, host: &str) -> Result<Option<Credential>> {
    match auth {
        Auth::Chain(list) => {
            for a in list {
                if let Some(c) = Box::pin(credential_for(a, host)).await? {
                    return Ok(Some(c));
                }
            }
            Ok(None)
        }
        Auth::Anonymous => Ok(None),
        Auth::Basic { username, password } => Ok(Some(Credential::Basic {
            username: username.clone(),
            password: password.clone(),
        })),
        Auth::IdentityToken(token) => Ok(Some(Credential::IdentityToken(token.clone()))),
        Auth::DockerConfig(cfg) => from_docker_config(cfg, host).await,
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// `https://host:port/v1/` → `host:port`; keys are compared after this.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    k.to_ascii_lowercase()
}

fn key_matches(key: &str, host: &str) -> bool {
    let k = normalize_key(key);
    k == host || (is_docker_hub(host) && is_docker_hub(&k))
}

async fn from_docker_config(cfg: &DockerConfig, host: &str) -> Result<Option<Credential>> {
    let Some(path) = cfg.resolve_path() else {
        return Ok(None);
    };
    let text = match tokio::fs::read(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(path = %path.display(), "no docker config; anonymous");
            return Ok(None);
        }
        Err(source) => return Err(Error::DockerConfigRead { path, source }),
    };
    let file: ConfigFile =
        serde_json::from_slice(&text).map_err(|source| Error::DockerConfigParse {
            path: path.clone(),
            source,
        })?;
    let host = host.to_ascii_lowercase();

    // Docker CLI order: a per-registry helper, then the default store, then inline `auths`.
    let helper = file
        .cred_helpers
        .iter()
        .find(|(k, _)| key_matches(k, &host))
        .map(|(_, v)| v.clone())
        .or_else(|| file.creds_store.clone().filter(|s| !s.is_empty()));
    if let Some(helper) = helper {
        let server = if is_docker_hub(&host) {
            DOCKER_HUB_CONFIG_KEY.to_owned()
        } else {
            host.clone()
        };
        if let Some(c) = run_helper(cfg.helper_dir.as_deref(), &helper, &server).await? {
            tracing::debug!(registry = %host, helper = %helper, "credentials from credential helper");
            return Ok(Some(c));
        }
    }

    let Some((key, entry)) = file.auths.iter().find(|(k, _)| key_matches(k, &host)) else {
        return Ok(None);
    };
    if let Some(tok) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credential::IdentityToken(Secret::new(tok))));
    }
    if let Some(b64) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let bad = || Error::DockerConfigAuthEntry {
            path: path.clone(),
            registry: key.clone(),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (user, pass) = raw.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credential::Basic {
            username: user.to_owned(),
            password: Secret::new(pass),
        }));
    }
    if let Some(user) = entry.username.as_deref().filter(|u| !u.is_empty()) {
        return Ok(Some(Credential::Basic {
            username: user.to_owned(),
            password: Secret::new(entry.password.clone().unwrap_or_default()),
        }));
    }
    Ok(None)
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-<helper> get` with the server URL on stdin (docker-credential-helpers protocol).
async fn run_helper(dir: Option<&Path>, helper: &str, server: &str) -> Result<Option<Credential>> {
    let name = format!("docker-credential-{helper}");
    let program = match dir {
        Some(d) => d.join(&name),
        None => PathBuf::from(&name),
    };
    let program_str = program.display().to_string();
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::CredentialHelperSpawn {
            program: program_str.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading stdin is judged by its exit status below.
        let _ = stdin.write_all(server.as_bytes()).await;
        drop(stdin);
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| Error::CredentialHelperSpawn {
            program: program_str.clone(),
            source,
        })?;
    if !out.status.success() {
        let said = |b: &[u8]| String::from_utf8_lossy(b).contains("credentials not found");
        if said(&out.stdout) || said(&out.stderr) {
            return Ok(None);
        }
        return Err(Error::CredentialHelperFailed {
            program: program_str,
            code: out.status.code(),
        });
    }
    let answer: HelperAnswer =
        serde_json::from_slice(&out.stdout).map_err(|_| Error::CredentialHelperFailed {
            program: program_str.clone(),
            code: out.status.code(),
        })?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    let secret = Secret::new(answer.secret);
    if answer.username == IDENTITY_TOKEN_USERNAME {
        Ok(Some(Credential::IdentityToken(secret)))
    } else {
        Ok(Some(Credential::Basic {
            username: answer.username,
            password: secret,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let a = Auth::basic("alice", "hunter2");
        let s = format!("{a:?}");
        assert!(s.contains("alice") && !s.contains("hunter2"), "{s}");
        let c = Credential::IdentityToken(Secret::new("tok-123"));
        assert!(!format!("{c:?}").contains("tok-123"));
        let c = Credential::Basic {
            username: "u".into(),
            password: Secret::new("p4ss"),
        };
        assert!(!format!("{c:?}").contains("p4ss"));
    }

    #[test]
    fn user_arg_splits_at_first_colon() {
        match Auth::from_user_arg("bob:pa:ss") {
            Auth::Basic { username, password } => {
                assert_eq!(username, "bob");
                assert_eq!(password.expose(), "pa:ss");
            }
            other => panic!("{other:?}"),
        }
        match Auth::from_user_arg("bob") {
            Auth::Basic { password, .. } => assert!(password.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_normalise() {
        assert!(key_matches(
            "https://index.docker.io/v1/",
            "registry-1.docker.io"
        ));
        assert!(key_matches("docker.io", "index.docker.io"));
        assert!(key_matches("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"));
        assert!(key_matches("Example.COM", "example.com"));
        assert!(!key_matches("example.com", "example.com:5000"));
    }

    #[tokio::test]
    async fn docker_config_auths_and_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\nif [ \"$server\" = \"helper.example\" ]; then\n  echo '{\"ServerURL\":\"x\",\"Username\":\"hu\",\"Secret\":\"hs\"}'\nelif [ \"$server\" = \"tok.example\" ]; then\n  echo '{\"Username\":\"<token>\",\"Secret\":\"refresh\"}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let cfg_path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("au:ap");
        std::fs::write(
            &cfg_path,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},
                   "plain.example":{{"username":"pu","password":"pp"}},
                   "idt.example":{{"identitytoken":"itok"}},
                   "bad.example":{{"auth":"!!!"}}}},
                  "credHelpers":{{"helper.example":"fake","tok.example":"fake","miss.example":"fake"}}}}"#
            ),
        )
        .unwrap();
        let cfg = DockerConfig::at(&cfg_path).with_helper_dir(dir.path());
        let auth = Auth::DockerConfig(cfg);
        let c = credential_for(&auth, "registry-1.docker.io").await.unwrap();
        assert_eq!(
            c,
            Some(Credential::Basic {
                username: "au".into(),
                password: Secret::new("ap")
            })
        );
        let c = credential_for(&auth, "plain.example")
            .await
            .unwrap()
            .unwrap();
        assert!(c.basic_header().is_some());
        assert_eq!(
            credential_for(&auth, "idt.example").await.unwrap(),
            Some(Credential::IdentityToken(Secret::new("itok")))
        );
        assert_eq!(
            credential_for(&auth, "helper.example").await.unwrap(),
            Some(Credential::Basic {
                username: "hu".into(),
                password: Secret::new("hs")
            })
        );
        assert_eq!(
            credential_for(&auth, "tok.example").await.unwrap(),
            Some(Credential::IdentityToken(Secret::new("refresh")))
        );
        assert_eq!(credential_for(&auth, "miss.example").await.unwrap(), None);
        assert_eq!(credential_for(&auth, "other.example").await.unwrap(), None);
        assert!(matches!(
            credential_for(&auth, "bad.example").await,
            Err(Error::DockerConfigAuthEntry { .. })
        ));
        let missing = Auth::DockerConfig(DockerConfig::at(dir.path().join("nope.json")));
        assert_eq!(credential_for(&missing, "x").await.unwrap(), None);
    }

    #[tokio::test]
    async fn chain_takes_the_first_provider_with_a_credential() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("config.json");
        std::fs::write(
            &cfg_path,
            r#"{"auths":{"cfg.example":{"username":"cu","password":"cp"}}}"#,
        )
        .unwrap();
        let chain = Auth::Chain(vec![
            Auth::DockerConfig(DockerConfig::at(&cfg_path)),
            Auth::IdentityToken(Secret::new("itok")),
        ]);
        assert_eq!(
            credential_for(&chain, "cfg.example").await.unwrap(),
            Some(Credential::Basic {
                username: "cu".into(),
                password: Secret::new("cp")
            })
        );
        assert_eq!(
            credential_for(&chain, "other.example").await.unwrap(),
            Some(Credential::IdentityToken(Secret::new("itok")))
        );
        let none = Auth::Chain(vec![Auth::DockerConfig(DockerConfig::at(&cfg_path))]);
        assert_eq!(credential_for(&none, "other.example").await.unwrap(), None);
        // A broken provider stops the chain.
        std::fs::write(&cfg_path, "{not json").unwrap();
        assert!(credential_for(&chain, "other.example").await.is_err());
    }
}
