//! The SOCI implementation of [`RemoteLayers`]: index discovery (spec §4.7), artifact fetch (§4.8),
//! lazy mounts with soci-fs (§5.5) over soci-registry range reads, and local snapshots (§5.14).
//!
//! This is the one adapter module between the snapshotter and soci-registry / soci-index /
//! soci-fs. The snapshotter calls it from blocking threads; registry calls are bridged with
//! `Handle::block_on`, which is only ever reached from blocking-pool or FUSE threads, never from a
//! runtime worker.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use soci_fs::{BlobSource, RequestKind, SourceError};
use soci_registry::{Client, Digest, Reference};
use tracing::{debug, info, warn};

use super::fetcher::LayerFetcher;
pub use super::hosts::ClientTuning;
use super::hosts::{registry_hosts, Hosts};
use super::parallel::{LayerDesc, Parallel};
use super::resolver::{ResolveJob, Resolver, PRERESOLVE_QUEUE};
use super::unpack::Expected;
use super::{RemoteError, RemoteLayers};
use crate::config::{Config, ResolverConfig};
use crate::snapshotter::label;

const V1_ARTIFACT_TYPE: &str = "application/vnd.amazon.soci.index.v1+json";
const V2_INDEX_ANNOTATION: &str = "com.amazon.soci.index-digest";

/// Settings taken from the daemon config.
#[derive(Debug, Clone)]
pub struct SociOptions {
    /// `[pull_modes.soci_v1].enable`.
    pub soci_v1: bool,
    /// `[pull_modes.soci_v2].enable`.
    pub soci_v2: bool,
    /// `disable_verification`.
    pub disable_verification: bool,
    /// `[fuse]` timeouts in seconds: attr, entry, negative.
    pub fuse_timeouts: (u64, u64, u64),
    /// `[blob].max_span_verification_retries`.
    pub max_span_verification_retries: u32,
    /// `[background_fetch].disable`.
    pub background_fetch_disable: bool,
    /// `[background_fetch]` as soci-fs options.
    pub background_fetch: soci_fs::BackgroundFetchOptions,
    /// `[http]`: the client for SOCI indexes, zTOCs and whole-layer downloads.
    pub http: ClientTuning,
    /// `[blob]` (each value defaulting to `[http]`'s): the client for lazy range reads.
    pub blob: ClientTuning,
    /// `[prefetch].enable`: fetch the spans of a layer's prefetch artifact right after mount.
    pub prefetch: bool,
    /// `[prefetch].max_concurrency`: layers prefetching at once (0 = unlimited).
    pub prefetch_max_concurrency: usize,
    /// `mount_timeout_sec`: how long a mount waits for its layer to resolve (spec §5.5).
    pub mount_timeout: Duration,
    /// `max_concurrency`: pre-resolutions of sibling layers at once (≤ 0: unbounded).
    pub preresolve_concurrency: i64,
    /// `resolve_result_entry`: resolved layers kept until mounted.
    pub resolve_result_entry: usize,
    /// `fuse_metrics_emit_wait_duration_sec`: when the per-image FUSE operation counts are
    /// emitted after an image's first mount.
    pub fuse_metrics_emit_wait: Duration,
    /// `[resolver]`: mirrors per registry host.
    pub resolver: ResolverConfig,
    /// `[blob] valid_interval` (zero with `check_always`): how often `Check` probes a lazy layer's
    /// registry host.
    pub blob_check_interval: std::time::Duration,
    /// `[pull_modes.parallel_pull_unpack]` when parallel pull is the primary mode or the fallback.
    pub parallel: Option<super::parallel::ParallelOptions>,
    /// `decompress_streams`: external gzip/zstd decompressors for unpacked layers.
    pub decompressors: super::unpack::Decompressors,
    /// `[cri_keychain]`: credentials captured from CRI `PullImage` requests (spec §5.13).
    pub cri_keychain: Option<Arc<crate::cri::Keychain>>,
}

impl SociOptions {
    /// From the daemon config.
    pub fn from_config(c: &Config) -> SociOptions {
        SociOptions {
            soci_v1: c.pull_modes.soci_v1.enable,
            soci_v2: c.pull_modes.soci_v2.enable,
            disable_verification: c.disable_verification,
            fuse_timeouts: (
                c.fuse.attr_timeout as u64,
                c.fuse.entry_timeout as u64,
                c.fuse.negative_timeout as u64,
            ),
            max_span_verification_retries: c.blob.max_span_verification_retries.max(0) as u32,
            background_fetch_disable: c.background_fetch.disable,
            background_fetch: {
                let b = &c.background_fetch;
                let mut o = soci_fs::BackgroundFetchOptions::default();
                o.silence_period =
                    std::time::Duration::from_millis(b.silence_period_msec.max(0) as u64);
                o.fetch_period =
                    std::time::Duration::from_millis(b.fetch_period_msec.max(0) as u64);
                o.max_queue_size = usize::try_from(b.max_queue_size).ok();
                o.drop_policy = if b.drop_policy == "oldest" {
                    soci_fs::DropPolicy::Oldest
                } else {
                    soci_fs::DropPolicy::Newest
                };
                o.emit_metric_period =
                    std::time::Duration::from_secs(b.emit_metric_period_sec.max(1) as u64);
                o
            },
            http: ClientTuning {
                max_retries: c.http.max_retries.max(0) as u32,
                min_wait: msec(c.http.min_wait_msec),
                max_wait: msec(c.http.max_wait_msec),
                request_timeout: msec(c.http.request_timeout_msec),
                dial_timeout: msec(c.http.dial_timeout_msec),
            },
            blob: ClientTuning {
                max_retries: c.blob.max_retries.max(0) as u32,
                min_wait: msec(c.blob.min_wait_msec),
                max_wait: msec(c.blob.max_wait_msec),
                request_timeout: msec(c.blob.fetching_timeout_sec.saturating_mul(1000)),
                dial_timeout: msec(c.http.dial_timeout_msec),
            },
            prefetch: c.prefetch.enable,
            prefetch_max_concurrency: usize::try_from(c.prefetch.max_concurrency).unwrap_or(0),
            mount_timeout: Duration::from_secs(c.mount_timeout_sec.max(1) as u64),
            preresolve_concurrency: c.max_concurrency,
            resolve_result_entry: usize::try_from(c.resolve_result_entry).unwrap_or(30),
            fuse_metrics_emit_wait: Duration::from_secs(
                c.fuse_metrics_emit_wait_duration_sec.max(0) as u64,
            ),
            resolver: c.resolver.clone(),
            blob_check_interval: std::time::Duration::from_secs(c.blob.valid_interval.max(0) as u64),
            parallel: None,
            decompressors: super::unpack::decompressors(c),
            cri_keychain: None,
        }
    }
}

