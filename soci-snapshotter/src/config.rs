//! Daemon configuration: the TOML file of the reference implementation (spec §5.16), same keys and
//! defaults, at [`DEFAULT_CONFIG_PATH`].
//!
//! Loading is: defaults ([`Config::default`]), then the file (every table is `#[serde(default)]`, so
//! partial tables keep the other defaults), then [`Config::normalized`] (zero ⇒ default, as upstream),
//! then [`Config::validate`], which reports **every** problem at once. Unknown keys are returned by
//! [`Config::from_toml`] with their full path so the daemon can warn about them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default configuration file path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/soci-snapshotter-grpc/config.toml";
/// Default daemon root directory.
pub const DEFAULT_ROOT: &str = "/var/lib/soci-snapshotter-grpc/";
/// Default gRPC socket.
pub const DEFAULT_ADDRESS: &str = "/run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock";

/// Resolved-layer LRU size when `resolve_result_entry` is 0.
pub const DEFAULT_RESOLVE_RESULT_ENTRY: i64 = 30;
/// Layer pre-resolution concurrency when `max_concurrency` is 0.
pub const DEFAULT_MAX_CONCURRENCY: i64 = 100;
/// Seconds to wait for the target layer when `mount_timeout_sec` is 0.
pub const DEFAULT_MOUNT_TIMEOUT_SEC: i64 = 30;
/// Delay before per-image FUSE metrics when 0.
pub const DEFAULT_FUSE_METRICS_EMIT_WAIT_SEC: i64 = 60;
/// Metadata insertions per transaction when 0.
pub const DEFAULT_METADATA_INSERTION_CHUNK_SIZE: i64 = 5000;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Config {
    /// Unused legacy key.
    pub http_cache_type: String,
    /// `memory` ⇒ in-memory span cache; otherwise a directory cache.
    pub filesystem_cache_type: String,
    /// LRU size for resolved layers and blobs (0 ⇒ 30).
    pub resolve_result_entry: i64,
    /// FUSE library debug logging.
    pub debug: bool,
    /// Skip tar-header verification on first read.
    pub disable_verification: bool,
    /// Layer pre-resolution concurrency (0 ⇒ 100, negative ⇒ unlimited).
    pub max_concurrency: i64,
    /// Disable metrics.
    pub no_prometheus: bool,
    /// Seconds to wait for the target layer to resolve (0 ⇒ 30).
    pub mount_timeout_sec: i64,
    /// Delay before per-image FUSE operation metrics (0 ⇒ 60).
    pub fuse_metrics_emit_wait_duration_sec: i64,
    /// Metrics listener address (empty ⇒ none).
    pub metrics_address: String,
    /// `tcp` or `unix`.
    pub metrics_network: String,
    /// Debug (pprof) listener; accepted for compatibility, not served.
    pub debug_address: String,
    /// `db` or `db-multi`.
    pub metadata_store: String,
    /// Skip fsync on the metadata DB.
    pub metadata_db_no_sync: bool,
    /// Metadata insertions per transaction (0 ⇒ 5000).
    pub metadata_insertion_chunk_size: i64,
    /// Skip the overlayfs support probe at startup.
    pub skip_check_snapshotter_supported: bool,
    /// `[http]` (CamelCase keys, as upstream).
    pub http: HttpConfig,
    /// `[blob]`.
    pub blob: BlobConfig,
    /// `[directory_cache]`.
    pub directory_cache: DirectoryCacheConfig,
    /// `[fuse]`.
    pub fuse: FuseConfig,
    /// `[background_fetch]`.
    pub background_fetch: BackgroundFetchConfig,
    /// `[content_store]`.
    pub content_store: ContentStoreConfig,
    /// `[prefetch]`.
    pub prefetch: PrefetchConfig,
    /// `[pull_modes]`.
    pub pull_modes: PullModes,
    /// `[kubeconfig_keychain]`.
    pub kubeconfig_keychain: KubeconfigKeychain,
    /// `[cri_keychain]`.
    pub cri_keychain: CriKeychain,
    /// `[resolver]`.
    pub resolver: ResolverConfig,
    /// `[snapshotter]`.
    pub snapshotter: SnapshotterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_cache_type: String::new(),
            filesystem_cache_type: String::new(),
            resolve_result_entry: DEFAULT_RESOLVE_RESULT_ENTRY,
            debug: false,
            disable_verification: false,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            no_prometheus: false,
            mount_timeout_sec: DEFAULT_MOUNT_TIMEOUT_SEC,
            fuse_metrics_emit_wait_duration_sec: DEFAULT_FUSE_METRICS_EMIT_WAIT_SEC,
            metrics_address: String::new(),
            metrics_network: "tcp".into(),
            debug_address: String::new(),
            metadata_store: "db".into(),
            metadata_db_no_sync: false,
            metadata_insertion_chunk_size: DEFAULT_METADATA_INSERTION_CHUNK_SIZE,
            skip_check_snapshotter_supported: false,
            http: HttpConfig::default(),
            blob: BlobConfig::default(),
            directory_cache: DirectoryCacheConfig::default(),
            fuse: FuseConfig::default(),
            background_fetch: BackgroundFetchConfig::default(),
            content_store: ContentStoreConfig::default(),
            prefetch: PrefetchConfig::default(),
            pull_modes: PullModes::default(),
            kubeconfig_keychain: KubeconfigKeychain::default(),
            cri_keychain: CriKeychain::default(),
            resolver: ResolverConfig::default(),
            snapshotter: SnapshotterConfig::default(),
        }
    }
}

