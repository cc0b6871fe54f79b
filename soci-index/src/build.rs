//! Building a SOCI index from an image manifest (spec §4.5), given a way to build zTOCs.
//!
//! The builder never touches tar or gzip data: the caller supplies each layer's serialized zTOC
//! plus a few facts about it through [`ZtocInfo`], either all at once through a [`LayerIndexer`]
//! ([`IndexBuilder::build`], sequential) or by running the jobs of an [`IndexPlan`] however it
//! likes (in parallel, on a blocking pool, from a cache) and handing the results to
//! [`IndexPlan::finish`].

use std::fmt;
use std::str::FromStr;

use crate::consts::{
    annotation, media_type, DEFAULT_BUILD_TOOL_IDENTIFIER, DEFAULT_MIN_LAYER_SIZE,
    DEFAULT_SPAN_SIZE,
};
use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::{Index, IndexVersion};
use crate::manifest::Manifest;
use crate::prefetch::{
    file_span_range, merge_span_ranges, normalize_prefetch_path, PrefetchArtifact, PrefetchSpan,
};

/// A layer compression SOCI can index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// gzip (single or multi-member).
    Gzip,
    /// A plain tar, stored in the zTOC as `Uncompressed`.
    Uncompressed,
}

/// What [`classify_layer`] decided for a layer media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerClass {
    /// Build a zTOC for this compression.
    Indexable(Compression),
    /// A layer SOCI cannot index; it is skipped and pulled normally. `algorithm` is containerd's
    /// name for the compression (`zstd`, or empty for wrapped/encrypted/non-distributable types).
    Unsupported {
        /// containerd's compression name.
        algorithm: String,
    },
}

/// Whether `media_type` is a layer media type (containerd's `IsLayerType`): any
/// `application/vnd.oci.image.layer.*` type, or one of the Docker layer types (ignoring `+…`
/// suffixes).
#[must_use]
pub fn is_layer_media_type(media_type: &str) -> bool {
    if media_type.starts_with("application/vnd.oci.image.layer.") {
        return true;
    }
    let base = media_type.split('+').next().unwrap_or_default();
    matches!(
        base,
        media_type::DOCKER_LAYER
            | media_type::DOCKER_LAYER_GZIP
            | media_type::DOCKER_LAYER_FOREIGN
            | media_type::DOCKER_LAYER_FOREIGN_GZIP
            | media_type::DOCKER_LAYER_ZSTD
    )
}

/// containerd's compression name for a layer media type (`gzip`, `zstd`, `unknown` or empty).
fn containerd_compression(media: &str) -> Result<&'static str> {
    let mut parts = media.split('+');
    let base = parts.next().unwrap_or_default();
    let suffixes: Vec<&str> = parts.collect();
    let wrapped = !suffixes.is_empty();
    Ok(match base {
        media_type::DOCKER_LAYER | media_type::DOCKER_LAYER_FOREIGN => {
            if wrapped {
                ""
            } else {
                // The type does not say; containerd sniffs the stream. SOCI indexes it as tar.
                "unknown"
            }
        }
        media_type::DOCKER_LAYER_GZIP | media_type::DOCKER_LAYER_FOREIGN_GZIP => {
            if wrapped {
                ""
            } else {
                "gzip"
            }
        }
        media_type::DOCKER_LAYER_ZSTD => {
            if wrapped {
                ""
            } else {
                "zstd"
            }
        }
        media_type::OCI_LAYER | media_type::OCI_LAYER_NON_DISTRIBUTABLE => match suffixes.last() {
            Some(&"gzip") => "gzip",
            Some(&"zstd") => "zstd",
            // Plain, or wrapped (e.g. `+encrypted`): not something SOCI can read.
            _ => "",
        },
        _ => {
            return Err(Error::UnrecognisedLayerMediaType {
                media_type: media.to_owned(),
            })
        }
    })
}