fn msec(v: i64) -> std::time::Duration {
    std::time::Duration::from_millis(v.max(0) as u64)
}

/// SOCI artifacts of one image (one platform manifest).
#[derive(Debug)]
struct ImageArtifacts {
    /// The SOCI index used.
    index: String,
    /// layer digest → (zTOC digest, zTOC size, disable-xattrs)
    ztocs: HashMap<String, (String, u64, bool)>,
    /// layer digest → (prefetch artifact digest, size) (spec §4.4).
    prefetch: HashMap<String, (String, u64)>,
}

/// Decodes and validates a prefetch artifact blob (spec §4.4) into the inclusive span ranges
/// soci-fs prefetches at mount. Negative span ids are an error.
///
/// # Errors
///
/// A message when the blob is missing, malformed, of another version, empty or has negative ids.
pub fn prefetch_spans(bytes: Option<&[u8]>) -> Result<Vec<(u32, u32)>, String> {
    let bytes = bytes.ok_or("prefetch artifact not in the local store")?;
    let a = soci_index::PrefetchArtifact::from_json(bytes).map_err(|e| chain(&e))?;
    a.prefetch_spans
        .iter()
        .map(
            |s| match (u32::try_from(s.start_span), u32::try_from(s.end_span)) {
                (Ok(a), Ok(b)) => Ok((a, b)),
                _ => Err(format!(
                    "negative span id in prefetch range {}..={}",
                    s.start_span, s.end_span
                )),
            },
        )
        .collect()
}

type Discovery = Arc<OnceLock<Result<Arc<ImageArtifacts>, String>>>;

/// SOCI lazy layers.
pub struct Soci {
    rt: tokio::runtime::Handle,
    root: PathBuf,
    opts: SociOptions,
    /// Registry hosts (mirrors, then the registry) with their clients, per registry name.
    hosts: Mutex<HashMap<String, Arc<Hosts>>>,
    /// The blob fetcher of each lazily mounted layer (for `Check`).
    fetchers: Mutex<HashMap<PathBuf, Arc<LayerFetcher>>>,
    images: Mutex<HashMap<String, Discovery>>,
    mounts: Mutex<HashMap<PathBuf, (String, soci_fs::MountHandle)>>,
    fetcher: Option<soci_fs::BackgroundFetcher>,
    /// soci-fs counters per layer digest, kept for the daemon's lifetime (the exported
    /// per-layer counters are cumulative) and shared by the mounts of one layer.
    layer_metrics: Arc<Mutex<HashMap<String, Arc<soci_fs::Metrics>>>>,
    /// Images (manifest digests) whose per-image FUSE operation counts are scheduled.
    image_counts: Mutex<std::collections::HashSet<String>>,
    /// `[prefetch].max_concurrency`, shared by every layer's prefetch.
    prefetch_limit: Arc<soci_fs::ConcurrencyLimit>,
    /// Pre-resolution of sibling layers and the resolved-layer cache (spec §5.5, §5.6).
    resolver: Arc<Resolver>,
    /// Images whose first mount already paused the background fetcher.
    paused: Mutex<std::collections::HashSet<String>>,
    /// Layers (with diffIDs) of image manifests, from the manifest and config.
    layer_lists: Mutex<HashMap<String, Arc<Vec<LayerDesc>>>>,
    /// Parallel pull/unpack, when configured.
    parallel: Option<Parallel>,
    /// What an id-mapped view of a mounted layer reuses, by the layer's mount point.
    shared: Mutex<HashMap<PathBuf, SharedLayer>>,
    /// Id-mapped views (spec §5.3.7) by mount point.
    idmapped: Mutex<HashMap<PathBuf, soci_fs::MountHandle>>,
}

/// The parts of a mounted layer that an id-mapped view of it shares.
struct SharedLayer {
    layer: String,
    tree: Arc<soci_fs::Tree>,
    spans: Arc<soci_fs::SpanManager>,
    fopts: soci_fs::FsOptions,
}

impl std::fmt::Debug for Soci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Soci")
            .field("root", &self.root)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    crate::error::chain(e)
}