/// `[http]`: global HTTP client settings. Keys are CamelCase upstream (no snake_case aliases).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
#[non_exhaustive]
pub struct HttpConfig {
    /// Dial timeout (3000).
    pub dial_timeout_msec: i64,
    /// Response-header timeout (3000).
    pub response_header_timeout_msec: i64,
    /// Per-attempt total timeout (300000).
    pub request_timeout_msec: i64,
    /// Retries (8).
    pub max_retries: i64,
    /// Minimum backoff (30).
    pub min_wait_msec: i64,
    /// Maximum backoff (300000).
    pub max_wait_msec: i64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            dial_timeout_msec: 3000,
            response_header_timeout_msec: 3000,
            request_timeout_msec: 300_000,
            max_retries: 8,
            min_wait_msec: 30,
            max_wait_msec: 300_000,
        }
    }
}

/// `[blob]`: range-read settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BlobConfig {
    /// Seconds between connectivity checks (60; 0 with `check_always`).
    pub valid_interval: i64,
    /// Blob fetch timeout in seconds (300).
    pub fetching_timeout_sec: i64,
    /// Retries (0 ⇒ `[http].MaxRetries`).
    pub max_retries: i64,
    /// Minimum backoff (0 ⇒ `[http].MinWaitMsec`).
    pub min_wait_msec: i64,
    /// Maximum backoff (0 ⇒ `[http].MaxWaitMsec`).
    pub max_wait_msec: i64,
    /// Check connectivity on every `Check`.
    pub check_always: bool,
    /// Never send multi-range requests.
    pub force_single_range_mode: bool,
    /// Span digest mismatch retries (negative ⇒ 3).
    pub max_span_verification_retries: i64,
}

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig {
            valid_interval: 60,
            fetching_timeout_sec: 300,
            max_retries: 0,
            min_wait_msec: 0,
            max_wait_msec: 0,
            check_always: false,
            force_single_range_mode: false,
            max_span_verification_retries: 0,
        }
    }
}

/// `[directory_cache]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DirectoryCacheConfig {
    /// LRU entries (0 ⇒ 10).
    pub max_lru_cache_entry: i64,
    /// Open file descriptors (0 ⇒ 10).
    pub max_cache_fds: i64,
    /// Synchronous adds.
    pub sync_add: bool,
    /// Direct mode (no in-memory layer).
    pub direct: bool,
}

impl Default for DirectoryCacheConfig {
    fn default() -> Self {
        DirectoryCacheConfig {
            max_lru_cache_entry: 10,
            max_cache_fds: 10,
            sync_add: false,
            direct: true,
        }
    }
}

