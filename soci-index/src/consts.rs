//! Constants of the SOCI formats (spec §4.1) and related OCI/Docker/containerd strings.

/// Media types of documents and blobs.
pub mod media_type {
    /// OCI image manifest; also the document type of every SOCI index.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index (the output of `soci convert`, and the referrers list).
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config (what `soci convert` rewrites `config.mediaType` to).
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer (never indexed).
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI non-distributable uncompressed layer (deprecated by OCI).
    pub const OCI_LAYER_NON_DISTRIBUTABLE: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar";
    /// OCI non-distributable gzip layer (deprecated by OCI).
    pub const OCI_LAYER_NON_DISTRIBUTABLE_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker layer whose compression is unspecified (treated as plain tar).
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker zstd layer (never indexed).
    pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
    /// Docker foreign layer, compression unspecified.
    pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
    /// Docker foreign gzip layer.
    pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// A zTOC blob ("SOCI layer") in a SOCI index's `layers`.
    pub const ZTOC: &str = "application/octet-stream";
    /// A prefetch artifact blob in a SOCI index's `layers`.
    pub const PREFETCH: &str = "application/vnd.amazon.soci.prefetch.v1+json";
    /// SOCI index v1 artifact type (`config.mediaType` of a v1 index).
    pub const SOCI_INDEX_V1: &str = "application/vnd.amazon.soci.index.v1+json";
    /// SOCI index v2 artifact type (`config.mediaType` of a v2 index, `artifactType` of its
    /// descriptor in a converted image index).
    pub const SOCI_INDEX_V2: &str = "application/vnd.amazon.soci.index.v2+json";
}

/// Annotation keys (spec §4.1).
pub mod annotation {
    /// On a SOCI index manifest: the build tool string.
    pub const BUILD_TOOL_IDENTIFIER: &str = "com.amazon.soci.build-tool-identifier";
    /// On zTOC and prefetch descriptors: the image layer the blob describes.
    pub const IMAGE_LAYER_DIGEST: &str = "com.amazon.soci.image-layer-digest";
    /// On zTOC descriptors: the image layer's media type (capital `T`).
    pub const IMAGE_LAYER_MEDIA_TYPE: &str = "com.amazon.soci.image-layer-mediaType";
    /// On zTOC descriptors: the span size as a decimal string.
    pub const SPAN_SIZE: &str = "com.amazon.soci.span-size";
    /// On zTOC descriptors (optional): `true` when the layer needs no xattr support.
    pub const DISABLE_XATTRS: &str = "com.amazon.soci.disable-xattrs";
    /// v2: on an image manifest (and its descriptor): the digest of its SOCI index.
    pub const INDEX_DIGEST: &str = "com.amazon.soci.index-digest";
    /// v2: on a SOCI index descriptor in an image index: the image manifest it belongs to.
    pub const IMAGE_MANIFEST_DIGEST: &str = "com.amazon.soci.image-manifest-digest";
}

/// containerd garbage-collection label keys and helpers (spec §4.5 step 6, §4.6).
pub mod label {
    /// Protects content from GC; value is an RFC 3339 time.
    pub const GC_ROOT: &str = "containerd.io/gc.root";
    /// References the config blob of a manifest or index.
    pub const GC_REF_CONFIG: &str = "containerd.io/gc.ref.content.config";
    /// On an image: references its SOCI index.
    pub const GC_REF_SOCI_INDEX: &str = "containerd.io/gc.ref.content.soci-index";
    /// Prefix of `…ztoc.<i>` labels on a SOCI index, one per `layers[i]`.
    pub const GC_REF_ZTOC_PREFIX: &str = "containerd.io/gc.ref.content.ztoc.";
    /// Prefix of `…l.<i>` labels on an image manifest, one per layer.
    pub const GC_REF_LAYER_PREFIX: &str = "containerd.io/gc.ref.content.l.";
    /// Prefix of `…m.<i>` labels on an image index, one per manifest.
    pub const GC_REF_MANIFEST_PREFIX: &str = "containerd.io/gc.ref.content.m.";
}

/// The 2-byte `{}` config blob of every SOCI index.
pub const EMPTY_CONFIG: &[u8] = b"{}";
/// Digest of [`EMPTY_CONFIG`].
pub const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// Size of [`EMPTY_CONFIG`].
pub const EMPTY_CONFIG_SIZE: u64 = 2;
/// The build tool identifier the `soci` CLI writes.
pub const DEFAULT_BUILD_TOOL_IDENTIFIER: &str = "AWS SOCI CLI v0.2";
/// Default span size: 4 MiB (spec §2.8).
pub const DEFAULT_SPAN_SIZE: u64 = 1 << 22;
/// Default minimum layer size for building a zTOC: 10 MiB (spec §2.8).
pub const DEFAULT_MIN_LAYER_SIZE: u64 = 10 << 20;
/// The only prefetch artifact version (spec §4.4).
pub const PREFETCH_ARTIFACT_VERSION: &str = "1.0";