impl Soci {
    /// Creates the SOCI remote layers under `root` (the daemon root). Must be called inside the
    /// runtime (it captures the handle).
    pub fn new(root: &Path, opts: SociOptions) -> Result<Soci, RemoteError> {
        for d in ["content/blobs/sha256", "soci/spancache", "unpack"] {
            std::fs::create_dir_all(root.join(d))
                .map_err(|e| RemoteError::other("creating state dirs", e))?;
        }
        // The scratch space of unpacks is wiped at startup (spec §5.2).
        if let Ok(rd) = std::fs::read_dir(root.join("unpack")) {
            for e in rd.flatten() {
                let _ =
                    std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
            }
        }
        let fetcher = if opts.background_fetch_disable {
            info!("background fetch is disabled");
            None
        } else {
            info!("constructing background fetcher");
            Some(soci_fs::BackgroundFetcher::new(
                opts.background_fetch.clone(),
            ))
        };
        let prefetch_limit = Arc::new(soci_fs::ConcurrencyLimit::new(
            opts.prefetch_max_concurrency,
        ));
        let resolver = Arc::new(Resolver::new(
            opts.preresolve_concurrency,
            opts.resolve_result_entry,
            PRERESOLVE_QUEUE,
        ));
        let parallel = opts.parallel.clone().map(|p| Parallel::new(root, p));
        Ok(Soci {
            rt: tokio::runtime::Handle::current(),
            root: root.to_path_buf(),
            opts,
            hosts: Mutex::new(HashMap::new()),
            fetchers: Mutex::new(HashMap::new()),
            images: Mutex::new(HashMap::new()),
            mounts: Mutex::new(HashMap::new()),
            fetcher,
            layer_metrics: Arc::new(Mutex::new(HashMap::new())),
            image_counts: Mutex::new(std::collections::HashSet::new()),
            prefetch_limit,
            resolver,
            paused: Mutex::new(std::collections::HashSet::new()),
            shared: Mutex::new(HashMap::new()),
            idmapped: Mutex::new(HashMap::new()),
            layer_lists: Mutex::new(HashMap::new()),
            parallel,
        })
    }

    /// The layers of image `manifest` with their diffIDs (manifest and config fetched once per
    /// manifest digest).
    fn image_layers(
        &self,
        client: &Client,
        reference: &Reference,
        manifest: &str,
    ) -> Result<Arc<Vec<LayerDesc>>, RemoteError> {
        if let Some(l) = self
            .layer_lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(manifest)
        {
            return Ok(l.clone());
        }
        let err = |e: String| RemoteError::other("reading image manifest and config", e);
        let md = Digest::from_str(manifest).map_err(|e| err(e.to_string()))?;
        let layers = self.rt.block_on(async {
            let m = client
                .get_manifest(&reference.to_digest(&md))
                .await
                .map_err(|e| format!("fetching manifest {manifest}: {}", chain(&e)))?;
            let v: serde_json::Value = serde_json::from_slice(&m.bytes)
                .map_err(|e| format!("decoding image manifest: {e}"))?;
            let cd = v
                .pointer("/config/digest")
                .and_then(|d| d.as_str())
                .ok_or("image manifest has no config digest")?;
            let cd = Digest::from_str(cd).map_err(|e| format!("config digest {cd:?}: {e}"))?;
            let size = v.pointer("/config/size").and_then(|d| d.as_u64());
            let config = client
                .get_blob(reference, &cd, size)
                .await
                .map_err(|e| format!("fetching image config {cd}: {}", chain(&e)))?;
            super::parallel::layers_of(&m.bytes, &config)
        });
        let layers = Arc::new(layers.map_err(err)?);
        self.layer_lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(manifest.to_string(), layers.clone());
        Ok(layers)
    }