/// `[fuse]`: kernel cache timeouts in seconds (0 ⇒ 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct FuseConfig {
    /// Attribute timeout.
    pub attr_timeout: i64,
    /// Entry timeout.
    pub entry_timeout: i64,
    /// Negative entry timeout.
    pub negative_timeout: i64,
    /// Log every FUSE operation at debug.
    pub log_fuse_operations: bool,
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig {
            attr_timeout: 1,
            entry_timeout: 1,
            negative_timeout: 1,
            log_fuse_operations: false,
        }
    }
}

/// `[background_fetch]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BackgroundFetchConfig {
    /// Disable the background fetcher.
    pub disable: bool,
    /// Pause after a new image is mounted (30000).
    pub silence_period_msec: i64,
    /// One span fetch start per period (500).
    pub fetch_period_msec: i64,
    /// Queue bound (300; −1 unlimited).
    pub max_queue_size: i64,
    /// `newest` or `oldest`.
    pub drop_policy: String,
    /// Queue-size metric period (10).
    pub emit_metric_period_sec: i64,
}

impl Default for BackgroundFetchConfig {
    fn default() -> Self {
        BackgroundFetchConfig {
            disable: false,
            silence_period_msec: 30_000,
            fetch_period_msec: 500,
            max_queue_size: 300,
            drop_policy: "newest".into(),
            emit_metric_period_sec: 10,
        }
    }
}

/// `[content_store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ContentStoreConfig {
    /// `soci` (default) or `containerd`.
    #[serde(rename = "type")]
    pub kind: String,
    /// containerd socket for the `containerd` store.
    pub containerd_address: String,
}

impl Default for ContentStoreConfig {
    fn default() -> Self {
        ContentStoreConfig {
            kind: "soci".into(),
            containerd_address: "/run/containerd/containerd.sock".into(),
        }
    }
}

/// `[prefetch]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PrefetchConfig {
    /// Run prefetch artifacts.
    pub enable: bool,
    /// Layers prefetching at once (0 = unlimited).
    pub max_concurrency: i64,
}

/// `[pull_modes]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PullModes {
    /// `[pull_modes.soci_v1]` (default off).
    pub soci_v1: SociV1,
    /// `[pull_modes.soci_v2]` (default on).
    pub soci_v2: SociV2,
    /// `[pull_modes.parallel_pull_unpack]`.
    pub parallel_pull_unpack: ParallelPullUnpack,
}

/// `[pull_modes.soci_v1]`: default off (since upstream v0.10.0).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SociV1 {
    /// Whether the mode is on.
    pub enable: bool,
}

/// `[pull_modes.soci_v2]`: default on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SociV2 {
    /// Whether the mode is on.
    pub enable: bool,
}

impl Default for SociV2 {
    fn default() -> Self {
        SociV2 { enable: true }
    }
}

/// `[pull_modes.parallel_pull_unpack]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ParallelPullUnpack {
    /// Parallel pull as the primary mode.
    pub enable: bool,
    /// Parallel pull when no index exists.
    pub experimental_parallel_pull_as_fallback: bool,
    /// Global download limit (−1 unlimited).
    pub max_concurrent_downloads: i64,
    /// Per-image download limit.
    pub max_concurrent_downloads_per_image: i64,
    /// Chunk size (`""` ⇒ whole layer).
    pub concurrent_download_chunk_size: String,
    /// Global unpack limit (−1 unlimited).
    pub max_concurrent_unpacks: i64,
    /// Per-image unpack limit.
    pub max_concurrent_unpacks_per_image: i64,
    /// Do not keep unpacked layers' blobs.
    pub discard_unpacked_layers: bool,
    /// External decompressors keyed `gzip` / `zstd`.
    pub decompress_streams: BTreeMap<String, DecompressStream>,
}

impl Default for ParallelPullUnpack {
    fn default() -> Self {
        ParallelPullUnpack {
            enable: false,
            experimental_parallel_pull_as_fallback: false,
            max_concurrent_downloads: -1,
            max_concurrent_downloads_per_image: 3,
            concurrent_download_chunk_size: String::new(),
            max_concurrent_unpacks: -1,
            max_concurrent_unpacks_per_image: 1,
            discard_unpacked_layers: false,
            decompress_streams: BTreeMap::new(),
        }
    }
}