/// Classifies a layer media type (spec §2.7).
///
/// | media type | result |
/// |---|---|
/// | OCI `…tar+gzip`, non-distributable `…tar+gzip`, Docker `…tar.gzip`, foreign `…tar.gzip` | gzip |
/// | OCI `…layer.v1.tar` exactly | uncompressed |
/// | Docker `…diff.tar`, foreign `…diff.tar` | uncompressed (containerd: `unknown`) |
/// | OCI `…tar+zstd`, Docker `…tar.zstd` | unsupported `zstd` |
/// | wrapped (`+encrypted`, also `+gzip+encrypted`), non-distributable `…tar` | unsupported `""` |
///
/// # Errors
///
/// [`Error::NotALayer`] if the media type is not a layer type at all (this aborts an index
/// build); [`Error::UnrecognisedLayerMediaType`] for an `application/vnd.oci.image.layer.*` type
/// whose base type is unknown.
pub fn classify_layer(media: &str) -> Result<LayerClass> {
    if !is_layer_media_type(media) {
        return Err(Error::NotALayer {
            media_type: media.to_owned(),
        });
    }
    Ok(match containerd_compression(media)? {
        "gzip" => LayerClass::Indexable(Compression::Gzip),
        "unknown" => LayerClass::Indexable(Compression::Uncompressed),
        "" if media == media_type::OCI_LAYER => LayerClass::Indexable(Compression::Uncompressed),
        other => LayerClass::Unsupported {
            algorithm: other.to_owned(),
        },
    })
}

/// Whether a TOC entry name is an opaque-directory whiteout (ends with `.wh..wh..opq`).
#[must_use]
pub fn is_opaque_whiteout(name: &[u8]) -> bool {
    name.ends_with(b".wh..wh..opq")
}

/// Whether a PAX record key is an extended attribute (`SCHILY.xattr.*`).
#[must_use]
pub fn is_xattr_record(key: &[u8]) -> bool {
    key.starts_with(b"SCHILY.xattr.")
}

/// The disable-xattrs rule (spec §4.3): a layer may be mounted without xattr support when no TOC
/// entry has an xattr PAX record and no entry is an opaque whiteout.
#[must_use]
pub fn can_disable_xattrs(has_xattr_records: bool, has_opaque_whiteout: bool) -> bool {
    !has_xattr_records && !has_opaque_whiteout
}

/// The annotations of a zTOC descriptor (spec §4.3): image layer digest and media type, span
/// size, and `disable-xattrs: true` when requested and allowed.
#[must_use]
pub fn ztoc_descriptor(
    ztoc: &[u8],
    layer: &Descriptor,
    span_size: u64,
    disable_xattrs: bool,
) -> Descriptor {
    let desc = Descriptor::for_content(media_type::ZTOC, ztoc)
        .with_annotation(annotation::IMAGE_LAYER_DIGEST, layer.digest.as_str())
        .with_annotation(
            annotation::IMAGE_LAYER_MEDIA_TYPE,
            layer.media_type.as_str(),
        )
        .with_annotation(annotation::SPAN_SIZE, span_size.to_string());
    if disable_xattrs {
        desc.with_annotation(annotation::DISABLE_XATTRS, "true")
    } else {
        desc
    }
}

/// An index build optimization (`soci create --optimizations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Optimization {
    /// `xattr`: mark layers that need no xattr support (spec §4.3).
    Xattr,
}

impl FromStr for Optimization {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "xattr" => Ok(Self::Xattr),
            _ => Err(Error::InvalidOptimization { name: s.to_owned() }),
        }
    }
}

impl fmt::Display for Optimization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Xattr => "xattr",
        })
    }
}

/// What the builder needs to know about one built (or reused) zTOC.
///
/// The `soci-ztoc` adapter implements it over a parsed zTOC.
pub trait ZtocInfo {
    /// The serialized zTOC: the blob that is digested and pushed.
    fn bytes(&self) -> &[u8];