    /// The registry hosts of `reference` (spec §5.12): its `[resolver.host]` mirrors in order,
    /// then its registry, each with an `[http]` and a `[blob]` client. Clients are shared per
    /// registry, except for an image with a CRI keychain credential (§5.13), whose clients are
    /// keyed by image and credential.
    fn hosts(&self, reference: &Reference) -> Result<Arc<Hosts>, RemoteError> {
        let cri = self
            .opts
            .cri_keychain
            .as_ref()
            .and_then(|k| k.lookup(&reference.to_string()));
        let key = match &cri {
            None => reference.registry().to_string(),
            Some(c) => format!("{}\n{reference}\n{}", reference.registry(), c.fingerprint),
        };
        let mut m = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = m.get(&key) {
            return Ok(h.clone());
        }
        let list = registry_hosts(&self.opts.resolver, reference.registry());
        debug!(
            registry = reference.registry(),
            hosts = ?list.iter().map(|h| h.endpoint.to_string()).collect::<Vec<_>>(),
            "registry hosts"
        );
        if cri.is_some() {
            info!(image = %reference, "using CRI keychain credential for image");
        }
        let h = Arc::new(
            Hosts::with_auth(list, &self.opts.http, &self.opts.blob, cri.map(|c| c.auth))
                .map_err(|e| RemoteError::other("building registry client", chain(&e)))?,
        );
        m.insert(key, h.clone());
        Ok(h)
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.root.join("content/blobs/sha256").join(hex))
    }

    fn local_get(&self, digest: &str) -> Option<Vec<u8>> {
        let p = self.blob_path(digest)?;
        let data = std::fs::read(p).ok()?;
        Digest::sha256_of(&data)
            .to_string()
            .eq(digest)
            .then_some(data)
    }

    fn local_put(&self, digest: &str, data: &[u8]) {
        if let Some(p) = self.blob_path(digest) {
            let tmp = p.with_extension(format!("tmp-{}", std::process::id()));
            if std::fs::write(&tmp, data).is_ok() {
                let _ = std::fs::rename(&tmp, &p);
            }
        }
    }

    /// Discovery (§4.7) and fetch (§4.8), once per manifest digest for the daemon's lifetime.
    fn artifacts(
        &self,
        image: &str,
        manifest: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Arc<ImageArtifacts>, RemoteError> {
        let cell = {
            let mut m = self.images.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(manifest.to_string()).or_default().clone()
        };
        let res = cell.get_or_init(|| self.discover_and_fetch(image, manifest, labels));
        res.clone().map_err(|cause| RemoteError::NoIndex {
            image: image.to_string(),
            cause,
        })
    }

    fn discover_and_fetch(
        &self,
        image: &str,
        manifest: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Arc<ImageArtifacts>, String> {
        let reference = Reference::from_str(image)
            .map_err(|e| format!("invalid image reference {image:?}: {e}"))?;
        let hosts = self.hosts(&reference).map_err(|e| e.to_string())?;
        let manifest_digest = Digest::from_str(manifest)
            .map_err(|e| format!("invalid manifest digest {manifest:?}: {e}"))?;
        let index_digest =
            self.rt
                .block_on(self.discover(&hosts, &reference, &manifest_digest, labels))?;
        info!(digest = %index_digest, "fetching SOCI artifacts using index descriptor");
        self.rt
            .block_on(self.fetch(&hosts, &reference, &index_digest))
            .map(Arc::new)
    }

    async fn discover(
        &self,
        hosts: &Hosts,
        reference: &Reference,
        manifest: &Digest,
        labels: &BTreeMap<String, String>,
    ) -> Result<Digest, String> {
        if let Some(d) = labels
            .get(label::SOCI_INDEX_DIGEST)
            .filter(|s| !s.is_empty())
        {
            debug!(digest = %d, "using provided soci index digest");
            return Digest::from_str(d)
                .map_err(|e| format!("invalid soci index digest {d:?}: {e}"));
        }
        debug!("index digest not provided");
        if !self.opts.soci_v1 && !self.opts.soci_v2 {
            return Err("all lazy pull modes are disabled".into());
        }
        if self.opts.soci_v2 {
            debug!("checking for soci v2 index annotation");
            let by_digest = reference.to_digest(manifest);
            let m = hosts
                .first(|c| {
                    let r = by_digest.clone();
                    async move { c.get_manifest(&r).await }
                })
                .await
                .map_err(|e| format!("failed to fetch image manifest: {e}"))?;
            let v: serde_json::Value = serde_json::from_slice(&m.bytes)
                .map_err(|e| format!("failed to decode image manifest: {e}"))?;
            if let Some(d) = v
                .pointer(&format!(
                    "/annotations/{}",
                    V2_INDEX_ANNOTATION.replace('~', "~0").replace('/', "~1")
                ))
                .and_then(|x| x.as_str())
                .filter(|s| !s.is_empty())
            {
                debug!(digest = d, "using soci v2 index annotation");
                return Digest::from_str(d)
                    .map_err(|e| format!("invalid soci v2 index annotation {d:?}: {e}"));
            }
            debug!("soci v2 index annotation not found");
        } else {
            debug!("soci v2 is disabled");
        }
        if self.opts.soci_v1 {
            debug!("checking for soci v1 index via referrers API");
            // A host without referrers (e.g. a mirror) moves on to the next one.
            let found = hosts
                .first_ok(|c| async move {
                    let r = c
                        .referrers(reference, manifest, Some(V1_ARTIFACT_TYPE))
                        .await?;
                    Ok(r.descriptors.into_iter().next())
                })
                .await
                .map_err(|e| format!("failed to list referrers: {e}"))?;
            if let Some(d) = found {
                debug!(digest = %d.digest, "using soci v1 index via referrers API");
                return Ok(d.digest.clone());
            }
            debug!("soci v1 referrers not found");
        } else {
            debug!("soci v1 is disabled");
        }
        Err("no soci index found".into())
    }

    async fn fetch(
        &self,
        hosts: &Hosts,
        reference: &Reference,
        index_digest: &Digest,
    ) -> Result<ImageArtifacts, String> {
        info!(digest = %index_digest, "fetching SOCI index from remote registry");
        let bytes = match self.local_get(index_digest.as_str()) {
            Some(b) => b,
            None => {
                let started = Instant::now();
                let by_digest = reference.to_digest(index_digest);
                let m = hosts
                    .first(|c| {
                        let r = by_digest.clone();
                        async move { c.get_manifest(&r).await }
                    })
                    .await
                    .map_err(|e| format!("cannot fetch soci index {index_digest}: {e}"))?;
                crate::metrics::observe(
                    "soci_index_fetch",
                    index_digest.as_str(),
                    started.elapsed(),
                );
                self.local_put(index_digest.as_str(), &m.bytes);
                m.bytes.to_vec()
            }
        };
        let index = soci_index::Index::from_json(&bytes)
            .map_err(|e| format!("cannot parse soci index {index_digest}: {}", chain(&e)))?;
        let mut ztocs = HashMap::new();
        // zTOC digest → its layer digest (the `layer` label of `ztoc_fetch`).
        let ztoc_layers: HashMap<String, String> = index
            .ztocs()
            .filter_map(|d| {
                let layer = d.annotations.get("com.amazon.soci.image-layer-digest")?;
                Some((d.digest.as_str().to_string(), layer.clone()))
            })
            .collect();
        let ztoc_layers = &ztoc_layers;
        let mut futs = Vec::new();
        for d in index.blobs() {
            let digest = d.digest.as_str().to_string();
            if self.local_get(&digest).is_some() {
                continue;
            }
            let dg = Digest::from_str(&digest)
                .map_err(|e| format!("invalid blob digest {digest}: {e}"))?;
            let size = d.size;
            futs.push(async move {
                info!(digest = %dg, "fetching artifact from remote");
                let started = Instant::now();
                let b = hosts
                    .first(|c| {
                        let dg = dg.clone();
                        async move { c.get_blob(reference, &dg, Some(size)).await }
                    })
                    .await
                    .map_err(|e| format!("cannot fetch artifact {dg}: {e}"))?;
                if let Some(layer) = ztoc_layers.get(dg.as_str()) {
                    crate::metrics::observe("ztoc_fetch", layer, started.elapsed());
                }
                Ok::<(String, bytes::Bytes), String>((dg.to_string(), b))
            });
        }
        let mut results = Vec::new();
        for f in futs {
            results.push(f.await?);
        }
        for (d, b) in results {
            self.local_put(&d, &b);
        }
        for d in index.ztocs() {
            if let Some(layer) = d.annotations.get("com.amazon.soci.image-layer-digest") {
                ztocs.insert(
                    layer.clone(),
                    (
                        d.digest.as_str().to_string(),
                        d.size,
                        soci_index::disables_xattrs(d),
                    ),
                );
            }
        }
        let prefetch = index
            .prefetch_by_layer()
            .into_iter()
            .map(|(layer, d)| (layer.to_string(), (d.digest.to_string(), d.size)))
            .collect();
        Ok(ImageArtifacts {
            index: index_digest.to_string(),
            ztocs,
            prefetch,
        })
    }
}

/// Range reads of one layer blob through soci-registry: the [`BlobSource`] the snapshotter mounts
/// lazy layers with, public so other programs (the `mount-remote-layer` example) can reuse it.
///
/// Each [`BlobSource::read_at`] is one [`Client::read_range`] run with `Handle::block_on`, so it
/// must be called from a thread outside the runtime (FUSE, blocking-pool or background-fetcher
/// threads); from a runtime worker it would panic.
#[derive(Debug)]
pub struct RegistryBlob {
    rt: tokio::runtime::Handle,
    client: Client,
    reference: Reference,
    digest: Digest,
}

impl RegistryBlob {
    /// Reads blob `digest` of the repository of `reference` through `client` on runtime `rt`.
    pub fn new(
        rt: tokio::runtime::Handle,
        client: Client,
        reference: Reference,
        digest: Digest,
    ) -> RegistryBlob {
        RegistryBlob {
            rt,
            client,
            reference,
            digest,
        }
    }
}

impl BlobSource for RegistryBlob {
    fn read_at(&self, range: Range<u64>, _kind: RequestKind) -> Result<Vec<u8>, SourceError> {
        // Called from FUSE or blocking-pool threads only (never a runtime worker).
        let len = range.end.saturating_sub(range.start);
        let started = Instant::now();
        let res = self
            .rt
            .block_on(
                self.client
                    .read_range(&self.reference, &self.digest, range.start, len),
            )
            .map(|b| b.to_vec())
            .map_err(|e| SourceError::Remote(Box::new(e)));
        if res.is_ok() {
            crate::metrics::observe(
                "remote_registry_get",
                self.digest.as_str(),
                started.elapsed(),
            );
        }
        res
    }
}

/// The layer's histograms observer: soci-fs reports `synchronous_read`, `node_readdir` and
/// `background_fetch` through it.
#[derive(Debug)]
struct LayerObserver {
    layer: String,
}

impl soci_fs::Observer for LayerObserver {
    fn observe(&self, op: soci_fs::Operation, elapsed: Duration) {
        crate::metrics::observe(op.name(), &self.layer, elapsed);
    }

    fn fuse_failure(&self) {
        crate::metrics::fuse_failure();
    }
}

/// The `[http]` client of the first registry host (the first mirror, else the registry): the one
/// the image's manifest and config and the parallel pull's downloads go through.
fn first_http(hosts: &Hosts) -> Result<Client, RemoteError> {
    hosts
        .entries()
        .first()
        .map(|h| h.http.clone())
        .ok_or_else(|| RemoteError::other("resolving registry hosts", "no usable registry host"))
}

/// The image reference, manifest digest and layer digest labels every remote path needs, with
/// the reference's messages for each missing one.
fn image_labels(labels: &BTreeMap<String, String>) -> Result<(&str, &str, &str), RemoteError> {
    Ok((
        required(
            labels,
            label::CRI_IMAGE_REF,
            "unable to get image ref from labels",
        )?,
        required(
            labels,
            label::CRI_MANIFEST_DIGEST,
            "unable to get image digest from labels",
        )?,
        required(labels, label::CRI_LAYER_DIGEST, "digest hasn't been passed")?,
    ))
}

fn required<'a>(
    labels: &'a BTreeMap<String, String>,
    key: &str,
    msg: &'static str,
) -> Result<&'a str, RemoteError> {
    labels
        .get(key)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(RemoteError::MissingLabel(msg))
}