/// An external decompressor.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DecompressStream {
    /// Absolute path of the executable.
    pub path: String,
    /// Arguments.
    pub args: Vec<String>,
}

/// `[kubeconfig_keychain]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct KubeconfigKeychain {
    /// Enable.
    pub enable_keychain: bool,
    /// Path (empty ⇒ Kubernetes default).
    pub kubeconfig_path: String,
}

/// `[cri_keychain]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CriKeychain {
    /// Enable.
    pub enable_keychain: bool,
    /// Backend image service.
    pub image_service_path: String,
}

impl Default for CriKeychain {
    fn default() -> Self {
        CriKeychain {
            enable_keychain: false,
            image_service_path: "/run/containerd/containerd.sock".into(),
        }
    }
}

/// `[resolver]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ResolverConfig {
    /// Auth client TTL (0 ⇒ 3600, negative ⇒ never).
    pub auth_client_ttl_sec: i64,
    /// Share auth clients per (host, credential).
    pub enable_auth_client_sharing: bool,
    /// `[resolver.host."<registry>"]`.
    pub host: BTreeMap<String, HostConfig>,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            auth_client_ttl_sec: 3600,
            enable_auth_client_sharing: false,
            host: BTreeMap::new(),
        }
    }
}

/// `[resolver.host."<registry>"]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct HostConfig {
    /// Mirrors tried before the registry itself.
    pub mirrors: Vec<MirrorConfig>,
}

/// One mirror.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MirrorConfig {
    /// Mirror URL (write it with a scheme).
    pub host: String,
    /// Use plain HTTP.
    pub insecure: bool,
    /// Per-mirror timeout (0 = default, negative = none).
    pub request_timeout_sec: i64,
}

/// `[snapshotter]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SnapshotterConfig {
    /// Layers with a known smaller size are not lazily mounted.
    pub min_layer_size: i64,
    /// Keep starting when a remote snapshot cannot be restored.
    pub allow_invalid_mounts_on_restart: bool,
}

impl Config {
    /// Parses TOML text. Returns the config (not yet normalized or validated) and the full paths of
    /// unknown keys.
    pub fn from_toml(text: &str) -> Result<(Config, Vec<String>)> {
        let value: toml::Table = toml::from_str(text)
            .map_err(|e| Error::Config(format!("failed to parse config: {e}")))?;
        let mut unknown = Vec::new();
        let cfg: Config = serde_ignored::deserialize(toml::Value::Table(value), |path| {
            unknown.push(path.to_string())
        })
        .map_err(|e| Error::Config(format!("failed to parse config: {e}")))?;
        Ok((cfg, unknown))
    }

