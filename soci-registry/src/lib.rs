#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod auth;
mod challenge;
mod client;
mod config;
mod digest;
mod endpoint;
mod error;
mod http_log;
mod reference;
mod source;
mod transport;
mod types;

pub use auth::{Auth, DockerConfig, Secret};
pub use client::{Client, RangeProbe, MAX_MANIFEST_SIZE};
pub use config::{
    ClientBuilder, PlainHttp, DEFAULT_DIAL_TIMEOUT, DEFAULT_MAX_REDIRECTS, DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_WAIT, DEFAULT_MIN_WAIT, DEFAULT_REQUEST_TIMEOUT,
};
pub use digest::Digest;
pub use endpoint::{is_loopback_host, Endpoint, DEFAULT_API_PATH};
pub use error::{BoxError, Error, ReferenceParseError, RegistryError, Result};
pub use http_log::{HttpEvent, HttpHook, REDACTED};
pub use reference::Reference;
pub use source::{BlobFile, BlobReader, BlobSource};
pub use types::{
    BlobPushOutcome, Descriptor, Manifest, PushBlobOptions, PushedBlob, PushedManifest, Referrers,
    ReferrersSource,
};