impl Soci {
    /// What resolving `layer` of `image` with its zTOC `ztoc_digest` (in the local store) needs.
    fn resolve_job(
        &self,
        image: &str,
        layer: &str,
        ztoc_digest: &str,
    ) -> Result<ResolveJob, String> {
        let ztoc_bytes = self
            .local_get(ztoc_digest)
            .ok_or_else(|| format!("ztoc {ztoc_digest} not in the local store"))?;
        let reference = Reference::from_str(image).map_err(|e| e.to_string())?;
        let hosts = self.hosts(&reference).map_err(|e| e.to_string())?;
        let digest = Digest::from_str(layer).map_err(|e| e.to_string())?;
        let fetcher = Arc::new(LayerFetcher::new(
            self.rt.clone(),
            hosts,
            reference,
            digest,
            self.opts.blob_check_interval,
        ));
        let mut span_options = soci_fs::SpanOptions::default();
        span_options.max_span_verification_retries = self.opts.max_span_verification_retries;
        Ok(ResolveJob {
            layer: layer.to_string(),
            ztoc_bytes,
            source: fetcher.clone(),
            fetcher: Some(fetcher),
            cache_parent: self.root.join("soci/spancache"),
            span_options,
            metrics: self.layer_metrics(layer),
        })
    }

    /// Queues the pre-resolution of every other layer of the image's SOCI index that is not
    /// mounted yet (spec §5.5 step 4).
    fn preresolve_siblings(&self, image: &str, target: &str, arts: &ImageArtifacts) {
        let mounted: std::collections::HashSet<String> = self
            .mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|(d, _)| d.clone())
            .collect();
        for (layer, (ztoc_digest, _, _)) in &arts.ztocs {
            let key = format!("{image}/{layer}");
            if layer == target || mounted.contains(layer) || self.resolver.knows(&key) {
                continue;
            }
            match self.resolve_job(image, layer, ztoc_digest) {
                Ok(job) => self.resolver.preresolve(key, job),
                Err(error) => debug!(layerDigest = %layer, error, "failed to pre-resolve"),
            }
        }
    }

    /// On the first mount of an image, emits its FUSE operation counts (summed over its lazy
    /// layers) once after `fuse_metrics_emit_wait_duration_sec` (spec §5.5, §5.11): metric
    /// `soci_fs_image_operation_count_key` and `fuse operation count for image <d>: <op> = <n>`.
    fn schedule_image_counts(&self, manifest: &str, arts: &ImageArtifacts) {
        if !self
            .image_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(manifest.to_string())
        {
            return;
        }
        let image = manifest.to_string();
        let layers: Vec<String> = arts.ztocs.keys().cloned().collect();
        let all = self.layer_metrics.clone();
        let wait = self.opts.fuse_metrics_emit_wait;
        let spawned = std::thread::Builder::new()
            .name("soci-image-ops".into())
            .spawn(move || {
                std::thread::sleep(wait);
                let snaps: Vec<soci_fs::MetricsSnapshot> = {
                    let m = all.lock().unwrap_or_else(|e| e.into_inner());
                    layers
                        .iter()
                        .filter_map(|l| m.get(l).map(|x| x.snapshot()))
                        .collect()
                };
                for (op, n) in crate::metrics::image_operation_counts(&snaps) {
                    crate::metrics::set_image_count(&image, op, n);
                    info!("fuse operation count for image {image}: {op} = {n}");
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the per-image FUSE operation counter");
        }
    }

    /// The soci-fs counters of `layer` (created with its histogram observer on first use).
    fn layer_metrics(&self, layer: &str) -> Arc<soci_fs::Metrics> {
        self.layer_metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(layer.to_string())
            .or_insert_with(|| {
                Arc::new(soci_fs::Metrics::with_observer(Arc::new(LayerObserver {
                    layer: layer.to_string(),
                })))
            })
            .clone()
    }

    /// Updates the per-layer metrics of every mounted layer.
    pub fn refresh_metrics(&self) {
        for (digest, m) in self
            .layer_metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            crate::metrics::set_layer_counters(digest, &m.snapshot());
        }
        if let Some(f) = &self.fetcher {
            crate::metrics::set_image_count(
                "",
                "background_fetch_work_queue_size",
                f.stats().queue_size,
            );
        }
        for (mp, (digest, h)) in self.mounts.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let spans = h.spans();
            crate::metrics::set_layer(
                digest,
                &mp.to_string_lossy(),
                spans.blob_size(),
                spans.fetched_size(),
            );
        }
    }
}

