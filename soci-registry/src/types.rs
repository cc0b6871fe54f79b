//! Plain data types returned by the client.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// An OCI content descriptor, as listed in image indexes and referrers responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Artifact type (set on referrers entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor without artifact type or annotations.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// A manifest or image index exactly as the registry served it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Manifest {
    /// Media type from `Content-Type` (parameters stripped), or the document's `mediaType` field when the
    /// header is missing or generic.
    pub media_type: String,
    /// Digest of `bytes` (verified against the reference's digest when fetched by digest).
    pub digest: Digest,
    /// The raw bytes; decode them with the model crate of your choice.
    pub bytes: Bytes,
}

/// Options for [`Client::push_blob`](crate::Client::push_blob).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PushBlobOptions {
    pub(crate) mount_from: Option<crate::Reference>,
    pub(crate) chunk_size: Option<usize>,
}

impl PushBlobOptions {
    /// Monolithic upload, no mount.
    pub fn new() -> PushBlobOptions {
        PushBlobOptions::default()
    }

    /// Try a cross-repository mount from this repository first (used only when it is on the same
    /// registry; a registry that declines the mount gets a normal upload). By default none.
    pub fn mount_from(mut self, source: crate::Reference) -> PushBlobOptions {
        self.mount_from = Some(source);
        self
    }

    /// Upload in `PATCH` chunks of this many bytes instead of one `PUT`. By default monolithic.
    pub fn chunk_size(mut self, bytes: usize) -> PushBlobOptions {
        self.chunk_size = Some(bytes.max(1));
        self
    }
}

/// How a blob push was satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobPushOutcome {
    /// `HEAD` found the blob; nothing was sent.
    AlreadyExists,
    /// The registry mounted it from the source repository.
    Mounted,
    /// The bytes were uploaded.
    Uploaded,
}

/// Result of [`Client::push_blob`](crate::Client::push_blob).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushedBlob {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// What happened.
    pub outcome: BlobPushOutcome,
}

/// Result of [`Client::push_manifest`](crate::Client::push_manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushedManifest {
    /// Digest of the pushed bytes.
    pub digest: Digest,
    /// The registry answered with an `OCI-Subject` header: it indexes referrers itself.
    pub oci_subject: bool,
    /// When the manifest has a `subject` and the registry did not send `OCI-Subject`, the client
    /// maintained the referrers tag index (`<alg>-<hex>` of the subject); this is that index's digest.
    pub referrers_index: Option<Digest>,
}

/// Where a referrers list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferrersSource {
    /// The Referrers API (`GET /v2/<name>/referrers/<digest>`).
    Api,
    /// The registry lacks the API (404); the image index tagged `<alg>-<hex>` was read instead
    /// (a missing tag yields an empty list).
    TagSchema,
}

/// Referrers of a subject manifest, in the order the registry (or tag index) lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Referrers {
    /// Matching descriptors (already filtered by artifact type when one was requested).
    pub descriptors: Vec<Descriptor>,
    /// Which mechanism answered.
    pub source: ReferrersSource,
}
