//! The crate's error type.
//!
//! Every variant carries typed fields. URLs stored in errors are already redacted (every query value
//! replaced by `redacted`, see [`crate::transport::redact_url`]) because pre-signed storage URLs carry
//! credentials in their query string (spec §5.12). No variant ever holds a password or a token.

use std::path::PathBuf;
use std::time::Duration;

use crate::digest::Digest;

/// Boxed error used as the `source` of transport failures so that the HTTP stack's error types stay out
/// of the public API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error a registry in an `{"errors": [...]}` body reported (OCI distribution spec, "Error Codes").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryError {
    /// Error code such as `MANIFEST_UNKNOWN` or `DENIED`.
    pub code: String,
    /// Human-readable message the registry sent with the code.
    pub message: String,
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Parse failure of an image reference string (wraps the parser's own error without exposing its type).
#[derive(Debug)]
pub struct ReferenceParseError(pub(crate) BoxError);

impl std::fmt::Display for ReferenceParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ReferenceParseError {}

/// Errors returned by this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image reference could not be parsed.
    #[error("invalid image reference {reference:?}")]
    InvalidReference {
        /// The input string.
        reference: String,
        /// Why the parser rejected it.
        #[source]
        source: ReferenceParseError,
    },

    /// A digest string is not `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase).
    #[error("invalid digest {digest:?}")]
    InvalidDigest {
        /// The rejected string.
        digest: String,
    },

    /// A tag does not match `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    #[error("invalid tag {tag:?}")]
    InvalidTag {
        /// The rejected tag.
        tag: String,
    },

    /// An [`Endpoint`](crate::Endpoint) host or API path is unusable (spec §5.12, "invalid host").
    #[error("invalid registry endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The rejected host (or host and path).
        endpoint: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The HTTP client could not be constructed (TLS setup).
    #[error("cannot build the HTTP client")]
    ClientSetup {
        /// Underlying failure.
        #[source]
        source: BoxError,
    },

    /// A network-level failure (connect, reset, TLS, protocol) that persisted through all retries.
    #[error("{method} {url}: giving up after {attempts} attempt(s)")]
    Transport {
        /// HTTP method.
        method: String,
        /// Redacted URL.
        url: String,
        /// Attempts made, including the first.
        attempts: u32,
        /// The last failure.
        #[source]
        source: BoxError,
    },

    /// A request (headers and body) did not complete within the per-request timeout, on every attempt.
    #[error("{method} {url}: timed out after {timeout:?} on each of {attempts} attempt(s)")]
    Timeout {
        /// HTTP method.
        method: String,
        /// Redacted URL.
        url: String,
        /// Attempts made, including the first.
        attempts: u32,
        /// The configured per-request timeout.
        timeout: Duration,
    },

    /// The registry answered with a status the operation cannot use (after retries for 429/5xx).
    #[error("{method} {url}: unexpected status {status} after {attempts} attempt(s)")]
    Status {
        /// HTTP method.
        method: String,
        /// Redacted URL.
        url: String,
        /// HTTP status code.
        status: u16,
        /// Attempts made, including the first.
        attempts: u32,
        /// The first entry of the registry's error body, if it sent one.
        registry_error: Option<RegistryError>,
    },

    /// The manifest, blob or tag does not exist (HTTP 404).
    #[error("{method} {url}: not found")]
    NotFound {
        /// HTTP method.
        method: String,
        /// Redacted URL.
        url: String,
        /// The registry's error entry, if it sent one.
        registry_error: Option<RegistryError>,
    },

    /// Authentication failed: a 401 persisted after answering the challenge, or the challenge could
    /// not be answered with the configured credentials.
    #[error("{method} {url}: unauthorized (status {status})")]
    Unauthorized {
        /// HTTP method.
        method: String,
        /// Redacted URL.
        url: String,
        /// HTTP status code (401, or the token endpoint's status).
        status: u16,
    },

    /// The `WWW-Authenticate` header could not be used.
    #[error("unsupported or malformed authentication challenge from {url} (scheme {scheme:?})")]
    UnsupportedChallenge {
        /// Redacted URL that sent the challenge.
        url: String,
        /// The scheme found, if any.
        scheme: Option<String>,
    },

    /// A Bearer token realm uses plain HTTP while the registry uses HTTPS; credentials are not sent there.
    #[error("refusing to send credentials to plain-http token realm {realm}")]
    InsecureRealm {
        /// Redacted realm URL.
        realm: String,
    },

    /// The token endpoint's answer is not a usable token document.
    #[error("invalid token response from {realm}")]
    TokenResponse {
        /// Redacted realm URL.
        realm: String,
        /// Decode failure, if the body was not JSON.
        #[source]
        source: Option<serde_json::Error>,
    },

    /// More than the configured number of redirects.
    #[error("{method} {url}: more than {limit} redirects")]
    TooManyRedirects {
        /// HTTP method.
        method: String,
        /// Redacted URL of the original request.
        url: String,
        /// The configured limit.
        limit: usize,
    },

    /// A redirect or upload location could not be turned into a URL.
    #[error("{url}: invalid location header {location:?}")]
    InvalidLocation {
        /// Redacted URL of the response carrying the header.
        url: String,
        /// The header value (redacted when it parses as a URL).
        location: String,
    },

    /// Content fetched or pushed does not hash to the expected digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Digest that was asked for.
        expected: Digest,
        /// Digest of the bytes received.
        actual: Digest,
    },

    /// Content has a different size than announced by a descriptor or by `Content-Length`.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The content's digest.
        digest: Digest,
        /// Expected size.
        expected: u64,
        /// Bytes actually received.
        actual: u64,
    },

    /// A response body exceeds the limit for its kind (e.g. manifests are capped at 4 MiB).
    #[error("{url}: body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Redacted URL.
        url: String,
        /// The limit.
        limit: u64,
    },

    /// A ranged read was answered with a `Content-Range` that does not match the request.
    #[error("{url}: bad Content-Range {content_range:?} for requested bytes {offset}+{len}")]
    BadContentRange {
        /// Redacted URL.
        url: String,
        /// The header value received (missing header ⇒ empty).
        content_range: String,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
    },

    /// The requested range starts at or after the end of the blob (HTTP 416, or a full body that is
    /// shorter than the offset).
    #[error("range {offset}+{len} is outside blob {digest}")]
    RangeNotSatisfiable {
        /// Blob digest.
        digest: Digest,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
    },

    /// A response lacks a header the protocol requires (e.g. `Location` on an upload).
    #[error("{url}: response lacks the {header} header")]
    MissingHeader {
        /// Redacted URL.
        url: String,
        /// Header name.
        header: &'static str,
    },

    /// JSON could not be decoded or encoded.
    #[error("invalid JSON in {what}")]
    Json {
        /// What was being decoded (e.g. `referrers index`).
        what: &'static str,
        /// Decode failure.
        #[source]
        source: serde_json::Error,
    },

    /// The referrers tag (`sha256-<hex>`) points at something that is not an image index.
    #[error("referrers tag {tag} holds media type {media_type:?}, not an image index")]
    ReferrersTagNotIndex {
        /// The tag.
        tag: String,
        /// Its media type.
        media_type: String,
    },

    /// A pushed manifest's subject could not be recorded in the referrers tag index because concurrent
    /// writers kept replacing it.
    #[error("referrers tag {tag}: index changed concurrently {rounds} times; giving up")]
    ReferrersTagContention {
        /// The tag.
        tag: String,
        /// Merge rounds attempted.
        rounds: u32,
    },

    /// Reading the Docker config file failed.
    #[error("cannot read docker config {path}")]
    DockerConfigRead {
        /// File path.
        path: PathBuf,
        /// I/O failure.
        #[source]
        source: std::io::Error,
    },

    /// The Docker config file is not valid JSON of the expected shape.
    #[error("cannot parse docker config {path}")]
    DockerConfigParse {
        /// File path.
        path: PathBuf,
        /// Decode failure.
        #[source]
        source: serde_json::Error,
    },

    /// An `auths` entry's `auth` field is not base64 of `user:password`.
    #[error("docker config {path}: invalid auth entry for {registry}")]
    DockerConfigAuthEntry {
        /// File path.
        path: PathBuf,
        /// The `auths` key.
        registry: String,
    },

    /// A `docker-credential-<helper>` program could not be run.
    #[error("cannot run credential helper {program}")]
    CredentialHelperSpawn {
        /// Program name or path.
        program: String,
        /// I/O failure.
        #[source]
        source: std::io::Error,
    },

    /// A credential helper exited unsuccessfully (other than "credentials not found") or printed
    /// something that is not its JSON answer. Its output is not kept: it may contain secrets.
    #[error("credential helper {program} failed (exit code {code:?})")]
    CredentialHelperFailed {
        /// Program name or path.
        program: String,
        /// Exit code, if it exited normally.
        code: Option<i32>,
    },

    /// Opening or reading the [`crate::BlobSource`] of an upload failed.
    #[error("cannot read the content to upload to {url}")]
    ReadSource {
        /// Redacted URL of the request.
        url: String,
        /// I/O failure.
        #[source]
        source: std::io::Error,
    },

    /// Writing fetched bytes to the caller's writer failed.
    #[error("cannot write blob {digest} to the output")]
    Write {
        /// Blob being copied.
        digest: Digest,
        /// I/O failure.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True if the registry said the thing does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for authentication/authorization failures.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Error::Unauthorized { .. })
    }

    /// The HTTP status behind this error, if it came from a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } | Error::Unauthorized { status, .. } => Some(*status),
            Error::NotFound { .. } => Some(404),
            _ => None,
        }
    }
}