impl Soci {
    /// The span ranges of `layer`'s prefetch artifact (spec §5.10), empty when prefetch is
    /// disabled, the layer has none, or the artifact cannot be loaded (warned).
    fn load_prefetch(&self, arts: &ImageArtifacts, image: &str, layer: &str) -> Vec<(u32, u32)> {
        let Some((digest, size)) = arts.prefetch.get(layer) else {
            return Vec::new();
        };
        if !self.opts.prefetch {
            debug!(
                layerDigest = layer,
                "Prefetch is disabled in config, skipping prefetch"
            );
            return Vec::new();
        }
        info!(layerDigest = layer, "Loading prefetch artifact {digest}");
        let bytes = self
            .local_get(digest)
            .or_else(|| self.fetch_artifact(image, digest, *size));
        match prefetch_spans(bytes.as_deref()) {
            Ok(spans) => {
                info!(
                    layerDigest = layer,
                    "Successfully loaded prefetch artifact with {} span ranges",
                    spans.len()
                );
                spans
            }
            Err(error) => {
                warn!(
                    layerDigest = layer,
                    digest = %digest,
                    error,
                    "Failed to execute prefetch, continuing without prefetch"
                );
                Vec::new()
            }
        }
    }

    /// Fetches one SOCI artifact blob missing from the local store and stores it.
    fn fetch_artifact(&self, image: &str, digest: &str, size: u64) -> Option<Vec<u8>> {
        let reference = Reference::from_str(image).ok()?;
        let dg = Digest::from_str(digest).ok()?;
        let hosts = self.hosts(&reference).ok()?;
        info!(digest, "fetching artifact from remote");
        let got = self.rt.block_on(hosts.first(|c| {
            let (r, dg) = (reference.clone(), dg.clone());
            async move { c.get_blob(&r, &dg, Some(size)).await }
        }));
        match got {
            Ok(b) => {
                self.local_put(digest, &b);
                Some(b.to_vec())
            }
            Err(error) => {
                warn!(digest, error, "cannot fetch artifact");
                None
            }
        }
    }
}