    /// Whether any TOC entry carries a `SCHILY.xattr.*` PAX record (see [`is_xattr_record`]).
    fn has_xattr_records(&self) -> bool;

    /// Whether any TOC entry name ends with `.wh..wh..opq` (see [`is_opaque_whiteout`]).
    fn has_opaque_whiteout(&self) -> bool;

    /// `(uncompressed offset, size)` of the file data of the TOC entry whose **raw** name equals
    /// `name` (no cleaning: `./etc/x` does not match `etc/x`, spec §4.4 step 2).
    fn find_file(&self, name: &[u8]) -> Option<(u64, u64)>;

    /// The id of the span containing `uncompressed_offset` (clamped to the last span).
    fn span_of(&self, uncompressed_offset: u64) -> u32;
}

/// A zTOC handed back for one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Indexed<Z> {
    /// The zTOC.
    pub ztoc: Z,
    /// True if it was found in the artifacts DB and reused rather than built (only changes the
    /// message: `… (already exists)`).
    pub reused: bool,
}

impl<Z> Indexed<Z> {
    /// A freshly built zTOC.
    pub fn built(ztoc: Z) -> Self {
        Self {
            ztoc,
            reused: false,
        }
    }

    /// A zTOC reused from an earlier build.
    pub fn reused(ztoc: Z) -> Self {
        Self { ztoc, reused: true }
    }
}

/// Builds (or loads) the zTOC of one layer; used by [`IndexBuilder::build`].
pub trait LayerIndexer {
    /// The zTOC type returned.
    type Ztoc: ZtocInfo;
    /// The error type; any error aborts the build.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Produces the zTOC for `job`. Implementations fetch the layer blob, build the zTOC with
    /// `job.compression` and `job.span_size`, and store it; or reuse one from the artifacts DB
    /// when one with the same layer digest and span size exists (unless forced).
    ///
    /// # Errors
    ///
    /// Whatever prevented producing the zTOC.
    fn index_layer(&mut self, job: &LayerJob<'_>) -> Result<Indexed<Self::Ztoc>, Self::Error>;
}

impl<Z, E, F> LayerIndexer for F
where
    Z: ZtocInfo,
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut(&LayerJob<'_>) -> Result<Indexed<Z>, E>,
{
    type Ztoc = Z;
    type Error = E;

    fn index_layer(&mut self, job: &LayerJob<'_>) -> Result<Indexed<Z>, E> {
        self(job)
    }
}

/// One zTOC to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerJob<'a> {
    /// Position of the layer in the image manifest.
    pub position: usize,
    /// The image layer.
    pub layer: &'a Descriptor,
    /// How the layer is compressed.
    pub compression: Compression,
    /// The span size to build with.
    pub span_size: u64,
}

/// Why a layer gets no zTOC.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// `size < min_layer_size`.
    TooSmall {
        /// The layer size.
        size: u64,
        /// The configured minimum.
        min_layer_size: u64,
    },
    /// The compression is not supported (zstd, wrapped, ...).
    UnsupportedCompression {
        /// containerd's compression name.
        algorithm: String,
    },
}

/// What happens to one manifest layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerAction {
    /// Build a zTOC.
    Build(Compression),
    /// Skip with a message.
    Skip(SkipReason),
    /// A prefetch artifact listed in the manifest: ignored silently.
    Ignore,
}

/// One layer of an [`IndexPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannedLayer {
    /// Position in the image manifest.
    pub position: usize,
    /// The image layer descriptor.
    pub layer: Descriptor,
    /// What to do.
    pub action: LayerAction,
}