    /// Loads the config file. `explicit` says the path was given on the command line (or env): then a
    /// missing file is an error; a missing file at the default path means defaults.
    pub fn load(path: &Path, explicit: bool) -> Result<(Config, Vec<String>)> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok((Config::default().normalized(), Vec::new()))
            }
            Err(e) => {
                return Err(Error::Config(format!(
                    "failed to open config file {:?}: {e}",
                    path.display().to_string()
                )))
            }
        };
        let (cfg, unknown) = Config::from_toml(&text)?;
        let cfg = cfg.normalized();
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(Error::Config(format!(
                "invalid config {:?}: {}",
                path.display().to_string(),
                problems.join("; ")
            )));
        }
        Ok((cfg, unknown))
    }

    /// Replaces zero/empty values by their defaults, as upstream does after decoding.
    pub fn normalized(mut self) -> Config {
        fn zero_to(v: &mut i64, d: i64) {
            if *v == 0 {
                *v = d;
            }
        }
        zero_to(&mut self.resolve_result_entry, DEFAULT_RESOLVE_RESULT_ENTRY);
        zero_to(&mut self.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        zero_to(&mut self.mount_timeout_sec, DEFAULT_MOUNT_TIMEOUT_SEC);
        zero_to(
            &mut self.fuse_metrics_emit_wait_duration_sec,
            DEFAULT_FUSE_METRICS_EMIT_WAIT_SEC,
        );
        zero_to(
            &mut self.metadata_insertion_chunk_size,
            DEFAULT_METADATA_INSERTION_CHUNK_SIZE,
        );
        if self.metrics_network.is_empty() {
            self.metrics_network = "tcp".into();
        }
        if self.metadata_store.is_empty() {
            self.metadata_store = "db".into();
        }
        let h = HttpConfig::default();
        zero_to(&mut self.http.dial_timeout_msec, h.dial_timeout_msec);
        zero_to(
            &mut self.http.response_header_timeout_msec,
            h.response_header_timeout_msec,
        );
        zero_to(&mut self.http.request_timeout_msec, h.request_timeout_msec);
        zero_to(&mut self.http.max_retries, h.max_retries);
        zero_to(&mut self.http.min_wait_msec, h.min_wait_msec);
        zero_to(&mut self.http.max_wait_msec, h.max_wait_msec);
        zero_to(&mut self.blob.fetching_timeout_sec, 300);
        zero_to(&mut self.blob.max_retries, self.http.max_retries);
        zero_to(&mut self.blob.min_wait_msec, self.http.min_wait_msec);
        zero_to(&mut self.blob.max_wait_msec, self.http.max_wait_msec);
        if self.blob.check_always {
            self.blob.valid_interval = 0;
        } else {
            zero_to(&mut self.blob.valid_interval, 60);
        }
        if self.blob.max_span_verification_retries < 0 {
            self.blob.max_span_verification_retries = 3;
        }
        zero_to(&mut self.directory_cache.max_lru_cache_entry, 10);
        zero_to(&mut self.directory_cache.max_cache_fds, 10);
        zero_to(&mut self.fuse.attr_timeout, 1);
        zero_to(&mut self.fuse.entry_timeout, 1);
        zero_to(&mut self.fuse.negative_timeout, 1);
        let b = BackgroundFetchConfig::default();
        zero_to(
            &mut self.background_fetch.silence_period_msec,
            b.silence_period_msec,
        );
        zero_to(
            &mut self.background_fetch.fetch_period_msec,
            b.fetch_period_msec,
        );
        zero_to(&mut self.background_fetch.max_queue_size, b.max_queue_size);
        zero_to(
            &mut self.background_fetch.emit_metric_period_sec,
            b.emit_metric_period_sec,
        );
        if self.background_fetch.drop_policy.is_empty() {
            self.background_fetch.drop_policy = b.drop_policy;
        }
        if self.content_store.kind.is_empty() {
            self.content_store.kind = "soci".into();
        }
        if let Some(p) = self
            .content_store
            .containerd_address
            .strip_prefix("unix://")
        {
            self.content_store.containerd_address = p.to_string();
        }
        if self.content_store.containerd_address.is_empty() {
            self.content_store.containerd_address =
                ContentStoreConfig::default().containerd_address;
        }
        if self.prefetch.max_concurrency < 0 {
            self.prefetch.max_concurrency = 0;
        }
        zero_to(&mut self.resolver.auth_client_ttl_sec, 3600);
        self
    }

    /// Checks the values; returns every problem found (empty ⇒ valid).
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !matches!(self.metadata_store.as_str(), "db" | "db-multi") {
            p.push(format!(
                "unknown metadata store type: {}; must be one of [db db-multi]",
                self.metadata_store
            ));
        }
        if !matches!(self.metrics_network.as_str(), "tcp" | "unix") {
            p.push(format!(
                "metrics_network must be \"tcp\" or \"unix\", got {:?}",
                self.metrics_network
            ));
        }
        if !matches!(
            self.background_fetch.drop_policy.as_str(),
            "oldest" | "newest"
        ) {
            p.push(format!(
                "background_fetch.drop_policy must be \"oldest\" or \"newest\", got {:?}",
                self.background_fetch.drop_policy
            ));
        }
        if self.background_fetch.max_queue_size < -1 {
            p.push(format!(
                "background_fetch.max_queue_size must be >= -1, got {}",
                self.background_fetch.max_queue_size
            ));
        }
        let cs = self.content_store.kind.as_str();
        if !matches!(cs, "soci" | "containerd") {
            p.push(format!(
                "unknown content store type: {cs}; must be one of [soci containerd]"
            ));
        }
        let pp = &self.pull_modes.parallel_pull_unpack;
        let containerd_store = cs == "containerd" || pp.discard_unpacked_layers;
        if pp.enable && !containerd_store {
            p.push("parallel_pull_unpack mode requires containerd content store (type=\"containerd\" under [content_store] or discard_unpacked_layers = true)".into());
        }
        if pp.experimental_parallel_pull_as_fallback && !containerd_store {
            p.push("experimental_parallel_pull_as_fallback mode requires containerd content store (type=\"containerd\" under [content_store] or discard_unpacked_layers = true)".into());
        }
        if pp.max_concurrent_downloads > 0
            && pp.max_concurrent_downloads < pp.max_concurrent_downloads_per_image
        {
            p.push("global download limit less than per-image download limit".into());
        }
        if pp.max_concurrent_unpacks > 0
            && pp.max_concurrent_unpacks < pp.max_concurrent_unpacks_per_image
        {
            p.push("global unpack limit less than per-image unpack limit".into());
        }
        if let Err(e) = parse_size(&pp.concurrent_download_chunk_size) {
            p.push(e);
        }
        for (name, ds) in &pp.decompress_streams {
            if name != "gzip" && name != "zstd" {
                // Upstream warns and ignores; the daemon logs the warning (see `warnings`).
                continue;
            }
            if let Err(e) = check_executable(&ds.path) {
                p.push(format!("decompress_streams.{name}: {e}"));
            }
        }
        for (host, h) in &self.resolver.host {
            for m in &h.mirrors {
                if m.host.is_empty() {
                    p.push(format!(
                        "resolver.host.{host:?}: mirror host must not be empty"
                    ));
                }
            }
        }
        p
    }

    /// Non-fatal remarks about valid configs (logged as warnings at startup).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for name in self
            .pull_modes
            .parallel_pull_unpack
            .decompress_streams
            .keys()
        {
            if name != "gzip" && name != "zstd" {
                w.push(format!(
                    "ignoring decompress_streams entry {name:?}: only gzip and zstd are supported"
                ));
            }
        }
        for (host, h) in &self.resolver.host {
            for m in &h.mirrors {
                if !m.host.contains("://") {
                    w.push(format!(
                        "mirror {:?} of {host:?} has no scheme; write it as a URL, e.g. http://{}",
                        m.host, m.host
                    ));
                }
            }
        }
        if !self.debug_address.is_empty() {
            w.push(
                "debug_address is accepted for compatibility but no pprof listener is served"
                    .into(),
            );
        }
        w
    }

    /// The config as TOML (for `config dump` / `config default`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# failed to encode config: {e}\n"))
    }
}