impl RemoteLayers for Soci {
    fn mount(
        &self,
        mountpoint: &Path,
        labels: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, RemoteError> {
        let started = Instant::now();
        let (image, manifest, layer) = image_labels(labels)?;
        let arts = self.artifacts(image, manifest, labels)?;
        let Some((ztoc_digest, _, disable_xattrs)) = arts.ztocs.get(layer).cloned() else {
            info!(
                layerDigest = layer,
                image, "skipping mounting layer as FUSE mount: no ztoc for layer"
            );
            return Err(RemoteError::NoZtoc {
                layer: layer.to_string(),
            });
        };
        let resolve = |cause: String| RemoteError::Resolve {
            layer: layer.to_string(),
            image: image.to_string(),
            cause,
        };
        let job = self
            .resolve_job(image, layer, &ztoc_digest)
            .map_err(resolve)?;
        self.preresolve_siblings(image, layer, &arts);
        let (spans, tree, fetcher) = self
            .resolver
            .resolve(&format!("{image}/{layer}"), job, self.opts.mount_timeout)
            .map_err(resolve)?;
        let mut fopts = soci_fs::FsOptions::default();
        let (a, e, n) = self.opts.fuse_timeouts;
        fopts.attr_timeout = std::time::Duration::from_secs(a);
        fopts.entry_timeout = std::time::Duration::from_secs(e);
        fopts.negative_timeout = std::time::Duration::from_secs(n);
        fopts.disable_verification = self.opts.disable_verification;
        fopts.disable_xattrs = disable_xattrs;
        fopts.statfs_path = Some(self.root.join("soci"));
        let fs = soci_fs::LayerFs::new(tree, spans.clone(), layer, fopts.clone());
        let shared = SharedLayer {
            layer: layer.to_string(),
            tree: fs.shared_tree(),
            spans: spans.clone(),
            fopts,
        };
        let mut mopts = soci_fs::MountOptions::default();
        mopts.prefetch_spans = self.load_prefetch(&arts, image, layer);
        mopts.prefetch_limit = Some(self.prefetch_limit.clone());
        let fuse_started = Instant::now();
        let handle = soci_fs::mount(fs, mountpoint, &mopts)
            .map_err(|e| RemoteError::other("mounting layer", chain(&e)))?;
        crate::metrics::observe("fuse_mount", layer, fuse_started.elapsed());
        if let Some(f) = &self.fetcher {
            if self
                .paused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(manifest.to_string())
            {
                debug!("new image mounted, pausing the background fetcher for silence period");
                f.pause();
            }
            f.add_layer(&spans);
        }
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mountpoint.to_path_buf(), (layer.to_string(), handle));
        if let Some(fetcher) = fetcher {
            self.fetchers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(mountpoint.to_path_buf(), fetcher);
        }
        crate::metrics::observe("mount", layer, started.elapsed());
        self.schedule_image_counts(manifest, &arts);
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mountpoint.to_path_buf(), shared);
        Ok([(label::SOCI_INDEX_DIGEST.to_string(), arts.index.clone())].into())
    }

    fn check(
        &self,
        mountpoint: &Path,
        _labels: &BTreeMap<String, String>,
    ) -> Result<(), RemoteError> {
        // A layer not fully fetched yet needs its registry: check (and re-resolve) its host.
        let incomplete = self
            .mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(mountpoint)
            .map(|(_, h)| {
                let spans = h.spans();
                spans.fetched_size() < spans.blob_size()
            });
        let Some(incomplete) = incomplete else {
            return Err(RemoteError::Unavailable(format!(
                "layer at {} is not mounted",
                mountpoint.display()
            )));
        };
        let fetcher = self
            .fetchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(mountpoint)
            .cloned();
        match fetcher {
            Some(f) if incomplete => f.check().map_err(|e| {
                RemoteError::Unavailable(format!(
                    "layer at {} cannot reach its registry: {e}",
                    mountpoint.display()
                ))
            }),
            _ => Ok(()),
        }
    }

    fn unmount(&self, mountpoint: &Path) -> Result<(), RemoteError> {
        let view = self
            .idmapped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(mountpoint);
        if let Some(h) = view {
            return h
                .unmount()
                .map_err(|e| RemoteError::other("unmounting id-mapped layer", chain(&e)));
        }
        self.fetchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(mountpoint);
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(mountpoint);
        let h = self
            .mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(mountpoint);
        match h {
            Some((digest, h)) => {
                crate::metrics::remove_layer(&digest, &mountpoint.to_string_lossy());
                h.unmount()
                    .map_err(|e| RemoteError::other("unmounting layer", chain(&e)))
            }
            None => Ok(()),
        }
    }

    fn unpack_local(
        &self,
        dir: &Path,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RemoteError> {
        let (image, manifest, layer) = image_labels(labels)?;
        let reference =
            Reference::from_str(image).map_err(|e| RemoteError::other("parsing image ref", e))?;
        let hosts = self.hosts(&reference)?;
        let digest =
            Digest::from_str(layer).map_err(|e| RemoteError::other("parsing layer digest", e))?;
        let size = labels
            .get(label::SOCI_SIZE)
            .and_then(|s| s.parse::<u64>().ok());
        // Download into the snapshotter's content store (digest-verified), then apply.
        let blob = match self.blob_path(layer) {
            Some(p) if p.exists() => p,
            _ => {
                let scratch = self.root.join("unpack").join(format!(
                    "{}-{}",
                    std::process::id(),
                    digest.encoded()
                ));
                // The registry hosts in order (mirrors first); each try starts a fresh file.
                let res = self.rt.block_on(async {
                    let mut errors = Vec::new();
                    for h in hosts.entries() {
                        let mut f = tokio::fs::File::create(&scratch)
                            .await
                            .map_err(|e| RemoteError::other("creating scratch file", e))?;
                        match h.http.copy_blob(&reference, &digest, size, &mut f).await {
                            Ok(_) => {
                                use tokio::io::AsyncWriteExt;
                                f.flush()
                                    .await
                                    .map_err(|e| RemoteError::other("writing layer", e))?;
                                return Ok(());
                            }
                            Err(e) => {
                                errors.push(format!("{}: {}", h.host.endpoint, chain(&e)));
                            }
                        }
                    }
                    Err(RemoteError::other("downloading layer", errors.join("; ")))
                });
                if let Err(e) = res {
                    let _ = std::fs::remove_file(&scratch);
                    return Err(e);
                }
                match self.blob_path(layer) {
                    Some(p) => {
                        std::fs::rename(&scratch, &p)
                            .map_err(|e| RemoteError::other("storing layer blob", e))?;
                        p
                    }
                    None => scratch,
                }
            }
        };
        let layers = self.image_layers(&first_http(&hosts)?, &reference, manifest)?;
        let desc = layers.iter().find(|l| l.digest == layer).ok_or_else(|| {
            RemoteError::other(
                "local snapshot",
                format!("layer {layer} is not in image manifest {manifest}"),
            )
        })?;
        let n = super::unpack::apply_blob(
            &blob,
            &desc.media_type,
            dir,
            Expected {
                compressed: Some(layer),
                diff_id: Some(&desc.diff_id),
            },
            &self.opts.decompressors,
        )?;
        debug!(layer, entries = n, "applied layer locally");
        Ok(())
    }

    fn unpack_parallel(
        &self,
        dir: &Path,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RemoteError> {
        let Some(parallel) = &self.parallel else {
            return Err(RemoteError::other(
                "parallel pull/unpack",
                "parallel_pull_unpack is not configured",
            ));
        };
        let (image, manifest, layer) = image_labels(labels)?;
        let reference =
            Reference::from_str(image).map_err(|e| RemoteError::other("parsing image ref", e))?;
        let client = first_http(&*self.hosts(&reference)?)?;
        let layers = self.image_layers(&client, &reference, manifest)?;
        parallel.prepare(
            client,
            reference,
            manifest,
            layers,
            layer,
            labels.get(label::REMOTE_NAMESPACE).map(String::as_str),
            dir,
        )
    }

    fn cancel_parallel(&self, manifest: &str) {
        if let Some(p) = &self.parallel {
            p.cancel(manifest);
        }
    }

    fn mounted(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .idmapped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.extend(
            self.mounts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned(),
        );
        v
    }

    fn mount_idmapped(
        &self,
        source: &Path,
        mountpoint: &Path,
        map: &soci_fs::IdMap,
    ) -> Result<(), RemoteError> {
        let fs = {
            let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            let Some(l) = shared.get(source) else {
                return Err(RemoteError::Unavailable(format!(
                    "layer at {} is not mounted",
                    source.display()
                )));
            };
            let mut fopts = l.fopts.clone();
            fopts.id_map = Some(map.clone());
            soci_fs::LayerFs::new(l.tree.clone(), l.spans.clone(), l.layer.clone(), fopts)
        };
        let mut mopts = soci_fs::MountOptions::default();
        mopts.close_spans_on_unmount = false;
        let handle = soci_fs::mount(fs, mountpoint, &mopts)
            .map_err(|e| RemoteError::other("mounting id-mapped layer", chain(&e)))?;
        debug!(source = %source.display(), "mount-point" = %mountpoint.display(), "id-mapped layer mounted");
        self.idmapped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mountpoint.to_path_buf(), handle);
        Ok(())
    }
}