/// A progress line of an index build; `Display` gives the exact text the Go CLI prints.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildEvent {
    /// `ztoc skipped - layer <digest> (<mediaType>) …`
    LayerSkipped {
        /// The image layer.
        layer: Digest,
        /// Its media type.
        media_type: String,
        /// Why.
        reason: SkipReason,
    },
    /// `layer <layer> -> ztoc <ztoc>` (+ ` (already exists)` when reused).
    Ztoc {
        /// The image layer.
        layer: Digest,
        /// The zTOC blob.
        ztoc: Digest,
        /// Whether it was reused.
        reused: bool,
    },
    /// `prefetch file <path> not found in any layer` (a warning).
    PrefetchFileNotFound {
        /// The path as requested.
        path: String,
    },
    /// `Created prefetch artifact for layer <layer>: <artifact>`.
    PrefetchArtifactCreated {
        /// The image layer.
        layer: Digest,
        /// The artifact blob.
        artifact: Digest,
    },
}

impl BuildEvent {
    /// Whether this is a warning rather than progress.
    #[must_use]
    pub fn is_warning(&self) -> bool {
        matches!(self, Self::PrefetchFileNotFound { .. })
    }
}

impl fmt::Display for BuildEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LayerSkipped {
                layer,
                media_type,
                reason: SkipReason::TooSmall { size, min_layer_size },
            } => write!(
                f,
                "ztoc skipped - layer {layer} ({media_type}) size {size} is less than min-layer-size {min_layer_size}"
            ),
            Self::LayerSkipped {
                layer,
                media_type,
                reason: SkipReason::UnsupportedCompression { algorithm },
            } => write!(
                f,
                "ztoc skipped - layer {layer} ({media_type}) is compressed in an unsupported format. \
                 expect: [tar, gzip, unknown] but got \"{algorithm}\""
            ),
            Self::Ztoc { layer, ztoc, reused } => {
                write!(f, "layer {layer} -> ztoc {ztoc}")?;
                if *reused {
                    f.write_str(" (already exists)")?;
                }
                Ok(())
            }
            Self::PrefetchFileNotFound { path } => write!(f, "prefetch file {path} not found in any layer"),
            Self::PrefetchArtifactCreated { layer, artifact } => {
                write!(f, "Created prefetch artifact for layer {layer}: {artifact}")
            }
        }
    }
}

/// A zTOC that made it into the index.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerZtoc<Z> {
    /// Position of the image layer in the manifest.
    pub position: usize,
    /// The image layer.
    pub layer: Descriptor,
    /// The zTOC descriptor as listed in the index (with annotations).
    pub descriptor: Descriptor,
    /// The zTOC as supplied.
    pub ztoc: Z,
    /// Whether it was reused.
    pub reused: bool,
}

/// A prefetch artifact that made it into the index.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerPrefetch {
    /// The image layer.
    pub layer: Digest,
    /// The artifact.
    pub artifact: PrefetchArtifact,
    /// Its Go JSON bytes, to store.
    pub bytes: Vec<u8>,
    /// Its descriptor as listed in the index.
    pub descriptor: Descriptor,
}

/// The outcome of an index build. Storing the blobs, the empty config and the index, writing
/// GC labels and artifacts DB entries is up to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuiltIndex<Z> {
    /// The index.
    pub index: Index,
    /// Its Go JSON bytes.
    pub bytes: Vec<u8>,
    /// `{mediaType: OCI manifest, digest, size}` of `bytes`.
    pub descriptor: Descriptor,
    /// The zTOCs in image layer order.
    pub ztocs: Vec<LayerZtoc<Z>>,
    /// The prefetch artifacts in image layer order.
    pub prefetch_artifacts: Vec<LayerPrefetch>,
    /// Progress lines in layer order, then prefetch lines.
    pub events: Vec<BuildEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    version: IndexVersion,
    span_size: u64,
    min_layer_size: u64,
    build_tool_identifier: String,
    optimize_xattrs: bool,
    prefetch_paths: Vec<String>,
}