/// Parses a size like `10MB`, `1.5 gb`, `512` (1024-based units). Empty or 0 ⇒ `None` (unbounded).
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim().to_ascii_lowercase();
    if t.is_empty() {
        return Ok(None);
    }
    let bad = || format!("invalid size format: {s}");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: f64 = match unit {
        "" | "b" => 1.0,
        "kb" => 1024.0,
        "mb" => 1024.0 * 1024.0,
        "gb" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let v = (n * mult) as u64;
    Ok(if v == 0 { None } else { Some(v) })
}

fn check_executable(path: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must be absolute"));
    }
    if path.chars().any(|c| "#%{}\\|;&$<>".contains(c)) {
        return Err(format!("path {path:?} contains forbidden characters"));
    }
    let real = std::fs::canonicalize(path).map_err(|e| format!("path {path:?}: {e}"))?;
    let md = std::fs::metadata(&real).map_err(|e| format!("path {path:?}: {e}"))?;
    if !md.is_file() || md.permissions().mode() & 0o111 == 0 {
        return Err(format!("path {path:?} is not an executable regular file"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_spec() {
        let c = Config::default();
        assert_eq!(c.resolve_result_entry, 30);
        assert_eq!(c.max_concurrency, 100);
        assert_eq!(c.mount_timeout_sec, 30);
        assert_eq!(c.http.max_retries, 8);
        assert_eq!(c.background_fetch.max_queue_size, 300);
        assert_eq!(c.background_fetch.drop_policy, "newest");
        assert!(c.pull_modes.soci_v2.enable);
        assert!(!c.pull_modes.soci_v1.enable);
        assert_eq!(c.content_store.kind, "soci");
        assert!(c.validate().is_empty());
    }

    #[test]
    fn partial_tables_keep_defaults_and_zero_means_default() {
        let (c, unknown) = Config::from_toml(
            "mount_timeout_sec = 0\n[pull_modes.soci_v1]\nenable = true\n[http]\nMaxRetries = 2\n[blob]\ncheck_always = true\n",
        )
        .unwrap();
        let c = c.normalized();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert!(c.pull_modes.soci_v1.enable);
        assert!(c.pull_modes.soci_v2.enable);
        assert_eq!(c.mount_timeout_sec, 30);
        assert_eq!(c.http.max_retries, 2);
        assert_eq!(c.blob.max_retries, 2);
        assert_eq!(c.blob.valid_interval, 0);
        assert_eq!(c.http.dial_timeout_msec, 3000);
    }

    #[test]
    fn unknown_keys_reported_with_full_path() {
        let (_, unknown) =
            Config::from_toml("bogus = 1\n[pull_modes.soci_v2]\nenable = true\nenabel = false\n[http]\nmax_retries = 3\n")
                .unwrap();
        assert!(unknown.contains(&"bogus".to_string()), "{unknown:?}");
        assert!(
            unknown.contains(&"pull_modes.soci_v2.enabel".to_string()),
            "{unknown:?}"
        );
        assert!(
            unknown.contains(&"http.max_retries".to_string()),
            "{unknown:?}"
        );
    }

    #[test]
    fn validate_reports_every_problem() {
        let (c, _) = Config::from_toml(
            "metadata_store = \"x\"\n[background_fetch]\ndrop_policy = \"random\"\n[content_store]\ntype = \"nope\"\n[pull_modes.parallel_pull_unpack]\nconcurrent_download_chunk_size = \"badstring\"\n",
        )
        .unwrap();
        let p = c.normalized().validate();
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p.iter().any(|m| m == "invalid size format: badstring"));
        assert!(p.iter().any(|m| m.contains(
            "background_fetch.drop_policy must be \"oldest\" or \"newest\", got \"random\""
        )));
        assert!(p
            .iter()
            .any(|m| m.starts_with("unknown content store type: nope")));
    }

    #[test]
    fn parallel_requires_containerd_store() {
        let (c, _) =
            Config::from_toml("[pull_modes.parallel_pull_unpack]\nenable = true\n").unwrap();
        assert_eq!(c.normalized().validate().len(), 1);
        let (c, _) =
            Config::from_toml("[content_store]\ntype = \"containerd\"\n[pull_modes.parallel_pull_unpack]\nenable = true\n")
                .unwrap();
        assert!(c.normalized().validate().is_empty());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("").unwrap(), None);
        assert_eq!(parse_size("0").unwrap(), None);
        assert_eq!(parse_size("10MB").unwrap(), Some(10 << 20));
        assert_eq!(parse_size(" 1.5 kb ").unwrap(), Some(1536));
        assert_eq!(parse_size("12").unwrap(), Some(12));
        assert!(parse_size("badstring").is_err());
        assert!(parse_size("1tb").is_err());
    }

    #[test]
    fn missing_files() {
        let (c, _) = Config::load(Path::new("/nonexistent/soci.toml"), false).unwrap();
        assert_eq!(c, Config::default().normalized());
        let e = Config::load(Path::new("/nonexistent/soci.toml"), true).unwrap_err();
        assert!(
            e.to_string().starts_with("failed to open config file"),
            "{e}"
        );
    }

    #[test]
    fn dump_round_trips() {
        let c = Config::default();
        let (back, unknown) = Config::from_toml(&c.to_toml()).unwrap();
        assert!(unknown.is_empty());
        assert_eq!(back, c);
    }
}