impl Drop for Soci {
    fn drop(&mut self) {
        if let Some(f) = self.fetcher.take() {
            f.stop();
        }
        let n = self.mounts.lock().map(|m| m.len()).unwrap_or(0);
        if n > 0 {
            warn!(mounts = n, "dropping remote layers with active mounts");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soci(root: &Path, prefetch: bool) -> (tokio::runtime::Runtime, Soci) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut c = Config::default();
        c.prefetch.enable = prefetch;
        c.background_fetch.disable = true;
        let s = {
            let _g = rt.enter();
            Soci::new(root, SociOptions::from_config(&c)).expect("soci")
        };
        (rt, s)
    }

    fn arts(layer: &str, blob: &[u8]) -> ImageArtifacts {
        ImageArtifacts {
            index: String::new(),
            ztocs: HashMap::new(),
            prefetch: [(
                layer.to_string(),
                (Digest::sha256_of(blob).to_string(), blob.len() as u64),
            )]
            .into(),
        }
    }

    #[test]
    fn load_prefetch_reads_validates_and_honours_enable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = Digest::sha256_of(b"layer").to_string();
        let good = br#"{"version":"1.0","prefetch_spans":[{"start_span":3,"end_span":5},{"start_span":9,"end_span":9,"priority":2}]}"#;
        let bad = br#"{"version":"2.0","prefetch_spans":[{"start_span":1,"end_span":2}]}"#;
        let (_rt, s) = soci(dir.path(), true);
        let d = Digest::sha256_of(good).to_string();
        s.local_put(&d, good);
        let d = Digest::sha256_of(bad).to_string();
        s.local_put(&d, bad);
        assert_eq!(
            s.load_prefetch(&arts(&layer, good), "127.0.0.1:1/x/y:t", &layer),
            vec![(3, 5), (9, 9)]
        );
        // Another layer has no artifact; an invalid one only warns.
        let other = Digest::sha256_of(b"other").to_string();
        assert!(s
            .load_prefetch(&arts(&layer, good), "127.0.0.1:1/x/y:t", &other)
            .is_empty());
        assert!(s
            .load_prefetch(&arts(&layer, bad), "127.0.0.1:1/x/y:t", &layer)
            .is_empty());
        drop(s);
        let (_rt, s) = soci(dir.path(), false);
        assert!(s
            .load_prefetch(&arts(&layer, good), "127.0.0.1:1/x/y:t", &layer)
            .is_empty());
    }
}