/// Builds a SOCI index for one platform manifest (spec §4.5).
///
/// ```
/// use soci_index::{media_type, Descriptor, IndexBuilder, IndexVersion, Indexed, LayerJob, Manifest, ZtocInfo};
///
/// // A stand-in zTOC; real code uses the soci-ztoc adapter.
/// struct Fake(Vec<u8>);
/// impl ZtocInfo for Fake {
///     fn bytes(&self) -> &[u8] { &self.0 }
///     fn has_xattr_records(&self) -> bool { false }
///     fn has_opaque_whiteout(&self) -> bool { false }
///     fn find_file(&self, name: &[u8]) -> Option<(u64, u64)> { (name == b"etc/hosts").then_some((0, 10)) }
///     fn span_of(&self, _offset: u64) -> u32 { 0 }
/// }
///
/// let layer = Descriptor::for_content(media_type::OCI_LAYER_GZIP, &[0u8; 64]);
/// let config = Descriptor::for_content(media_type::OCI_CONFIG, b"{}");
/// let manifest = Manifest::new(media_type::OCI_MANIFEST, config, vec![layer]);
/// let manifest_desc = Descriptor::for_content(media_type::OCI_MANIFEST, &manifest.to_json());
///
/// let mut builder = IndexBuilder::new(IndexVersion::V1);
/// builder.min_layer_size(0).prefetch_paths(["/etc/hosts"]);
/// let built = builder
///     .build(&manifest_desc, &manifest, |job: &LayerJob<'_>| {
///         Ok::<_, std::io::Error>(Indexed::built(Fake(format!("ztoc of {}", job.layer.digest).into_bytes())))
///     })
///     .unwrap();
/// assert_eq!(built.index.blobs().len(), 2); // one zTOC + one prefetch artifact
/// assert!(built.events[0].to_string().starts_with("layer sha256:"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexBuilder {
    config: Config,
}

impl IndexBuilder {
    /// A builder for an index of `version` with the CLI defaults.
    #[must_use]
    pub fn new(version: IndexVersion) -> Self {
        Self {
            config: Config {
                version,
                span_size: DEFAULT_SPAN_SIZE,
                min_layer_size: DEFAULT_MIN_LAYER_SIZE,
                build_tool_identifier: DEFAULT_BUILD_TOOL_IDENTIFIER.to_owned(),
                optimize_xattrs: false,
                prefetch_paths: Vec::new(),
            },
        }
    }

    /// Span size passed to every zTOC build and written in the `span-size` annotation.
    ///
    /// By default 4 MiB.
    pub fn span_size(&mut self, span_size: u64) -> &mut Self {
        self.config.span_size = span_size;
        self
    }

    /// Layers smaller than this are skipped.
    ///
    /// By default 10 MiB.
    pub fn min_layer_size(&mut self, min_layer_size: u64) -> &mut Self {
        self.config.min_layer_size = min_layer_size;
        self
    }

    /// The `com.amazon.soci.build-tool-identifier` annotation.
    ///
    /// By default `AWS SOCI CLI v0.2`.
    pub fn build_tool_identifier(&mut self, id: impl Into<String>) -> &mut Self {
        self.config.build_tool_identifier = id.into();
        self
    }

    /// Enables an optimization.
    ///
    /// By default none is enabled.
    pub fn optimization(&mut self, optimization: Optimization) -> &mut Self {
        match optimization {
            Optimization::Xattr => self.config.optimize_xattrs = true,
        }
        self
    }

    /// Paths to build prefetch artifacts for; appended to any given before.
    ///
    /// By default none.
    pub fn prefetch_paths<I, S>(&mut self, paths: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config
            .prefetch_paths
            .extend(paths.into_iter().map(Into::into));
        self
    }

    /// Decides what to do with every layer of `manifest` without building anything.
    ///
    /// `manifest_descriptor` is the platform manifest's descriptor; a v1 index uses its
    /// `mediaType`, `digest` and `size` as `subject`.
    ///
    /// # Errors
    ///
    /// [`Error::NotALayer`] or [`Error::UnrecognisedLayerMediaType`] for a layer that is not an
    /// image layer; this aborts the build as in Go.
    pub fn plan(&self, manifest_descriptor: &Descriptor, manifest: &Manifest) -> Result<IndexPlan> {
        let layers = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(position, layer)| {
                let action = self.layer_action(layer)?;
                Ok(PlannedLayer {
                    position,
                    layer: layer.clone(),
                    action,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(IndexPlan {
            config: self.config.clone(),
            subject: manifest_descriptor.to_plain(),
            layers,
        })
    }

    fn layer_action(&self, layer: &Descriptor) -> Result<LayerAction> {
        if layer.media_type == media_type::PREFETCH {
            return Ok(LayerAction::Ignore);
        }
        if !is_layer_media_type(&layer.media_type) {
            return Err(Error::NotALayer {
                media_type: layer.media_type.clone(),
            });
        }
        if layer.size < self.config.min_layer_size {
            return Ok(LayerAction::Skip(SkipReason::TooSmall {
                size: layer.size,
                min_layer_size: self.config.min_layer_size,
            }));
        }
        Ok(match classify_layer(&layer.media_type)? {
            LayerClass::Indexable(c) => LayerAction::Build(c),
            LayerClass::Unsupported { algorithm } => {
                LayerAction::Skip(SkipReason::UnsupportedCompression { algorithm })
            }
        })
    }

    /// Plans, runs `indexer` on every job in layer order, and finishes the index.
    ///
    /// # Errors
    ///
    /// The errors of [`IndexBuilder::plan`] and [`IndexPlan::finish`], and
    /// [`Error::BuildLayer`] for the first layer whose indexer call fails.
    pub fn build<X: LayerIndexer>(
        &self,
        manifest_descriptor: &Descriptor,
        manifest: &Manifest,
        mut indexer: X,
    ) -> Result<BuiltIndex<X::Ztoc>> {
        let plan = self.plan(manifest_descriptor, manifest)?;
        let mut results = Vec::new();
        for job in plan.jobs() {
            let indexed = indexer.index_layer(&job).map_err(|e| Error::BuildLayer {
                layer: job.layer.digest.clone(),
                source: Box::new(e),
            })?;
            results.push((job.position, indexed));
        }
        plan.finish(results)
    }
}

/// The per-layer decisions of an index build; see [`IndexBuilder::plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPlan {
    config: Config,
    subject: Descriptor,
    layers: Vec<PlannedLayer>,
}

impl IndexPlan {
    /// Every manifest layer with its action, in manifest order.
    #[must_use]
    pub fn layers(&self) -> &[PlannedLayer] {
        &self.layers
    }

    /// The zTOCs to build, in manifest order.
    pub fn jobs(&self) -> impl Iterator<Item = LayerJob<'_>> {
        let span_size = self.config.span_size;
        self.layers.iter().filter_map(move |l| match l.action {
            LayerAction::Build(compression) => Some(LayerJob {
                position: l.position,
                layer: &l.layer,
                compression,
                span_size,
            }),
            _ => None,
        })
    }

    /// Assembles the index from one zTOC per job (keyed by [`LayerJob::position`], in any order):
    /// zTOC descriptors in image layer order, then prefetch artifacts (spec §4.4, §4.5).
    ///
    /// # Errors
    ///
    /// [`Error::UnexpectedZtoc`] / [`Error::MissingZtoc`] if `ztocs` does not match the jobs one
    /// to one; [`Error::NoZtocs`] if there are no jobs at all.
    pub fn finish<Z: ZtocInfo>(
        self,
        ztocs: impl IntoIterator<Item = (usize, Indexed<Z>)>,
    ) -> Result<BuiltIndex<Z>> {
        let Self {
            config,
            subject,
            layers,
        } = self;
        let mut slots: Vec<Option<Indexed<Z>>> = layers.iter().map(|_| None).collect();
        for (position, indexed) in ztocs {
            let wanted = layers
                .get(position)
                .is_some_and(|l| matches!(l.action, LayerAction::Build(_)));
            match slots.get_mut(position) {
                Some(slot @ None) if wanted => *slot = Some(indexed),
                _ => return Err(Error::UnexpectedZtoc { position }),
            }
        }

        let mut events = Vec::new();
        let mut built = Vec::new();
        for (planned, slot) in layers.into_iter().zip(slots) {
            match (&planned.action, slot) {
                (LayerAction::Skip(reason), _) => events.push(BuildEvent::LayerSkipped {
                    layer: planned.layer.digest.clone(),
                    media_type: planned.layer.media_type.clone(),
                    reason: reason.clone(),
                }),
                (LayerAction::Ignore, _) => {}
                (LayerAction::Build(_), None) => {
                    return Err(Error::MissingZtoc {
                        position: planned.position,
                        layer: planned.layer.digest,
                    })
                }
                (LayerAction::Build(_), Some(Indexed { ztoc, reused })) => {
                    let disable = config.optimize_xattrs
                        && can_disable_xattrs(ztoc.has_xattr_records(), ztoc.has_opaque_whiteout());
                    let descriptor =
                        ztoc_descriptor(ztoc.bytes(), &planned.layer, config.span_size, disable);
                    events.push(BuildEvent::Ztoc {
                        layer: planned.layer.digest.clone(),
                        ztoc: descriptor.digest.clone(),
                        reused,
                    });
                    built.push(LayerZtoc {
                        position: planned.position,
                        layer: planned.layer,
                        descriptor,
                        ztoc,
                        reused,
                    });
                }
            }
        }
        if built.is_empty() {
            return Err(Error::NoZtocs);
        }

        let prefetch_artifacts = prefetch_artifacts(&config.prefetch_paths, &built, &mut events);
        let blobs = built
            .iter()
            .map(|z| z.descriptor.clone())
            .chain(prefetch_artifacts.iter().map(|p| p.descriptor.clone()))
            .collect();
        let index = match config.version {
            IndexVersion::V1 => Index::new_v1(blobs, &subject, &config.build_tool_identifier),
            IndexVersion::V2 => Index::new_v2(blobs, &config.build_tool_identifier),
        };
        let bytes = index.to_json();
        let descriptor = Descriptor::for_content(media_type::OCI_MANIFEST, &bytes);
        Ok(BuiltIndex {
            index,
            bytes,
            descriptor,
            ztocs: built,
            prefetch_artifacts,
            events,
        })
    }
}

/// Spec §4.4 build rules 1–5 over the layers that got a zTOC.
fn prefetch_artifacts<Z: ZtocInfo>(
    paths: &[String],
    built: &[LayerZtoc<Z>],
    events: &mut Vec<BuildEvent>,
) -> Vec<LayerPrefetch> {
    let mut ranges: Vec<Vec<PrefetchSpan>> = built.iter().map(|_| Vec::new()).collect();
    for path in paths {
        let wanted = normalize_prefetch_path(path);
        // Top-most layer first: the file a container would see.
        let hit = built.iter().enumerate().rev().find_map(|(i, layer)| {
            let (offset, size) = layer.ztoc.find_file(wanted.as_bytes())?;
            Some((i, file_span_range(offset, size, |o| layer.ztoc.span_of(o))))
        });
        match hit {
            Some((i, range)) => ranges[i].push(range),
            None => events.push(BuildEvent::PrefetchFileNotFound { path: path.clone() }),
        }
    }
    built
        .iter()
        .zip(ranges)
        .filter(|(_, r)| !r.is_empty())
        .map(|(layer, r)| {
            let artifact = PrefetchArtifact::new(merge_span_ranges(r));
            let bytes = artifact.to_json();
            let descriptor = artifact.descriptor(&layer.layer.digest);
            events.push(BuildEvent::PrefetchArtifactCreated {
                layer: layer.layer.digest.clone(),
                artifact: descriptor.digest.clone(),
            });
            LayerPrefetch {
                layer: layer.layer.digest.clone(),
                artifact,
                bytes,
                descriptor,
            }
        })
        .collect()
}
